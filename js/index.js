// The entry point of the npm package: loads the WebAssembly module once, in Node (from
// the file beside this one) and in browsers (fetched relative to this module, which
// bundlers understand too), then exports the API. Top-level await: importing the package
// is enough, there is no init() to call.
import init, * as api from "./llm_distiller.js";

const wasmUrl = new URL("./llm_distiller_bg.wasm", import.meta.url);
const inNode = typeof process !== "undefined" && process.versions != null && process.versions.node != null;
if (inNode) {
  const { readFile } = await import("node:fs/promises");
  await init({ module_or_path: await readFile(wasmUrl) });
} else {
  await init({ module_or_path: wasmUrl });
}

export const { ProviderManager, CompletionStream, ThinkingStream, RateLimiter, extractThinking } = api;
