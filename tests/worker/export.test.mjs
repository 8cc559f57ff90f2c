// End-to-end tests of `GET /v1/export`: the real build under `wrangler dev --local`, its
// local D1, the scripted upstream (tests/upstream) as the providers.
//
//   node --test tests/worker/export.test.mjs     (about 2 min with a warm build)
//
// Answers are written through the chat endpoint, /v1/generate and a real batch (a JSONL
// file uploaded to /v1/files, a batch created on it and polled until it completes: the
// Worker's queue consumer stores its answers with batch_id and custom_id, one of them
// invalid); rows no endpoint writes on purpose (hostile text, an unclosed thinking block,
// a row cut to fit D1, a request that is no longer JSON) are seeded straight into D1.
// Every export is then checked line by line against
// what D1 holds, through an independent reading of the formats (`expectedLines`), and
// against the npm package's `exportRecord` (pkg/, built by scripts/build-worker.sh), which
// must shape every row as the Worker does. Then 100,000 rows are seeded and exported, to
// show that the Worker's memory does not grow with the row count (its WebAssembly memory,
// which it logs with each export, and the peak RssAnon of its workerd process, at 10,000
// and at 100,000 rows), and that a client that hangs up stops the reading (the process's
// CPU time stops).
//
// Every answer and exported file is scanned for the run's keys and token; so is the log.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';

import { ROOT, localD1, secretChecks, startWranglerDev, workerCalls, wranglerEnv } from '../support/local-stack.mjs';
import { startUpstream } from '../upstream/server.mjs';

const STARTUP_TIMEOUT_MS = 240_000;
const TEST_TIMEOUT_MS = 60_000;
/** A batch of three lines completes in seconds; a busy machine gets more. */
const BATCH_TIMEOUT_MS = 90_000;
const DB = 'llm-distiller';
const RUN = randomBytes(4).toString('hex');
const TOKEN = randomBytes(24).toString('base64url');
const GENEROUS = { requests_per_minute: 100_000, tokens_per_minute: 100_000_000 };
const NO_RETRY = { max_retries: 0, base_delay_ms: 10 };
const PROVIDERS = { main: ['normal', {}], plain: ['plain', {}], length: ['length', {}], down: ['server_error', { retry: NO_RETRY }] };
const KEYS = Object.fromEntries(Object.keys(PROVIDERS).map((name) => [name, `sk-export-${name}-${randomBytes(16).toString('hex')}`]));
const SECRETS = [...Object.entries(KEYS).map(([name, key]) => [`the ${name} API key`, key]), ['the access token', TOKEN]];

const FORMATS = ['openai_chat', 'sharegpt', 'flat'];
const REASONINGS = ['field', 'inline', 'none'];

const { assertAbsent: assertNoSecrets, redact } = secretChecks(SECRETS);

/** A row id as the Worker makes them: the millisecond in 12 hex digits, 16 random ones. */
const rowId = (ms) => `rsp_${ms.toString(16).padStart(12, '0')}${randomBytes(8).toString('hex')}`;
const sqlText = (value) => (value === null || value === undefined ? 'NULL' : `'${String(value).replaceAll("'", "''")}'`);
const chatRequest = (messages) => JSON.stringify({ messages, config: {}, provider: null, fallback: [] });

// ---------------------------------------------------------------------------------------
// The formats, read from the issue and the README rather than from the Worker's code

/** The conversation a stored request holds, or null when it cannot be read. */
function conversation(requestText) {
  let request;
  try {
    request = JSON.parse(requestText);
  } catch {
    return null;
  }
  if (!request || typeof request !== 'object') return null;
  if (Array.isArray(request.messages)) return request.messages.length ? request.messages : null;
  const system = request.config?.system_prompt?.trim() ? [{ role: 'system', content: request.config.system_prompt }] : [];
  if (typeof request.prompt === 'string') return [...system, { role: 'user', content: request.prompt }];
  if (Array.isArray(request.prompt) && request.prompt.length) {
    const own = ['system', 'developer'].includes(request.prompt[0].role);
    return own ? request.prompt : [...system, ...request.prompt];
  }
  return null;
}

const SPEAKER = { system: 'system', developer: 'system', user: 'human', assistant: 'gpt' };
const hasThinking = (row) => typeof row.thinking === 'string' && row.thinking.trim() !== '';
/** Left out of the training formats unless include_incomplete: cut to fit D1, a thinking
 * block never closed, an answer stopped before its end (the token limit, a broken stream). */
const incomplete = (row) => row.truncated === 1 || row.finish_reason === 'length' ||
  /^(unclosed_thinking|stream_error|client_disconnected):/.test(row.invalid_reason ?? '');

