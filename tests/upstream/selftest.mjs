// The upstream's own tests: every scenario, the control endpoints, CORS and the process
// behaviour (clean shutdown, no leaked timers), through plain `fetch` and `node:http` as a
// client would see them. Run: node --test tests/upstream/

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { parseSse } from '../support/local-stack.mjs';
import { goDuration, startUpstream } from './server.mjs';

const SERVER_PATH = fileURLToPath(new URL('./server.mjs', import.meta.url));
const T = { timeout: 10_000 };

let upstream;
before(async () => {
  upstream = await startUpstream();
});
after(async () => {
  await upstream?.close();
});

// ---------------------------------------------------------------------------------------
// Helpers

let keyCount = 0;
/** A fresh key per use, so every test starts with its own counters, buckets and log. */
function freshKey(label) {
  keyCount += 1;
  return `${label}-${keyCount}`;
}

const openaiUrl = (scenario, key) => `${upstream.url}/s/${scenario}/${key}/v1/chat/completions`;
const azureUrl = (scenario, key, deployment = 'gpt-4o-dep', query = '?api-version=2024-10-21') =>
  `${upstream.url}/s/${scenario}/${key}/openai/deployments/${deployment}/chat/completions${query}`;

function userBody(prompt, extra = {}) {
  return { model: 'gpt-test', messages: [{ role: 'user', content: prompt }], ...extra };
}

function post(url, body, { headers = {}, signal } = {}) {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal,
  });
}

async function postJson(url, body, options) {
  const res = await post(url, body, options);
  return { res, json: await res.json() };
}

/** Reads a streamed answer into its JSON chunks, checking the `[DONE]` terminator. */
async function readStream(res) {
  const text = await res.text();
  const { events, comments } = parseSse(text);
  assert.equal(events.at(-1), '[DONE]', 'a stream ends with data: [DONE]');
  return { text, comments, chunks: events.slice(0, -1).map((event) => JSON.parse(event)) };
}

function deltas(chunks, field) {
  return chunks
    .flatMap((chunk) => chunk.choices.map((choice) => choice.delta?.[field]))
    .filter((value) => typeof value === 'string' && value !== '');
}

function assertOpenAiError(json, { type, code } = {}) {
  assert.deepEqual(Object.keys(json.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof json.error.message, 'string');
  if (type !== undefined) assert.equal(json.error.type, type);
  if (code !== undefined) assert.equal(json.error.code, code);
}

function assertCompletionShape(json) {
  assert.match(json.id, /^chatcmpl-\d+$/);
  assert.equal(json.object, 'chat.completion');
  assert.ok(Number.isInteger(json.created));
  assert.equal(typeof json.model, 'string');
  assert.equal(json.choices.length, 1);
  const [choice] = json.choices;
  assert.equal(choice.index, 0);
  assert.equal(choice.message.role, 'assistant');
  assert.equal(choice.logprobs, null);
  const { prompt_tokens, completion_tokens, total_tokens } = json.usage;
  assert.equal(total_tokens, prompt_tokens + completion_tokens);
}

/** Sends a raw request with node:http and returns the body chunks exactly as parsed. */
function rawRequest(url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ res, chunks }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const RATE_LIMIT_HEADERS = [
  'x-ratelimit-limit-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-reset-requests',
  'x-ratelimit-reset-tokens',
];
const GO_DURATION = /^(?:(?:\d+h)?(?:\d+m)?\d+(?:\.\d+)?s|\d+ms)$/;

// ---------------------------------------------------------------------------------------
// Control endpoints, routing, CORS

test('health answers ok with CORS headers', T, async () => {
  const res = await fetch(`${upstream.url}/health`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ok: true });
  assert.equal(res.headers.get('access-control-allow-origin'), '*');
});

test('an OPTIONS preflight gets 204 and every CORS header a browser needs', T, async () => {
  const res = await fetch(openaiUrl('normal', freshKey('cors')), {
    method: 'OPTIONS',
    headers: {
      origin: 'http://localhost:8787',
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization, content-type, x-llm-provider',
    },
  });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('access-control-allow-origin'), '*');
  const allowHeaders = res.headers.get('access-control-allow-headers').split(/,\s*/);
  for (const name of ['*', 'authorization', 'api-key', 'content-type', 'x-llm-provider']) {
    assert.ok(allowHeaders.includes(name), `allow-headers lists ${name}`);
  }
  assert.equal(res.headers.get('access-control-allow-methods'), 'GET, POST, OPTIONS');
  const exposed = res.headers.get('access-control-expose-headers').split(/,\s*/);
  for (const name of ['*', ...RATE_LIMIT_HEADERS, 'retry-after', 'retry-after-ms', 'x-should-retry']) {
    assert.ok(exposed.includes(name), `expose-headers lists ${name}`);
  }
});

