#!/usr/bin/env node
// Thinking extraction, side by side in one Node process: llm-distiller (the npm package in
// pkg/, Rust compiled to WebAssembly), a plain-JavaScript regex extractor, and the Vercel AI
// SDK's `extractReasoningMiddleware` over a mock model. Prints Markdown to stdout (progress
// goes to stderr).
//
//   node bench/thinking.mjs            # the full run, about two minutes
//   node bench/thinking.mjs --quick    # fewer samples, a smoke test of the figures
//   node bench/thinking.mjs --pkg=DIR  # another build of the package than pkg/
//
// Build the package first (scripts/build-pkg.sh). A figure is the median of RUNS samples
// after WARMUP samples; a sample repeats the call until it lasts about SAMPLE_MS, so that
// small inputs are not timer noise (slow cells get fewer samples, marked †). MB/s is input
// UTF-8 bytes / 10^6 per second.

import os from "node:os";
import v8 from "node:v8";
import vm from "node:vm";
import zlib from "node:zlib";
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const quick = process.argv.includes("--quick");
const RUNS = quick ? 5 : 15;
const WARMUP = quick ? 1 : 3;
const SAMPLE_MS = quick ? 5 : 10;
// A cell whose calls are slow (the AI SDK's streamText over 1 MB in 16-byte chunks takes
// seconds a call) gets fewer samples, down to MIN_RUNS, to keep a full run near 3 minutes.
const CELL_BUDGET_MS = quick ? 1000 : 3000;
const MIN_RUNS = quick ? 1 : 3;

// `--pkg=DIR`: another build of the package (e.g. one with other optimization settings).
const pkgArg = process.argv.find((a) => a.startsWith("--pkg="))?.slice("--pkg=".length);
const pkgUrl = pkgArg ? pathToFileURL(`${path.resolve(pkgArg)}/`) : new URL("../pkg/", import.meta.url);
let distiller;
try {
  distiller = await import(new URL("node.js", pkgUrl));
} catch (error) {
  console.error(`bench: cannot load ${new URL("node.js", pkgUrl).pathname} (${error.message}); run scripts/build-pkg.sh`);
  process.exit(1);
}
const { extractThinking, ThinkingStream } = distiller;
const { generateText, streamText, wrapLanguageModel, extractReasoningMiddleware } = await import("ai");
const { MockLanguageModelV4 } = await import("ai/test");
globalThis.AI_SDK_LOG_WARNINGS = false;

// A full collection between measurements, so that one's garbage is not the next one's pause.
v8.setFlagsFromString("--expose-gc");
const collectGarbage = vm.runInNewContext("gc");

// Every measured call returns a number that ends up here and is printed, so no call's work
// can be optimized away.
let checksum = 0;

const progress = (message) => process.stderr.write(`bench: ${message}\n`);
const utf8Bytes = (s) => Buffer.byteLength(s, "utf8");

// ---------------------------------------------------------------------------------------
// Corpora: generated prose, deterministic (seeded).

function random(seed) {
  // mulberry32
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  "the a of to and in is that for it as with was on be by this are or from at which an not " +
  "have has but can will model answer value result data function first each more other time " +
  "when then these some would only into such also use number than two them may like could " +
  "because most over how where after should just very between through while both same used " +
  "those during without another under however user question table request memory limit " +
  "stream chunk token response server error retry latency cache index query rows columns " +
  "example case point step check assume consider note compute total sum list order"
).split(" ");
// Inline bits of an LLM answer that put `<` in the text, and a little non-ASCII.
const SNIPPETS = [
  "a < b", "x <= y", "i<n", "<b>important</b>", "<i>not</i>", "<code>Vec<u8></code>",
  "<br>", "<th>Name</th>", "List<String>", "if (a<b) return;", "<p>", "</p>", "3 < 4 > 2",
  "it\u2019s", "caf\u00e9", "na\u00efve", "\u2014", "\u2026", "\u00b1 5%",
];

function sentence(rand) {
  const n = 6 + Math.floor(rand() * 14);
  const words = [];
  for (let i = 0; i < n; i++) {
    if (rand() < 0.05) words.push(SNIPPETS[Math.floor(rand() * SNIPPETS.length)]);
    else words.push(WORDS[Math.floor(rand() * WORDS.length)]);
    if (i < n - 1 && rand() < 0.08) words[words.length - 1] += ",";
  }
  if (rand() < 0.05) words.push(String(Math.floor(rand() * 10000)));
  const s = words.join(" ");
  const end = rand() < 0.85 ? "." : rand() < 0.5 ? "?" : "!";
  return s[0].toUpperCase() + s.slice(1) + end;
}

