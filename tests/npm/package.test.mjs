// The npm package as a user gets it: `npm pack` of pkg/, installed into an empty ESM
// project, imported as `llm-distiller` by Node programs run in that project, against the
// scripted upstream (tests/upstream). Every program must also exit by itself, promptly.
//
//   node --test tests/npm/            (needs pkg/: scripts/build-pkg.sh)

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startUpstream } from '../upstream/server.mjs';
import { assertDeclared, declaredFields, finished, installPackage, runChild, uniqueKey, upstreamLog } from './support.mjs';

const ERROR_CODES = new Set([
  'rate_limited',
  'timeout',
  'connection',
  'http',
  'invalid_response',
  'config',
  'all_providers_failed',
  'aborted',
]);

const TEST = { timeout: 20_000 };

let installed;
let upstream;

before(async () => {
  installed = await installPackage();
  upstream = await startUpstream({ port: 0, latencyMs: 0 });
}, { timeout: 60_000 });

after(async () => {
  await upstream?.close();
  await installed?.remove();
});

/** Runs `source` in the project with the upstream's URL; asserts a clean exit. */
async function program(name, source, env = {}) {
  const run = await runChild(installed.project, name, source, { env: { UPSTREAM_URL: upstream.url, ...env } });
  return finished(assert, run);
}

/** Asserts the facts every error of the package shares. */
function assertPackageError(facts, code) {
  assert.equal(facts.isError, true, 'an Error instance');
  assert.equal(facts.name, 'LlmDistillerError');
  assert.ok(ERROR_CODES.has(facts.code), `documented code, got ${facts.code}`);
  assert.equal(facts.code, code, facts.message);
  assert.ok(facts.message.length > 0);
  assert.ok(facts.string.startsWith('LlmDistillerError: '), facts.string);
}

test('the package installs and exports its API through package.json "exports"', TEST, async () => {
  assert.ok(installed.packedFiles.includes('llm_distiller_bg.wasm'), installed.packedFiles.join(', '));
  assert.ok(installed.packedFiles.some((f) => f.startsWith('snippets/')), 'the inline JS snippet is packed');

  const result = await program('exports', `
    import * as everything from "llm-distiller";
    import { ProviderManager, RateLimiter, ThinkingStream, CompletionStream, extractThinking, exportRecord } from "llm-distiller";
    import { createRequire } from "node:module";
    import { report } from "./harness.mjs";

    const require = createRequire(import.meta.url);
    let internals;
    try {
      await import("llm-distiller/llm_distiller.js");
      internals = "importable";
    } catch (error) {
      internals = error.code;
    }
    report({
      names: Object.keys(everything).sort(),
      kinds: [ProviderManager, RateLimiter, ThinkingStream, CompletionStream, extractThinking, exportRecord].map((v) => typeof v),
      resolved: import.meta.resolve("llm-distiller"),
      version: require("llm-distiller/package.json").version,
      internals,
    });
  `);
  assert.deepEqual(result.names, ['CompletionStream', 'ProviderManager', 'RateLimiter', 'ThinkingStream', 'exportRecord', 'extractThinking']);
  assert.deepEqual(result.kinds, ['function', 'function', 'function', 'function', 'function', 'function']);
  assert.match(result.resolved, /\/node_modules\/llm-distiller\/node\.js$/, 'Node gets its own entry');
  assert.match(result.version, /^\d+\.\d+\.\d+/);
  assert.equal(result.internals, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'only the entries and "./package.json" are exported');
});