test('unknown paths, scenarios and methods answer in OpenAI error shape', T, async () => {
  let res = await fetch(`${upstream.url}/v2/nothing`, { method: 'POST', body: '{}' });
  assert.equal(res.status, 404);
  assertOpenAiError(await res.json(), { type: 'invalid_request_error' });
  assert.equal(res.headers.get('access-control-allow-origin'), '*');

  const key = freshKey('unknown');
  res = await post(openaiUrl('no_such_scenario', key), userBody('hi'));
  assert.equal(res.status, 404);
  assertOpenAiError(await res.json(), { code: 'unknown_scenario' });

  res = await post(openaiUrl('slow:soon', key), userBody('hi'));
  assert.equal(res.status, 404, 'bad parameters are refused, not guessed');

  res = await post(`${upstream.url}/s/normal/${key}/v1/models`, userBody('hi'));
  assert.equal(res.status, 404);
  const log = await (await fetch(`${upstream.url}/__log/${key}`)).json();
  assert.deepEqual(
    log.map((entry) => entry.path),
    [
      `/s/no_such_scenario/${key}/v1/chat/completions`,
      `/s/slow:soon/${key}/v1/chat/completions`,
      `/s/normal/${key}/v1/models`,
    ],
    'requests to wrong paths under a key are logged, to debug a misconfigured client',
  );

  res = await fetch(openaiUrl('normal', key));
  assert.equal(res.status, 405);
  assertOpenAiError(await res.json());
});

test('malformed JSON, a non-object body and missing messages answer 400', T, async () => {
  const url = openaiUrl('normal', freshKey('bad-request'));
  let res = await post(url, '{"messages": [');
  assert.equal(res.status, 400);
  assertOpenAiError(await res.json(), { type: 'invalid_request_error' });

  res = await post(url, '[1, 2]');
  assert.equal(res.status, 400);
  assertOpenAiError(await res.json());

  res = await post(url, { model: 'm' });
  assert.equal(res.status, 400);
  assertOpenAiError(await res.json(), { code: 'missing_required_parameter' });
});

test('bodies over 2 MB answer 413; a body of exactly 2 MB is accepted', T, async () => {
  const limit = 2 * 1024 * 1024;
  const url = openaiUrl('plain', freshKey('size'));
  const skeleton = JSON.stringify(userBody(''));
  const atLimit = JSON.stringify(userBody('x'.repeat(limit - skeleton.length)));
  assert.equal(Buffer.byteLength(atLimit), limit);
  let res = await post(url, atLimit);
  assert.equal(res.status, 200);
  await res.arrayBuffer();

  res = await post(url, JSON.stringify(userBody('x'.repeat(limit - skeleton.length + 1))));
  assert.equal(res.status, 413);
  assertOpenAiError(await res.json(), { code: 'request_too_large' });
});

test('the log records each request with credentials redacted', T, async () => {
  const key = freshKey('log');
  const sentMs = Date.now();
  const openaiHeaders = { authorization: 'Bearer sk-SECRET-openai' };
  await (await post(openaiUrl('normal', key), userBody('logged?'), { headers: openaiHeaders })).text();
  const azureHeaders = { 'api-key': 'SECRET-azure', 'x-llm-provider': 'az' };
  await (await post(azureUrl('azure', key), userBody('azure?'), { headers: azureHeaders })).text();
  const afterMs = Date.now();

  const res = await fetch(`${upstream.url}/__log/${key}`);
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.ok(!text.includes('SECRET'), 'no credential value is stored or returned');
  const log = JSON.parse(text);
  assert.equal(log.length, 2);
  const [first, second] = log;
  assert.ok(first.at_ms >= sentMs && second.at_ms <= afterMs && first.at_ms <= second.at_ms);
  assert.equal(first.method, 'POST');
  assert.equal(first.path, `/s/normal/${key}/v1/chat/completions`);
  assert.deepEqual(first.query, {});
  assert.equal(first.headers.authorization, 'present');
  assert.equal(first.headers['content-type'], 'application/json');
  assert.deepEqual(first.body, userBody('logged?'));
  assert.equal(second.path, `/s/azure/${key}/openai/deployments/gpt-4o-dep/chat/completions`);
  assert.deepEqual(second.query, { 'api-version': '2024-10-21' });
  assert.equal(second.headers['api-key'], 'present');
  assert.equal(second.headers['x-llm-provider'], 'az');
  assert.equal(second.headers.authorization, undefined);

  const unknown = await (await fetch(`${upstream.url}/__log/${freshKey('never-used')}`)).json();
  assert.deepEqual(unknown, []);
});

test('a malformed body is logged with body null', T, async () => {
  const key = freshKey('log-null');
  await (await post(openaiUrl('normal', key), 'not json')).text();
  const [entry] = await (await fetch(`${upstream.url}/__log/${key}`)).json();
  assert.equal(entry.body, null);
});