/** About `bytes` bytes of paragraphs, sometimes a bullet list. */
function prose(rand, bytes) {
  const parts = [];
  let size = 0;
  const add = (s) => {
    parts.push(s);
    size += utf8Bytes(s);
  };
  while (size < bytes) {
    if (parts.length) add("\n\n");
    if (rand() < 0.15) {
      const items = 2 + Math.floor(rand() * 4);
      for (let i = 0; i < items; i++) add(`${i ? "\n" : ""}- ${sentence(rand)}`);
    } else {
      const sentences = 1 + Math.floor(rand() * 5);
      for (let i = 0; i < sentences && size < bytes; i++) add((i ? " " : "") + sentence(rand));
    }
  }
  return parts.join("");
}

const SIZES = [
  ["1 KB", 1024],
  ["64 KB", 64 * 1024],
  ["1 MB", 1024 * 1024],
];
const SHAPES = ["one block", "many blocks", "no block", "unclosed"];

function corpus(shape, target, seed) {
  const rand = random(seed);
  const block = (bytes) => `<think>\n${prose(rand, bytes)}\n</think>\n\n`;
  switch (shape) {
    case "one block": {
      const think = block(target * 0.35);
      return think + prose(rand, target - utf8Bytes(think));
    }
    case "many blocks": {
      // Interleaved thinking: a block, some answer, a block, ...; about 3 blocks in 1 KB,
      // 20 in 64 KB, 300 in 1 MB.
      const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
      const parts = [];
      let size = 0;
      while (size < target) {
        const piece =
          block(clamp(target / 24, 100, 1200) * (0.5 + rand())) +
          prose(rand, clamp(target / 16, 150, 2000) * (0.5 + rand())) +
          "\n\n";
        parts.push(piece);
        size += utf8Bytes(piece);
      }
      return parts.join("");
    }
    case "no block":
      return prose(rand, target);
    case "unclosed":
      return `<think>\n${prose(rand, target - 8)}`;
  }
  throw new Error(shape);
}

/** Chunks of at most `bytes` UTF-8 bytes that never split a character. */
function chunked(text, bytes) {
  const chunks = [];
  let start = 0;
  let size = 0;
  for (let i = 0; i < text.length; ) {
    const point = text.codePointAt(i);
    const units = point > 0xffff ? 2 : 1;
    const width = point < 0x80 ? 1 : point < 0x800 ? 2 : point < 0x10000 ? 3 : 4;
    if (size + width > bytes) {
      chunks.push(text.slice(start, i));
      start = i;
      size = 0;
    }
    size += width;
    i += units;
  }
  if (start < text.length) chunks.push(text.slice(start));
  return chunks;
}

// ---------------------------------------------------------------------------------------
// The extractors.

// llm-distiller, one shot.
function distillerOneShot(text) {
  const out = extractThinking(text);
  return out.content.length + (out.thinking === null ? 0 : out.thinking.length);
}

// llm-distiller, streaming: one ThinkingStream per answer, a push per chunk.
function distillerStream(chunks) {
  const stream = new ThinkingStream();
  let n = 0;
  for (let i = 0; i < chunks.length; i++) {
    const delta = stream.push(chunks[i]);
    n += delta.content.length + delta.thinking.length;
  }
  const last = stream.finish();
  n += last.content.length + last.thinking.length;
  stream.free();
  return n;
}

/** The streamed deltas put together: must equal the one-shot result. */
function distillerStreamText(chunks) {
  const stream = new ThinkingStream();
  let content = "";
  let thinking = "";
  for (const chunk of [...chunks, null]) {
    const delta = chunk === null ? stream.finish() : stream.push(chunk);
    content += delta.content;
    thinking += delta.thinking;
  }
  stream.free();
  return { content, thinking: thinking || null };
}

// Plain JavaScript. The regex is the one of the brief plus `|$`: an opening tag without its
// closing tag takes the rest of the text as thinking (unclosed), in the same single pass.
const BLOCK = /<(think|thinking|reasoning)\b[^>]*>([\s\S]*?)(?:(<\/\1\s*>)|$)/gi;

function regexExtract(text) {
  const content = [];
  const thinking = [];
  let unclosed = false;
  let last = 0;
  BLOCK.lastIndex = 0;
  for (let m; (m = BLOCK.exec(text)) !== null; ) {
    content.push(text.slice(last, m.index));
    const inner = m[2].trim();
    if (inner) thinking.push(inner);
    last = m.index + m[0].length;
    if (m[3] === undefined) {
      unclosed = true;
      break;
    }
  }
  content.push(text.slice(last));
  return {
    content: content.join("").trim(),
    thinking: thinking.length ? thinking.join("\n\n") : null,
    unclosed,
  };
}

