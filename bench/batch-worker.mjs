// Batches on the Worker against a rate-limited upstream: the same prompts as a server-side
// batch (upload, batches.create, poll, download the output) and driven by the client with
// the npm package's generateBatch, side by side, in front of an upstream that enforces
// requests and tokens per minute as OpenAI does. Prints items per second against the
// budget's, the wall time over the minimum, the upstream's 429s, and the D1 statements a
// line costs (the Worker logs how many it has sent).
//
//   node bench/batch-worker.mjs [--quick]     (needs scripts/build-pkg.sh and scripts/build-worker.sh)
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import OpenAI, { toFile } from 'openai';

import { ROOT, WRANGLER, startWranglerDev, wranglerEnv } from '../tests/support/local-stack.mjs';
import { startUpstream } from '../tests/upstream/server.mjs';

const quick = process.argv.includes('--quick');
const RPM = 240;
const COUNT = quick ? 300 : 600;
const MINIMUM_MS = ((COUNT - RPM) / RPM) * 60_000;
const run = randomBytes(4).toString('hex');
const token = randomBytes(18).toString('base64url');

const tmp = fs.mkdtempSync(path.join(tmpdir(), 'bench-batch-worker-'));
const env = wranglerEnv(path.join(tmp, 'wrangler-logs'));
const upstream = await startUpstream({ port: 0 });
const scenario = `budget:${RPM}:10000000:latency:100`;
const provider = (key) => ({
  type: 'custom',
  base_url: `${upstream.url}/s/${scenario}/${key}/v1`,
  model: 'bench-model',
  rate_limit: { requests_per_minute: RPM, tokens_per_minute: 10_000_000 },
});
const prompts = Array.from({ length: COUNT }, (_, i) => `Question ${i}: what is ${i} squared?`);
const stats = async (key) => (await fetch(`${upstream.url}/__stats/${key}`)).json();
let dev;
try {
  const persistDir = path.join(tmp, 'state');
  const envFile = path.join(tmp, 'dev.env');
  fs.writeFileSync(envFile, `DISTILLER_TOKEN=${token}\n`, { mode: 0o600 });
  await promisify(execFile)(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', persistDir], { cwd: ROOT, env });
  const serverKey = `server-${run}`;
  dev = await startWranglerDev({
    persistDir,
    envFile,
    config: { providers: { up: provider(serverKey) } },
    logPath: path.join(tmp, 'wrangler.log'),
    env,
    startupTimeoutMs: 300_000,
  });
  const client = new OpenAI({ apiKey: token, baseURL: `${dev.url}/v1`, maxRetries: 0 });
  const jsonl = prompts
    .map((content, i) => JSON.stringify({ custom_id: `q${i}`, method: 'POST', url: '/v1/chat/completions', body: { messages: [{ role: 'user', content }], max_tokens: 32 } }))
    .join('\n');

  // The server-side batch.
  const t0 = performance.now();
  const file = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'bench.jsonl'), purpose: 'batch' });
  let batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  while (!['completed', 'failed', 'cancelled', 'expired'].includes(batch.status)) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    batch = await client.batches.retrieve(batch.id);
  }
  const output = await (await client.files.content(batch.output_file_id)).text();
  const serverMs = performance.now() - t0;
  const serverLines = output.trimEnd().split('\n').length;
  const logged = [...fs.readFileSync(path.join(tmp, 'wrangler.log'), 'utf8').matchAll(/(\d+) D1 statements sent by isolate (\d+) so far/g)];
  // Each isolate counts its own: the last figure of each, summed.
  const byIsolate = new Map(logged.map((m) => [m[2], Number(m[1])]));
  const statements = [...byIsolate.values()].reduce((a, b) => a + b, 0);
  const server = await stats(serverKey);
  const arrivals = (await (await fetch(`${upstream.url}/__log/${serverKey}`)).json()).map((e) => e.at_ms);
  const epochT0 = performance.timeOrigin + t0;
  const phases = `the first upstream call at +${((arrivals[0] - epochT0) / 1000).toFixed(2)} s (upload, create, the queue), the ${RPM}th at +${((arrivals[RPM - 1] - epochT0) / 1000).toFixed(2)} s, the last at +${((arrivals.at(-1) - epochT0) / 1000).toFixed(2)} s, the output downloaded at +${(serverMs / 1000).toFixed(2)} s`;

  // The same prompts driven by the client: the npm package's generateBatch.
  const { ProviderManager } = await import(path.join(ROOT, 'pkg/node.js'));
  const clientKey = `client-${run}`;
  const manager = new ProviderManager({ providers: { up: provider(clientKey) } });
  const t1 = performance.now();
  const items = await manager.generateBatch(prompts, { max_tokens: 32 }, { concurrency: 64 });
  const clientMs = performance.now() - t1;
  manager.free();
  const clientStats = await stats(clientKey);

  const row = (name, ms, lines, s) =>
    `| ${name} | ${lines} | ${(ms / 1000).toFixed(2)} | ${(ms / MINIMUM_MS).toFixed(3)} | ${((lines / ms) * 1000).toFixed(1)} | ${s.rejected_429} | ${s.requests} |`;
  console.log(`# Batches on the Worker against a rate-limited upstream (${new Date().toISOString().slice(0, 10)}, ${cpus()[0].model}, ${cpus().length} cores, Node ${process.version})`);
  console.log(`\n${COUNT} prompts, an upstream that enforces ${RPM} requests per minute as OpenAI does (a bucket, full at first, refilling continuously) and answers in 100 ms. The minimum is ${(MINIMUM_MS / 1000).toFixed(0)} s (${RPM} at once, then ${RPM / 60} a second): ${(COUNT / (MINIMUM_MS / 1000)).toFixed(1)} items per second over the run at best.\n`);
  console.log('| how | lines | wall s | × the minimum | items/s | upstream 429s | upstream requests |');
  console.log('|---|--:|--:|--:|--:|--:|--:|');
  console.log(row('a server-side batch: upload, `batches.create`, poll, download (the Worker, its queue and D1, the shared limiter)', serverMs, serverLines, server));
  console.log(row('the client drives it: the npm package\'s `generateBatch`, concurrency 64', clientMs, items.filter((i) => i.ok).length, clientStats));
  console.log(`\nThe server-side batch, from the upload: ${phases}.`);
  console.log(`\nD1 statements per line of the server-side batch: ${(statements / COUNT).toFixed(2)} (${statements} in all, from the Worker's own count, which includes storing the file, creating the batch, each line's claim and its one-transaction end, feeding, the watch every 2 s, finalizing, and reading the batch and its files).`);
} finally {
  await dev?.stop();
  await upstream.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}