test('POST /__reset clears logs, stats and counters', T, async () => {
  const key = freshKey('reset');
  const url = openaiUrl('rate_limited_then_ok:1', key);
  assert.equal((await post(url, userBody('a'))).status, 429);
  assert.equal((await (await fetch(`${upstream.url}/__log/${key}`)).json()).length, 1);

  const res = await fetch(`${upstream.url}/__reset`, { method: 'POST' });
  assert.equal(res.status, 200);
  assert.deepEqual(await (await fetch(`${upstream.url}/__log/${key}`)).json(), []);
  assert.deepEqual(await (await fetch(`${upstream.url}/__stats/${key}`)).json(), {
    requests: 0,
    rejected_429: 0,
    tokens_charged: 0,
  });
  assert.equal((await post(url, userBody('a'))).status, 429, 'the counter starts again at 1');
});

// ---------------------------------------------------------------------------------------
// Successful answers

test('normal: a chat completion with thinking, reasoning_content, usage and generous budget headers', T, async () => {
  const key = freshKey('normal');
  const { res, json } = await postJson(openaiUrl('normal', key), {
    model: 'gpt-test',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'What is 2+2?' },
    ],
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/json');
  assertCompletionShape(json);
  assert.equal(json.id, 'chatcmpl-1');
  assert.equal(json.model, 'gpt-test');
  assert.equal(json.choices[0].finish_reason, 'stop');
  assert.equal(
    json.choices[0].message.content,
    '<think>Thinking about: What is 2+2?</think>\nAnswer to: What is 2+2?',
  );
  assert.equal(json.choices[0].message.reasoning_content, 'Reasoning about: What is 2+2?');
  // 9 + 12 characters of messages; 67 + 29 characters of content and reasoning.
  assert.deepEqual(json.usage, { prompt_tokens: 6, completion_tokens: 24, total_tokens: 30 });
  assert.deepEqual(
    Object.fromEntries(RATE_LIMIT_HEADERS.map((name) => [name, res.headers.get(name)])),
    {
      'x-ratelimit-limit-requests': '10000',
      'x-ratelimit-limit-tokens': '1000000',
      'x-ratelimit-remaining-requests': '9999',
      'x-ratelimit-remaining-tokens': '999000',
      'x-ratelimit-reset-requests': '6ms',
      'x-ratelimit-reset-tokens': '1ms',
    },
  );

  const second = await postJson(openaiUrl('normal', key), { messages: [{ role: 'user', content: 'again' }] });
  assert.equal(second.json.id, 'chatcmpl-2', 'the id counts calls per (scenario, key)');
  assert.equal(second.json.model, 'test-model', 'without a model in the request');
});

test('the prompt is the last user message, also from content parts', T, async () => {
  const { json } = await postJson(openaiUrl('plain', freshKey('parts')), {
    messages: [
      { role: 'user', content: 'first question' },
      { role: 'assistant', content: 'an answer' },
      { role: 'user', content: [{ type: 'text', text: 'second ' }, { type: 'text', text: 'question' }] },
    ],
  });
  assert.equal(json.choices[0].message.content, 'Answer to: second question');
});

test('a path without /s/ is the normal scenario', T, async () => {
  const { res, json } = await postJson(`${upstream.url}/v1/chat/completions`, userBody('bare'));
  assert.equal(res.status, 200);
  assert.equal(json.choices[0].message.content, '<think>Thinking about: bare</think>\nAnswer to: bare');
});

test('normal stream: role, reasoning, content split inside tags, finish, usage, [DONE]', T, async () => {
  const res = await post(
    openaiUrl('normal', freshKey('normal-stream')),
    userBody('2+2?', { stream: true, stream_options: { include_usage: true } }),
  );
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(res.headers.get('x-ratelimit-remaining-requests'), '9999');
  const { chunks } = await readStream(res);

  for (const chunk of chunks) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.id, 'chatcmpl-1');
    assert.equal(chunk.model, 'gpt-test');
  }
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '', refusal: null });
  const content = deltas(chunks, 'content');
  assert.deepEqual(content.slice(0, 3), ['<th', 'ink', '>Th'], 'tags are split across chunks');
  assert.equal(content.join(''), '<think>Thinking about: 2+2?</think>\nAnswer to: 2+2?');
  assert.equal(deltas(chunks, 'reasoning_content').join(''), 'Reasoning about: 2+2?');
  const lastReasoning = chunks.findLastIndex((c) => c.choices[0]?.delta?.reasoning_content);
  const firstContent = chunks.findIndex((c) => c.choices[0]?.delta?.content);
  assert.ok(lastReasoning < firstContent, 'reasoning deltas come before content deltas');

  const finish = chunks.at(-2);
  assert.equal(finish.choices[0].finish_reason, 'stop');
  assert.deepEqual(finish.choices[0].delta, {});
  assert.equal(finish.usage, null);
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.deepEqual(usage.usage, { prompt_tokens: 1, completion_tokens: 18, total_tokens: 19 });
});

test('a stream without include_usage has no usage chunk', T, async () => {
  const res = await post(openaiUrl('plain', freshKey('no-usage')), userBody('q', { stream: true }));
  const { chunks } = await readStream(res);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  assert.ok(chunks.every((chunk) => !('usage' in chunk)));
  assert.equal(deltas(chunks, 'content').join(''), 'Answer to: q');
});

