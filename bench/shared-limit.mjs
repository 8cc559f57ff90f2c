// One rate limit across isolates, measured: two `wrangler dev` processes of this Worker
// (two isolates with separate memory) in front of a loopback upstream that enforces a
// request budget as OpenAI does (a bucket, full at first, refilling continuously).
//
// 1. The same requests spread over both Workers, side by side: with the limiter shared
//    through the Durable Object (the first Worker hosts it, the second binds it by name
//    through wrangler's dev registry), and with each Worker limiting on its own (no
//    binding), as before. Wall time over the budget's minimum, the upstream's 429s, and
//    calls that failed.
// 2. What the shared limiter adds to a call: one Worker with the object and one without
//    (each isolate its own limiter), both without wrangler's inspector, in front of an
//    upstream that answers at once, measured in interleaved rounds at 1 and 16 clients
//    (p50/p99 of a full call).
//
//   node bench/shared-limit.mjs [--quick]     (needs the Worker built: scripts/build-worker.sh)
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { ROOT, WRANGLER, startWorkerWithoutInspector, startWranglerDev, wranglerEnv, writeWranglerConfig } from '../tests/support/local-stack.mjs';
import { startUpstream } from '../tests/upstream/server.mjs';

const quick = process.argv.includes('--quick');
const RPM = 240;
const REQUESTS = quick ? 300 : 360;
const CLIENTS = 48;
const MINIMUM_MS = ((REQUESTS - RPM) / RPM) * 60_000;
const ROUND_TRIP_REQUESTS = quick ? 100 : 300;

const run = randomBytes(4).toString('hex');
const token = randomBytes(18).toString('base64url');
const tmp = fs.mkdtempSync(path.join(tmpdir(), 'bench-shared-'));
const env = { ...wranglerEnv(path.join(tmp, 'wrangler-logs')), WRANGLER_REGISTRY_PATH: path.join(tmp, 'registry') };
const envFile = path.join(tmp, 'dev.env');
fs.writeFileSync(envFile, `DISTILLER_TOKEN=${token}\n`, { mode: 0o600 });
const started = [];