const REGEX_LIMITS = [
  "a pre-filled block (text before a leading `</think>`, the opening tag being in the prompt) stays content",
  "`<think/>` opens a block instead of being an empty one",
  "`\\b` lets `<think-x>`, `<think.x>` or `<think\"…>` open a block; llm-distiller wants whitespace, `>` or `/>` after the name",
  "attributes are unbounded and may hold `<`, so a stray `<think ` in prose runs to the next `>` anywhere (llm-distiller: at most 256 bytes, no `<`); closing-tag whitespace is unbounded and Unicode (llm-distiller: ASCII, at most 256 bytes)",
  "`trim()` also strips U+FEFF, which Rust's `trim` keeps",
  "no streaming",
];

// The AI SDK: one mock model, told what to answer through `current`. The mock records every
// call; the arrays are emptied at each call so that they do not grow over a run.
const current = { text: "", chunks: [] };
const usage = {
  inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 },
  outputTokens: { total: 1, text: 1, reasoning: 0 },
};
const finishReason = { unified: "stop", raw: "stop" };

/** The stream of a model answering `chunks`, one part per pull: the source costs little. */
function partStream(chunks) {
  let i = -2;
  return new ReadableStream({
    pull(controller) {
      if (i >= 0 && i < chunks.length) {
        controller.enqueue({ type: "text-delta", id: "t", delta: chunks[i] });
      } else if (i === -2) {
        controller.enqueue({ type: "stream-start", warnings: [] });
      } else if (i === -1) {
        controller.enqueue({ type: "text-start", id: "t" });
      } else if (i === chunks.length) {
        controller.enqueue({ type: "text-end", id: "t" });
      } else {
        controller.enqueue({ type: "finish", usage, finishReason });
        controller.close();
      }
      i++;
    },
  });
}

const mock = new MockLanguageModelV4({
  doGenerate: async () => {
    mock.doGenerateCalls.length = 0;
    return { content: [{ type: "text", text: current.text }], finishReason, usage, warnings: [] };
  },
  doStream: async () => {
    mock.doStreamCalls.length = 0;
    return { stream: partStream(current.chunks) };
  },
});
const reasoningMiddleware = extractReasoningMiddleware({ tagName: "think" });
const withMiddleware = wrapLanguageModel({ model: mock, middleware: reasoningMiddleware });

async function aiGenerate(model, text) {
  current.text = text;
  const result = await generateText({ model, prompt: "x" });
  return result.text.length + (result.reasoningText?.length ?? 0);
}

async function aiStreamText(model, chunks) {
  current.chunks = chunks;
  const result = streamText({ model, prompt: "x" });
  let n = 0;
  for await (const part of result.fullStream) {
    if (part.type === "text-delta" || part.type === "reasoning-delta") n += part.text.length;
  }
  return n;
}

async function aiGenerateResult(text) {
  current.text = text;
  const result = await generateText({ model: withMiddleware, prompt: "x" });
  return { content: result.text, thinking: result.reasoningText ?? null };
}

async function aiStreamResult(chunks) {
  current.chunks = chunks;
  const result = streamText({ model: withMiddleware, prompt: "x" });
  let content = "";
  let thinking = "";
  for await (const part of result.fullStream) {
    if (part.type === "text-delta") content += part.text;
    if (part.type === "reasoning-delta") thinking += part.text;
  }
  return { content, thinking: thinking || null };
}

async function drain(stream) {
  const reader = stream.getReader();
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return n;
    if (value.type === "text-delta" || value.type === "reasoning-delta") n += value.delta.length;
  }
}

// The middleware alone: its TransformStream over the mock's parts, without streamText.
async function aiMiddlewareAlone(chunks) {
  const { stream } = await reasoningMiddleware.wrapStream({
    doStream: async () => ({ stream: partStream(chunks) }),
    doGenerate: async () => {
      throw new Error("unused");
    },
    params: { prompt: [] },
    model: mock,
  });
  return drain(stream);
}

// llm-distiller in the same place: a TransformStream over the same parts.
function distillerTransform() {
  const stream = new ThinkingStream();
  const emit = (controller, id, delta) => {
    if (delta.thinking) controller.enqueue({ type: "reasoning-delta", id: "r", delta: delta.thinking });
    if (delta.content) controller.enqueue({ type: "text-delta", id, delta: delta.content });
  };
  return new TransformStream({
    transform(part, controller) {
      if (part.type === "text-delta") {
        emit(controller, part.id, stream.push(part.delta));
      } else {
        if (part.type === "text-end") emit(controller, part.id, stream.finish());
        controller.enqueue(part);
      }
    },
    flush() {
      stream.free();
    },
  });
}

const identityTransform = (chunks) => drain(partStream(chunks).pipeThrough(new TransformStream()));
const distillerInTransform = (chunks) => drain(partStream(chunks).pipeThrough(distillerTransform()));
const mockSourceAlone = (chunks) => drain(partStream(chunks));

