// The package where no runtime condition says how to load a file: bundlers that say no mode
// (esbuild with its default flags, Rollup), unknown runtimes, and whoever imports
// "llm-distiller/embedded". The wasm travels inside the JavaScript (base64, in
// wasm_base64.js, written by the build), so it needs no loader, plugin or asset step, and it
// is compiled synchronously, so there is no top-level await (which esbuild's default format
// cannot hold). It costs about 30% more bytes gzipped than browser.js and its .wasm, and the
// browser cannot compile while downloading. In Node and Workers, "llm-distiller/embedded"
// resolves to their own entries, which load the .wasm file.
import { initSync } from "./llm_distiller.js";
import base64 from "./wasm_base64.js";

initSync({ module: bytesOf(base64) });

export * from "./api.js";

/** The bytes that `text` (base64) encodes. */
function bytesOf(text) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
