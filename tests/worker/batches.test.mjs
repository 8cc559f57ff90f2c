// Batches on the Worker, as a pipeline runs them: the official `openai` SDK's `files` and
// `batches` resources against the real build under `wrangler dev` (its local D1, Durable
// Objects and Queues), a scripted upstream on 127.0.0.1 for every provider. Every object
// is checked against OpenAI's own schemas, every output line against what the upstream
// answered, every stored row counted; every answer, row and log is scanned for the keys
// and the token.
//
//   node --test tests/worker/batches.test.mjs   (needs scripts/build-worker.sh; ~3 minutes)

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import OpenAI, { toFile } from 'openai';

import { assertSchema } from '../support/openai-schema.mjs';
import { ROOT, WRANGLER, startWranglerDev, upstreamLog, wranglerEnv } from '../support/local-stack.mjs';
import { startUpstream } from '../upstream/server.mjs';

const execFileP = promisify(execFile);

const STARTUP_TIMEOUT_MS = 180_000;
const RUN = randomBytes(4).toString('hex');
const TOKEN = randomBytes(24).toString('base64url');
const KEY = `sk-batch-${randomBytes(16).toString('hex')}`;
const SECRETS = [['the API key', KEY], ['the access token', TOKEN]];
const BUDGET_RPM = 240;
const GENEROUS = { requests_per_minute: 100_000, tokens_per_minute: 100_000_000 };
const NO_RETRY = { max_retries: 0, base_delay_ms: 10 };
const FINAL = new Set(['completed', 'failed', 'cancelled', 'expired']);

const key = (name) => `${RUN}-${name}`;

/** Throws if a secret occurs in `text`, naming the secret, never showing it. */
function assertNoSecrets(text, where) {
  for (const [label, secret] of SECRETS) {
    if (text.includes(secret)) assert.fail(`${label} appears in ${where}`);
  }
}

/** A batch input file: one line per `[custom_id, body]`. */
const jsonl = (lines) =>
  lines.map(([custom_id, body]) => JSON.stringify({ custom_id, method: 'POST', url: '/v1/chat/completions', body })).join('\n') + '\n';

const ask = (content, extra = {}) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }], max_tokens: 50, ...extra });