// ---------------------------------------------------------------------------------------
// Timing.

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/**
 * Times several variants of one cell: for each `[fn, isAsync]`, the median nanoseconds per
 * call of `fn()` (each call awaited when `isAsync`) and how many samples that took. The
 * samples of the variants alternate, so that a burst of load from elsewhere on the machine
 * hits them all rather than one.
 */
async function timeTogether(variants) {
  collectGarbage();
  const now = process.hrtime.bigint;
  const target = SAMPLE_MS * 1e6;
  const plans = [];
  for (const [fn, isAsync] of variants) {
    // Calibration, which also warms the JIT: how many calls make a sample.
    let calls = 0;
    const start = now();
    let elapsed = 0;
    while (elapsed < target / 2) {
      checksum += isAsync ? await fn() : fn();
      calls++;
      elapsed = Number(now() - start);
    }
    const perCall = elapsed / calls;
    const reps = Math.max(1, Math.round(target / perCall));
    const fits = Math.floor((CELL_BUDGET_MS * 1e6 - elapsed) / (reps * perCall));
    const runs = Math.max(MIN_RUNS, Math.min(RUNS, fits));
    const warmup = Math.max(0, Math.min(WARMUP, fits - runs));
    plans.push({ fn, isAsync, reps, runs, warmup, samples: [] });
  }
  const rounds = Math.max(...plans.map((p) => p.warmup + p.runs));
  for (let round = 0; round < rounds; round++) {
    for (const plan of plans) {
      const { fn, isAsync, reps, runs, warmup, samples } = plan;
      if (round >= warmup + runs) continue;
      let sum = 0;
      const t0 = now();
      if (isAsync) for (let r = 0; r < reps; r++) sum += await fn();
      else for (let r = 0; r < reps; r++) sum += fn();
      const t1 = now();
      checksum += sum;
      if (round >= warmup) samples.push(Number(t1 - t0) / reps);
    }
  }
  return plans.map((p) => ({ ns: median(p.samples), runs: p.runs }));
}

const timePerCall = async (fn, isAsync) => (await timeTogether([[fn, isAsync]]))[0];

const mbps = (bytes, ns) => (bytes * 1e3) / ns;

// ---------------------------------------------------------------------------------------
// Formatting.

const f1 = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const ratio = (a, b) => `${(a / b).toFixed(a / b >= 10 ? 0 : 1)}×`;
const row = (cells) => `| ${cells.join(" | ")} |`;
/** A Markdown table; the first `labels` columns are left-aligned, the figures right-aligned. */
const table = (head, rows, labels = 2) =>
  [row(head), row(head.map((_, i) => (i < labels ? "---" : "---:"))), ...rows.map(row)].join("\n");
/** Text shown in a code span: newlines visible, pipes escaped. */
const code = (s) => "`" + s.replaceAll("\n", "\\n").replaceAll("|", "\\|").replaceAll("`", "'") + "`";
const quoted = (s) => (s === null || s === undefined ? "null" : `"${s}"`);
const time = (ns) =>
  ns >= 1e5 ? `${(ns / 1e3).toFixed(0)} µs` : ns >= 1e3 ? `${(ns / 1e3).toFixed(1)} µs` : `${ns.toFixed(0)} ns`;
/** A throughput cell; † marks a median of fewer than RUNS samples. */
const cell = (bytes, t) => f1(mbps(bytes, t.ns)) + (t.runs < RUNS ? "†" : "");

// ---------------------------------------------------------------------------------------
// The run.

const out = [];
const print = (line = "") => out.push(line);

const wasmBytes = readFileSync(new URL("llm_distiller_bg.wasm", pkgUrl));
const gzipped = zlib.gzipSync(wasmBytes, { level: 9 }).length;
const cpus = os.cpus();

print(`# Thinking extraction: llm-distiller vs a JS regex vs the AI SDK middleware`);
print();
print(`- Machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, ${os.platform()} ${os.arch()}, Node ${process.version}`);
print(`- Date: ${new Date().toISOString()}; load average at the start ${os.loadavg()[0].toFixed(2)} (figures are noisy when it nears the core count)`);
const wasmName = pkgArg ? path.join(pkgArg, "llm_distiller_bg.wasm") : "pkg/llm_distiller_bg.wasm";
print(`- llm-distiller: ${wasmName} ${wasmBytes.length.toLocaleString("en")} bytes, ${gzipped.toLocaleString("en")} bytes gzip -9`);
const aiVersion = JSON.parse(readFileSync(new URL("../node_modules/ai/package.json", import.meta.url))).version;
print(`- AI SDK: ai ${aiVersion}, \`extractReasoningMiddleware({ tagName: "think" })\`, MockLanguageModelV4`);
print(
  `- Method: median of ${RUNS} samples after ${WARMUP} warm-up samples${quick ? " (--quick)" : ""}; a sample repeats the call for about ${SAMPLE_MS} ms; ` +
    `† marks a cell whose calls are so slow that it got fewer samples (at least ${MIN_RUNS}). MB/s = input UTF-8 bytes / 10^6 per second; higher is better.`,
);
print();