test('extractThinking, ThinkingStream and RateLimiter work without any provider', TEST, async () => {
  const result = await program('offline', `
    import { extractThinking, ThinkingStream, RateLimiter } from "llm-distiller";
    import { report } from "./harness.mjs";

    const text = "<think>2 and 2 make 4.</think>\\nThe answer is 4.";
    const oneShot = extractThinking(text, "First, reasoning.");
    const plain = extractThinking("No thoughts here.");
    const unicode = extractThinking("<think>😀 é \\ud800</think> ß");
    // Every part of an answer at every position, each a slice, against the streaming
    // extractor (which crosses strings in and out): the offsets must land exactly.
    const mixed = "  é😀 <think> 🦀 x\u2003</think>\u2003ü <think>y😀</think> z <think>\\n</think> ✓ ";
    const mixedOneShot = extractThinking(mixed, " \u00a0reasoning ✓\\n");
    const mixedStream = new ThinkingStream();
    let mixedContent = "";
    let mixedThinking = mixedStream.pushReasoning(" \u00a0reasoning ✓\\n").thinking;
    for (const character of mixed) {
      const d = mixedStream.push(character);
      mixedContent += d.content;
      mixedThinking += d.thinking;
    }
    const last = mixedStream.finish();
    const typeErrorOf = (call) => {
      try {
        call();
        return "no error";
      } catch (error) {
        return error instanceof TypeError ? error.message : \`\${error}\`;
      }
    };
    const wrongTypes = [[42], [null], ["text", 42]].map((args) => typeErrorOf(() => extractThinking(...args)));
    const wrongStreamTypes = [
      typeErrorOf(() => new ThinkingStream().push(42)),
      typeErrorOf(() => new ThinkingStream().push(["a"])),
      typeErrorOf(() => new ThinkingStream().pushReasoning(null)),
    ];
    const afterwards = extractThinking("<think>a</think>b");

    const stream = new ThinkingStream();
    let content = "";
    let thinking = "";
    const add = (delta) => { content += delta.content; thinking += delta.thinking; };
    add(stream.pushReasoning("First, reasoning."));
    for (const character of text) add(stream.push(character));
    add(stream.finish());

    const prefilled = new ThinkingStream({ starts_in_thinking: true, tags: ["think"] });
    const a = prefilled.push("still thinking");
    const openBeforeClose = prefilled.unclosed;
    const b = prefilled.push("</think>done");
    const c = prefilled.finish();

    const limiter = new RateLimiter({ requests_per_minute: 2, tokens_per_minute: 1000, requests_refill: "window" });
    const waits = [limiter.reserveWait(10, 0), limiter.reserveWait(10, 0), limiter.reserveWait(10, 0)];
    const reservation = limiter.reserve(10, 1000);
    limiter.cancel(reservation);

    report({
      oneShot, plain, unicode, wrongTypes, wrongStreamTypes, afterwards,
      mixed: { oneShot: mixedOneShot, streamed: { content: mixedContent + last.content, thinking: mixedThinking + last.thinking } }, streamed: { content, thinking, unclosed: stream.unclosed },
      prefilled: { content: a.content + b.content + c.content, thinking: a.thinking + b.thinking + c.thinking, openBeforeClose },
      waits, reservation, status: limiter.status(1000),
    });
  `);
  assert.deepEqual(result.oneShot, {
    content: 'The answer is 4.',
    thinking: 'First, reasoning.\n\n2 and 2 make 4.',
    unclosed: false,
  });
  assert.deepEqual(result.plain, { content: 'No thoughts here.', thinking: null, unclosed: false });
  // The parts are slices of the caller's string: even a lone surrogate comes back as it was
  // (a string crossing into wasm would have turned it into U+FFFD).
  assert.deepEqual(result.unicode, { content: 'ß', thinking: '😀 é \ud800', unclosed: false });
  assert.deepEqual(result.wrongTypes, [
    'extractThinking: text must be a string, got number',
    'extractThinking: text must be a string, got null',
    'extractThinking: separateReasoning must be a string, null or undefined, got number',
  ]);
  assert.deepEqual(result.mixed.oneShot, {
    content: 'é😀 \u2003ü  z  ✓',
    thinking: 'reasoning ✓\n\n🦀 x\n\ny😀',
    unclosed: false,
  });
  assert.deepEqual(result.mixed.streamed, { content: result.mixed.oneShot.content, thinking: result.mixed.oneShot.thinking });
  assert.deepEqual(result.wrongStreamTypes, [
    'ThinkingStream.push: chunk must be a string, got number',
    'ThinkingStream.push: chunk must be a string, got an array',
    'ThinkingStream.pushReasoning: chunk must be a string, got null',
  ]);
  assert.deepEqual(result.afterwards, { content: 'b', thinking: 'a', unclosed: false });
  assert.deepEqual(result.streamed, {
    content: result.oneShot.content,
    thinking: result.oneShot.thinking,
    unclosed: false,
  });
  assert.deepEqual(result.prefilled, { content: 'done', thinking: 'still thinking', openBeforeClose: true });
  assert.deepEqual(result.waits.slice(0, 2), [0, 0]);
  assert.equal(result.waits[2], 60_000, 'the third request in one minute waits for the window');
  for (const field of ['id', 'tokens', 'wait_ms', 'start_at_ms', 'reserved_through']) {
    assert.equal(typeof result.reservation[field], 'number', field);
  }
  assert.equal(result.status.max_requests_per_minute, 2);
  assert.equal(result.status.max_tokens_per_minute, 1000);
});