/** The line of a stored row in `format` and `reasoning`, or null when it has none. */
function expectedLine(row, format, reasoning, includeIncomplete) {
  const messages = conversation(row.request);
  if (format === 'flat') {
    const line = {
      id: row.id, created_at: row.created_at, provider: row.provider, model: row.model, messages,
      thinking: row.thinking, content: row.content, finish_reason: row.finish_reason,
      usage: row.total_tokens === null ? null
        : { prompt_tokens: row.prompt_tokens, completion_tokens: row.completion_tokens, total_tokens: row.total_tokens },
      truncated: row.truncated === 1, batch_id: row.batch_id, custom_id: row.custom_id,
    };
    if (row.invalid_reason !== null) line.invalid_reason = row.invalid_reason;
    if (messages === null) line.export_error = 'SAYS WHY';
    return line;
  }
  if (!includeIncomplete && incomplete(row)) return null;
  if (messages === null) return null;
  // A closing tag in the thinking cannot go inline (a reader would end the thinking there).
  if (reasoning === 'inline' && hasThinking(row) && /<\/think/i.test(row.thinking)) return null;
  let answer = row.content;
  let separate;
  if (hasThinking(row) && reasoning === 'inline') answer = `<think>\n${row.thinking}\n</think>\n\n${row.content}`;
  if (hasThinking(row) && reasoning === 'field') separate = row.thinking;
  if (format === 'openai_chat') {
    const last = { role: 'assistant', content: answer };
    if (separate !== undefined) last.reasoning_content = separate;
    return { messages: [...messages, last] };
  }
  const turns = messages.map((m) => ({ from: SPEAKER[m.role], value: m.content }));
  const last = { from: 'gpt', value: answer };
  if (separate !== undefined) last.reasoning = separate;
  return { conversations: [...turns, last] };
}

/** The lines of `rows` (oldest first) for an export's parameters. */
function expectedLines(rows, { format = 'openai_chat', reasoning = 'field', include_incomplete = 'false' } = {}) {
  return rows.map((row) => expectedLine(row, format, reasoning, include_incomplete === 'true')).filter((line) => line !== null);
}

/** `line` against `expected`, `export_error: 'SAYS WHY'` standing for any reason given. */
function assertLine(line, expected, label) {
  if (expected.export_error === 'SAYS WHY') {
    assert.match(line.export_error ?? '', /^the stored request cannot be read: /, label);
    expected = { ...expected, export_error: line.export_error };
  }
  assert.deepEqual(line, expected, label);
}

// ---------------------------------------------------------------------------------------

