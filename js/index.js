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

export const { ProviderManager, CompletionStream, RateLimiter } = api;

// The glue hands whatever a `&str` parameter gets to wasm as a string: a number there fails
// with a bare "memory access out of bounds". Those parameters are checked here, in
// JavaScript, where a typeof costs nothing next to crossing into wasm.

/** Separates thinking from text pushed in chunks (see the types). */
export class ThinkingStream extends api.ThinkingStream {
  push(chunk) {
    return super.push(text(chunk, "ThinkingStream.push: chunk"));
  }

  pushReasoning(chunk) {
    return super.pushReasoning(text(chunk, "ThinkingStream.pushReasoning: chunk"));
  }
}

const encoder = new TextEncoder();

/** Separates thinking from `text` (see the types). The text crosses into wasm as
 * `TextEncoder`'s UTF-8, a native encode and one copy, rather than through the glue's
 * loop over its characters. */
export function extractThinking(answer, separateReasoning) {
  text(answer, "extractThinking: text");
  if (separateReasoning != null) {
    text(separateReasoning, "extractThinking: separateReasoning", ", null or undefined");
  }
  return api.extractThinkingUtf8(encoder.encode(answer), separateReasoning);
}

/** `value` when it is a string; a TypeError naming `name` otherwise. */
function text(value, name, orElse = "") {
  if (typeof value === "string") return value;
  const got = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
  throw new TypeError(`${name} must be a string${orElse}, got ${got}`);
}