test('exportRecord shapes an answer kept by the user as the Worker\'s export does', TEST, async () => {
  const key = uniqueKey('export');
  const result = await program('export', `
    import { ProviderManager, exportRecord } from "llm-distiller";
    import { baseUrl, report } from "./harness.mjs";

    // An answer from the package itself, with the request beside it.
    const manager = new ProviderManager({
      providers: { local: { type: "custom", base_url: baseUrl("normal", ${JSON.stringify(key)}), model: "test-model" } },
    });
    const config = { system_prompt: "Be brief.", max_tokens: 50 };
    const response = await manager.generate("What is 2+2?", config);
    const kept = { ...response, request: { prompt: "What is 2+2?", config } };
    const records = {};
    for (const format of ["openai_chat", "sharegpt", "flat"]) {
      for (const reasoning of ["field", "inline", "none"]) {
        records[format + "/" + reasoning] = exportRecord(kept, { format, reasoning });
      }
    }
    // A row as the Worker stores it (D1's 0/1 and the request as text), left out as
    // incomplete unless asked, and the defaults.
    const row = {
      id: "rsp_0194bd5c1a00aaaaaaaabbbbbbbb", created_at: 1738339200000, provider: "main", model: "m",
      request: JSON.stringify({ messages: [{ role: "user", content: "Hi" }] }),
      content: "Hello", thinking: "Greet", truncated: 1, reason: null,
    };
    const errorOf = (call) => {
      try {
        call();
        return null;
      } catch (error) {
        return { name: error.name, code: error.code, field: error.field, message: error.message };
      }
    };
    report({
      response: { id: response.id, content: response.content, thinking: response.thinking, usage: response.usage, provider: response.provider, model: response.model },
      records,
      incomplete: exportRecord(row),
      kept: exportRecord(row, { include_incomplete: true }),
      flat: exportRecord(row, { format: "flat" }),
      unreadable: errorOf(() => exportRecord({ request: "{", content: "x" })),
      unreadableFlat: exportRecord({ request: "{", content: "x" }, { format: "flat" }).export_error,
      wrongOption: errorOf(() => exportRecord(row, { format: "xml" })),
      unknownOption: errorOf(() => exportRecord(row, { formats: "flat" })),
      noRequest: errorOf(() => exportRecord({ content: "x" })),
      notInline: exportRecord({ ...row, truncated: 0, thinking: "a </think> b" }, { reasoning: "inline" }),
    });
  `);
  const { id, content, thinking, usage, provider, model } = result.response;
  assert.ok(thinking, 'the upstream answer has thinking');
  const [system, user] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'What is 2+2?' }];
  const inline = `<think>\n${thinking}\n</think>\n\n${content}`;
  assert.deepEqual(result.records['openai_chat/field'], { messages: [system, user, { role: 'assistant', content, reasoning_content: thinking }] });
  assert.deepEqual(result.records['openai_chat/inline'], { messages: [system, user, { role: 'assistant', content: inline }] });
  assert.deepEqual(result.records['openai_chat/none'], { messages: [system, user, { role: 'assistant', content }] });
  const turns = [{ from: 'system', value: 'Be brief.' }, { from: 'human', value: 'What is 2+2?' }];
  assert.deepEqual(result.records['sharegpt/field'], { conversations: [...turns, { from: 'gpt', value: content, reasoning: thinking }] });
  assert.deepEqual(result.records['sharegpt/inline'], { conversations: [...turns, { from: 'gpt', value: inline }] });
  assert.deepEqual(result.records['sharegpt/none'], { conversations: [...turns, { from: 'gpt', value: content }] });
  // An LlmResponse's id is the upstream's: the record keeps it.
  const flat = { id, created_at: null, provider, model, messages: [system, user], thinking, content,
    finish_reason: 'stop', usage, truncated: false, batch_id: null, custom_id: null };
  for (const reasoning of ['field', 'inline', 'none']) assert.deepEqual(result.records[`flat/${reasoning}`], flat);

  assert.equal(result.incomplete, null, 'a row cut to fit D1 is left out of the training formats');
  assert.deepEqual(result.kept, { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello', reasoning_content: 'Greet' }] });
  assert.equal(result.flat.created_at, 1738339200000);
  assert.equal(result.flat.truncated, true);
  assert.equal(result.notInline, null, 'a closing tag in the thinking cannot go inline');
  for (const [name, field] of [['unreadable', 'row.request'], ['wrongOption', 'options.format'], ['unknownOption', 'options.formats'], ['noRequest', 'row']]) {
    const error = result[name];
    assert.ok(error, `${name} throws`);
    assert.equal(error.name, 'LlmDistillerError', name);
    assert.equal(error.code, 'config', name);
    assert.equal(error.field, field, `${name}: ${error.message}`);
  }
  assert.match(result.unreadable.message, /the stored request cannot be read: request/);
  assert.match(result.wrongOption.message, /unknown variant `xml`, expected one of `openai_chat`, `sharegpt`, `flat`/);
  assert.match(result.unreadableFlat, /^the stored request cannot be read: /);
});

