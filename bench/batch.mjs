#!/usr/bin/env node
// A batch against a rate-limited upstream: how close each client comes to the fastest
// schedule the budget allows, how many 429s it draws, and how many prompts it loses.
// Contenders: llm-distiller's generateBatch (told the true budget, or twice it), the official
// `openai` client alone (Promise.all), behind p-limit, and scheduled by bottleneck. Prints
// Markdown to stdout (progress goes to stderr).
//
//   node bench/batch.mjs            # 500 prompts (a minimum of 30 s each); about 3 minutes in all
//   node bench/batch.mjs --quick    # 150 prompts at a smaller budget (about 10 s); under 3 minutes
//
// Build the package first (scripts/build-pkg.sh). The upstream is the scripted one
// (tests/upstream/server.mjs, scenario `budget`), in its own process so that the clients'
// work never delays its clock. Each contender gets its own upstream key, hence fresh, full
// buckets; the 429s and the requests are the upstream's own counts (`GET /__stats/<key>`).
// Contenders run one after the other, never side by side.

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const quick = process.argv.includes('--quick');
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

let distiller;
try {
  distiller = await import(new URL('../pkg/node.js', import.meta.url));
} catch (error) {
  console.error(`bench: cannot load pkg/node.js (${error.message}); run scripts/build-pkg.sh`);
  process.exit(1);
}
const { ProviderManager } = distiller;
const { default: OpenAI } = await import('openai');
const { default: pLimit } = await import('p-limit');
const { default: Bottleneck } = await import('bottleneck');

// ---------------------------------------------------------------------------------------
// The batch and the budget. Tokens bind, not requests: the token bucket runs dry long
// before the request bucket does.

const PROMPTS = quick ? 150 : 500;
const PROMPT_CHARS = 200;
const MAX_TOKENS = 100;
const LATENCY_MS = 200;
const BUDGET = quick ? { rpm: 135, tpm: 19_500 } : { rpm: 400, tpm: 50_000 };
const CONCURRENCY = 64;

/** What the upstream charges a call (its README): ceil(chars / 4) + max_tokens. */
const COST = Math.ceil(PROMPT_CHARS / 4) + MAX_TOKENS;

/** The shortest wall time for the batch under `budget`: buckets start full, so only what
 * exceeds them waits for the refill; then the last call still takes its answer's latency. */
function minimumMs({ rpm, tpm }) {
  const tokensMs = (Math.max(0, PROMPTS * COST - tpm) / tpm) * 60_000;
  const requestsMs = (Math.max(0, PROMPTS - rpm) / rpm) * 60_000;
  return { tokensMs, requestsMs, totalMs: Math.max(tokensMs, requestsMs) + LATENCY_MS };
}

/** Distinct prompts of exactly PROMPT_CHARS ASCII characters. */
const prompts = Array.from({ length: PROMPTS }, (_, i) =>
  `Prompt ${i + 1}: summarize the trade-offs of pacing a batch of requests under a shared rate limit. `
    .repeat(3)
    .slice(0, PROMPT_CHARS),
);

const progress = (message) => process.stderr.write(`bench: ${message}\n`);

// ---------------------------------------------------------------------------------------
// The upstream, in a child process.