test('plain: no thinking at all', T, async () => {
  const { json } = await postJson(openaiUrl('plain', freshKey('plain')), userBody('hello'));
  assertCompletionShape(json);
  assert.equal(json.choices[0].message.content, 'Answer to: hello');
  assert.ok(!('reasoning_content' in json.choices[0].message));
});

test('json and json_bad', T, async () => {
  const prompt = 'say "hi"\n';
  const good = await postJson(openaiUrl('json', freshKey('json')), userBody(prompt));
  assert.deepEqual(JSON.parse(good.json.choices[0].message.content), { answer: prompt });
  const bad = await postJson(openaiUrl('json_bad', freshKey('json-bad')), userBody(prompt));
  assert.equal(bad.json.choices[0].message.content, 'Sure! {"answer": 1}');
  assert.throws(() => JSON.parse(bad.json.choices[0].message.content));
});

test('length: finish_reason length, cut mid-thinking (JSON and stream)', T, async () => {
  const key = freshKey('length');
  const { json } = await postJson(openaiUrl('length', key), userBody('cats'));
  assert.equal(json.choices[0].finish_reason, 'length');
  assert.equal(json.choices[0].message.content, '<think>I started thinking about cats and');
  const { chunks } = await readStream(await post(openaiUrl('length', key), userBody('cats', { stream: true })));
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'length');
});

test('empty: only a think block', T, async () => {
  const { json } = await postJson(openaiUrl('empty', freshKey('empty')), userBody('q'));
  assert.equal(json.choices[0].message.content, '<think>only thoughts</think>');
  assert.equal(json.choices[0].finish_reason, 'stop');
});

test('slow:MS answers after the delay', T, async () => {
  const started = Date.now();
  const { res, json } = await postJson(openaiUrl('slow:300', freshKey('slow')), userBody('wait'));
  assert.ok(Date.now() - started >= 290, 'the answer waited');
  assert.equal(res.status, 200);
  assert.equal(json.choices[0].message.content, '<think>Thinking about: wait</think>\nAnswer to: wait');
});

test('the scenario parameter may arrive percent-encoded', T, async () => {
  const res = await post(openaiUrl('rate_limited_then_ok%3A1', freshKey('encoded')), userBody('q'));
  assert.equal(res.status, 429);
});

// ---------------------------------------------------------------------------------------
// Errors and broken answers

test('rate_limited_then_ok:N answers 429 N times with retry hints, then normally', T, async () => {
  const key = freshKey('rl');
  const url = openaiUrl('rate_limited_then_ok:2', key);
  for (let call = 1; call <= 2; call += 1) {
    const { res, json } = await postJson(url, userBody('q'));
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after-ms'), '300');
    assert.equal(res.headers.get('x-ratelimit-remaining-requests'), '0');
    assert.equal(res.headers.get('x-ratelimit-reset-requests'), '300ms');
    assert.ok(res.headers.get('x-ratelimit-limit-requests'));
    assert.ok(res.headers.get('x-ratelimit-remaining-tokens'));
    assertOpenAiError(json, { type: 'requests', code: 'rate_limit_exceeded' });
  }
  const { res, json } = await postJson(url, userBody('q'));
  assert.equal(res.status, 200);
  assert.equal(json.id, 'chatcmpl-3');
  assert.deepEqual(await (await fetch(`${upstream.url}/__stats/${key}`)).json(), {
    requests: 3,
    rejected_429: 2,
    tokens_charged: 0,
  });
});

test('rate_limited_then_ok without a parameter fails twice; counters are per key', T, async () => {
  const [a, b] = [freshKey('rl-a'), freshKey('rl-b')];
  const statuses = [];
  for (const key of [a, a, b, a]) {
    statuses.push((await post(openaiUrl('rate_limited_then_ok', key), userBody('q'))).status);
  }
  assert.deepEqual(statuses, [429, 429, 429, 200]);
});

test('server_error always fails; server_error_then_ok:1 recovers', T, async () => {
  const key = freshKey('5xx');
  for (let call = 0; call < 3; call += 1) {
    const { res, json } = await postJson(openaiUrl('server_error', key), userBody('q'));
    assert.equal(res.status, 500);
    assertOpenAiError(json, { type: 'server_error' });
  }
  assert.equal((await post(openaiUrl('server_error_then_ok:1', key), userBody('q'))).status, 500);
  const { res, json } = await postJson(openaiUrl('server_error_then_ok:1', key), userBody('q'));
  assert.equal(res.status, 200);
  assertCompletionShape(json);
});

test('bad_gateway: 502 with an HTML body', T, async () => {
  const res = await post(openaiUrl('bad_gateway', freshKey('502')), userBody('q'));
  assert.equal(res.status, 502);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  assert.equal(await res.text(), '<html>502 Bad Gateway</html>');
});

