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

export const { ProviderManager, CompletionStream, ThinkingStream, RateLimiter } = api;

const encoder = new TextEncoder();

/** Separates thinking from `text` (see the types). The text crosses into wasm as
 * `TextEncoder`'s UTF-8, a native encode and one copy, rather than through the glue's
 * loop over its characters. */
export function extractThinking(text, separateReasoning) {
  // The glue would hand anything else to wasm as a string and fail with a bare
  // "memory access out of bounds".
  if (typeof text !== "string") {
    throw new TypeError(`extractThinking: text must be a string, got ${describe(text)}`);
  }
  if (separateReasoning != null && typeof separateReasoning !== "string") {
    throw new TypeError(
      `extractThinking: separateReasoning must be a string, null or undefined, got ${describe(separateReasoning)}`,
    );
  }
  return api.extractThinkingUtf8(encoder.encode(text), separateReasoning);
}

function describe(value) {
  return value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
}