test('generate returns the answer, its thinking, usage and the raw response', TEST, async () => {
  const key = uniqueKey('generate');
  const result = await program('generate', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: { local: { type: "custom", base_url: baseUrl("normal", ${JSON.stringify(key)}), model: "test-model" } },
    });
    const text = await manager.generate("What is 2 + 2?");
    const messages = await manager.generate(
      [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hello?" },
        { role: "assistant", content: "Hi." },
        { role: "user", content: [{ type: "text", text: "What is 3 + 3?" }] },
      ],
      { temperature: 0, max_tokens: 50, seed: 7 },
      "local",
      {},
    );
    const withSystem = await manager.generate("Why?", { system_prompt: "You are terse." }, null, null);
    report({ text, messages, withSystem, providers: manager.listProviders(), defaultProvider: manager.defaultProvider });
  `);

  const { text, messages, withSystem } = result;
  // What comes back is what the declarations (derived from the Rust types) say.
  assertDeclared(assert, text, declaredFields(installed.packageDir, 'LlmResponse'), 'response');
  assertDeclared(assert, text.usage, declaredFields(installed.packageDir, 'Usage'), 'usage');
  assert.equal(text.content, 'Answer to: What is 2 + 2?');
  assert.equal(text.reasoning, 'Reasoning about: What is 2 + 2?');
  assert.equal(text.thinking, 'Reasoning about: What is 2 + 2?\n\nThinking about: What is 2 + 2?');
  assert.equal(text.thinking_unclosed, false);
  assert.equal(text.model, 'test-model');
  assert.equal(text.finish_reason, 'stop');
  assert.equal(text.provider, 'local');
  assert.equal(text.attempts, 1);
  assert.match(text.id, /^chatcmpl-\d+$/);
  assert.equal(typeof text.response_time_ms, 'number');
  assert.ok(text.response_time_ms >= 0);
  assert.equal(text.response_time, text.response_time_ms / 1000, "the design's response_time, in seconds");
  assert.equal(typeof text.waited_ms, 'number');
  const { prompt_tokens, completion_tokens, total_tokens } = text.usage;
  assert.ok(prompt_tokens > 0 && completion_tokens > 0, JSON.stringify(text.usage));
  assert.equal(total_tokens, prompt_tokens + completion_tokens);
  assert.equal(text.raw_response.id, text.id);
  assert.equal(text.raw_response.choices[0].message.content, '<think>Thinking about: What is 2 + 2?</think>\nAnswer to: What is 2 + 2?');
  assert.equal(text.raw_response.choices[0].message.reasoning_content, text.reasoning);

  assert.equal(messages.content, 'Answer to: What is 3 + 3?');
  assert.equal(withSystem.content, 'Answer to: Why?');
  assert.deepEqual(result.providers, ['local']);
  assert.equal(result.defaultProvider, 'local');

  const log = await upstreamLog(upstream, key);
  assert.equal(log.length, 3);
  assert.deepEqual(log[1].body.messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello?' },
    { role: 'assistant', content: 'Hi.' },
    { role: 'user', content: [{ type: 'text', text: 'What is 3 + 3?' }] },
  ]);
  assert.equal(log[1].body.temperature, 0);
  assert.equal(log[1].body.max_tokens, 50);
  assert.equal(log[1].body.seed, 7, 'an unknown OpenAI parameter passes through');
  assert.deepEqual(log[2].body.messages, [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Why?' },
  ]);
});

test('generate retries a 429 after the retry-after-ms the server asked for', TEST, async () => {
  const key = uniqueKey('retry');
  const result = await program('retry', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: { local: { type: "custom", base_url: baseUrl("rate_limited_then_ok:2", ${JSON.stringify(key)}), model: "m" } },
    });
    report(await manager.generate("again"));
  `);
  assert.equal(result.content, 'Answer to: again');
  assert.equal(result.attempts, 3);
  assert.ok(result.waited_ms >= 2 * 300, `waited ${result.waited_ms} ms`);
  const log = await upstreamLog(upstream, key);
  assert.equal(log.length, 3);
  for (let i = 1; i < log.length; i++) {
    assert.ok(log[i].at_ms - log[i - 1].at_ms >= 290, `retry ${i} came ${log[i].at_ms - log[i - 1].at_ms} ms after the 429`);
  }
});

/** A child program that streams one question from each scenario and reports the items,
 * when each came, and the one-shot extraction of the assembled raw answer. */
function streamProgram(key, scenarios) {
  return `
    import { ProviderManager, extractThinking } from "llm-distiller";
    import { baseUrl, report } from "./harness.mjs";

    const scenarios = ${JSON.stringify(scenarios)};
    const providers = {};
    for (const scenario of scenarios) {
      providers[scenario] = { type: "custom", base_url: baseUrl(scenario, ${JSON.stringify(key)}), model: "m" };
    }
    const manager = new ProviderManager({ providers });
    const results = {};
    for (const scenario of scenarios) {
      const items = [];
      const times = [];
      for await (const item of manager.stream("What is 2 + 2?", { max_tokens: 100 }, scenario)) {
        items.push(item);
        times.push(performance.now());
      }
      const done = items.at(-1).response;
      const message = done.raw_response.choices[0].message;
      results[scenario] = {
        items,
        times,
        oneShot: extractThinking(message.content, message.reasoning_content ?? null),
      };
    }
    report(results);
  `;
}