/** `wrangler dev` of Worker `name` with `limiter` (see writeWranglerConfig) and `config`. */
async function worker(name, limiter, config) {
  const persistDir = path.join(tmp, `state-${name}`);
  const configPath = writeWranglerConfig(path.join(tmp, `${name}.wrangler.toml`), { name, limiter });
  await promisify(execFile)(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', persistDir, '--config', configPath], { cwd: ROOT, env });
  const dev = await startWranglerDev({ persistDir, envFile, config, configPath, logPath: path.join(tmp, `${name}.log`), env, startupTimeoutMs: 300_000 });
  started.push(dev);
  return dev;
}

const chat = (dev, i) =>
  fetch(`${dev.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ messages: [{ role: 'user', content: `question ${i}` }], max_tokens: 16 }),
  });

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** `REQUESTS` calls from `CLIENTS` clients, half on each Worker. */
async function spread(devs) {
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, client) => {
      while (next < REQUESTS) {
        const i = next++;
        const response = await chat(devs[client % devs.length], i);
        await response.arrayBuffer();
        if (response.status !== 200) failed += 1;
      }
    }),
  );
  return { wall: performance.now() - t0, failed };
}

async function measure(dev, concurrency, total) {
  const times = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const t0 = performance.now();
        const response = await chat(dev, i);
        const text = await response.text();
        if (!response.ok) throw new Error(`HTTP ${response.status}: ${text}`);
        times.push(performance.now() - t0);
      }
    }),
  );
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

const upstream = await startUpstream({ port: 0 });
try {
  // 1. Two Workers in front of one budget, shared and not.
  const budgetConfig = (key) => ({
    providers: {
      up: {
        type: 'custom',
        base_url: `${upstream.url}/s/budget:${RPM}:100000000:latency:50/${key}/v1`,
        model: 'm',
        rate_limit: { requests_per_minute: RPM, tokens_per_minute: 100_000_000 },
      },
    },
  });
  const rows = [];
  for (const shared of [true, false]) {
    const key = `${shared ? 'shared' : 'separate'}-${run}`;
    const first = `bench-a-${shared ? 's' : 'p'}-${run}`;
    const a = await worker(first, shared ? 'own' : null, budgetConfig(key));
    const b = await worker(`bench-b-${shared ? 's' : 'p'}-${run}`, shared ? first : null, budgetConfig(key));
    const { wall, failed } = await spread([a, b]);
    const stats = await (await fetch(`${upstream.url}/__stats/${key}`)).json();
    rows.push({ shared, wall, failed, stats });
    await a.stop();
    await b.stop();
  }

  // 2. The round trip: one Worker with the object, one without, interleaved.
  const fast = (key) => ({
    providers: {
      up: {
        type: 'custom',
        base_url: `${upstream.url}/s/plain/${key}/v1`,
        model: 'm',
        rate_limit: { requests_per_minute: 1_000_000, tokens_per_minute: 1_000_000_000 },
      },
    },
  });
  // Without wrangler's inspector, which charges every subrequest (the object's included) a
  // report to wrangler's process that a deployment does not make (see bench/worker.mjs).
  const quiet = async (name, limiter, config) => {
    const persistDir = path.join(tmp, `state-${name}`);
    const configPath = writeWranglerConfig(path.join(tmp, `${name}.wrangler.toml`), { name, limiter });
    await promisify(execFile)(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', persistDir, '--config', configPath], { cwd: ROOT, env });
    const dev = await startWorkerWithoutInspector({ persistDir, config, vars: { DISTILLER_TOKEN: token }, configPath, name });
    started.push(dev);
    return dev;
  };
  const withObject = await quiet(`bench-rt-s-${run}`, 'own', fast(`rt-s-${run}`));
  const withoutObject = await quiet(`bench-rt-p-${run}`, null, fast(`rt-p-${run}`));
  for (const dev of [withObject, withoutObject]) await measure(dev, 4, 40);
  const roundTrips = [];
  for (const concurrency of [1, 16]) {
    const rounds = { shared: [], local: [] };
    for (let round = 0; round < 5; round += 1) {
      rounds.shared.push(await measure(withObject, concurrency, ROUND_TRIP_REQUESTS / 5));
      rounds.local.push(await measure(withoutObject, concurrency, ROUND_TRIP_REQUESTS / 5));
    }
    const median = (list, key) => list.map((r) => r[key]).sort((x, y) => x - y)[Math.floor(list.length / 2)];
    roundTrips.push({
      concurrency,
      shared: { p50: median(rounds.shared, 'p50'), p99: median(rounds.shared, 'p99') },
      local: { p50: median(rounds.local, 'p50'), p99: median(rounds.local, 'p99') },
    });
  }

  console.log(`# One rate limit across isolates (${new Date().toISOString().slice(0, 10)}, ${cpus()[0].model}, ${cpus().length} cores, Node ${process.version})`);
  console.log(`\nTwo \`wrangler dev\` processes of this Worker, ${REQUESTS} chat completions from ${CLIENTS} clients spread over both, in front of an upstream that enforces ${RPM} requests per minute as OpenAI does (a bucket, full at first, refilling continuously; 50 ms per answer). Each Worker is configured with that budget. The minimum is ${(MINIMUM_MS / 1000).toFixed(0)} s (${RPM} at once, then ${RPM / 60} a second).\n`);
  console.log('| limiter | wall s | × the minimum | upstream 429s | upstream requests | calls failed |');
  console.log('|---|--:|--:|--:|--:|--:|');
  for (const { shared, wall, failed, stats } of rows) {
    const name = shared ? 'shared: one Durable Object for both Workers' : 'separate: each Worker its own (no binding)';
    console.log(`| ${name} | ${(wall / 1000).toFixed(2)} | ${(wall / MINIMUM_MS).toFixed(3)} | ${stats.rejected_429} | ${stats.requests} | ${failed} |`);
  }
  console.log(`\nGoal: at most 1.05× the minimum with no 429. Separate limiters each spend the whole budget, so the upstream refuses what the two together send beyond it; the retries (obeying its \`retry-after-ms\`) absorb most of those, and the calls that run out of retries fail.`);
  console.log(`\nWhat the shared limiter adds to a call: the same Worker with the object and without (each isolate its own limiter), both run without wrangler's inspector (see bench/worker.mjs), a full chat completion against an upstream that answers at once, ${ROUND_TRIP_REQUESTS} calls per setting, medians of 5 interleaved rounds. A busy isolate's calls take permits reserved ahead, so most make no round trip of their own.\n`);
  console.log('| clients | shared p50 ms | shared p99 ms | own p50 ms | own p99 ms | p50 added ms | p99 added ms |');
  console.log('|---|--:|--:|--:|--:|--:|--:|');
  for (const { concurrency, shared, local } of roundTrips) {
    console.log(`| ${concurrency} | ${shared.p50.toFixed(2)} | ${shared.p99.toFixed(2)} | ${local.p50.toFixed(2)} | ${local.p99.toFixed(2)} | ${(shared.p50 - local.p50).toFixed(2)} | ${(shared.p99 - local.p99).toFixed(2)} |`);
  }
  console.log('\nGoal: the round trip at most 2 ms p50 locally. A call that finds no permit reserved ahead makes one round trip before it is sent (the reservation); what it learnt travels after the response, in `wait_until`.');
} finally {
  for (const dev of started) await dev.stop();
  await upstream.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}
