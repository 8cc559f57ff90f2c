// The latency the Worker adds: the same chat completions sent to the scripted upstream
// directly and through the Worker under `wrangler dev` (which stores each answer in its
// local D1), at 1 and 16 concurrent clients. Prints p50/p99 and requests per second.
//
//   node bench/worker.mjs [--requests N]     (needs scripts/setup.sh --node; builds the Worker)
//
// The two paths run side by side in one process, interleaved per round, so the machine's
// noise hits both alike.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { ROOT, WRANGLER, startWranglerDev, wranglerEnv } from '../tests/support/local-stack.mjs';
import { startUpstream } from '../tests/upstream/server.mjs';

const args = process.argv.slice(2);
const requests = Number(args[args.indexOf('--requests') + 1]) || 200;

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(send, concurrency, total) {
  const times = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const t0 = performance.now();
        const response = await send(i);
        await response.arrayBuffer();
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        times.push(performance.now() - t0);
      }
    }),
  );
  const wall = performance.now() - started;
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), rps: (total / wall) * 1000 };
}

const upstream = await startUpstream({ port: 0 });
const state = await mkdtemp(join(tmpdir(), 'bench-worker-'));
const token = randomBytes(18).toString('base64url');
const env = wranglerEnv(join(state, 'wrangler-logs'));
let dev;
try {
  await promisify(execFile)(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', state], { cwd: ROOT, env });
  await writeFile(join(state, 'dev.env'), `DISTILLER_TOKEN=${token}\n`, { mode: 0o600 });
  const config = {
    providers: {
      direct: {
        type: 'custom',
        base_url: `${upstream.url}/s/plain/bench/v1`,
        model: 'bench-model',
        rate_limit: { requests_per_minute: 1000000, tokens_per_minute: 1000000000 },
      },
    },
  };
  dev = await startWranglerDev({
    persistDir: state,
    envFile: join(state, 'dev.env'),
    config,
    logPath: join(state, 'wrangler-dev.log'),
    env,
    startupTimeoutMs: 300_000,
  });
  const worker = dev.url;

  const body = (i) => JSON.stringify({ model: 'bench-model', max_tokens: 20, messages: [{ role: 'user', content: `question ${i}` }] });
  const direct = (i) => fetch(`${upstream.url}/s/plain/bench/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: body(i),
  });
  const through = (i) => fetch(`${worker}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: body(i),
  });
  // The floor: what any request through wrangler dev costs, with a route that neither calls
  // the upstream nor touches D1 (`GET /health`).
  const floor = () => fetch(`${worker}/health`);
  // Stages between the floor and a full answer, each a real route that stops earlier:
  // refused at the token check (401, the body never read), and refused after the body is
  // read and parsed and the provider looked up (400, an unknown provider; no upstream, no D1).
  const refusedAtAuth = (i) => fetch(`${worker}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer wrong' }, body: body(i),
  });
  const refusedAfterParse = (i) => fetch(`${worker}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-llm-provider': 'nobody' }, body: body(i),
  });
  const paths = { direct, worker: through, floor, auth: refusedAtAuth, parsed: refusedAfterParse };
  const expected = { auth: 401, parsed: 400 };
  const send = (name) => async (i) => {
    const response = await paths[name](i);
    if (expected[name]) {
      if (response.status !== expected[name]) throw new Error(`${name}: HTTP ${response.status}, expected ${expected[name]}`);
      return { ok: true, arrayBuffer: () => response.arrayBuffer() };
    }
    return response;
  };
  // Warm every path (the isolate, the JIT, D1's first write).
  for (const name of Object.keys(paths)) await measure(send(name), 4, 40);

  const rows = [];
  for (const concurrency of [1, 16]) {
    const rounds = Object.fromEntries(Object.keys(paths).map((name) => [name, []]));
    for (let round = 0; round < 5; round += 1) {
      for (const name of Object.keys(paths)) rounds[name].push(await measure(send(name), concurrency, requests / 5));
    }
    const median = (list, key) => list.map((r) => r[key]).sort((a, b) => a - b)[Math.floor(list.length / 2)];
    const summary = (name) => Object.fromEntries(['p50', 'p99', 'rps'].map((key) => [key, median(rounds[name], key)]));
    rows.push({ concurrency, d: summary('direct'), w: summary('worker'), f: summary('floor'), a: summary('auth'), p: summary('parsed') });
  }
  console.log(`# The Worker's overhead under wrangler dev (${new Date().toISOString().slice(0, 10)}, ${cpus()[0].model}, ${cpus().length} cores, Node ${process.version})`);
  console.log(`${requests} requests per setting, medians of 5 interleaved rounds; the Worker stores every answer in its local D1.\n`);
  console.log('| clients | direct p50 ms | direct p99 ms | direct req/s | Worker p50 ms | Worker p99 ms | Worker req/s | p50 added ms | floor: `GET /health` p50 ms | floor p99 ms |');
  console.log('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const { concurrency, d, w, f } of rows) {
    console.log(`| ${concurrency} | ${d.p50.toFixed(2)} | ${d.p99.toFixed(2)} | ${d.rps.toFixed(0)} | ${w.p50.toFixed(2)} | ${w.p99.toFixed(2)} | ${w.rps.toFixed(0)} | ${(w.p50 - d.p50).toFixed(2)} | ${f.p50.toFixed(2)} | ${f.p99.toFixed(2)} |`);
  }
  console.log('\nThe floor is what wrangler dev itself costs a request to a route that neither calls the upstream nor touches D1: the part of the added latency that no Worker code can remove locally.');
  console.log('\nWhere the rest goes, p50 ms per stage: each stage is a real route that stops earlier than a full answer.\n');
  console.log('| clients | floor: `GET /health` | refused at the token (401, body unread) | refused after parsing (400, unknown provider) | full answer, stored in D1 | upstream called directly |');
  console.log('|---|--:|--:|--:|--:|--:|');
  for (const { concurrency, d, w, f, a, p } of rows) {
    console.log(`| ${concurrency} | ${f.p50.toFixed(2)} | ${a.p50.toFixed(2)} | ${p.p50.toFixed(2)} | ${w.p50.toFixed(2)} | ${d.p50.toFixed(2)} |`);
  }
} finally {
  await dev?.stop();
  await upstream.close();
  await rm(state, { recursive: true, force: true });
}