test('stream yields deltas that add up to the one-shot extraction, then the response', TEST, async () => {
  const key = uniqueKey('stream');
  // `demo` sends a word every 20 ms; the others as fast as they can, `stream_split` in
  // pieces of 1-3 bytes (how many reads the client sees depends on the socket).
  const scenarios = ['normal', 'stream_split', 'stream_split:utf8', 'demo'];
  const results = await program('stream', streamProgram(key, scenarios));

  for (const scenario of scenarios) {
    const { items, oneShot } = results[scenario];
    const deltas = items.slice(0, -1);
    const last = items.at(-1);
    assert.ok(deltas.length >= 1, scenario);
    for (const item of deltas) {
      assert.deepEqual(Object.keys(item).sort(), ['content', 'thinking', 'type'], scenario);
      assert.equal(item.type, 'delta', scenario);
      assert.equal(typeof item.content, 'string');
      assert.equal(typeof item.thinking, 'string');
    }
    assert.equal(last.type, 'done', scenario);
    assert.equal(last.content, '');
    assert.equal(last.thinking, '');

    const content = deltas.map((d) => d.content).join('');
    const thinking = deltas.map((d) => d.thinking).join('');
    assert.equal(content, oneShot.content, `${scenario}: the content deltas add up`);
    assert.equal(thinking, oneShot.thinking ?? '', `${scenario}: the thinking deltas add up`);
    assert.equal(last.response.content, oneShot.content, scenario);
    assert.equal(last.response.thinking, oneShot.thinking, scenario);
    assert.equal(last.response.provider, scenario);
    assert.equal(last.response.finish_reason, 'stop');
    assert.equal(last.response.thinking_unclosed, false);
    assert.ok(last.response.usage.total_tokens > 0, scenario);
  }

  assert.equal(results.normal.items.at(-1).response.content, 'Answer to: What is 2 + 2?');
  assert.equal(results.normal.items.at(-1).response.reasoning, 'Reasoning about: What is 2 + 2?');
  const split = results.stream_split.items.at(-1).response;
  assert.equal(split.content, 'The answer is 4.');
  assert.equal(split.thinking, 'step one, step two');
  const utf8 = results['stream_split:utf8'].items.at(-1).response;
  assert.equal(utf8.content, 'The answer is 4 ✓ (½ of 8) 🎉');
  assert.equal(utf8.thinking, 'step one → step two');

  // Deltas come as the answer arrives, not all at the end.
  const demo = results.demo;
  assert.ok(demo.items.length > 10, `demo: ${demo.items.length - 1} deltas`);
  const spread = demo.times.at(-2) - demo.times[0];
  assert.ok(spread > 500, `demo: the deltas came within ${spread} ms of each other`);
  assert.match(demo.items.at(-1).response.content, /\(demo upstream\)$/);

  const log = await upstreamLog(upstream, key);
  assert.equal(log.length, scenarios.length);
  for (const entry of log) {
    assert.equal(entry.body.stream, true);
    assert.deepEqual(entry.body.stream_options, { include_usage: true });
  }
});

test('a streamed response carries the upstream id even when the stream opens with an Azure prelude', {
  ...TEST,
  // Package bug: src/stream.rs takes the id of the first chunk (`self.id.take().or(chunk.id)`),
  // and Azure's prelude chunk has `id: ""`, so every Azure stream answers `id: ""`.
}, async () => {
  const key = uniqueKey('stream-id');
  const results = await program('stream-id', streamProgram(key, ['normal', 'stream_split']));
  assert.match(results.normal.items.at(-1).response.id, /^chatcmpl-\d+$/);
  assert.match(results.stream_split.items.at(-1).response.id, /^chatcmpl-\d+$/);
});