const corpora = new Map();
const corpusRows = [];
for (const [sizeName, target] of SIZES) {
  SHAPES.forEach((shape, i) => {
    const text = corpus(shape, target, 1000 + i * 7 + target);
    const bytes = utf8Bytes(text);
    corpora.set(`${shape}/${sizeName}`, { text, bytes });
    const blocks = (text.match(/<think>/g) ?? []).length;
    const otherLt = (text.match(/</g) ?? []).length - blocks - (text.match(/<\/think>/g) ?? []).length;
    const nonAscii = (text.match(/[^\x00-\x7f]/g) ?? []).length;
    corpusRows.push([shape, sizeName, bytes.toLocaleString("en"), blocks, otherLt, nonAscii]);
  });
}
print("## Corpora");
print();
print(table(["shape", "size", "bytes", "`<think>` blocks", "other `<`", "non-ASCII chars"], corpusRows));
print();

// Correctness first: every measured path is checked against its own one-shot result.
for (const [key, { text }] of corpora) {
  const one = extractThinking(text);
  for (const size of [16, 4096]) {
    const streamed = distillerStreamText(chunked(text, size));
    if (streamed.content !== one.content || streamed.thinking !== one.thinking) {
      throw new Error(`llm-distiller: stream (${size} B) and one-shot differ on ${key}`);
    }
  }
}

// 1. One shot.
progress("one shot");
const oneShotRows = [];
const oneShot = [];
for (const [sizeName] of SIZES) {
  for (const shape of SHAPES) {
    const { text, bytes } = corpora.get(`${shape}/${sizeName}`);
    const [d, r, a, a0] = await timeTogether([
      [() => distillerOneShot(text), false],
      [() => {
        const x = regexExtract(text);
        return x.content.length + (x.thinking?.length ?? 0);
      }, false],
      [() => aiGenerate(withMiddleware, text), true],
      [() => aiGenerate(mock, text), true],
    ]);
    const [md, mr, ma] = [d, r, a].map((t) => mbps(bytes, t.ns));
    oneShot.push({ shape, sizeName, md, mr, ma });
    oneShotRows.push([shape, sizeName, cell(bytes, d), cell(bytes, r), cell(bytes, a), cell(bytes, a0), ratio(md, mr), ratio(md, ma), time(d.ns)]);
  }
}
print("## One shot (MB/s)");
print();
print(
  table(
    ["shape", "size", "llm-distiller `extractThinking`", "JS regex", "AI SDK `generateText` + middleware", "AI SDK `generateText`, no middleware", "distiller / regex", "distiller / AI SDK", "distiller per call"],
    oneShotRows,
  ),
);
print();

// 2. Streaming.
const CHUNKS = [16, 256, 4096];
const streaming = [];
const streamingRows = [];
for (const [sizeName] of SIZES) {
  for (const shape of SHAPES) {
    progress(`streaming ${shape}, ${sizeName}`);
    const { text, bytes } = corpora.get(`${shape}/${sizeName}`);
    const cells = [sizeName, shape];
    for (const size of CHUNKS) {
      const chunks = chunked(text, size);
      const [d, a] = await timeTogether([
        [() => distillerStream(chunks), false],
        [() => aiStreamText(withMiddleware, chunks), true],
      ]);
      const [md, ma] = [d, a].map((t) => mbps(bytes, t.ns));
      streaming.push({ sizeName, shape, size, d: md, a: ma });
      cells.push(cell(bytes, d), cell(bytes, a), ratio(md, ma));
    }
    streamingRows.push(cells);
  }
}
print("## Streaming (MB/s): llm-distiller `ThinkingStream` (a `push` per chunk, `finish`) vs AI SDK `streamText` + middleware");
print();
print(
  "The AI SDK's mock model streams `text-delta` parts of at most that many UTF-8 bytes (never splitting a character), pulled one by one; `result.fullStream` is consumed. llm-distiller gets the same chunks in a loop.",
);
print();
print(
  table(
    ["size", "shape", ...CHUNKS.flatMap((c) => [`${c} B: distiller`, `${c} B: AI SDK`, `${c} B: ratio`])],
    streamingRows,
  ),
);
print();