describe('GET /v1/export under wrangler dev', { timeout: 900_000 }, () => {
  let tmp;
  let upstream;
  let worker;
  let persistDir;
  let env;
  let exportRecord;
  /** The id of the batch whose answers the export reads (written by the first test). */
  let batchId;

  /** A call of the Worker; every answer is scanned for the secrets. */
  const api = workerCalls({ url: () => worker.url, token: TOKEN, assertAbsent: assertNoSecrets, timeoutMs: TEST_TIMEOUT_MS });

  /** An export: its answer, and its lines parsed (each checked to be one JSON object). */
  async function exportOf(params = {}) {
    const query = new URLSearchParams(params).toString();
    const res = await api('GET', `/v1/export${query ? `?${query}` : ''}`);
    assert.equal(res.status, 200, `export ${query}: ${res.text.slice(0, 300)}`);
    assert.ok(res.text === '' || res.text.endsWith('\n'), `export ${query}: the last line ends with a line break`);
    const lines = res.text === '' ? [] : res.text.slice(0, -1).split('\n').map((line, i) => {
      try {
        return JSON.parse(line);
      } catch (error) {
        assert.fail(`export ${query}: line ${i + 1} is not JSON: ${error.message}: ${line.slice(0, 200)}`);
      }
    });
    return { ...res, lines };
  }

  const d1 = (sql) => localD1({ persistDir, env, db: DB }).execute(sql);

  /** Runs `sql` (any length) in the local D1, from a file. */
  async function d1File(sql) {
    const file = path.join(tmp, `seed-${randomBytes(4).toString('hex')}.sql`);
    fs.writeFileSync(file, sql);
    await localD1({ persistDir, env, db: DB }).executeFile(file);
  }

  /** Every stored row of both tables, oldest first, as the export reads them. */
  async function storedRows(where = '1') {
    const columns = 'id, created_at, provider, model, request, content, thinking, finish_reason, prompt_tokens, ' +
      'completion_tokens, total_tokens, truncated, batch_id, custom_id';
    const [rows] = await d1(
      `SELECT ${columns}, NULL AS invalid_reason FROM responses WHERE ${where} ` +
        `UNION ALL SELECT ${columns}, reason AS invalid_reason FROM invalid_responses WHERE ${where} ORDER BY id`,
    );
    return rows;
  }

  async function waitStored(id) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const res = await api('GET', `/v1/responses/${id}`);
      if (res.status === 200) return res.json;
      assert.ok(Date.now() < deadline, `${id} was not stored within 10 s`);
      await sleep(100);
    }
  }

  /** Inserts `rows` (objects of the table's columns) into `table`. */
  function insertSql(table, rows) {
    const columns = ['id', 'created_at', 'provider', 'model', 'request', 'content', 'thinking', 'finish_reason',
      'prompt_tokens', 'completion_tokens', 'total_tokens', 'response_time_ms', 'truncated', 'batch_id', 'custom_id'];
    if (table === 'invalid_responses') columns.push('reason');
    const values = rows.map((row) => `(${columns.map((c) => (typeof row[c] === 'number' ? String(row[c]) : sqlText(row[c]))).join(', ')})`);
    return `INSERT INTO ${table} (${columns.join(', ')}) VALUES ${values.join(',\n')};\n`;
  }

  const base = { provider: 'seeded', model: 'seeded-model', finish_reason: 'stop', prompt_tokens: 4, completion_tokens: 6,
    total_tokens: 10, response_time_ms: 5, truncated: 0, batch_id: null, custom_id: null };

  /** Runs `lines` (`[custom_id, body]`) as a batch, as a client does: uploads them as a
   * JSONL batch file (POST /v1/files, multipart, purpose=batch), creates the batch (POST
   * /v1/batches) and polls it (GET /v1/batches/{id}) until it completes. */
  async function runBatch(lines) {
    const jsonl = lines.map(([custom_id, body]) => JSON.stringify({ custom_id, method: 'POST', url: '/v1/chat/completions', body }));
    const form = new FormData();
    form.set('purpose', 'batch');
    form.set('file', new Blob([`${jsonl.join('\n')}\n`], { type: 'application/jsonl' }), 'export-batch.jsonl');
    const file = await api('POST', '/v1/files', { body: form, raw: true });
    assert.equal(file.status, 200, file.text);
    const created = await api('POST', '/v1/batches', { body: { input_file_id: file.json.id, endpoint: '/v1/chat/completions', completion_window: '24h' } });
    assert.equal(created.status, 200, created.text);
    const deadline = Date.now() + BATCH_TIMEOUT_MS;
    for (;;) {
      const { json: batch } = await api('GET', `/v1/batches/${created.json.id}`);
      if (batch.status === 'completed') return batch;
      assert.ok(['validating', 'in_progress', 'finalizing'].includes(batch.status), `batch ${batch.id} ${batch.status}: ${JSON.stringify(batch)}`);
      assert.ok(Date.now() < deadline, `batch ${batch.id} still ${batch.status} after ${BATCH_TIMEOUT_MS / 1000} s: ${JSON.stringify(batch.request_counts)}`);
      await sleep(250);
    }
  }

  /** Rows no endpoint writes on purpose. */
  async function seedHostile(now) {
    const at = (n) => ({ ...base, id: rowId(now + n), created_at: now + n });
    const valid = [
      { ...at(10), request: chatRequest([{ role: 'user', content: 'Ünïcödé 🦀 \u2028 "quoted" \\ <think>' }]),
        content: 'Ok ✓ 🎉\nsecond line\ttab "q" \\', thinking: 'First </think> then 🦀' },
      { ...at(11), request: '{"messages":[{"role":"user","content":"cut he', content: 'x', thinking: 'y', truncated: 1 },
      { ...at(12), request: '{"config":{}}', content: 'no conversation', thinking: null },
      { ...at(13), request: JSON.stringify({ prompt: [{ role: 'user', content: 'Hi' }], config: { system_prompt: 'Be brief.' } }),
        content: 'Hello.', thinking: 'Greet back.' },
    ];
    const invalid = [
      { ...at(14), request: chatRequest([{ role: 'user', content: 'Think forever' }]), content: '', thinking: 'I keep going',
        reason: 'unclosed_thinking: a thinking block was never closed' },
    ];
    await d1File(insertSql('responses', valid) + insertSql('invalid_responses', invalid));
  }

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llm-distiller-export-'));
    persistDir = path.join(tmp, 'state');
    env = wranglerEnv(path.join(tmp, 'wrangler-logs'));
    upstream = await startUpstream({ port: 0 });
    const providers = {};
    for (const [name, [scenario, extra]] of Object.entries(PROVIDERS)) {
      providers[name] = { type: 'openai', base_url: `${upstream.url}/s/${scenario}/${RUN}-${name}/v1`, model: `model-${name}`, rate_limit: GENEROUS, ...extra };
    }
    const envFile = path.join(tmp, 'worker.env');
    const lines = [`DISTILLER_TOKEN=${TOKEN}`, ...Object.keys(PROVIDERS).map((name) => `LLM_${name.toUpperCase()}_API_KEY=${KEYS[name]}`)];
    fs.writeFileSync(envFile, `${lines.join('\n')}\n`, { mode: 0o600 });
    await localD1({ persistDir, env, db: DB }).migrate();
    worker = await startWranglerDev({
      persistDir, envFile, config: { providers, default_provider: 'main' },
      logPath: path.join(tmp, 'worker.log'), env, startupTimeoutMs: STARTUP_TIMEOUT_MS,
      redact,
    });
    // The npm package the build made beside the Worker (scripts/build-worker.sh).
    ({ exportRecord } = await import(pathToFileURL(path.join(ROOT, 'pkg/node.js')).href));
  }, { timeout: STARTUP_TIMEOUT_MS + 120_000 });

  after(async () => {
    await worker?.stop();
    await upstream?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  // -------------------------------------------------------------------------------------
  let written;

  test('answers written through the chat endpoint and /v1/generate, a batch and hostile rows', { timeout: TEST_TIMEOUT_MS + BATCH_TIMEOUT_MS }, async () => {
    const ids = [];
    const chat = async (body) => {
      const res = await api('POST', '/v1/chat/completions', { body });
      return res;
    };
    const system = { role: 'system', content: `You answer briefly. ${RUN}` };
    for (const body of [
      { messages: [system, { role: 'user', content: `What is 2+2? ${RUN}` }] },
      { messages: [{ role: 'user', content: `No thinking here ${RUN}` }], provider: 'plain' },
      { messages: [system, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: `And now? ${RUN}` }] },
      { messages: [{ role: 'user', content: `Too long ${RUN}` }], provider: 'length' },
    ]) {
      const res = await chat(body);
      assert.equal(res.status, 200, res.text);
      ids.push(res.json.id);
    }
    const streamed = await api('POST', '/v1/chat/completions', { body: { messages: [{ role: 'user', content: `Streamed ${RUN}` }], stream: true } });
    assert.equal(streamed.status, 200);
    ids.push(streamed.headers.get('x-distiller-id'));
    for (const body of [
      { prompt: `A text prompt ${RUN}`, config: { system_prompt: 'Speak plainly.' } },
      { prompt: [{ role: 'user', content: `Messages to generate ${RUN}` }], config: { system_prompt: 'Before the messages.' } },
    ]) {
      const res = await api('POST', '/v1/generate', { body });
      assert.equal(res.status, 200, res.text);
      ids.push(res.json.distiller_id);
    }
    const failed = await chat({ messages: [{ role: 'user', content: `Down ${RUN}` }], provider: 'down' });
    assert.equal(failed.status, 502, failed.text);
    ids.push(failed.json.error.message.match(/stored as (rsp_[0-9a-f]{28})/)[1]);
    for (const id of ids) await waitStored(id);

    // Three lines of a batch: two answered, the third by the provider that stops at its
    // token limit, so that its row lands in invalid_responses.
    const ask = (messages, extra = {}) => ({ model: 'gpt-4o-mini', messages, ...extra });
    const batch = await runBatch([
      ['line-1', ask([{ role: 'system', content: 'Batch system.' }, { role: 'user', content: `Batch line 1 ${RUN}` }])],
      ['line-2', ask([{ role: 'system', content: 'Batch system.' }, { role: 'user', content: `Batch line 2 ${RUN}` }])],
      ['line-3', ask([{ role: 'user', content: `Batch line 3 ${RUN}` }], { provider: 'length' })],
    ]);
    assert.equal(batch.request_counts.total, 3, JSON.stringify(batch));
    batchId = batch.id;
    const [batchRows] = await d1(`SELECT custom_id FROM responses WHERE batch_id = ${sqlText(batchId)} ` +
      `UNION ALL SELECT custom_id FROM invalid_responses WHERE batch_id = ${sqlText(batchId)}`);
    assert.deepEqual(batchRows.map((r) => r.custom_id).sort(), ['line-1', 'line-2', 'line-3'], 'one stored row a line');

    await seedHostile(Date.now());
    written = await storedRows();
    assert.equal(written.length, ids.length + 3 + 5);
    assert.ok(ids.every((id) => written.some((row) => row.id === id)));
    assert.ok(written.some((row) => row.invalid_reason?.startsWith('upstream_error:')));
    assert.ok(written.some((row) => row.invalid_reason?.startsWith('finish_reason:')));
  });

  test('every format and reasoning mode, line by line against what D1 holds', { timeout: TEST_TIMEOUT_MS }, async () => {
    assert.ok(written, 'needs the rows above');
    let compared = 0;
    for (const format of FORMATS) {
      for (const reasoning of REASONINGS) {
        for (const extra of [{}, { valid: 'all' }, { valid: 'all', include_incomplete: 'true' }]) {
          const params = { format, reasoning, ...extra };
          const label = new URLSearchParams(params).toString();
          const valid = extra.valid === 'all' ? written : written.filter((row) => row.invalid_reason === null);
          const expected = expectedLines(valid, params);
          const res = await exportOf(params);
          assert.equal(res.lines.length, expected.length, `${label}: ${res.lines.length} lines, expected ${expected.length}`);
          res.lines.forEach((line, i) => assertLine(line, expected[i], `${label}: line ${i + 1}`));
          // The package's function shapes each row as the Worker did.
          const fromPackage = valid
            .map((row) => {
              try {
                return exportRecord(row, { format, reasoning, include_incomplete: extra.include_incomplete === 'true' });
              } catch (error) {
                assert.equal(error.code, 'config', `${label}: ${error.message}`);
                return null;
              }
            })
            .filter((record) => record !== null);
          assert.deepEqual(fromPackage, res.lines, `${label}: exportRecord gives the Worker's lines`);
          compared += res.lines.length;
        }
      }
    }
    assert.ok(compared > 200, `${compared} lines compared`);
  });

  test('the lines hold what was stored: messages, thinking, answer', { timeout: TEST_TIMEOUT_MS }, async () => {
    // Spelled out for three rows, so that a mistake shared by the Worker and the reading
    // above cannot hide.
    const { lines } = await exportOf({ format: 'openai_chat', reasoning: 'inline' });
    const first = lines.find((l) => l.messages.at(-2)?.content === `What is 2+2? ${RUN}`);
    assert.deepEqual(first.messages.slice(0, 2), [{ role: 'system', content: `You answer briefly. ${RUN}` }, { role: 'user', content: `What is 2+2? ${RUN}` }]);
    assert.equal(first.messages[2].role, 'assistant');
    assert.equal(first.messages[2].content,
      `<think>\nReasoning about: What is 2+2? ${RUN}\n\nThinking about: What is 2+2? ${RUN}\n</think>\n\nAnswer to: What is 2+2? ${RUN}`);
    const generated = lines.find((l) => l.messages.some((m) => m.content === `A text prompt ${RUN}`));
    assert.deepEqual(generated.messages.slice(0, 2), [{ role: 'system', content: 'Speak plainly.' }, { role: 'user', content: `A text prompt ${RUN}` }]);
    // A batch's lines are answered concurrently: their rows are in the order they were.
    const { lines: shared } = await exportOf({ format: 'sharegpt', batch_id: batchId });
    assert.equal(shared.length, 2, 'the two valid lines of the batch');
    assert.deepEqual(shared.find((l) => l.conversations[1].value === `Batch line 1 ${RUN}`), { conversations: [
      { from: 'system', value: 'Batch system.' }, { from: 'human', value: `Batch line 1 ${RUN}` },
      { from: 'gpt', value: `Answer to: Batch line 1 ${RUN}`, reasoning: `Reasoning about: Batch line 1 ${RUN}\n\nThinking about: Batch line 1 ${RUN}` },
    ] });
  });

  test('the filters: provider, model, batch, validity, since and until, finish reason, incomplete rows', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ids = async (params) => (await exportOf({ format: 'flat', ...params })).lines.map((l) => l.id);
    const where = (predicate, rows = written) => rows.filter(predicate).map((r) => r.id);
    const valid = (r) => r.invalid_reason === null;
    assert.deepEqual(await ids({}), where(valid));
    assert.deepEqual(await ids({ valid: 'false' }), where((r) => !valid(r)));
    assert.deepEqual(await ids({ valid: 'all' }), where(() => true));
    assert.deepEqual(await ids({ provider: 'plain' }), where((r) => valid(r) && r.provider === 'plain'));
    assert.deepEqual(await ids({ model: 'seeded-model', valid: 'all' }), where((r) => r.model === 'seeded-model'));
    const batch = await exportOf({ format: 'flat', batch_id: batchId, valid: 'all' });
    assert.deepEqual(batch.lines.map((l) => l.id), where((r) => r.batch_id === batchId));
    const byLine = Object.fromEntries(batch.lines.map((l) => [l.custom_id, l]));
    assert.deepEqual(Object.keys(byLine).sort(), ['line-1', 'line-2', 'line-3']);
    assert.ok(batch.lines.every((l) => l.batch_id === batchId));
    assert.equal(byLine['line-1'].invalid_reason, undefined);
    assert.equal(byLine['line-3'].invalid_reason, "finish_reason: finish_reason is 'length', not 'stop'");
    assert.deepEqual(await ids({ finish_reason: 'length', valid: 'all' }), where((r) => r.finish_reason === 'length'));
    // since is inclusive, until exclusive; ISO 8601 (with a zone offset) or milliseconds.
    const times = written.map((r) => r.created_at);
    const middle = times[Math.floor(times.length / 2)];
    const later = times.find((t) => t > middle + 1) ?? middle + 5;
    const iso = (ms) => new Date(ms).toISOString();
    const plusTwo = (ms) => iso(ms + 2 * 3_600_000).replace('Z', '+02:00');
    assert.deepEqual(await ids({ valid: 'all', since: String(middle) }), where((r) => r.created_at >= middle));
    assert.deepEqual(await ids({ valid: 'all', since: iso(middle), until: plusTwo(later) }),
      where((r) => r.created_at >= middle && r.created_at < later));
    assert.deepEqual(await ids({ valid: 'all', until: String(middle) }), where((r) => r.created_at < middle));
    // The training formats leave out the incomplete rows unless asked; flat keeps them.
    const training = await exportOf({ valid: 'all', model: 'seeded-model', format: 'sharegpt', reasoning: 'none' });
    const seeded = written.filter((r) => r.model === 'seeded-model');
    assert.equal(training.lines.length, seeded.filter((r) => !incomplete(r) && conversation(r.request)).length);
    const all = await exportOf({ valid: 'all', model: 'seeded-model', format: 'sharegpt', reasoning: 'none', include_incomplete: 'true' });
    assert.equal(all.lines.length, training.lines.length + 1, 'the unclosed row (the cut one has no readable request)');
    assert.ok(all.lines.some((l) => l.conversations.at(-1).value === '' && l.conversations[0].value === 'Think forever'));
  });

  test('headers: JSONL, a file name, the row count; an empty export is an empty file', { timeout: TEST_TIMEOUT_MS }, async () => {
    const res = await exportOf({ format: 'sharegpt', reasoning: 'inline', valid: 'all' });
    assert.match(res.headers.get('content-type'), /^application\/x-ndjson/);
    assert.match(res.headers.get('content-disposition'), /^attachment; filename="llm-distiller-sharegpt-inline-\d{8}T\d{6}Z\.jsonl"$/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.match(res.headers.get('access-control-expose-headers'), /content-disposition/);
    assert.match(res.headers.get('access-control-expose-headers'), /x-export-rows/);
    const flat = await exportOf({ format: 'flat', valid: 'all' });
    assert.equal(Number(flat.headers.get('x-export-rows')), written.length);
    assert.equal(flat.lines.length, written.length, 'flat has a line for every row');
    assert.match(flat.headers.get('content-disposition'), /filename="llm-distiller-flat-\d{8}T\d{6}Z\.jsonl"/);
    const none = await exportOf({ provider: `nobody-${RUN}` });
    assert.equal(none.text, '');
    assert.equal(none.headers.get('x-export-rows'), '0');
  });

  test('mistakes are OpenAI-shaped 400s naming the parameter; the token is required', { timeout: TEST_TIMEOUT_MS }, async () => {
    for (const [query, param] of [
      ['format=xml', 'format'],
      ['reasoning=hidden', 'reasoning'],
      ['valid=yes', 'valid'],
      ['include_incomplete=maybe', 'include_incomplete'],
      ['since=yesterday', 'since'],
      ['until=2025-02-30', 'until'],
      ['since=2025-02-01&until=2025-01-01', 'until'],
      ['limit=10', 'limit'],
    ]) {
      const res = await api('GET', `/v1/export?${query}`);
      assert.equal(res.status, 400, `${query}: ${res.text}`);
      assert.equal(res.json.error.type, 'invalid_request_error', query);
      assert.equal(res.json.error.param, param, query);
      assert.ok(res.json.error.message.length > 0);
    }
    const none = await api('GET', '/v1/export', { token: null });
    assert.equal(none.status, 401);
    assert.equal(none.json.error.code, 'missing_api_key');
    const post = await api('POST', '/v1/export', { body: {} });
    assert.equal(post.status, 405);
  });

  // -------------------------------------------------------------------------------------
  // 100,000 rows

  const BULK = 100_000;
  const BULK_START = Date.UTC(2024, 0, 1);
  let workerd;
  const full = {};

  /** The workerd processes of the wrangler dev group. */
  function workerdProcesses() {
    const found = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
        const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        if (comm === 'workerd' && Number(fields[2]) === worker.pid) found.push(Number(entry));
      } catch {
        // Gone meanwhile.
      }
    }
    return found;
  }
  const cpuMs = (pid) => {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10; // utime + stime, in 10 ms ticks
  };
  const rssAnonKb = (pid) => Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/RssAnon:\s+(\d+)/)[1]);

  /** The Worker's log lines of the exports that ran to their end, so far. */
  const exportLog = () => fs.readFileSync(worker.logPath, 'utf8').split('\n').filter((line) => /^export \w+: \d+ lines/.test(line));

  /** Exports `params` reading it all: the bytes and lines received, the row count, the
   * Worker's log line of it, and, once `workerd` is known, its CPU time and the peak of its
   * anonymous memory (sampled every 10 ms). */
  async function measuredExport(params) {
    const logged = exportLog().length;
    let peakKb = workerd ? rssAnonKb(workerd) : 0;
    const sampler = workerd && setInterval(() => {
      peakKb = Math.max(peakKb, rssAnonKb(workerd));
    }, 10);
    const cpuBefore = workerd ? cpuMs(workerd) : 0;
    const started = Date.now();
    try {
      const response = await fetch(`${worker.url}/v1/export?${new URLSearchParams(params)}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
        signal: AbortSignal.timeout(120_000),
      });
      assert.equal(response.status, 200);
      let bytes = 0;
      let lines = 0;
      for await (const chunk of response.body) {
        bytes += chunk.length;
        for (const byte of chunk) if (byte === 10) lines += 1;
      }
      const ms = Date.now() - started;
      const deadline = Date.now() + 10_000;
      while (exportLog().length === logged) {
        assert.ok(Date.now() < deadline, 'the export logged no line within 10 s');
        await sleep(50);
      }
      const log = exportLog()[logged];
      return {
        bytes, lines, ms, log, rows: Number(response.headers.get('x-export-rows')),
        wasmMb: Number(log.match(/WebAssembly memory ([\d.]+) MB/)[1]),
        peakMb: peakKb / 1024, cpuMs: workerd ? cpuMs(workerd) - cpuBefore : null,
      };
    } finally {
      if (sampler) clearInterval(sampler);
    }
  }
  const query = (rows, extra = {}) => ({ provider: 'bulk', format: 'openai_chat', reasoning: 'inline', ...extra,
    ...(rows < BULK ? { until: String(BULK_START + rows) } : {}) });

  test('100,000 rows seeded straight into D1 export in full, page after page', { timeout: 180_000 }, async (t) => {
    // About 2.3 kB a line: 100,000 rows make more than 200 MB of JSONL.
    const started = Date.now();
    await d1File(`INSERT INTO responses (id, created_at, provider, model, request, content, thinking, finish_reason,
        prompt_tokens, completion_tokens, total_tokens, response_time_ms, truncated)
      WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${BULK - 1})
      SELECT printf('rsp_%012x%016x', ${BULK_START} + i, i), ${BULK_START} + i, 'bulk', 'bulk-model',
        json_object('messages', json_array(json_object('role', 'user', 'content', 'Question ' || i || ' ' || hex(randomblob(40))))),
        'Answer ' || i || ' ' || hex(randomblob(500)), 'Thinking ' || i || ' ' || hex(randomblob(500)), 'stop', 10, 20, 30, 5, 0
      FROM n;`);
    t.diagnostic(`seeded ${BULK} rows in ${Date.now() - started} ms`);
    const [[{ n }]] = await d1("SELECT COUNT(*) AS n FROM responses WHERE provider = 'bulk'");
    assert.equal(n, BULK);

    // More than a page (2,000 rows), read whole and checked: in order, nothing lost or repeated.
    const res = await fetch(`${worker.url}/v1/export?provider=bulk&format=flat&until=${BULK_START + 2_500}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.headers.get('x-export-rows'), '2500');
    const lines = (await res.text()).trimEnd().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 2_500);
    lines.forEach((line, i) => {
      assert.equal(line.created_at, BULK_START + i);
      assert.match(line.content, new RegExp(`^Answer ${i} [0-9A-F]{1000}$`));
      assert.deepEqual(line.usage, { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 });
    });
  });

  test("the Worker's memory does not grow with the row count: 10,000 vs 100,000 rows", { timeout: 240_000 }, async (t) => {
    // 1. The Worker's WebAssembly memory, which every row and line passes through. It grows
    // when the Worker needs more and never shrinks, so its size after an export is the most
    // the Worker ever held at once; the Worker logs it with each export. After 10,000 rows
    // (five pages, as large as any page of the 100,000), then after 100,000: an export that
    // kept its rows or lines, or read pages ahead of its client, would need 10 times more.
    const candidates = workerdProcesses();
    assert.ok(candidates.length > 0, 'wrangler dev runs workerd in its process group');
    const ten = await measuredExport(query(10_000));
    const cpuBefore = new Map(candidates.map((pid) => [pid, cpuMs(pid)]));
    const hundred = await measuredExport(query(BULK));
    assert.equal(ten.lines, 10_000);
    assert.equal(hundred.lines, BULK);
    assert.equal(hundred.rows, BULK);
    t.diagnostic(`Worker log: ${ten.log}`);
    t.diagnostic(`Worker log: ${hundred.log}`);
    t.diagnostic(`WebAssembly memory: ${ten.wasmMb} MB after 10,000 rows (${(ten.bytes / 1e6).toFixed(0)} MB exported), ` +
      `${hundred.wasmMb} MB after 100,000 (${(hundred.bytes / 1e6).toFixed(0)} MB)`);
    assert.ok(hundred.bytes > 200e6, 'the export is far larger than the memory in question');
    assert.ok(hundred.wasmMb - ten.wasmMb <= 4, `the WebAssembly memory grew from ${ten.wasmMb} to ${hundred.wasmMb} MB`);
    assert.ok(hundred.wasmMb < 64, `${hundred.wasmMb} MB of a deployed isolate's 128 MB`);

    // 2. The whole workerd process that runs the Worker (the isolate's JavaScript side, and
    // under wrangler dev the local D1 too): the peak of its anonymous memory (RssAnon:
    // heaps, not files), sampled every 10 ms through whole exports. The process is the one
    // the export above kept busy. workerd's allocator keeps what it once used, so the first
    // large exports raise it to a plateau; one more gets there before measuring.
    workerd = candidates.reduce((busiest, pid) => (cpuMs(pid) - cpuBefore.get(pid) > cpuMs(busiest) - cpuBefore.get(busiest) ? pid : busiest));
    await measuredExport(query(BULK));
    const runs = [];
    for (const rows of [10_000, BULK, 10_000, BULK]) {
      const run = await measuredExport(query(rows));
      assert.equal(run.lines, rows);
      runs.push({ rows, ...run });
      t.diagnostic(`${rows} rows: ${(run.bytes / 1e6).toFixed(0)} MB exported in ${run.ms} ms, ` +
        `${run.cpuMs} ms of CPU, peak RssAnon ${run.peakMb.toFixed(1)} MB, WebAssembly memory ${run.wasmMb} MB`);
    }
    const peak = (n) => Math.max(...runs.filter((r) => r.rows === n).map((r) => r.peakMb));
    const bytes = (n) => Math.min(...runs.filter((r) => r.rows === n).map((r) => r.bytes)) / 2 ** 20;
    const growth = peak(BULK) - peak(10_000);
    const more = bytes(BULK) - bytes(10_000);
    full.cpuMs = Math.min(...runs.filter((r) => r.rows === BULK).map((r) => r.cpuMs));
    t.diagnostic(`process: peak at 100,000 rows minus peak at 10,000: ${growth.toFixed(1)} MB, for ${more.toFixed(0)} MB more exported`);
    // The process measured is the one that did the work.
    for (const run of runs) assert.ok(run.cpuMs >= 100 * (run.rows / BULK), `the process measured did the work (${run.cpuMs} ms of CPU)`);
    // An export that held its lines (or rows) would add at least `more`.
    assert.ok(more > 150, `the larger export is much larger (${more.toFixed(0)} MB more)`);
    assert.ok(growth < more / 4, `the peak grew by ${growth.toFixed(1)} MB with ${more.toFixed(0)} MB more exported`);
    assert.ok(runs.every((r) => r.wasmMb === hundred.wasmMb), 'the WebAssembly memory stayed where it was');
  });

  test('a client that hangs up stops the reading', { timeout: 60_000 }, async (t) => {
    assert.ok(full.cpuMs, 'needs the whole exports above');
    const controller = new AbortController();
    const cpuBefore = cpuMs(workerd);
    const response = await fetch(`${worker.url}/v1/export?provider=bulk&format=flat`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      signal: controller.signal,
    });
    const reader = response.body.getReader();
    let received = 0;
    while (received < 100_000) {
      const { value, done } = await reader.read();
      assert.ok(!done, 'the export ended early');
      received += value.length;
    }
    controller.abort();
    await reader.cancel().catch(() => {});
    const atAbort = cpuMs(workerd);
    await sleep(3_000);
    const after = cpuMs(workerd) - atAbort;
    t.diagnostic(`CPU: ${atAbort - cpuBefore} ms until the hang-up, ${after} ms in the 3 s after; ${full.cpuMs} ms for a whole export`);
    assert.ok(after < full.cpuMs / 10, `the Worker kept working after the client left (${after} ms of CPU)`);
    // And it serves the next export whole.
    const next = await measuredExport({ provider: 'bulk', format: 'flat', until: String(BULK_START + 1_000) });
    assert.equal(next.lines, 1_000);
  });

  test('no key or token in any export or in the Worker log', { timeout: 120_000 }, async () => {
    // Every answer above was scanned as it arrived; the bulk exports are scanned here.
    for (const format of FORMATS) {
      // Every row but the bulk ones (seeded by SQL, and 250 MB a format).
      const res = await fetch(`${worker.url}/v1/export?format=${format}&valid=all&include_incomplete=true&since=${BULK_START + BULK}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(res.status, 200);
      assertNoSecrets(await res.text(), `the ${format} export`);
    }
    assertNoSecrets(fs.readFileSync(worker.logPath, 'utf8'), "the Worker's log");
  });
});