test('breaking out of a stream early aborts the request and lets the process exit', TEST, async () => {
  const key = uniqueKey('stream-break');
  // `demo` streams for about 1.5 s (a word every 20 ms): a request left running after the
  // break would hold the process well past EXIT_LAG_LIMIT_MS.
  const result = await program('stream-break', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: { demo: { type: "custom", base_url: baseUrl("demo", ${JSON.stringify(key)}), model: "m" } },
    });
    const started = performance.now();
    const stream = manager.stream("Tell me a story.");
    let first;
    for await (const item of stream) {
      first = item;
      break;
    }
    const afterBreak = await stream.next();
    report({ first, afterBreak, ms: performance.now() - started });
  `);
  assert.equal(result.first.type, 'delta');
  assert.deepEqual(result.afterBreak, { done: true }, 'the stream is finished after the break');
  assert.ok(result.ms < 1000, `the loop ended after ${result.ms} ms`);
});

test('generateBatch: results in prompt order, progress, bounded concurrency, per-item errors', TEST, async () => {
  const slowKey = uniqueKey('batch-slow');
  const mixedKey = uniqueKey('batch-mixed');
  const result = await program('batch', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, errorFacts, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: {
        slow: { type: "custom", base_url: baseUrl("slow:300", ${JSON.stringify(slowKey)}), model: "m" },
        limited: {
          type: "custom",
          base_url: baseUrl("rate_limited_then_ok:1", ${JSON.stringify(mixedKey)}),
          model: "m",
          retry: { max_retries: 0 },
        },
      },
    });
    const progress = [];
    const items = await manager.generateBatch(
      ["p0", "p1", [{ role: "user", content: "p2" }], "p3"],
      { max_tokens: 20 },
      {
        concurrency: 2,
        provider: "slow",
        onProgress: (done, total, item) => progress.push({ done, total, ok: item.ok, content: item.response?.content }),
      },
    );

    const mixed = await manager.generateBatch(["first", "second", []], null, { concurrency: 1, provider: "limited" });
    const plain = await manager.generateBatch(["defaults"]);
    const describe = (item) => (item.ok ? { ok: true, content: item.response.content } : { ok: false, error: errorFacts(item.error) });
    report({
      items: items.map(describe),
      progress,
      mixed: mixed.map(describe),
      plain: plain.map(describe),
    });
  `);

  assert.deepEqual(result.items, [0, 1, 2, 3].map((i) => ({ ok: true, content: `Answer to: p${i}` })));
  assert.deepEqual(result.progress.map((p) => p.done), [1, 2, 3, 4]);
  for (const p of result.progress) {
    assert.equal(p.total, 4);
    assert.equal(p.ok, true);
    assert.match(p.content, /^Answer to: p\d$/);
  }
  assert.deepEqual(result.progress.map((p) => p.content).sort(), result.items.map((i) => i.content).sort());

  // Concurrency 2 against a 300 ms upstream: two requests at once, the next two after.
  const slowLog = await upstreamLog(upstream, slowKey);
  const arrivals = slowLog.filter((e) => /^p\d$/.test(e.body.messages.at(-1).content)).map((e) => e.at_ms).sort((a, b) => a - b);
  assert.equal(arrivals.length, 4);
  assert.ok(arrivals[1] - arrivals[0] < 200, `the second request started with the first: ${arrivals}`);
  assert.ok(arrivals[2] - arrivals[0] >= 250, `the third request waited for a free slot: ${arrivals}`);

  const [failed, second, empty] = result.mixed;
  assert.equal(failed.ok, false);
  assertPackageError(failed.error, 'rate_limited');
  assert.equal(failed.error.status, 429);
  assert.equal(failed.error.provider, 'limited');
  assert.deepEqual(second, { ok: true, content: 'Answer to: second' });
  assert.equal(empty.ok, false);
  assertPackageError(empty.error, 'config');
  assert.equal(empty.error.field, 'messages');

  assert.deepEqual(result.plain, [{ ok: true, content: 'Answer to: defaults' }]);
  assert.equal(slowLog.at(-1).body.messages[0].content, 'defaults', 'without options, the default provider answers');
});

