// One rate limit across isolates, for real: two `wrangler dev` processes of this Worker (two
// isolates with separate memory) share one provider's limiter, a Durable Object that lives
// in the first and that the second reaches through wrangler's dev registry. In front of
// them, a loopback upstream that enforces 240 requests per minute as OpenAI does (a bucket,
// full at first, refilling continuously). 360 requests spread over both Workers must all be
// answered, the upstream must refuse none, and the run must take at most 1.10× the
// budget's minimum (240 at once, then 4 a second: 30 s).
//
//   node --test tests/worker/shared-limit.test.mjs
//
// Needs the Worker built (scripts/build-worker.sh; scripts/test.sh does it first); about a
// minute.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { ROOT, WRANGLER, startWranglerDev, wranglerEnv, writeWranglerConfig } from '../support/local-stack.mjs';
import { startUpstream } from '../upstream/server.mjs';

const execFileP = promisify(execFile);

const STARTUP_TIMEOUT_MS = 180_000;
const RUN = randomBytes(4).toString('hex');
const TOKEN = randomBytes(24).toString('base64url');
const RPM = 240;
const REQUESTS = 360;
const CLIENTS = 48;
/** The budget's minimum: the bucket's 240, then one every 60 / 240 s. */
const MINIMUM_MS = ((REQUESTS - RPM) / RPM) * 60_000;

describe('two Workers, one rate limit', { timeout: 2 * STARTUP_TIMEOUT_MS + 120_000 }, () => {
  let tmp;
  let upstream;
  const workers = [];
  const key = `shared-${RUN}`;

  before(
    async () => {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llm-distiller-shared-'));
      // A dev registry of this test's own: the second Worker finds the first there.
      const env = { ...wranglerEnv(path.join(tmp, 'wrangler-logs')), WRANGLER_REGISTRY_PATH: path.join(tmp, 'registry') };
      upstream = await startUpstream({ port: 0 });
      const config = {
        providers: {
          shared: {
            type: 'custom',
            base_url: `${upstream.url}/s/budget:${RPM}:100000000:latency:50/${key}/v1`,
            model: 'm',
            rate_limit: { requests_per_minute: RPM, tokens_per_minute: 100_000_000 },
          },
        },
      };
      const envFile = path.join(tmp, 'worker.env');
      fs.writeFileSync(envFile, `DISTILLER_TOKEN=${TOKEN}\n`, { mode: 0o600 });
      const first = `llm-distiller-a-${RUN}`;
      const start = async (name, limiter) => {
        const persistDir = path.join(tmp, `state-${name}`);
        const configPath = writeWranglerConfig(path.join(tmp, `${name}.wrangler.toml`), { name, limiter });
        await execFileP(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', persistDir, '--config', configPath], {
          cwd: ROOT,
          env,
          timeout: 90_000,
        });
        return startWranglerDev({
          persistDir,
          envFile,
          config,
          configPath,
          logPath: path.join(tmp, `${name}.log`),
          env,
          startupTimeoutMs: STARTUP_TIMEOUT_MS,
          redact: (text) => text.split(TOKEN).join('<token>'),
        });
      };
      // The first hosts the object; the second binds it by the first one's name.
      workers.push(await start(first, 'own'));
      workers.push(await start(`llm-distiller-b-${RUN}`, first));
    },
    { timeout: 2 * STARTUP_TIMEOUT_MS + 60_000 },
  );

  after(async () => {
    for (const worker of workers) await worker.stop();
    await upstream?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const call = (worker, body) =>
    fetch(`${worker.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(120_000),
    });

  test('360 requests over both Workers: all answered, no 429 upstream, within 1.10× the minimum', { timeout: 180_000 }, async (t) => {
    const statuses = [];
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, client) => {
        // Each client keeps to one Worker: half the clients on each.
        const worker = workers[client % 2];
        while (next < REQUESTS) {
          const i = next++;
          const response = await call(worker, { messages: [{ role: 'user', content: `q${i}` }], max_tokens: 16 });
          await response.arrayBuffer();
          statuses.push(response.status);
        }
      }),
    );
    const elapsed = performance.now() - started;
    const stats = await (await fetch(`${upstream.url}/__stats/${key}`)).json();
    const log = await (await fetch(`${upstream.url}/__log/${key}`)).json();
    const arrivals = log.map((e) => e.at_ms);
    const t0 = arrivals[0];
    // The upstream's request bucket at each arrival, before it took one: below 1 is a 429.
    const levels = arrivals.map((t, i) => RPM - i + (RPM * (t - t0)) / 60_000);
    const lowest = levels.reduce((low, level, i) => (level < low.level ? { level, i, at: arrivals[i] - t0 } : low), { level: Infinity });
    // Shown with the result: how close the upstream's bucket came to refusing, and the pace.
    const at = (i) => ((arrivals[i] - t0) / 1000).toFixed(2);
    t.diagnostic(
      `${arrivals.length} arrivals; the upstream's bucket held at least ${lowest.level.toFixed(3)} requests (arrival ${lowest.i}); ` +
        `arrival ${RPM} at +${at(RPM)} s, the last at +${at(arrivals.length - 1)} s; ${(elapsed / 1000).toFixed(2)} s in all`,
    );
    const failed = statuses.filter((s) => s !== 200);
    assert.deepEqual(failed, [], `every request is answered: ${failed.length} were not`);
    assert.equal(stats.rejected_429, 0, `the upstream refused ${stats.rejected_429} requests with 429`);
    assert.equal(stats.requests, REQUESTS, 'one upstream request per call');
    const ratio = elapsed / MINIMUM_MS;
    assert.ok(ratio <= 1.1, `the run took ${(elapsed / 1000).toFixed(1)} s, ${ratio.toFixed(3)}× the minimum of ${MINIMUM_MS / 1000} s`);
    assert.ok(ratio >= 0.99, `faster than the budget allows: ${(elapsed / 1000).toFixed(1)} s`);
  });

  test('both Workers show the one shared limiter in /v1/providers', { timeout: 30_000 }, async () => {
    const status = async (worker) => {
      const response = await fetch(`${worker.url}/v1/providers`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(response.status, 200);
      const [provider] = (await response.json()).data;
      assert.equal(provider.shared_limiter.mode, 'shared', JSON.stringify(provider.shared_limiter));
      assert.equal(provider.shared_limiter.reason, null);
      assert.ok(!provider.shared_limiter.object.includes(TOKEN));
      return provider.rate_limiter;
    };
    // What the last answers taught reaches the object within moments of them (each
    // isolate's flush after its responses): then every reservation is settled.
    let seen;
    for (let attempt = 0; attempt < 20; attempt++) {
      seen = [await status(workers[0]), await status(workers[1])];
      if (seen.every((s) => s.in_flight === 0)) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    // One limiter: both isolates read the same state.
    for (const s of seen) {
      assert.equal(s.in_flight, 0, JSON.stringify(s));
      assert.equal(s.max_requests_per_minute, RPM);
      assert.equal(s.api_requests_per_minute, RPM, 'the upstream\'s x-ratelimit-limit-requests reached the object');
    }
    assert.equal(seen[0].requests_per_minute, seen[1].requests_per_minute);
  });
});