test('malformed: 200 application/json that does not parse', T, async () => {
  const res = await post(openaiUrl('malformed', freshKey('malformed')), userBody('q'));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/json');
  const text = await res.text();
  assert.ok(text.startsWith('{"id":"x","choices":[{'));
  assert.throws(() => JSON.parse(text), SyntaxError);
});

test('truncated: the body breaks off before its announced length', T, async () => {
  const res = await post(openaiUrl('truncated', freshKey('truncated')), userBody('q'));
  assert.equal(res.status, 200);
  assert.ok(Number(res.headers.get('content-length')) > 100);
  await assert.rejects(res.text());

  const partial = await new Promise((resolve) => {
    const req = http.request(openaiUrl('truncated', freshKey('truncated-raw')), { method: 'POST' }, (response) => {
      let received = 0;
      response.on('data', (chunk) => (received += chunk.length));
      response.on('error', () => {});
      response.on('close', () => resolve({ received, announced: Number(response.headers['content-length']) }));
    });
    req.on('error', () => {});
    req.end(JSON.stringify(userBody('q')));
  });
  assert.equal(partial.received, Math.floor(partial.announced / 2), 'exactly the first half arrives');
});

test('stream_break: two content chunks, then the connection dies', T, async () => {
  const res = await post(openaiUrl('stream_break', freshKey('break')), userBody('q', { stream: true }));
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  await assert.rejects(async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  });
  const { events } = parseSse(text);
  assert.ok(!events.includes('[DONE]'));
  const chunks = events.map((event) => JSON.parse(event));
  assert.deepEqual(deltas(chunks, 'content'), ['Partial ', 'answer']);
  assert.ok(chunks.every((chunk) => chunk.choices[0].finish_reason === null));

  const { json } = await postJson(openaiUrl('stream_break', freshKey('break-json')), userBody('q'));
  assertCompletionShape(json);
});

test('stream_split: prelude, comment, CRLF, no-space data, 1-3 character deltas', T, async () => {
  const res = await post(
    openaiUrl('stream_split', freshKey('split')),
    userBody('q', { stream: true, stream_options: { include_usage: true } }),
  );
  assert.equal(res.status, 200);
  const { text, comments, chunks } = await readStream(res);
  assert.ok(text.includes('\r\n'), 'some events end in CRLF');
  assert.ok(text.includes('\ndata:{'), 'one event omits the optional space');
  assert.ok(comments.includes('keep-alive'));
  assert.deepEqual(chunks[0].choices, [], 'Azure-style first chunk');
  assert.ok(Array.isArray(chunks[0].prompt_filter_results));
  const content = deltas(chunks, 'content');
  assert.equal(content.join(''), '<think>step one, step two</think>The answer is 4.');
  assert.ok(content.every((piece) => [...piece].length >= 1 && [...piece].length <= 3));
  assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
  assert.deepEqual(chunks.at(-1).choices, []);
  assert.equal(typeof chunks.at(-1).usage.total_tokens, 'number');

  const { json } = await postJson(openaiUrl('stream_split', freshKey('split-json')), userBody('q'));
  assert.equal(json.choices[0].message.content, '<think>step one, step two</think>The answer is 4.');
});

test('stream_split:utf8 writes 1-3 bytes at a time, splitting UTF-8 characters and CRLF', T, async () => {
  const url = openaiUrl('stream_split:utf8', freshKey('split-utf8'));
  const { res, chunks } = await rawRequest(url, userBody('q', { stream: true }));
  assert.equal(res.statusCode, 200);
  assert.ok(chunks.every((chunk) => chunk.length >= 1 && chunk.length <= 3), 'each write arrives as its own chunk');
  const bytes = Buffer.concat(chunks);
  const boundaries = [];
  for (let at = 0, i = 0; i < chunks.length - 1; i += 1) boundaries.push((at += chunks[i].length));
  assert.ok(boundaries.some((at) => (bytes[at] & 0xc0) === 0x80), 'a write ends inside a UTF-8 character');
  assert.ok(boundaries.some((at) => bytes[at - 1] === 0x0d && bytes[at] === 0x0a), 'a write ends between CR and LF');
  const { events } = parseSse(bytes.toString('utf8'));
  const content = deltas(events.slice(0, -1).map((event) => JSON.parse(event)), 'content').join('');
  assert.equal(content, '<think>step one → step two</think>The answer is 4 ✓ (½ of 8) 🎉');
});

// ---------------------------------------------------------------------------------------
// Credentials