test('errors are LlmDistillerError objects with a documented code and their fields', TEST, async () => {
  const key = uniqueKey('errors');
  const secret = `sk-proj-${key}-SECRET0123456789abcdef`;
  const result = await program('errors', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, errorFacts, rejection, report } from "./harness.mjs";

    const key = ${JSON.stringify(key)};
    const once = { max_retries: 0 };
    const provider = (scenario, extra = {}) => ({ type: "custom", base_url: baseUrl(scenario, key), model: "m", retry: once, ...extra });
    const manager = new ProviderManager({
      providers: {
        limited: provider("rate_limited_then_ok:5"),
        failing: provider("server_error"),
        gateway: provider("bad_gateway"),
        malformed: provider("malformed"),
        unreachable: { type: "custom", base_url: "http://127.0.0.1:9/v1", model: "m", retry: once },
        leaky: provider("echo_key_error", { type: "openai", api_key: ${JSON.stringify(secret)} }),
        normal: provider("normal"),
      },
    });

    let badConfig;
    try {
      new ProviderManager({
        providers: { local: { type: "custom", base_url: baseUrl("normal", key), rate_limit: { requests_per_minute: 0 } } },
      });
    } catch (error) {
      badConfig = errorFacts(error);
    }
    let badDefault;
    try {
      new ProviderManager({ providers: { local: provider("normal") }, default_provider: "nowhere" });
    } catch (error) {
      badDefault = errorFacts(error);
    }

    report({
      limited: await rejection(manager.generate("x", null, "limited")),
      failing: await rejection(manager.generate("x", null, "failing")),
      gateway: await rejection(manager.generate("x", null, "gateway")),
      malformed: await rejection(manager.generate("x", null, "malformed")),
      unreachable: await rejection(manager.generate("x", null, "unreachable")),
      leaky: await rejection(manager.generate("x", null, "leaky")),
      failover: await rejection(manager.generateWithFailover("x", null, ["failing", "leaky"])),
      unknownProvider: await rejection(manager.generate("x", null, "nobody")),
      // A bad argument throws synchronously (not a rejected promise): wrapped to catch both.
      badPrompt: await rejection(Promise.resolve().then(() => manager.generate(42))),
      // Arguments of the wrong type: a clear error, and the module keeps working.
      badProvider: await rejection(Promise.resolve().then(() => manager.generate("x", null, 42))),
      badOrder: await rejection(Promise.resolve().then(() => manager.generateWithFailover("x", null, "failing"))),
      badOrderItem: await rejection(Promise.resolve().then(() => manager.generateWithFailover("x", null, ["failing", 7]))),
      badStreamProvider: await rejection(Promise.resolve().then(() => manager.stream("x", null, {}))),
      stillWorks: (await manager.generate("x", null, "normal")).provider,
      badConfig,
      badDefault,
      status: JSON.stringify(manager.providerStatus()),
    });
  `);

  assertPackageError(result.limited, 'rate_limited');
  assert.equal(result.limited.status, 429);
  assert.equal(result.limited.retryAfterMs, 300);
  assert.equal(result.limited.provider, 'limited');

  assertPackageError(result.failing, 'http');
  assert.equal(result.failing.status, 500);
  assert.equal(result.failing.provider, 'failing');
  assert.equal(result.failing.retryAfterMs, undefined);

  assertPackageError(result.gateway, 'http');
  assert.equal(result.gateway.status, 502);

  assertPackageError(result.malformed, 'invalid_response');
  assert.equal(result.malformed.provider, 'malformed');

  assertPackageError(result.unreachable, 'connection');
  assert.equal(result.unreachable.provider, 'unreachable');
  assert.equal(result.unreachable.status, undefined);

  assertPackageError(result.badConfig, 'config');
  assert.equal(result.badConfig.field, 'providers.local.rate_limit.requests_per_minute');
  assertPackageError(result.badDefault, 'config');
  assert.equal(result.badDefault.field, 'default_provider');
  assertPackageError(result.unknownProvider, 'config');
  assert.match(result.unknownProvider.message, /nobody/);
  assertPackageError(result.badPrompt, 'config');
  assert.equal(result.badPrompt.field, 'prompt');
  for (const [name, field] of [
    ['badProvider', 'provider'],
    ['badOrder', 'order'],
    ['badOrderItem', 'order[1]'],
    ['badStreamProvider', 'provider'],
  ]) {
    assertPackageError(result[name], 'config');
    assert.equal(result[name].field, field, name);
    assert.match(result[name].message, /invalid type/, name);
  }
  assert.equal(result.stillWorks, 'normal');

  assertPackageError(result.failover, 'all_providers_failed');
  assert.deepEqual(result.failover.errors.map((e) => [e.provider, e.error.code, e.error.status]), [
    ['failing', 'http', 500],
    ['leaky', 'http', 401],
  ]);
  for (const entry of result.failover.errors) assertPackageError(entry.error, 'http');

  // The upstream quotes the key back; the package must not pass it on anywhere.
  assertPackageError(result.leaky, 'http');
  assert.equal(result.leaky.status, 401);
  assert.match(result.leaky.message, /Incorrect API key provided/);
  const leaks = {
    message: result.leaky.message,
    String: result.leaky.string,
    'JSON.stringify': result.leaky.json,
    'util.inspect': result.leaky.inspected,
    stack: result.leaky.stack,
    'failover message': result.failover.message,
    'failover util.inspect': result.failover.inspected,
    providerStatus: result.status,
  };
  for (const [where, text] of Object.entries(leaks)) {
    assert.ok(!text.includes(secret), `the API key leaks in ${where}: ${text}`);
    assert.ok(!text.includes('SECRET0123456789'), `part of the API key leaks in ${where}: ${text}`);
  }
});

test('an AbortSignal cancels a call at once, and the request with it', TEST, async () => {
  const key = uniqueKey('abort');
  const result = await program('abort', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, rejection, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: {
        slow: { type: "custom", base_url: baseUrl("slow:3000", ${JSON.stringify(key)}), model: "m" },
        demo: { type: "custom", base_url: baseUrl("demo", ${JSON.stringify(key)}), model: "m" },
      },
    });

    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const running = await rejection(manager.generate("x", null, "slow", { signal: controller.signal }));

    const already = await rejection(manager.generate("x", null, "slow", { signal: AbortSignal.abort() }));

    const streamController = new AbortController();
    const stream = manager.stream("Tell me a story.", null, "demo", { signal: streamController.signal });
    const first = await stream.next();
    streamController.abort();
    const abortedStream = await rejection(stream.next());

    report({ running, already, first, abortedStream });
  `);
  assertPackageError(result.running, 'aborted');
  assert.ok(result.running.ms < 1000, `rejected after ${result.running.ms} ms`);
  assertPackageError(result.already, 'aborted');
  assert.ok(result.already.ms < 1000, `rejected after ${result.already.ms} ms`);
  assert.equal(result.first.value.type, 'delta');
  assertPackageError(result.abortedStream, 'aborted');
});

