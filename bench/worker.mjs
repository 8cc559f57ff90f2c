// What the Worker costs a call beyond what the dev server itself costs: chat completions sent
// through the Worker (which reserves with the shared limiter's Durable Object, calls the
// scripted upstream and stores the answer in its local D1) side by side with the floor (a
// request that reaches the Worker and touches nothing: `GET /health`), at 1 and 16
// concurrent clients: latency (p50/p99), requests per second, and the dev server's CPU per
// call. Our part = full answer minus the floor.
//
//   node bench/worker.mjs [--requests N] [--profile]   (needs scripts/setup.sh --node)
//
// Two dev servers of the same build, measured one after the other in one run:
// - `wrangler dev` as people run it (the CLI). It attaches the DevTools inspector, whose
//   proxy reports every subrequest (D1, the Durable Object, the upstream fetch) to
//   wrangler's own process, which writes it to its debug log: a cost per subrequest that a
//   deployed Worker does not have, and that this table shows as the CLI's.
// - the same dev server without the inspector (wrangler's `unstable_startWorker`, in this
//   process): the Worker's own cost, as close to a deployment as this machine gets.
// Beside them, a reference on the server without the inspector: bench/reference/worker.js,
// the least a gateway does (forward the body to the upstream; and forward, then insert the
// answer in D1), so that our part can be read against what any gateway's part is here.
// Each setting runs in 5 interleaved rounds (the paths take turns), so the machine's noise
// hits them alike; the figures are the rounds' medians.
//
// --profile adds a CPU profile of the Worker's isolate (through the CLI's inspector; the
// Worker's wasm keeps its name section, as worker-build leaves it, so the profile names the
// Rust functions): CPU per call and where a full call spends it.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { ROOT, WRANGLER, startWorkerWithoutInspector, startWranglerDev, wranglerEnv } from '../tests/support/local-stack.mjs';
import { startUpstream } from '../tests/upstream/server.mjs';
import { connectInspector, cpuMs, hotspots } from './inspector.mjs';

const args = process.argv.slice(2);
const requests = Number(args[args.indexOf('--requests') + 1]) || 200;
const profiling = args.includes('--profile');
const ROUNDS = 5;
const CLOCK_TICKS_PER_S = 100;

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** CPU time (ms) of the workerd processes `owns(stat fields)` picks, from /proc. */
function workerdCpuMs(owns) {
  let total = 0;
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    if (name !== 'workerd') continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[1] ppid, fields[2] process group, fields[11] utime, fields[12] stime (ticks)
    if (!owns({ ppid: Number(fields[1]), group: Number(fields[2]) })) continue;
    total += ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
  }
  return total;
}

/** `total` calls of `send` from `concurrency` clients: latency, throughput, CPU per call. */
async function measure(send, concurrency, total, cpu) {
  const times = [];
  let next = 0;
  const cpuBefore = cpu();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const t0 = performance.now();
        await send(i);
        times.push(performance.now() - t0);
      }
    }),
  );
  const wall = performance.now() - started;
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), rps: (total / wall) * 1000, cpu: (cpu() - cpuBefore) / total };
}

