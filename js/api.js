// The package's API, shared by every entry (node.js, browser.js, workerd.js, embedded.js).
// Each entry loads the WebAssembly module the way its runtime can, then re-exports this
// module; nothing here runs wasm code while the module is evaluated, because the entry's
// own body (which loads the wasm) runs after it. Every use of the wasm-bindgen glue's
// exports is in this file, so a renamed export is a change here only.
import * as api from "./llm_distiller.js";

export const { RateLimiter, exportRecord } = api;

/** Providers by name, with failover, retries, rate limiting, batches and streaming (see
 * the types). */
export class ProviderManager extends api.ProviderManager {
  stream(prompt, config, provider, options) {
    return new CompletionStream(super.stream(prompt, config, provider, options));
  }
}

const END = Object.freeze({ done: true, value: undefined });

/** A streamed answer as an async iterator over the wasm stream's plain `next()` (an item,
 * or `undefined` at the end). Calls to `next()` run one after the other; `return()`, which
 * `break` in a `for await` calls, aborts the request. */
export class CompletionStream {
  #source;
  #over = false;
  #previous = Promise.resolve();

  constructor(source) {
    this.#source = source;
  }

  next() {
    const step = this.#previous.then(async () => {
      if (this.#over) return END;
      let item;
      try {
        item = await this.#source.next();
      } catch (error) {
        this.#end();
        throw error;
      }
      if (item === undefined) {
        this.#end();
        return END;
      }
      return { done: false, value: item };
    });
    this.#previous = step.catch(() => {});
    return step;
  }

  return() {
    this.#end();
    return Promise.resolve(END);
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  #end() {
    if (this.#over) return;
    this.#over = true;
    this.#source.close();
    this.#source.free();
  }
}

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
// What joins the pieces of thinking, as the core says (asked on first use: see the top).
let separator;

/** Separates thinking from `text` (see the types). The text goes into wasm as UTF-8 that
 * `TextEncoder.encodeInto` writes there (not through the glue's loop over its characters)
 * and what comes back is where the parts lie: the result is made of slices of the caller's
 * own strings, with nothing decoded out of wasm memory. */
export function extractThinking(answer, separateReasoning) {
  text(answer, "extractThinking: text");
  const reasoning = separateReasoning ?? undefined;
  if (reasoning !== undefined) {
    text(reasoning, "extractThinking: separateReasoning", ", null or undefined");
  }
  const reasoningBytes = reasoning === undefined ? undefined : encoder.encode(reasoning);
  // UTF-8 takes at most 3 bytes per UTF-16 unit. encodeInto writes straight into wasm
  // memory, and much faster than encode for text that is not all ASCII.
  const { written } = encoder.encodeInto(answer, api.thinkingInput(answer.length * 3));
  const spans = api.extractThinkingSpans(written, reasoningBytes);
  const contentEnd = 4 + 2 * spans[3];
  let content = "";
  for (let i = 4; i < contentEnd; i += 2) content += answer.slice(spans[i], spans[i + 1]);
  const thinking = spans[2] > spans[1] ? [reasoning.slice(spans[1], spans[2])] : [];
  for (let i = contentEnd; i < spans.length; i += 2) thinking.push(answer.slice(spans[i], spans[i + 1]));
  return {
    content,
    thinking: thinking.length > 0 ? thinking.join((separator ??= api.thinkingSeparator())) : null,
    unclosed: spans[0] === 1,
  };
}

/** `value` when it is a string; a TypeError naming `name` otherwise. */
function text(value, name, orElse = "") {
  if (typeof value === "string") return value;
  const got = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
  throw new TypeError(`${name} must be a string${orElse}, got ${got}`);
}
