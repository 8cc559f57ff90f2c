// The package in Cloudflare Workers (the "workerd" condition, which wrangler sets): workerd
// compiles no wasm from bytes and has no URL for the files of a bundle, so the wasm is
// imported as a module, which wrangler uploads compiled beside the Worker (its default rule
// for `*.wasm`). Instantiating it is synchronous: no top-level await.
import { initSync } from "./llm_distiller.js";
import wasm from "./llm_distiller_bg.wasm";

initSync({ module: wasm });

export * from "./api.js";