test('timeout_ms fails an attempt with code "timeout"', TEST, async () => {
  const key = uniqueKey('timeout');
  const result = await program('timeout', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, rejection, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: {
        perCall: { type: "custom", base_url: baseUrl("slow:3000", ${JSON.stringify(key)}), model: "m", retry: { max_retries: 0 } },
        configured: { type: "custom", base_url: baseUrl("slow:3000", ${JSON.stringify(key)}), model: "m", retry: { max_retries: 0 }, timeout_ms: 200 },
      },
    });
    report({
      perCall: await rejection(manager.generate("x", null, "perCall", { timeout_ms: 200 })),
      configured: await rejection(manager.generate("x", null, "configured")),
    });
  `);
  for (const name of ['perCall', 'configured']) {
    const facts = result[name];
    assertPackageError(facts, 'timeout');
    assert.equal(facts.provider, name);
    assert.ok(facts.ms >= 190 && facts.ms < 1500, `${name} timed out after ${facts.ms} ms`);
  }
});

test('an empty api_key is read from OPENAI_API_KEY in process.env', TEST, async () => {
  const key = uniqueKey('env');
  const source = `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: { openai: { type: "openai", api_key: "", base_url: baseUrl("auth", ${JSON.stringify(key)}), model: "gpt-4o" } },
    });
    const response = await manager.generate("Who am I?");
    report({ content: response.content, status: manager.providerStatus() });
  `;
  const result = await program('env-key', source, { OPENAI_API_KEY: `sk-from-env-${key}` });
  assert.equal(result.content, 'Answer to: Who am I?', 'the `auth` scenario accepted the bearer token');
  assert.equal(result.status.openai.available, true);
  assert.ok(!JSON.stringify(result.status).includes('sk-from-env'), 'the key is not in providerStatus()');
  const [entry] = await upstreamLog(upstream, key);
  assert.equal(entry.headers.authorization, 'present');
});

test('without OPENAI_API_KEY the provider is unavailable, with the reason, and others still work', TEST, async () => {
  const key = uniqueKey('no-env');
  const result = await program('no-env-key', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, rejection, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: {
        openai: { type: "openai", base_url: baseUrl("auth", ${JSON.stringify(key)}), model: "gpt-4o" },
        local: { type: "custom", base_url: baseUrl("normal", ${JSON.stringify(key)}), model: "m" },
      },
    });
    report({
      status: manager.providerStatus(),
      providers: manager.listProviders(),
      local: (await manager.generate("Still here?", null, "local")).content,
      openai: await rejection(manager.generate("Still here?", null, "openai")),
    });
  `);
  assert.deepEqual(Object.keys(result.status), ['openai', 'local'], 'keyed by name, in configuration order');
  const { openai, local } = result.status;
  assert.equal(openai.name, 'openai');
  assert.equal(openai.type, 'openai');
  assert.equal(openai.model, 'gpt-4o');
  assert.equal(openai.available, false);
  assert.match(openai.reason, /OPENAI_API_KEY/);
  assert.equal(openai.rate_limiter, null);
  assert.equal(local.available, true);
  assert.equal(local.reason, null);
  assert.deepEqual(result.providers, ['local']);
  assert.equal(result.local, 'Answer to: Still here?');
  assertPackageError(result.openai, 'config');
  assert.match(result.openai.message, /OPENAI_API_KEY/);
  const log = await upstreamLog(upstream, key);
  assert.deepEqual(log.map((e) => e.scenario), ['normal'], 'nothing was sent without a key');
});

test('concurrent calls share the provider\'s rate limiter', TEST, async () => {
  const key = uniqueKey('limiter');
  // 600,000 tokens per minute refill at 10,000 per second. Two calls of 305,000 tokens
  // (plus the prompt's) overdraw the budget by a little over 10,000: the second must wait
  // about one second.
  const result = await program('limiter', `
    import { ProviderManager } from "llm-distiller";
    import { baseUrl, report } from "./harness.mjs";

    const manager = new ProviderManager({
      providers: {
        local: {
          type: "custom",
          base_url: baseUrl("normal", ${JSON.stringify(key)}),
          model: "m",
          rate_limit: { tokens_per_minute: 600000 },
        },
      },
    });
    const before = manager.providerStatus().local.rate_limiter;
    const [a, b] = await Promise.all([
      manager.generate("first", { max_tokens: 305000 }),
      manager.generate("second", { max_tokens: 305000 }),
    ]);
    report({ waited: [a.waited_ms, b.waited_ms], before, after: manager.providerStatus().local.rate_limiter });
  `);
  const log = await upstreamLog(upstream, key);
  assert.equal(log.length, 2);
  const gap = log[1].at_ms - log[0].at_ms;
  assert.ok(gap >= 800 && gap <= 3000, `the second request reached the server ${gap} ms after the first`);
  assert.ok(Math.min(...result.waited) < 100 && Math.max(...result.waited) >= 800, `waited_ms ${result.waited}`);

  const fields = declaredFields(installed.packageDir, 'RateLimitStatus');
  assert.equal(fields.blocked_until_ms, 'null|number', 'the declarations are read');
  assertDeclared(assert, result.before, fields, 'status before');
  assertDeclared(assert, result.after, fields, 'status after');
  assert.equal(result.before.max_tokens_per_minute, 600_000);
  assert.equal(result.before.max_requests_per_minute, 60);
  assert.equal(result.before.api_tokens_per_minute, null, 'nothing observed yet');
  assert.equal(result.after.requests_per_minute, 2);
  assert.equal(result.after.in_flight, 0);
  assert.equal(result.after.api_tokens_per_minute, 1_000_000, 'adapted to the x-ratelimit-* headers');
  assert.equal(result.after.effective_tokens_per_minute, 600_000, 'the configured limit is the stricter');
});