// Where the time of a stream goes: each layer on its own, at 64 KB (the cost per part does
// not depend on the size, and streamText at 16 bytes takes seconds for 1 MB).
const LAYERS = [
  ["mock source alone", (chunks) => mockSourceAlone(chunks), true],
  ["source + identity TransformStream", (chunks) => identityTransform(chunks), true],
  ["distiller push loop", (chunks) => distillerStream(chunks), false],
  ["distiller in TransformStream", (chunks) => distillerInTransform(chunks), true],
  ["AI SDK middleware alone", (chunks) => aiMiddlewareAlone(chunks), true],
  ["`streamText`, no middleware", (chunks) => aiStreamText(mock, chunks), true],
  ["`streamText` + middleware", (chunks) => aiStreamText(withMiddleware, chunks), true],
];
const layerRows = [];
const perPart = new Map(); // chunk size -> layer -> [ns per part, one per shape]
for (const shape of SHAPES) {
  progress(`streaming layers, ${shape}`);
  const { text, bytes } = corpora.get(`${shape}/64 KB`);
  for (const size of CHUNKS) {
    const chunks = chunked(text, size);
    const cells = [shape, `${size} B`];
    const times = await timeTogether(LAYERS.map(([, run, isAsync]) => [() => run(chunks), isAsync]));
    if (!perPart.has(size)) perPart.set(size, new Map());
    const parts = perPart.get(size);
    LAYERS.forEach(([name], i) => {
      cells.push(cell(bytes, times[i]));
      if (!parts.has(name)) parts.set(name, []);
      parts.get(name).push(times[i].ns / chunks.length);
    });
    // Throughput ratios: the middleware's time over llm-distiller's.
    const at = (name) => times[LAYERS.findIndex(([n]) => n === name)].ns;
    cells.push(
      ratio(at("AI SDK middleware alone"), at("distiller in TransformStream")),
      ratio(at("AI SDK middleware alone"), at("distiller push loop")),
    );
    layerRows.push(cells);
  }
}
print("### Where streaming time goes (64 KB, MB/s)");
print();
print(
  "Each layer alone. Mock source: the mock's part stream read with no transform; identity: through a `new TransformStream()` that passes parts on. TransformStream: llm-distiller in a `TransformStream` over those parts, where the middleware sits, emitting `reasoning-delta`/`text-delta` parts. Middleware alone: `extractReasoningMiddleware().wrapStream` over the same parts, without `streamText`.",
);
print();
print(
  table(
    ["shape", "chunk", ...LAYERS.map(([name]) => name), "TransformStream: distiller / middleware", "distiller push loop / middleware alone"],
    layerRows,
  ),
);
print();
print("Per part, the median over the shapes (time per chunk):");
print();
print(
  table(
    ["chunk", ...LAYERS.map(([name]) => name)],
    CHUNKS.map((size) => [`${size} B`, ...LAYERS.map(([name]) => time(median(perPart.get(size).get(name))))]),
    1,
  ),
);
print();