test('azure: the deployment path, api-key and api-version are required', T, async () => {
  const key = freshKey('azure');
  const { res, json } = await postJson(azureUrl('azure', key), userBody('hi', { model: 'ignored' }), {
    headers: { 'api-key': 'k' },
  });
  assert.equal(res.status, 200);
  assertCompletionShape(json);
  assert.equal(json.model, 'gpt-4o-dep', 'the model is the deployment');
  assert.equal(json.choices[0].message.content, '<think>Thinking about: hi</think>\nAnswer to: hi');
  assert.ok(Array.isArray(json.prompt_filter_results));
  assert.ok(res.headers.get('apim-request-id'));

  const denied = await postJson(azureUrl('azure', key), userBody('hi'));
  assert.equal(denied.res.status, 401);
  assert.equal(denied.json.error.code, '401');
  assert.match(denied.json.error.message, /^Access denied due to invalid subscription key/);

  const both = await post(azureUrl('azure', key), userBody('hi'), {
    headers: { 'api-key': 'k', authorization: 'Bearer k' },
  });
  assert.equal(both.status, 401, 'an OpenAI-style authorization header is refused');

  const noVersion = await post(azureUrl('azure', key, 'gpt-4o-dep', ''), userBody('hi'), {
    headers: { 'api-key': 'k' },
  });
  assert.equal(noVersion.status, 404);

  const openaiShape = await post(openaiUrl('azure', key), userBody('hi'), { headers: { 'api-key': 'k' } });
  assert.equal(openaiShape.status, 404);
});

test('azure stream: opens with the prelude chunk, then answers like normal', T, async () => {
  const res = await post(azureUrl('azure', freshKey('azure-stream')), userBody('hi', { stream: true }), {
    headers: { 'api-key': 'k' },
  });
  const { chunks } = await readStream(res);
  assert.deepEqual(chunks[0].choices, []);
  assert.equal(chunks[0].id, '');
  assert.ok(Array.isArray(chunks[0].prompt_filter_results));
  assert.equal(chunks[1].model, 'gpt-4o-dep');
  assert.equal(deltas(chunks, 'content').join(''), '<think>Thinking about: hi</think>\nAnswer to: hi');
});

test('other scenarios also answer on the Azure path', T, async () => {
  const url = azureUrl('rate_limited_then_ok:1', freshKey('azure-rl'));
  const res = await post(url, userBody('hi'), { headers: { 'api-key': 'k' } });
  assert.equal(res.status, 429);
});

test('auth: requires a bearer token', T, async () => {
  const key = freshKey('auth');
  for (const headers of [{}, { authorization: 'Bearer ' }, { authorization: 'Basic abc' }]) {
    const { res, json } = await postJson(openaiUrl('auth', key), userBody('q'), { headers });
    assert.equal(res.status, 401);
    assertOpenAiError(json, { code: 'invalid_api_key' });
  }
  const ok = await post(openaiUrl('auth', key), userBody('q'), { headers: { authorization: 'Bearer sk-1' } });
  assert.equal(ok.status, 200);
});

test('echo_key_error: the 401 message quotes the presented key', T, async () => {
  const key = freshKey('echo');
  let { res, json } = await postJson(openaiUrl('echo_key_error', key), userBody('q'), {
    headers: { authorization: 'Bearer sk-live-1234567890' },
  });
  assert.equal(res.status, 401);
  assertOpenAiError(json, { code: 'invalid_api_key' });
  assert.match(json.error.message, /^Incorrect API key provided: sk-live-1234567890\./);
  ({ json } = await postJson(azureUrl('echo_key_error', key), userBody('q'), {
    headers: { 'api-key': 'azure-key-42' },
  }));
  assert.match(json.error.message, /azure-key-42/);
  const log = await (await fetch(`${upstream.url}/__log/${key}`)).text();
  assert.ok(!log.includes('1234567890') && !log.includes('azure-key-42'), 'the log still holds no key');
});

// ---------------------------------------------------------------------------------------
// budget: OpenAI-like token buckets

test('goDuration formats like Go time.Duration', () => {
  const cases = [
    [0, '0s'],
    [0.2, '1ms'],
    [20, '20ms'],
    [999, '999ms'],
    [1000, '1s'],
    [1500, '1.5s'],
    [59_987, '59.987s'],
    [60_000, '1m0s'],
    [360_000, '6m0s'],
    [3_600_000, '1h0m0s'],
  ];
  for (const [ms, text] of cases) assert.equal(goDuration(ms), text, `${ms} ms`);
});