async function startUpstream() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-batch-'));
  const portFile = path.join(dir, 'port');
  const child = spawn(process.execPath, [path.join(root, 'tests/upstream/server.mjs'), '--port', '0', '--port-file', portFile], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const port = await readFile(portFile, 'utf8').catch(() => null);
    if (port) {
      const url = `http://127.0.0.1:${port.trim()}`;
      return {
        url,
        async stats(key) {
          return (await fetch(`${url}/__stats/${key}`)).json();
        },
        async close() {
          child.kill('SIGTERM');
          await exited;
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error('the upstream did not start');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// ---------------------------------------------------------------------------------------
// The contenders. Each takes the base URL of its own key and returns one `{ ok, ... }` per
// prompt; a contender never throws for a failed prompt.

const settle = (promise) =>
  promise.then(
    () => ({ ok: true }),
    (error) => ({ ok: false, error: error?.status ? `${error.status}` : (error?.code ?? error?.message ?? `${error}`) }),
  );

function openaiClient(baseURL) {
  // Defaults otherwise: 2 retries, honouring `retry-after-ms`.
  const client = new OpenAI({ apiKey: 'bench', baseURL });
  return (prompt) =>
    client.chat.completions.create({
      model: 'bench-model',
      messages: [{ role: 'user', content: prompt }],
      max_tokens: MAX_TOKENS,
    });
}

function distillerBatch({ rpm, tpm }, refill = 'continuous') {
  return async (baseURL) => {
    const manager = new ProviderManager({
      providers: {
        upstream: {
          type: 'custom',
          base_url: baseURL,
          api_key: 'bench',
          model: 'bench-model',
          rate_limit: { requests_per_minute: rpm, tokens_per_minute: tpm, requests_refill: refill },
        },
      },
    });
    try {
      const items = await manager.generateBatch(prompts, { max_tokens: MAX_TOKENS }, { concurrency: CONCURRENCY });
      return items.map((item) =>
        item.ok
          ? { ok: true, retries: item.response.attempts - 1, waitedMs: item.response.waited_ms }
          : { ok: false, error: item.error.status ? `${item.error.status}` : item.error.code },
      );
    } finally {
      manager.free();
    }
  };
}

async function openaiAll(baseURL) {
  const create = openaiClient(baseURL);
  // Each call settled on its own: a bare Promise.all would reject at the first failure and
  // lose the whole batch, which is not the comparison meant here.
  return Promise.all(prompts.map((prompt) => settle(create(prompt))));
}

function openaiPLimit(concurrency) {
  return async (baseURL) => {
    const create = openaiClient(baseURL);
    const limit = pLimit(concurrency);
    return Promise.all(prompts.map((prompt) => limit(() => settle(create(prompt)))));
  };
}

/** How often bottleneck tops its reservoirs up: its heartbeat's default period, so each
 * beat adds one increment. */
const BOTTLENECK_TICK_MS = 250;

async function openaiBottleneck(baseURL) {
  const create = openaiClient(baseURL);
  // Two reservoirs that mirror the upstream's buckets: full at the start, topped up by
  // budget/minute in small steps, capped at the budget. A job waits for its request, then
  // for its tokens, weighted by exactly what the upstream will charge (ceil(chars/4) +
  // max_tokens, as OpenAI documents its rate-limit count). The request is taken while the
  // job still waits for tokens, which errs on the safe side.
  const bucket = (perMinute) =>
    new Bottleneck({
      reservoir: perMinute,
      reservoirIncreaseInterval: BOTTLENECK_TICK_MS,
      reservoirIncreaseAmount: (perMinute * BOTTLENECK_TICK_MS) / 60_000,
      reservoirIncreaseMaximum: perMinute,
      heartbeatInterval: BOTTLENECK_TICK_MS,
    });
  const requests = bucket(BUDGET.rpm);
  const tokens = bucket(BUDGET.tpm);
  try {
    return await Promise.all(
      prompts.map((prompt) =>
        requests.schedule(() =>
          tokens.schedule({ weight: Math.ceil(prompt.length / 4) + MAX_TOKENS }, () => settle(create(prompt))),
        ),
      ),
    );
  } finally {
    await Promise.all([requests.disconnect(), tokens.disconnect()]);
  }
}

const twice = { rpm: 2 * BUDGET.rpm, tpm: 2 * BUDGET.tpm };
const contenders = [
  { name: `llm-distiller generateBatch, true budget, concurrency ${CONCURRENCY}`, run: distillerBatch(BUDGET), goal: { ratio: 1.03, share429: 0 } },
  { name: `llm-distiller generateBatch, twice the budget (${twice.rpm} RPM, ${twice.tpm} TPM), concurrency ${CONCURRENCY}`, run: distillerBatch(twice), goal: { ratio: 1.1, share429: 0.02 } },
  { name: `llm-distiller generateBatch, true budget, \`requests_refill: "window"\``, run: distillerBatch(BUDGET, 'window') },
  { name: '`openai`, Promise.all over every prompt', run: openaiAll },
  { name: '`openai` behind p-limit(16)', run: openaiPLimit(16) },
  { name: '`openai` behind p-limit(64)', run: openaiPLimit(64) },
  { name: '`openai` scheduled by bottleneck, exact budget', run: openaiBottleneck },
];

// ---------------------------------------------------------------------------------------
// The run.

const scenario = (budget) => `budget:${budget.rpm}:${budget.tpm}:latency:${LATENCY_MS}`;
const minimum = minimumMs(BUDGET);
const upstream = await startUpstream();
const stamp = Date.now().toString(36);
const rows = [];

async function measure(name, run, budget) {
  const key = `batch-${stamp}-${rows.length}`;
  const baseURL = `${upstream.url}/s/${scenario(budget)}/${key}/v1`;
  progress(`${name} …`);
  const started = performance.now();
  const results = await run(baseURL);
  const wallMs = performance.now() - started;
  const stats = await upstream.stats(key);
  const failures = results.filter((r) => !r.ok);
  const reasons = {};
  for (const { error } of failures) reasons[error] = (reasons[error] ?? 0) + 1;
  const row = { name, wallMs, ratio: wallMs / minimumMs(budget).totalMs, stats, failed: failures.length, reasons, results };
  rows.push(row);
  progress(`  ${(wallMs / 1000).toFixed(1)} s, ${stats.requests} requests, ${stats.rejected_429} × 429, ${failures.length} failed`);
  return row;
}

try {
  for (const contender of contenders) contender.row = await measure(contender.name, contender.run, BUDGET);
} finally {
  await upstream.close();
}

// ---------------------------------------------------------------------------------------
// The report.

const print = (line = '') => process.stdout.write(`${line}\n`);
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
const int = (n) => n.toLocaleString('en-US');
const percent = (part, whole) => (whole ? `${((100 * part) / whole).toFixed(1)} %` : '–');
const failedCell = (row) =>
  row.failed === 0 ? '0' : `${row.failed} (${percent(row.failed, PROMPTS)}: ${Object.entries(row.reasons).map(([k, n]) => `${n} × ${k}`).join(', ')})`;
const tableRow = (row) =>
  `| ${row.name} | ${seconds(row.wallMs)} | ${row.ratio.toFixed(3)}× | ${int(row.stats.requests)} | ${int(row.stats.rejected_429)} (${percent(row.stats.rejected_429, row.stats.requests)}) | ${failedCell(row)} |`;
const HEADER = ['| contender | wall time | × minimum | requests sent | 429s (share of requests) | prompts failed |', '|---|--:|--:|--:|--:|--:|'];

const cpus = os.cpus();
print(`# A batch against a rate-limited upstream${quick ? ' (quick run)' : ''}`);
print();
print(`- Machine: ${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${os.platform()} ${os.arch()}, Node ${process.version}`);
print(`- Date: ${new Date().toISOString()}; load average at the end ${os.loadavg()[0].toFixed(2)}`);
print(`- Batch: ${PROMPTS} prompts of ${PROMPT_CHARS} characters, \`max_tokens\` ${MAX_TOKENS}. The upstream charges each call ceil(${PROMPT_CHARS}/4) + ${MAX_TOKENS} = ${COST} tokens, ${int(PROMPTS * COST)} in all.`);
print(`- Upstream: the scripted one on loopback, in its own process, scenario \`${scenario(BUDGET)}\`: buckets of ${int(BUDGET.rpm)} requests and ${int(BUDGET.tpm)} tokens, full at the start, refilling continuously at that much per minute; ${LATENCY_MS} ms per answer. One fresh key per contender.`);
print(`- Theoretical minimum: tokens beyond the initial bucket, ${int(PROMPTS * COST)} − ${int(BUDGET.tpm)} = ${int(PROMPTS * COST - BUDGET.tpm)}, at ${int(BUDGET.tpm)} per minute: ${seconds(minimum.tokensMs)} (requests: (${PROMPTS} − ${BUDGET.rpm}) / ${BUDGET.rpm} per minute = ${seconds(minimum.requestsMs)}, so tokens bind), plus ${LATENCY_MS} ms for the last answer: **${(minimum.totalMs / 1000).toFixed(2)} s**.`);
print();
for (const line of HEADER) print(line);
for (const { row } of contenders) print(tableRow(row));
print();

print('## Goals');
print();
for (const { name, row, goal } of contenders.filter((c) => c.goal)) {
  const share = row.stats.requests ? row.stats.rejected_429 / row.stats.requests : 0;
  const checks = [
    [`wall time ≤ ${goal.ratio.toFixed(2)}× the minimum`, row.ratio <= goal.ratio, `${row.ratio.toFixed(3)}×`],
    goal.share429 === 0
      ? ['no 429', row.stats.rejected_429 === 0, `${row.stats.rejected_429}`]
      : [`429s < ${goal.share429 * 100} % of requests`, share < goal.share429, percent(row.stats.rejected_429, row.stats.requests)],
    ['no failed prompt', row.failed === 0, `${row.failed}`],
  ];
  print(`- ${name}: ${checks.map(([what, met, got]) => `${what}: ${got} ${met ? '✓' : '✗ missed'}`).join('; ')}`);
}
print();

const estimate = Math.ceil(PROMPT_CHARS / 4) + 4 + 3 + MAX_TOKENS;
const distillerRuns = contenders.filter((c) => c.name.startsWith('llm-distiller'));

print('## How llm-distiller gets there');
print();
print(`- It mirrors the upstream's buckets: \`requests_refill: "continuous"\` for requests (full at first, refilling continuously, as OpenAI and Azure enforce them), and a token bucket. Each call reserves ${estimate} tokens (ceil(${PROMPT_CHARS}/4) + 4 per message + 3, plus \`max_tokens\`), ${((estimate / COST - 1) * 100).toFixed(1)} % above the upstream's charge of ${COST}; when the answer comes it is charged the prompt tokens reported plus its \`max_tokens\` (what OpenAI-like servers count, refunding nothing), and its bucket is clamped to \`x-ratelimit-remaining-tokens\` and \`-requests\` as of when that request arrived.`);
print(`- With \`requests_refill: "window"\`, no 60 s window ever holds more than ${BUDGET.rpm} starts: prompt ${BUDGET.rpm + 1} waits until the first start is a minute old, although the upstream's request bucket refilled long before. That is the promise \`window\` makes, and the row above shows its price here.`);
print();
print('- Inside llm-distiller, from its responses:');
print();
print('| run | mean `waited_ms` per prompt | retries |');
print('|---|--:|--:|');
for (const { name, row } of distillerRuns) {
  const answered = row.results.filter((r) => r.ok);
  print(`| ${name} | ${seconds(mean(answered.map((r) => r.waitedMs)))} | ${sum(answered.map((r) => r.retries))} |`);
}
print();

print('## How the contenders were set up');
print();
print(`- llm-distiller: one \`custom\` provider, \`rate_limit\` as stated (\`requests_refill: "continuous"\`, the default, unless the row says otherwise), default retries (3, honouring \`retry-after-ms\`), \`generateBatch(prompts, { max_tokens: ${MAX_TOKENS} }, { concurrency: ${CONCURRENCY} })\`.`);
print('- `openai` 7.57 with its defaults (2 retries, honouring `retry-after-ms`); each call settled on its own, so one failure does not reject the rest.');
print(`- bottleneck: two limiters, requests and tokens, each \`reservoir\` = the budget, \`reservoirIncreaseAmount\` = budget × ${BOTTLENECK_TICK_MS} ms / 60 s every \`reservoirIncreaseInterval\` = \`heartbeatInterval\` = ${BOTTLENECK_TICK_MS} ms, \`reservoirIncreaseMaximum\` = the budget, so they copy the upstream's buckets; each job is scheduled on the request limiter and then, weighted by ceil(chars/4) + \`max_tokens\` (exactly the upstream's charge), on the token limiter. No \`maxConcurrent\`, no \`minTime\`.`);

function sum(values) {
  return values.reduce((a, b) => a + b, 0);
}

function mean(values) {
  return values.length ? sum(values) / values.length : 0;
}