// 4. The boundary. Two 64 KB texts without `<` (nothing to extract, so llm-distiller's work
// is the crossing): pure ASCII, as a one-byte string (V8 keeps ASCII text it decoded from
// UTF-8 that way), and the "no block" corpus with its `<` replaced, whose em dashes and
// curly quotes make it a UTF-16 string in V8 and multibyte UTF-8 in wasm, like most answers.
progress("boundary");
const flatOneByte = (s) => Buffer.from(s, "latin1").toString("latin1");
const ascii64 = flatOneByte(prose(random(7), 64 * 1024).replace(/[^\x00-\x7f]/g, "e").replaceAll("<", "("));
const asciiBytes = utf8Bytes(ascii64);
const wide64 = corpora.get("no block/64 KB").text.replaceAll("<", "(").split("").join("");
const wideBytes = utf8Bytes(wide64);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const scratch = new Uint8Array(wideBytes * 3);
const asciiUtf8 = encoder.encode(ascii64);
const wideUtf8 = encoder.encode(wide64);
const chunk16 = ascii64.slice(0, 16);
const pushLoop = (chunk) => () => {
  const s = new ThinkingStream();
  let n = 0;
  for (let i = 0; i < 64; i++) n += s.push(chunk).content.length;
  s.free();
  return n;
};
const regexOn = (text) => () => regexExtract(text).content.length;
const [empty, pushEmpty, push16] = await timeTogether([
  [() => distillerOneShot(""), false],
  [pushLoop(""), false],
  [pushLoop(chunk16), false],
]);
const [asciiDistiller, asciiRegex, asciiEncode, asciiLoop, asciiDecode] = await timeTogether([
  [() => distillerOneShot(ascii64), false],
  [regexOn(ascii64), false],
  [() => encoder.encodeInto(ascii64, scratch).written, false],
  [() => {
    // What the wasm-bindgen glue does while a string is ASCII: one charCodeAt per unit.
    let i = 0;
    for (; i < ascii64.length; i++) {
      const c = ascii64.charCodeAt(i);
      if (c > 0x7f) break;
      scratch[i] = c;
    }
    return i;
  }, false],
  [() => decoder.decode(asciiUtf8).length, false],
]);
const [wideDistiller, wideRegex, wideEncode, wideDecode] = await timeTogether([
  [() => distillerOneShot(wide64), false],
  [regexOn(wide64), false],
  [() => encoder.encodeInto(wide64, scratch).written, false],
  [() => decoder.decode(wideUtf8).length, false],
]);
const b = {
  empty: empty.ns,
  pushEmpty: pushEmpty.ns / 64,
  push16: push16.ns / 64,
};
print("## Cost of the boundary");
print();
print(
  "64 KB without `<`, so that llm-distiller has nothing to extract and its time is the crossing: the text written into wasm memory as UTF-8 (`TextEncoder.encodeInto`), checked to be UTF-8 and scanned there; what comes back is the parts' UTF-16 offsets, and the result is slices of the caller's string, so no text is decoded out of wasm. " +
    `ASCII: pure ASCII prose. Prose: the 64 KB "no block" corpus with its \`<\` replaced; its ${(wide64.match(/[^\x00-\x7f]/g) ?? []).length} em dashes, curly quotes and accents make it UTF-16 in V8 and multibyte UTF-8 in wasm, as most model answers are.`,
);
print();
print(
  table(
    ["what", "ASCII: time", "ASCII: MB/s", "prose: time", "prose: MB/s"],
    [
      ["llm-distiller `extractThinking`", time(asciiDistiller.ns), f1(mbps(asciiBytes, asciiDistiller.ns)), time(wideDistiller.ns), f1(mbps(wideBytes, wideDistiller.ns))],
      ["JS regex extractor", time(asciiRegex.ns), f1(mbps(asciiBytes, asciiRegex.ns)), time(wideRegex.ns), f1(mbps(wideBytes, wideRegex.ns))],
      ["the difference: the crossing", time(asciiDistiller.ns - asciiRegex.ns), "", time(wideDistiller.ns - wideRegex.ns), ""],
      ["JS → wasm: `TextEncoder.encodeInto`, how `extractThinking` writes its text", time(asciiEncode.ns), f1(mbps(asciiBytes, asciiEncode.ns)), time(wideEncode.ns), f1(mbps(wideBytes, wideEncode.ns))],
      ["JS → wasm as the glue copies a string argument (`ThinkingStream.push`): a `charCodeAt` loop while ASCII, then `encodeInto`", time(asciiLoop.ns), f1(mbps(asciiBytes, asciiLoop.ns)), time(wideEncode.ns), f1(mbps(wideBytes, wideEncode.ns))],
      ["wasm → JS: `TextDecoder.decode` of the 64 KB (how a `ThinkingStream` delta comes back; `extractThinking` needs none)", time(asciiDecode.ns), f1(mbps(asciiBytes, asciiDecode.ns)), time(wideDecode.ns), f1(mbps(wideBytes, wideDecode.ns))],
    ],
    1,
  ),
);
print();
print(
  `The fixed costs: \`extractThinking("")\` ${time(b.empty)}; \`push("")\` ${time(b.pushEmpty)}; \`push\` of 16 ASCII bytes ${time(b.push16)}, ` +
    `which alone caps 16-byte chunks at ${f1(mbps(16, b.push16))} MB/s. Every push returns a new \`{ content, thinking }\` object whose two strings are each decoded from wasm memory ` +
    `(\`TextDecoder.decode\` of 16 bytes costs ${time((await timePerCall(() => decoder.decode(asciiUtf8.subarray(0, 16)).length, false)).ns)} here).`,
);
print();

// 3. Agreement.
progress("agreement");
function compare(a, b) {
  a ??= "";
  b ??= "";
  if (a === b) return "identical";
  if (a.trim() === b.trim()) return "identical after trimming";
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  const squash = (s) => s.replace(/\s+/g, " ").trim();
  const what = squash(a) === squash(b) ? "same words, whitespace differs" : "DIFFERENT";
  return `${what} (${a.length} vs ${b.length} chars; from char ${i}: ${code(JSON.stringify(a.slice(i, i + 12)))} vs ${code(JSON.stringify(b.slice(i, i + 12)))})`;
}
print("## Agreement");
print();
print("Each result against llm-distiller's one-shot result, on the 64 KB corpora (all blocks are lowercase `<think>`, so all three handle them).");
print();
for (const shape of SHAPES) {
  const { text } = corpora.get(`${shape}/64 KB`);
  const ours = extractThinking(text);
  const sdk = await aiGenerateResult(text);
  const sdkStream = await aiStreamResult(chunked(text, 16));
  const same = (x, y) => x.content === y.content && (x.thinking ?? "") === (y.thinking ?? "");
  print(`- **${shape}** (llm-distiller: unclosed = ${ours.unclosed}; its stream at 16 B and 4096 B gives its one-shot result exactly, checked)`);
  for (const [name, r] of [
    ["JS regex", regexExtract(text)],
    ["AI SDK `generateText`", sdk],
    ["AI SDK `streamText` (16 B)", sdkStream],
  ]) {
    print(`  - ${name}: content ${compare(r.content, ours.content)}; thinking ${compare(r.thinking, ours.thinking)}`);
  }
  print(`  - AI SDK \`streamText\` vs its own \`generateText\`: ${same(sdkStream, sdk) ? "identical" : "DIFFERENT"}`);
}
print();