test('budget: requests per minute run out, 429 with the wait, the rejected call is not charged', T, async () => {
  const key = freshKey('budget-rpm');
  const url = openaiUrl('budget:2:1000000:latency:0', key);
  const body = userBody('abcd', { max_tokens: 100 }); // estimate: 1 + 100 tokens

  const first = await postJson(url, body);
  assert.equal(first.res.status, 200);
  assert.equal(first.json.choices[0].message.content, 'Answer to: abcd');
  assert.equal(first.json.usage.prompt_tokens, 1);
  assert.ok(first.json.usage.completion_tokens >= 20 && first.json.usage.completion_tokens <= 100);
  assert.equal(first.res.headers.get('x-ratelimit-limit-requests'), '2');
  assert.equal(first.res.headers.get('x-ratelimit-limit-tokens'), '1000000');
  assert.equal(first.res.headers.get('x-ratelimit-remaining-requests'), '1');
  assert.equal(first.res.headers.get('x-ratelimit-remaining-tokens'), '999899');
  assert.equal(first.res.headers.get('x-ratelimit-reset-requests'), '30s');

  const second = await postJson(url, body);
  assert.equal(second.res.status, 200);
  assert.equal(second.res.headers.get('x-ratelimit-remaining-requests'), '0');
  for (const name of RATE_LIMIT_HEADERS.filter((n) => n.includes('reset'))) {
    assert.match(second.res.headers.get(name), GO_DURATION, name);
  }

  const third = await postJson(url, body);
  assert.equal(third.res.status, 429);
  assertOpenAiError(third.json, { type: 'requests', code: 'rate_limit_exceeded' });
  const retryAfterMs = Number(third.res.headers.get('retry-after-ms'));
  assert.ok(Number.isInteger(retryAfterMs) && retryAfterMs > 25_000 && retryAfterMs <= 30_000, `${retryAfterMs}`);
  for (const name of RATE_LIMIT_HEADERS) assert.ok(third.res.headers.get(name) !== null, name);
  assert.equal(third.res.headers.get('x-ratelimit-remaining-requests'), '0');

  assert.deepEqual(await (await fetch(`${upstream.url}/__stats/${key}`)).json(), {
    requests: 3,
    rejected_429: 1,
    tokens_charged: 202,
  });
});

test('budget: tokens per minute run out; a request above the whole budget is refused for good', T, async () => {
  const key = freshKey('budget-tpm');
  const url = openaiUrl('budget:1000:1000:latency:0', key);
  const first = await post(url, userBody('abcd', { max_tokens: 600 }));
  assert.equal(first.status, 200);
  assert.equal(first.headers.get('x-ratelimit-remaining-tokens'), '399');
  await first.text();

  const second = await postJson(url, userBody('abcd', { max_tokens: 600 }));
  assert.equal(second.res.status, 429);
  assertOpenAiError(second.json, { type: 'tokens', code: 'rate_limit_exceeded' });
  // 601 - 399 = 202 tokens missing at 1000 tokens/min: about 12.1 s.
  const retryAfterMs = Number(second.res.headers.get('retry-after-ms'));
  assert.ok(retryAfterMs > 11_000 && retryAfterMs <= 12_120, `${retryAfterMs}`);

  const tooLarge = await postJson(url, userBody('abcd', { max_tokens: 5000 }));
  assert.equal(tooLarge.res.status, 429);
  assert.equal(tooLarge.res.headers.get('x-should-retry'), 'false');
  assert.equal(tooLarge.res.headers.get('retry-after-ms'), null);

  const stats = await (await fetch(`${upstream.url}/__stats/${key}`)).json();
  assert.deepEqual(stats, { requests: 3, rejected_429: 2, tokens_charged: 601 });
});

test('budget: the default latency is 200 ms and streams work', T, async () => {
  const started = Date.now();
  const url = openaiUrl('budget:100:100000', freshKey('budget-latency'));
  const res = await post(url, userBody('q', { stream: true, max_tokens: 50 }));
  const { chunks } = await readStream(res);
  assert.ok(Date.now() - started >= 190);
  assert.equal(deltas(chunks, 'content').join(''), 'Answer to: q');
  assert.equal(res.headers.get('x-ratelimit-remaining-requests'), '99');
});

// ---------------------------------------------------------------------------------------
// demo

test('demo: canned answers with thinking, labeled, streamed at a visible pace', T, async () => {
  const key = freshKey('demo');
  const { json } = await postJson(openaiUrl('demo', key), userBody('What is the capital of France?'));
  const first = json.choices[0].message.content;
  assert.match(first, /^<think>[^]+<\/think>\n[^]+\(demo upstream\)$/);
  assert.ok(first.includes('What is the capital of France?'));

  const res = await post(openaiUrl('demo', key), userBody('Tell me more', { stream: true }));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const started = Date.now();
  let text = '';
  let firstByteMs = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    firstByteMs ??= Date.now() - started;
    text += decoder.decode(value, { stream: true });
  }
  const totalMs = Date.now() - started;
  const { events } = parseSse(text);
  const chunks = events.slice(0, -1).map((event) => JSON.parse(event));
  const content = deltas(chunks, 'content');
  assert.ok(totalMs >= content.length * 20 * 0.9, `${content.length} chunks took ${totalMs} ms`);
  assert.ok(firstByteMs < totalMs / 2, 'the first words arrive long before the last');
  const second = content.join('');
  assert.match(second, /\(demo upstream\)$/);
  const canned = (text, question) => text.replace(question, '');
  assert.notEqual(canned(second, 'Tell me more'), canned(first, 'What is the capital of France?'), 'answers vary');
});

// ---------------------------------------------------------------------------------------
// Robustness and the process