async function expectOk(response) {
  const text = await response.text();
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${text}`);
}

const upstream = await startUpstream({ port: 0 });
const tmp = fs.mkdtempSync(path.join(tmpdir(), 'bench-worker-'));
const token = randomBytes(18).toString('base64url');
const env = wranglerEnv(path.join(tmp, 'wrangler-logs'));
const started = [];
try {
  const config = {
    providers: {
      direct: {
        type: 'custom',
        base_url: `${upstream.url}/s/plain/bench/v1`,
        model: 'bench-model',
        rate_limit: { requests_per_minute: 1_000_000, tokens_per_minute: 1_000_000_000 },
      },
    },
  };
  fs.writeFileSync(path.join(tmp, 'dev.env'), `DISTILLER_TOKEN=${token}\n`, { mode: 0o600 });
  const migrate = (state) => promisify(execFile)(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', state], { cwd: ROOT, env });

  // The CLI first: it builds the Worker, which the second then runs as built.
  await migrate(path.join(tmp, 'cli'));
  const cli = await startWranglerDev({
    persistDir: path.join(tmp, 'cli'),
    envFile: path.join(tmp, 'dev.env'),
    config,
    logPath: path.join(tmp, 'wrangler-dev.log'),
    env,
    startupTimeoutMs: 300_000,
  });
  started.push(cli);
  await migrate(path.join(tmp, 'quiet'));
  const quiet = await startWorkerWithoutInspector({ persistDir: path.join(tmp, 'quiet'), config, vars: { DISTILLER_TOKEN: token } });
  started.push(quiet);
  // The reference: the least a gateway does (bench/reference/worker.js), on the same kind of
  // dev server, so that what this Worker adds can be read against what any gateway adds.
  const reference = await startWorkerWithoutInspector({
    persistDir: path.join(tmp, 'reference'),
    config,
    vars: { UPSTREAM: `${upstream.url}/s/plain/bench/v1` },
    configPath: path.join(ROOT, 'bench/reference/wrangler.toml'),
  });
  started.push(reference);
  await expectOk(await fetch(`${reference.url}/setup`, { method: 'POST' }));

  const body = (i) => JSON.stringify({ model: 'bench-model', max_tokens: 20, messages: [{ role: 'user', content: `question ${i}` }] });
  const expect = (status) => async (response) => {
    await response.arrayBuffer();
    if (response.status !== status) throw new Error(`HTTP ${response.status}, expected ${status}`);
  };
  const post = (url, headers, i) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: body(i) });
  /** The paths through one Worker at `url`; each checks its status. */
  const paths = (url) => ({
    // The floor: a request that reaches the Worker and touches nothing.
    floor: () => fetch(`${url}/health`).then(expect(200)),
    // Refused at the token check (the body never read).
    auth: (i) => post(`${url}/v1/chat/completions`, { authorization: 'Bearer wrong' }, i).then(expect(401)),
    // Refused after the body is read and parsed and the provider looked up.
    parsed: (i) => post(`${url}/v1/chat/completions`, { authorization: `Bearer ${token}`, 'x-llm-provider': 'nobody' }, i).then(expect(400)),
    // The full answer: the shared limiter, the upstream, the row in D1.
    full: (i) => post(`${url}/v1/chat/completions`, { authorization: `Bearer ${token}` }, i).then(expect(200)),
  });
  const direct = (i) => post(`${upstream.url}/s/plain/bench/v1/chat/completions`, {}, i).then(expect(200));
  // The reference gateway's paths, measured with the server without the inspector.
  const referencePaths = {
    refFloor: () => fetch(`${reference.url}/health`).then(expect(200)),
    forward: (i) => post(`${reference.url}/forward`, {}, i).then(expect(200)),
    forwardStore: (i) => post(`${reference.url}/forward-and-store`, {}, i).then(expect(200)),
  };
  const servers = [
    { name: 'without the inspector', url: quiet.url, extra: referencePaths, cpu: () => workerdCpuMs(({ ppid }) => ppid === process.pid) },
    { name: '`wrangler dev` (CLI)', url: cli.url, extra: {}, cpu: () => workerdCpuMs(({ group }) => group === cli.pid) },
  ];

  const rows = [];
  for (const server of servers) {
    const routes = { ...paths(server.url), direct, ...server.extra };
    // Warm every path (the isolate, the JIT, the Durable Object, D1's first write).
    for (const send of Object.values(routes)) await measure(send, 4, 40, server.cpu);
    for (const concurrency of [1, 16]) {
      const rounds = Object.fromEntries(Object.keys(routes).map((name) => [name, []]));
      for (let round = 0; round < ROUNDS; round += 1) {
        for (const [name, send] of Object.entries(routes)) rounds[name].push(await measure(send, concurrency, requests / ROUNDS, server.cpu));
      }
      const summary = (name) => Object.fromEntries(['p50', 'p99', 'rps', 'cpu'].map((key) => [key, median(rounds[name].map((r) => r[key]))]));
      rows.push({ server: server.name, concurrency, reference: 'forward' in routes, ...Object.fromEntries(Object.keys(routes).map((name) => [name, summary(name)])) });
    }
  }

  // Every answer was stored: the rows in D1 of the server without the inspector.
  const { stdout: stored } = await promisify(execFile)(WRANGLER, ['d1', 'execute', 'llm-distiller', '--local', '--persist-to', path.join(tmp, 'quiet'), '--command', 'SELECT COUNT(*) AS n FROM responses', '--json'], { cwd: ROOT, env });
  const storedRows = JSON.parse(stored.slice(stored.indexOf('[')))[0].results[0].n;
  const fullCalls = 40 + 2 * requests;

  const f = (n, digits = 2) => n.toFixed(digits);
  console.log(`# The Worker's own cost per call (${new Date().toISOString().slice(0, 10)}, ${cpus()[0].model}, ${cpus().length} cores, Node ${process.version})`);
  console.log(`\n${requests} calls per path and setting, medians of ${ROUNDS} interleaved rounds. Our part = the full answer's p50 minus the floor's (\`GET /health\`); CPU = the dev server's workerd processes, per call.\n`);
  console.log('| dev server | clients | floor p50 ms | full p50 ms | **our part p50 ms** | floor req/s | full req/s | **full ÷ floor req/s** | floor CPU ms | full CPU ms | our CPU ms |');
  console.log('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const r of rows) {
    console.log(`| ${r.server} | ${r.concurrency} | ${f(r.floor.p50)} | ${f(r.full.p50)} | **${f(r.full.p50 - r.floor.p50)}** | ${f(r.floor.rps, 0)} | ${f(r.full.rps, 0)} | **${f(r.full.rps / r.floor.rps)}** | ${f(r.floor.cpu)} | ${f(r.full.cpu)} | ${f(r.full.cpu - r.floor.cpu)} |`);
  }
  console.log(`\nGoals: our part ≤ 3 ms p50 at one client; at 16 clients ≥ 0.7× the floor's requests per second. Stored: ${storedRows} rows for the ${fullCalls} full answers of the server without the inspector${storedRows === fullCalls ? ' (every one)' : ' (MISSING ROWS)'}.`);
  console.log('\nWhere the time goes, p50 ms per stage (each stage a real route that stops earlier than a full answer):\n');
  console.log('| dev server | clients | floor: `GET /health` | refused at the token (401, body unread) | refused after parsing (400, unknown provider) | full answer, stored in D1 | the upstream called directly | p99: floor / full |');
  console.log('|---|--:|--:|--:|--:|--:|--:|--:|');
  for (const r of rows) {
    console.log(`| ${r.server} | ${r.concurrency} | ${f(r.floor.p50)} | ${f(r.auth.p50)} | ${f(r.parsed.p50)} | ${f(r.full.p50)} | ${f(r.direct.p50)} | ${f(r.floor.p99)} / ${f(r.full.p99)} |`);
  }

  console.log('\nAgainst the least a gateway does: `bench/reference/worker.js`, a JavaScript Worker with no library, no auth and no parsing, that forwards the body to the same upstream (and, in the second column, inserts the answer in D1 after the response), on a dev server without the inspector like ours, in the same rounds. Each figure is that path against its own server\'s floor (`GET /health`): added p50 ms, and req/s as a share of the floor\'s.\n');
  console.log('| clients | reference: forward | reference: forward and store in D1 | this Worker: full answer (limiter, upstream, D1) |');
  console.log('|---|--:|--:|--:|');
  for (const r of rows.filter((row) => row.reference)) {
    const cell = (path, floor) => `+${f(path.p50 - floor.p50)} ms, ${f(path.rps / floor.rps)}×`;
    console.log(`| ${r.concurrency} | ${cell(r.forward, r.refFloor)} | ${cell(r.forwardStore, r.refFloor)} | ${cell(r.full, r.floor)} |`);
  }

  if (profiling) {
    const inspector = await connectInspector(cli.inspectorPort);
    const calls = 200;
    const cliPaths = paths(cli.url);
    const profiles = {};
    for (const name of ['floor', 'full']) {
      profiles[name] = await inspector.profile(async () => {
        for (let i = 0; i < calls; i += 1) await cliPaths[name](i);
        // What runs after the response (`wait_until`: the row, the limiter's flush).
        await new Promise((resolve) => setTimeout(resolve, 500));
      });
    }
    inspector.close();
    console.log(`\nThe isolate's CPU under the profiler (${calls} sequential calls each, sampled every 100 µs; the profiler slows what it measures, so the ratios count more than the figures): the floor ${f(cpuMs(profiles.floor) / calls)} ms a call, a full answer ${f(cpuMs(profiles.full) / calls)} ms. Where a full answer spends it (total: with what the function calls; self: in it alone), per call:\n`);
    console.log('| function | total ms | self ms |');
    console.log('|---|--:|--:|');
    const ours = /llm_distiller|^worker::|serde|^\(garbage collector\)|^\(program\)/;
    for (const spot of hotspots(profiles.full, { calls, top: 400 }).filter((s) => ours.test(s.name)).slice(0, 30)) {
      console.log(`| \`${spot.name.replace(/\|/g, '\\|').slice(0, 140)}\` | ${f(spot.totalMs, 3)} | ${f(spot.selfMs, 3)} |`);
    }
  }
} finally {
  for (const server of started.reverse()) await server.stop();
  await upstream.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}