const PROBES = [
  "<think>x</think>y",
  "<THINK>x</THINK>y",
  "<thinking>x</thinking>y",
  '<think id="1">x</think>y',
  "<think>x</think >y",
  "  <think>\n  x  \n</think>\n\n  y  ",
  "a<think>b</think>c<think>d</think>e",
  "<think></think>y",
  "<think>x",
  "x</think>y",
  "<think/>y",
  "<think-aloud>x</think>y",
  "<think>a<think>b</think>c</think>d",
];
const probeCell = (r) => code(`c=${quoted(r.content)} t=${quoted(r.thinking)}`);
const probeRows = [];
for (const input of PROBES) {
  const ours = extractThinking(input);
  const streamed = distillerStreamText([...input]);
  const streamSame = streamed.content === ours.content && streamed.thinking === ours.thinking;
  probeRows.push([
    code(input),
    probeCell(ours) + (streamSame ? "" : `; stream: ${probeCell(streamed)}`),
    probeCell(regexExtract(input)),
    probeCell(await aiGenerateResult(input)),
    probeCell(await aiStreamResult(chunked(input, 3))),
  ]);
}
print(
  "Edge cases. c = content, t = thinking. llm-distiller's stream (fed 1-character chunks, no options) is shown only where it differs from its one-shot result; the AI SDK stream gets 3-byte chunks.",
);
print();
print(table(["input", "llm-distiller", "JS regex", "AI SDK `generateText`", "AI SDK `streamText`"], probeRows, 5));
print();
print("What the JS regex extractor does not handle, by construction:");
print();
for (const limit of REGEX_LIMITS) print(`- ${limit}`);
print();

// Findings computed from the figures.
const span = (values) => {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[0] === sorted.at(-1) ? ratio(sorted[0], 1) : `${ratio(sorted[0], 1)} to ${ratio(sorted.at(-1), 1)}`;
};
const at16 = streaming.filter((s) => s.size === 16);
const met = at16.filter((s) => s.d / s.a >= 3);
const partsAt16 = perPart.get(16);
const per16 = (name) => median(partsAt16.get(name));
print("## Findings (computed from the figures above)");
print();
print(
  `- Goal, llm-distiller ≥ 3× the AI SDK (\`streamText\` + middleware) at 16-byte chunks: ${met.length === at16.length ? "met" : "NOT met"} in ${met.length} of ${at16.length} cases, ratios ${span(at16.map((s) => s.d / s.a))}.`,
);
print(
  `- Against the middleware alone (no \`streamText\`) at 16 bytes, 64 KB: the push loop is ${span(partsAt16.get("AI SDK middleware alone").map((m, i) => m / partsAt16.get("distiller push loop")[i]))} as fast; ` +
    `in the same TransformStream, llm-distiller is ${span(partsAt16.get("AI SDK middleware alone").map((m, i) => m / partsAt16.get("distiller in TransformStream")[i]))}.`,
);
print(
  `- Per 16-byte part (medians): the mock source ${time(per16("mock source alone"))}, a distiller push ${time(per16("distiller push loop"))}, ` +
    `source + identity TransformStream ${time(per16("source + identity TransformStream"))}, with llm-distiller in the TransformStream ${time(per16("distiller in TransformStream"))}, with the middleware ${time(per16("AI SDK middleware alone"))}, ` +
    `\`streamText\` ${time(per16("`streamText`, no middleware"))} without the middleware and ${time(per16("`streamText` + middleware"))} with it.`,
);
print(
  `- One shot, llm-distiller / JS regex: ${span(oneShot.map((o) => o.md / o.mr))}; llm-distiller / AI SDK \`generateText\`: ${span(oneShot.map((o) => o.md / o.ma))}.`,
);
const losses = [
  ...oneShot.filter((o) => o.md < o.ma).map((o) => `one shot, ${o.shape}, ${o.sizeName}: AI SDK ${f1(o.ma)}, llm-distiller ${f1(o.md)} MB/s`),
  ...streaming.filter((s) => s.d < s.a).map((s) => `streaming ${s.size} B, ${s.shape}, ${s.sizeName}: AI SDK ${f1(s.a)}, llm-distiller ${f1(s.d)} MB/s`),
];
print(`- Where the AI SDK is faster than llm-distiller: ${losses.length ? "" : "nowhere."}`);
for (const loss of losses) print(`  - ${loss}`);
print();
print(`Load average at the end ${os.loadavg()[0].toFixed(2)}; checksum ${checksum}.`);

console.log(out.join("\n"));