describe('batches under wrangler dev', { timeout: 900_000 }, () => {
  let tmp;
  let upstream;
  let worker;
  let client;
  let env;
  let persistDir;
  let envFile;
  let config;

  async function start() {
    worker = await startWranglerDev({
      persistDir,
      envFile,
      config,
      logPath: path.join(tmp, `worker-${Date.now()}.log`),
      env,
      startupTimeoutMs: STARTUP_TIMEOUT_MS,
      redact: (text) => SECRETS.reduce((masked, [label, secret]) => masked.split(secret).join(`<${label}>`), text),
    });
    client = new OpenAI({
      apiKey: TOKEN,
      baseURL: `${worker.url}/v1`,
      maxRetries: 0,
      timeout: 60_000,
      fetch: async (url, init) => {
        const response = await fetch(url, init);
        const text = await response.clone().text();
        assertNoSecrets(text, `the answer to ${init?.method ?? 'GET'} ${url}`);
        return response;
      },
    });
  }

  before(
    async () => {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llm-distiller-batches-'));
      persistDir = path.join(tmp, 'state');
      env = wranglerEnv(path.join(tmp, 'wrangler-logs'));
      upstream = await startUpstream({ port: 0 });
      const provider = (scenario, name, extra = {}) => ({
        type: 'openai',
        base_url: `${upstream.url}/s/${scenario}/${key(name)}/v1`,
        model: `model-${name}`,
        rate_limit: GENEROUS,
        ...extra,
      });
      config = {
        providers: {
          main: provider('normal', 'main'),
          down: provider('server_error', 'down', { retry: NO_RETRY }),
          slow: provider('slow:800', 'slow'),
          budget: provider(`budget:${BUDGET_RPM}:100000000:latency:50`, 'budget', {
            rate_limit: { requests_per_minute: BUDGET_RPM, tokens_per_minute: 100_000_000 },
          }),
          // Slow budgets, so that a batch is still running seconds after it starts.
          trickle: provider('normal', 'trickle', { rate_limit: { requests_per_minute: 20, tokens_per_minute: 100_000_000 } }),
          restart: provider('normal', 'restart', { rate_limit: { requests_per_minute: 30, tokens_per_minute: 100_000_000 } }),
        },
        default_provider: 'main',
      };
      envFile = path.join(tmp, 'worker.env');
      fs.writeFileSync(envFile, `DISTILLER_TOKEN=${TOKEN}\nOPENAI_API_KEY=${KEY}\n`, { mode: 0o600 });
      await execFileP(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', persistDir], { cwd: ROOT, env, timeout: 90_000 });
      await start();
    },
    { timeout: STARTUP_TIMEOUT_MS + 120_000 },
  );

  after(async () => {
    if (worker) {
      // Last: nothing secret in the Worker's log.
      assertNoSecrets(fs.readFileSync(worker.logPath, 'utf8'), "the Worker's log");
      await worker.stop();
    }
    await upstream?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Uploads `text` as a batch input file. */
  const upload = async (text, name = 'input.jsonl') => {
    const file = await client.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'batch' });
    assertSchema('OpenAIFile', file, 'files.create');
    return file;
  };

  /** Creates a batch of `text` and waits until it ends (polling, which also recovers it). */
  const run = async (text, { metadata, timeoutMs = 120_000 } = {}) => {
    const file = await upload(text);
    const created = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata });
    assertSchema('Batch', created, 'batches.create');
    return { file, batch: await settle(created.id, timeoutMs) };
  };

  const settle = async (id, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const batch = await client.batches.retrieve(id);
      assertSchema('Batch', batch, 'batches.retrieve');
      if (FINAL.has(batch.status)) return batch;
      assert.ok(Date.now() < deadline, `batch ${id} still ${batch.status} after ${timeoutMs / 1000} s: ${JSON.stringify(batch.request_counts)}`);
      await sleep(250);
    }
  };

  /** A file's lines, parsed (an output or error file). */
  const lines = async (fileId) => {
    if (!fileId) return [];
    const text = await (await client.files.content(fileId)).text();
    assertNoSecrets(text, `file ${fileId}`);
    const file = await client.files.retrieve(fileId);
    assertSchema('OpenAIFile', file, 'files.retrieve');
    assert.equal(file.bytes, Buffer.byteLength(text), `file ${fileId}: bytes match its content`);
    assert.ok(text.endsWith('\n'), 'each line ends with a line break');
    return text.trimEnd().split('\n').map((line) => JSON.parse(line));
  };

  /** Rows stored for a batch, from the local D1, by table. */
  const stored = async (batchId) => {
    const { stdout } = await execFileP(
      WRANGLER,
      ['d1', 'execute', 'llm-distiller', '--local', '--persist-to', persistDir, '--json', '--command',
        `SELECT 'valid' AS t, custom_id, content, thinking FROM responses WHERE batch_id = '${batchId}' ` +
        `UNION ALL SELECT 'invalid', custom_id, content, reason FROM invalid_responses WHERE batch_id = '${batchId}'`],
      { cwd: ROOT, env, timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
    );
    assertNoSecrets(stdout, 'the stored rows');
    return JSON.parse(stdout)[0].results;
  };

  test('files: upload, retrieve, list, content and delete, in OpenAI\'s shapes', { timeout: 60_000 }, async () => {
    const text = jsonl([['a', ask('one')], ['b', ask('two')]]);
    const file = await upload(text, 'mine.jsonl');
    assert.equal(file.filename, 'mine.jsonl');
    assert.equal(file.bytes, Buffer.byteLength(text));
    assert.equal(file.purpose, 'batch');
    assert.match(file.id, /^file-[0-9a-f]{28}$/);
    const content = await (await client.files.content(file.id)).text();
    assert.equal(content, text, 'the content is exactly what was uploaded');
    const listed = await client.files.list();
    assert.ok(listed.data.some((f) => f.id === file.id));
    const raw = await (await fetch(`${worker.url}/v1/files?limit=2&order=asc`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
    assertSchema('ListFilesResponse', raw, 'GET /v1/files');
    const batches = await (await fetch(`${worker.url}/v1/batches`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
    assertSchema('ListBatchesResponse', batches, 'GET /v1/batches');
    const deleted = await client.files.delete(file.id);
    assertSchema('DeleteFileResponse', deleted, 'files.delete');
    assert.deepEqual(deleted, { id: file.id, object: 'file', deleted: true });
    await assert.rejects(client.files.retrieve(file.id), (e) => e.status === 404);
  });

  test('a batch: every line answered once, in OpenAI\'s output format, stored with its custom_id', { timeout: 120_000 }, async () => {
    const prompts = Array.from({ length: 12 }, (_, i) => [`line-${i}`, `What is ${i} + ${i}?`]);
    const { batch } = await run(jsonl(prompts.map(([id, q]) => [id, ask(q)])), { metadata: { run: RUN } });
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: 12, completed: 12, failed: 0 });
    assert.deepEqual(batch.metadata, { run: RUN });
    assert.ok(batch.output_file_id && !batch.error_file_id, JSON.stringify(batch));
    assert.ok(batch.completed_at >= batch.created_at);
    const output = await lines(batch.output_file_id);
    assert.equal(output.length, 12);
    assert.deepEqual(output.map((l) => l.custom_id).sort(), prompts.map(([id]) => id).sort(), 'each custom_id once');
    for (const line of output) {
      const question = prompts.find(([id]) => id === line.custom_id)[1];
      assert.match(line.id, /^batch_req_/);
      assert.equal(line.error, null);
      assert.equal(line.response.status_code, 200);
      assertSchema('CreateChatCompletionResponse', line.response.body, `the output line of ${line.custom_id}`);
      const message = line.response.body.choices[0].message;
      assert.equal(message.content, `Answer to: ${question}`, 'thinking removed from the answer');
      assert.equal(message.reasoning_content, `Reasoning about: ${question}\n\nThinking about: ${question}`);
      assert.equal(line.response.request_id, line.response.body.id, 'the stored row');
    }
    const rows = await stored(batch.id);
    assert.equal(rows.length, 12, 'one stored row per line');
    assert.deepEqual(rows.map((r) => r.custom_id).sort(), prompts.map(([id]) => id).sort());
    assert.ok(rows.every((r) => r.t === 'valid' && r.content.startsWith('Answer to: ')));
    const sent = await upstreamLog(upstream, key('main'));
    assert.equal(sent.filter((e) => e.body?.messages?.at(-1)?.content?.startsWith('What is')).length, 12, 'one upstream call per line');
    const listed = await client.batches.list({ limit: 100 });
    assert.ok(listed.data.some((b) => b.id === batch.id));
  });

  test('lines that fail for good go to the error file, with the reason, and are stored invalid', { timeout: 120_000 }, async () => {
    const { batch } = await run(jsonl([['ok', ask('fine')], ['bad', ask('broken', { provider: 'down' })]]));
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: 2, completed: 1, failed: 1 });
    const [error] = await lines(batch.error_file_id);
    assert.equal(error.custom_id, 'bad');
    assert.equal(error.response.status_code, 502);
    assert.equal(error.response.body.error.code, 'upstream_error');
    assert.match(error.error.message, /HTTP 500/);
    assertSchema('ErrorResponse', error.response.body, 'an error line\'s body');
    const [ok] = await lines(batch.output_file_id);
    assert.equal(ok.custom_id, 'ok');
    const rows = await stored(batch.id);
    assert.deepEqual(rows.map((r) => [r.t, r.custom_id]).sort(), [['invalid', 'bad'], ['valid', 'ok']]);
  });

  test('malformed files are refused at upload with a 400 naming the line and field', { timeout: 60_000 }, async () => {
    const good = JSON.stringify({ custom_id: 'g', method: 'POST', url: '/v1/chat/completions', body: ask('x') });
    const cases = [
      ['not JSONL', 'hello world', 1, null],
      ['a line that is not an object', `${good}\n[1,2]`, 2, null],
      ['a missing custom_id', `${good}\n${JSON.stringify({ method: 'POST', url: '/v1/chat/completions', body: ask('x') })}`, 2, 'custom_id'],
      ['a duplicate custom_id', `${good}\n${good}`, 2, 'custom_id'],
      ['another url', `${good}\n${JSON.stringify({ custom_id: 'e', method: 'POST', url: '/v1/embeddings', body: ask('x') })}`, 2, 'url'],
      ['an invalid chat request', `${good}\n${JSON.stringify({ custom_id: 'm', method: 'POST', url: '/v1/chat/completions', body: { messages: [] } })}`, 2, 'body.messages'],
      ['an unknown provider', `${good}\n${JSON.stringify({ custom_id: 'p', method: 'POST', url: '/v1/chat/completions', body: ask('x', { provider: 'nobody' }) })}`, 2, 'body.provider'],
    ];
    for (const [what, text, line, param] of cases) {
      const error = await upload(text).then(() => null, (e) => e);
      assert.ok(error, `${what}: refused`);
      assert.equal(error.status, 400, `${what}: ${error.message}`);
      assert.equal(error.error?.type, 'invalid_request_error', what);
      assert.equal(error.param ?? null, param, `${what}: param`);
      assert.match(error.message, new RegExp(`line ${line}`), `${what}: names the line: ${error.message}`);
    }
    // Not a multipart upload, another purpose, a batch of a missing file or the wrong endpoint.
    const raw = await fetch(`${worker.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(raw.status, 400);
    assertSchema('ErrorResponse', await raw.json());
    await assert.rejects(client.files.create({ file: await toFile(Buffer.from(good), 'x.jsonl'), purpose: 'fine-tune' }), (e) => e.status === 400 && e.param === 'purpose');
    await assert.rejects(
      client.batches.create({ input_file_id: 'file-0000000000000000000000000000', endpoint: '/v1/chat/completions', completion_window: '24h' }),
      (e) => e.status === 400 && e.param === 'input_file_id',
    );
    const file = await upload(good);
    await assert.rejects(client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' }), (e) => e.status === 400 && e.param === 'endpoint');
    await assert.rejects(client.batches.retrieve('batch_0000000000000000000000000000'), (e) => e.status === 404);
    // A file over the limit: a 413 before it is read.
    const huge = await fetch(`${worker.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'multipart/form-data; boundary=x', 'content-length': String(20 * 1024 * 1024) },
      body: 'x',
    }).catch((e) => e);
    assert.ok(huge instanceof Error || huge.status === 413, `a 413: ${huge.status}`);
  });

  test('cancel stops new lines at once; those in flight finish and are kept', { timeout: 120_000 }, async () => {
    // 20 requests per minute: the bucket's 20 go at once, then one every 3 s.
    const file = await upload(jsonl(Array.from({ length: 40 }, (_, i) => [`c${i}`, ask(`slow ${i}`, { provider: 'trickle' })])));
    const created = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    await sleep(1500);
    const cancelling = await client.batches.cancel(created.id);
    assertSchema('Batch', cancelling, 'batches.cancel');
    assert.ok(['cancelling', 'cancelled'].includes(cancelling.status), cancelling.status);
    const batch = await settle(created.id, 60_000);
    assert.equal(batch.status, 'cancelled');
    assert.ok(batch.cancelled_at >= batch.cancelling_at);
    const done = batch.request_counts.completed;
    assert.ok(done > 0 && done < 40, `some lines ran, not all: ${done}`);
    const output = await lines(batch.output_file_id);
    assert.equal(output.length, done, 'the output file holds what completed');
    const sentBefore = (await upstreamLog(upstream, key('trickle'))).length;
    await sleep(3500);
    assert.equal((await upstreamLog(upstream, key('trickle'))).length, sentBefore, 'nothing more is sent');
    assert.equal((await stored(batch.id)).length, done);
    await assert.rejects(client.batches.cancel(created.id), (e) => e.status === 400);
  });

  test(`300 lines against ${BUDGET_RPM} requests per minute: no 429, within 1.10× the budget's minimum`, { timeout: 180_000 }, async () => {
    const count = 300;
    const minimumMs = ((count - BUDGET_RPM) / BUDGET_RPM) * 60_000;
    const file = await upload(jsonl(Array.from({ length: count }, (_, i) => [`b${i}`, ask(`budget ${i}`, { provider: 'budget', max_tokens: 16 })])));
    const started = performance.now();
    const created = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const batch = await settle(created.id, 120_000);
    const elapsed = performance.now() - started;
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: count, completed: count, failed: 0 });
    const stats = await (await fetch(`${upstream.url}/__stats/${key('budget')}`)).json();
    assert.equal(stats.rejected_429, 0, `the upstream refused ${stats.rejected_429} with 429`);
    assert.equal(stats.requests, count, 'one upstream call per line');
    const ratio = elapsed / minimumMs;
    assert.ok(ratio <= 1.1, `${(elapsed / 1000).toFixed(1)} s: ${ratio.toFixed(3)}× the minimum of ${minimumMs / 1000} s`);
  });

  test('a Worker killed mid-batch and started again finishes it: every custom_id exactly once', { timeout: 300_000 }, async () => {
    const count = 40;
    const file = await upload(jsonl(Array.from({ length: count }, (_, i) => [`k${i}`, ask(`restart ${i}`, { provider: 'restart' })])));
    const created = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    // 30 per minute: the bucket's 30 go at once, then one every 2 s: lines are queued and
    // waiting for their turn when the Worker is killed.
    await sleep(3000);
    const before = await client.batches.retrieve(created.id);
    assert.equal(before.status, 'in_progress', `still running when killed: ${JSON.stringify(before.request_counts)}`);
    await worker.kill();
    await start();
    const batch = await settle(created.id, 240_000);
    assert.equal(batch.status, 'completed');
    const all = [...(await lines(batch.output_file_id)), ...(await lines(batch.error_file_id))];
    const ids = all.map((l) => l.custom_id).sort();
    assert.deepEqual(ids, Array.from({ length: count }, (_, i) => `k${i}`).sort(), 'every custom_id exactly once');
    assert.equal(batch.request_counts.completed + batch.request_counts.failed, count);
    const rows = await stored(batch.id);
    assert.equal(rows.length, count, 'one stored row per line, never two');
    assert.equal(new Set(rows.map((r) => r.custom_id)).size, count);
  });
});