test('clients that hang up mid-answer or mid-upload do not harm the server', T, async () => {
  const slow = new AbortController();
  const slowRequest = post(openaiUrl('slow:5000', freshKey('gone-slow')), userBody('q'), { signal: slow.signal });
  const demo = await post(openaiUrl('demo', freshKey('gone-demo')), userBody('q', { stream: true }));
  const reader = demo.body.getReader();
  await reader.read();
  await reader.cancel();
  setTimeout(() => slow.abort(), 50);
  await assert.rejects(slowRequest);

  await new Promise((resolve) => {
    const socket = net.connect(upstream.port, '127.0.0.1', () => {
      socket.write(
        'POST /s/normal/upload/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n' +
          'content-length: 1000\r\n\r\n{"messages": [',
      );
      setTimeout(() => socket.destroy(), 20);
    });
    socket.on('close', resolve);
    socket.on('error', () => {});
  });

  const res = await fetch(`${upstream.url}/health`);
  assert.deepEqual(await res.json(), { ok: true });
});

/** Runs an ESM snippet in a child node process; resolves with its exit code and output. */
function runNode(args, { timeoutMs, onStdout } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      onStdout?.(stdout, child);
    });
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

test('close() ends open answers within 1 s and leaves nothing that keeps the process alive', T, async () => {
  const script = `
    import net from 'node:net';
    import { startUpstream } from ${JSON.stringify(new URL('./server.mjs', import.meta.url).href)};
    const upstream = await startUpstream();
    const body = (extra) => JSON.stringify({ messages: [{ role: 'user', content: 'q' }], ...extra });
    const call = (scenario, extra = {}) =>
      fetch(upstream.url + '/s/' + scenario + '/k/v1/chat/completions', { method: 'POST', body: body(extra) })
        .then((res) => res.text()).catch(() => 'failed');
    const pending = [
      call('slow:60000'),
      call('demo', { stream: true }),
      call('budget:1:1:latency:60000', { max_tokens: 1 }),
    ];
    // A client that hung up earlier: its timer must have been cleared then, not at close().
    const hangUp = new AbortController();
    const hungUp = fetch(upstream.url + '/s/slow:60000/k/v1/chat/completions', {
      method: 'POST',
      body: body({}),
      signal: hangUp.signal,
    });
    pending.push(hungUp.catch(() => 'aborted'));
    setTimeout(() => hangUp.abort(), 50);
    // An idle connection and one stuck halfway through its request.
    const idle = net.connect(upstream.port, '127.0.0.1');
    const stuck = net.connect(upstream.port, '127.0.0.1', () =>
      stuck.write('POST /s/normal/k/v1/chat/completions HTTP/1.1\\r\\ncontent-length: 99\\r\\n\\r\\n{'),
    );
    for (const socket of [idle, stuck]) socket.on('error', () => {});
    await new Promise((resolve) => setTimeout(resolve, 150));
    const started = Date.now();
    await upstream.close();
    console.log('closed in', Date.now() - started);
    await Promise.all(pending);
  `;
  const started = Date.now();
  const { code, signal, stdout, stderr } = await runNode(['--input-type=module', '-e', script], { timeoutMs: 5000 });
  assert.equal(signal, null, `the process exits by itself (stderr: ${stderr})`);
  assert.equal(code, 0, stderr);
  const closedMs = Number(/closed in (\d+)/.exec(stdout)?.[1]);
  assert.ok(closedMs < 1000, `close() took ${closedMs} ms`);
  assert.ok(Date.now() - started < 4000);
});

test('the command line: port file, listening line, --demo, silent, clean exit on SIGTERM', T, async () => {
  const portFile = join(mkdtempSync(join(tmpdir(), 'upstream-')), 'port');
  let checks = null;
  const result = await runNode([SERVER_PATH, '--port', '0', '--port-file', portFile, '--demo'], {
    timeoutMs: 8000,
    onStdout: (stdout, child) => {
      const match = /^upstream listening on http:\/\/127\.0\.0\.1:(\d+)\n/.exec(stdout);
      if (!match || checks) return;
      checks = (async () => {
        const port = Number(match[1]);
        assert.equal(readFileSync(portFile, 'utf8'), String(port));
        const base = `http://127.0.0.1:${port}`;
        const { json } = await postJson(`${base}/v1/chat/completions`, userBody('hello'), {
          headers: { authorization: 'Bearer sk-must-not-be-printed' },
        });
        assert.match(json.choices[0].message.content, /\(demo upstream\)$/, '--demo makes demo the default');
        const normal = await postJson(`${base}/s/normal/cli/v1/chat/completions`, userBody('hello'));
        assert.match(normal.json.choices[0].message.content, /^<think>Thinking about: hello/);
        child.kill('SIGTERM');
      })();
    },
  });
  await checks;
  assert.equal(result.signal, null);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, result.stdout.split('\n')[0] + '\n', 'one line of output, no request logging');
  assert.equal(result.stderr, '');
  assert.ok(!existsSync(portFile), 'the port file is removed on exit');
});

test('the command line refuses unknown arguments', T, async () => {
  const { code, stderr } = await runNode([SERVER_PATH, '--verbose'], { timeoutMs: 5000 });
  assert.equal(code, 2);
  assert.match(stderr, /usage:/);
});
