#!/usr/bin/env node
// Rate limiting from JavaScript, side by side in one Node process: llm-distiller's
// `RateLimiter` (the npm package in pkg/, Rust compiled to WebAssembly) against npm
// `limiter` (its `RateLimiter` and `TokenBucket`) and `bottleneck`. Prints Markdown to
// stdout (progress goes to stderr).
//
//   node bench/rate-limit.mjs            # the full run, about a minute
//   node bench/rate-limit.mjs --quick    # fewer samples and shorter pacing runs
//
// Build the package first (scripts/build-pkg.sh); `limiter` and `bottleneck` are dev
// dependencies at the repository root. Two parts:
//
// 1. Decisions per second under the limit: limits so high that nothing ever waits, each
//    decision in a tight loop. A figure is the median of RUNS samples of about SAMPLE_MS
//    after WARMUP samples; the samples of the contenders alternate, so that a burst of load
//    from elsewhere on the machine hits them all.
// 2. Pacing over the limit, in real time: N requests submitted at once to a limiter already
//    at a budget of RATE requests per second, each waiting as its library's API says; the
//    start times are compared with the ideal schedule (one start every 1000 / RATE ms).

import os from "node:os";
import v8 from "node:v8";
import vm from "node:vm";
import { readFileSync } from "node:fs";
import { RateLimiter as JsLimiterRateLimiter, TokenBucket } from "limiter";
import Bottleneck from "bottleneck";

const quick = process.argv.includes("--quick");
const RUNS = quick ? 5 : 15;
const WARMUP = quick ? 1 : 3;
const SAMPLE_MS = quick ? 20 : 50;
// Pacing: N requests at RATE per second (a run lasts N / RATE seconds per contender).
const RATE = 20;
const GAP_MS = 1000 / RATE;
const N = quick ? 40 : 100;

let distiller;
try {
  distiller = await import(new URL("../pkg/node.js", import.meta.url));
} catch (error) {
  console.error(`bench: cannot load pkg/node.js (${error.message}); run scripts/build-pkg.sh`);
  process.exit(1);
}
const { RateLimiter } = distiller;

// A full collection before each sample, so that one contender's garbage (bottleneck's
// promises) is not collected during another's sample.
v8.setFlagsFromString("--expose-gc");
const collectGarbage = vm.runInNewContext("gc");

const progress = (message) => process.stderr.write(`bench: ${message}\n`);
const hrNow = process.hrtime.bigint;
/** Milliseconds since the epoch with sub-millisecond resolution: one clock for every measurement. */
const epochNow = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const version = (name) =>
  JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url))).version;

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const quantile = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  return sorted[lo] + (sorted[Math.min(lo + 1, sorted.length - 1)] - sorted[lo]) * (at - lo);
};
const stdev = (values) => {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / values.length);
};

// ---------------------------------------------------------------------------------------
// 1. Decisions per second under the limit.

const U32_MAX = 4_294_967_295;
/** An llm-distiller limiter nothing can exhaust within a sample. */
const distillerUnlimited = () => new RateLimiter({ requests_per_minute: U32_MAX, tokens_per_minute: U32_MAX });

// Each contender is `sample(reps)`: makes `reps` decisions on a fresh limiter and returns the
// nanoseconds they took and whether every one of them went through at once. Each has its own
// loop, so that every call site stays monomorphic; setting up and freeing are not timed.
const DECISIONS = [
  {
    name: "llm-distiller `reserveWait(1, Date.now())`",
    does:
      "reads the clock in JS; in wasm: drops start times older than 60 s, schedules the start (sliding request window, token bucket with debt, after the previous start: FIFO), records it and the in-flight tokens; returns the wait",
    sample(reps) {
      const limiter = distillerUnlimited();
      let waited = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) waited += limiter.reserveWait(1, Date.now());
      const ns = Number(hrNow() - t0);
      limiter.free();
      return { ns, ok: waited === 0 };
    },
  },
  {
    name: "llm-distiller `reserveWait(1)`",
    does: "the same, the clock read from inside wasm (an import calling `Date.now`)",
    sample(reps) {
      const limiter = distillerUnlimited();
      let waited = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) waited += limiter.reserveWait(1);
      const ns = Number(hrNow() - t0);
      limiter.free();
      return { ns, ok: waited === 0 };
    },
  },
  {
    name: "llm-distiller `reserveWait(1, t)`, t += 1 ms",
    does:
      "no clock read: a counter advancing 1 ms per decision, so the 60-s window holds 60 000 starts and each decision also drops one (the steady state `cargo bench --bench rate_limit` measures natively)",
    sample(reps) {
      const limiter = distillerUnlimited();
      let waited = 0;
      let t = 1_700_000_000_000;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) waited += limiter.reserveWait(1, t++);
      const ns = Number(hrNow() - t0);
      limiter.free();
      return { ns, ok: waited === 0 };
    },
  },
  {
    name: "llm-distiller `reserve(1, Date.now())` + `reconcile(r, 1)`",
    does:
      "the full round: the reservation `{id, tokens, wait_ms, start_at_ms, reserved_through}` made in Rust and built as a plain JS object in one call; `reconcile` reads its five numbers back in one call, refunds the difference and ends the in-flight accounting",
    sample(reps) {
      const limiter = distillerUnlimited();
      let waited = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) {
        const reservation = limiter.reserve(1, Date.now());
        waited += reservation.wait_ms;
        limiter.reconcile(reservation, 1);
      }
      const ns = Number(hrNow() - t0);
      limiter.free();
      return { ns, ok: waited === 0 };
    },
  },
  {
    name: "llm-distiller `reserve(1, Date.now())` alone",
    does: "the first half of that round: the reservation made and brought over as a JS object (never reconciled here)",
    sample(reps) {
      const limiter = distillerUnlimited();
      let waited = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) waited += limiter.reserve(1, Date.now()).wait_ms;
      const ns = Number(hrNow() - t0);
      limiter.free();
      return { ns, ok: waited === 0 };
    },
  },
  {
    name: "limiter `RateLimiter.tryRemoveTokens(1)`",
    does:
      "yes/no: a fixed-interval counter and a token bucket, reading `performance.now()` twice (whole ms); no queue, no start time, nothing to hand back",
    sample(reps) {
      const limiter = new JsLimiterRateLimiter({ tokensPerInterval: 1e15, interval: "second" });
      let granted = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) if (limiter.tryRemoveTokens(1)) granted++;
      const ns = Number(hrNow() - t0);
      return { ns, ok: granted === reps };
    },
  },
  {
    name: "limiter `TokenBucket.tryRemoveTokens(1)`",
    does: "yes/no: a token bucket alone, one `performance.now()` read",
    sample(reps) {
      const bucket = new TokenBucket({ bucketSize: 1e15, tokensPerInterval: 1e15, interval: "second" });
      bucket.content = bucket.bucketSize;
      let granted = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) if (bucket.tryRemoveTokens(1)) granted++;
      const ns = Number(hrNow() - t0);
      return { ns, ok: granted === reps };
    },
  },
  {
    name: "bottleneck `check()`, 1 000 in flight",
    does:
      "yes/no without taking anything (the taking is `schedule`/`submit`); a promise that first awaits a `setTimeout(0)`, so the figure is for 1 000 checks awaited together",
    batch: 1000,
    async sample(reps) {
      const limiter = new Bottleneck({ reservoir: 1e15, minTime: 0 });
      let granted = 0;
      const pending = new Array(this.batch);
      const t0 = hrNow();
      for (let done = 0; done < reps; done += this.batch) {
        for (let j = 0; j < this.batch; j++) pending[j] = limiter.check(1);
        for (const yes of await Promise.all(pending)) if (yes) granted++;
      }
      const ns = Number(hrNow() - t0);
      await limiter.disconnect();
      return { ns, ok: granted === reps };
    },
  },
  {
    name: "reference: `JSON.parse(JSON.stringify(reservation))`",
    does: "the JS half of a reservation's two crossings (llm-distiller's bindings carry objects as JSON text)",
    sample(reps) {
      const reservation = { id: 12345, tokens: 1, wait_ms: 0, start_at_ms: 1_700_000_000_000.5, reserved_through: 12346 };
      let sum = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) {
        reservation.id = i;
        sum += JSON.parse(JSON.stringify(reservation)).tokens;
      }
      const ns = Number(hrNow() - t0);
      return { ns, ok: sum === reps };
    },
  },
  {
    name: "reference: `Date.now()`",
    does: "the clock read alone",
    sample(reps) {
      let sum = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) sum += Date.now();
      const ns = Number(hrNow() - t0);
      return { ns, ok: sum > 0 };
    },
  },
  {
    name: "reference: `performance.now()`",
    does: "the clock read alone",
    sample(reps) {
      let sum = 0;
      const t0 = hrNow();
      for (let i = 0; i < reps; i++) sum += performance.now();
      const ns = Number(hrNow() - t0);
      return { ns, ok: sum > 0 };
    },
  },
];

/** One sample of `contender`, which must not have waited. */
async function checked(contender, reps) {
  const result = await contender.sample(reps);
  if (!result.ok) throw new Error(`${contender.name}: a decision under the limit did not go at once`);
  return result;
}

/** Median decisions per second of each contender, with the interquartile range. */
async function measureDecisions(contenders) {
  const target = SAMPLE_MS * 1e6;
  const plans = [];
  for (const contender of contenders) {
    // Calibration, which also warms the JIT: how many decisions make a sample.
    // Double the size until a sample lasts a quarter of the target, then take a few samples
    // at the estimated size: the first estimate comes from code the JIT has not finished
    // optimizing, and would leave the samples far too short.
    const unit = contender.batch ?? 1;
    const sized = (reps, ns) => Math.max(unit, Math.round((reps * target) / ns / unit) * unit);
    let reps = unit;
    let ns = 0;
    while (ns < target / 4) {
      reps = ns === 0 ? unit : reps * 2;
      ({ ns } = await checked(contender, reps));
    }
    for (let i = 0; i < 3; i++) {
      reps = sized(reps, ns);
      ({ ns } = await checked(contender, reps));
    }
    plans.push({ contender, reps: sized(reps, ns), rates: [] });
  }
  for (let round = 0; round < WARMUP + RUNS; round++) {
    for (const plan of plans) {
      collectGarbage();
      const { ns } = await checked(plan.contender, plan.reps);
      if (round >= WARMUP) plan.rates.push((plan.reps * 1e9) / ns);
    }
  }
  return plans.map(({ contender, reps, rates }) => ({
    contender,
    reps,
    rate: median(rates),
    iqr: quantile(rates, 0.75) - quantile(rates, 0.25),
  }));
}

/** How long one awaited bottleneck `check()` takes on its own (the median of 21). */
async function bottleneckCheckLatency() {
  const limiter = new Bottleneck({ reservoir: 1e15, minTime: 0 });
  const times = [];
  for (let i = 0; i < 21; i++) {
    const t0 = performance.now();
    await limiter.check(1);
    times.push(performance.now() - t0);
  }
  await limiter.disconnect();
  return median(times);
}

// ---------------------------------------------------------------------------------------
// 2. Pacing over the limit.
//
// The budget is RATE requests per second for everyone. Each limiter starts the run *at*
// that budget: its allowance for bursts spent at t0 (as if it had been busy), so that every
// one of the N requests, all submitted at once at t0, must be paced. The ideal schedule is
// then start k (1-based) at t0 + k × GAP_MS, the last at t0 + N × GAP_MS.
//
// Each `run()` returns t0 and, per request in submission order, the time (epoch ms, from
// `epochNow`) at which its caller was let go. Extra figures go in `notes`.

/** What an llm-distiller caller does: reserve, sleep `wait_ms`, (as the client does) re-check. */
async function distillerRequests(limiter, tokens, { recheck }) {
  const starts = new Array(N);
  let earlyWakes = 0;
  let earliest = 0;
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const reservation = limiter.reserve(tokens, epochNow());
      if (reservation.wait_ms > 0) await sleep(reservation.wait_ms);
      let now = epochNow();
      if (now < reservation.start_at_ms) {
        earlyWakes++;
        earliest = Math.min(earliest, now - reservation.start_at_ms);
      }
      // The client's `admit`: `blockedFor` answers until when a server signal (or, here, a
      // timer that fired early) still holds the request.
      for (let round = 0; recheck && round < 100; round++) {
        const blocked = limiter.blockedFor(reservation, now);
        if (!(blocked > 0)) break;
        await sleep(blocked);
        now = epochNow();
      }
      starts[i] = now;
      limiter.reconcile(reservation, tokens);
    }),
  );
  const notes = [
    `${earlyWakes} of ${N} timers fired before \`start_at_ms\`` +
      (earlyWakes ? ` (the earliest by ${(-earliest).toFixed(2)} ms)` : "") +
      (recheck && earlyWakes ? "; `blockedFor` sent them back to sleep" : ""),
  ];
  return { starts, notes, early: { count: earlyWakes, by: -earliest, recheck } };
}

const PACERS = [
  {
    name: "llm-distiller, request window binding",
    config: `\`{ requests_per_minute: ${RATE * 60}, tokens_per_minute: ${U32_MAX}, requests_refill: "window" }\`; a minute of history at the limit (${RATE * 60} reservations, one every ${GAP_MS} ms up to t0, passed as \`nowMs\`)`,
    waits: "sleep `wait_ms` of `reserve(1)`",
    async run() {
      const limiter = new RateLimiter({ requests_per_minute: RATE * 60, tokens_per_minute: U32_MAX, requests_refill: "window" });
      const t0 = epochNow();
      for (let k = RATE * 60 - 1; k >= 0; k--) {
        const reservation = limiter.reserve(1, t0 - k * GAP_MS);
        if (reservation.wait_ms !== 0) throw new Error("llm-distiller: the history did not fit the window");
        limiter.reconcile(reservation, 1);
      }
      const result = await distillerRequests(limiter, 1, { recheck: false });
      limiter.free();
      return { t0, ...result };
    },
  },
  {
    name: "llm-distiller, token bucket binding",
    config: `\`{ requests_per_minute: ${RATE * 60}, tokens_per_minute: ${(RATE * 60 * 1000).toLocaleString("en")} }\`, 1 000 tokens a request; the bucket emptied at t0 (one reservation of a minute's tokens)`,
    waits: "sleep `wait_ms` of `reserve(1000)`",
    async run() {
      const limiter = new RateLimiter({ requests_per_minute: RATE * 60, tokens_per_minute: RATE * 60 * 1000 });
      const t0 = epochNow();
      const drain = limiter.reserve(RATE * 60 * 1000, t0);
      if (drain.wait_ms !== 0) throw new Error("llm-distiller: the bucket was not full");
      limiter.reconcile(drain);
      const result = await distillerRequests(limiter, 1000, { recheck: false });
      limiter.free();
      return { t0, ...result };
    },
  },
  {
    name: "llm-distiller, token bucket, as the client waits",
    config: "the same",
    waits: "sleep `wait_ms`, then `blockedFor` until it answers nothing (the client's `admit`)",
    async run() {
      const limiter = new RateLimiter({ requests_per_minute: RATE * 60, tokens_per_minute: RATE * 60 * 1000 });
      const t0 = epochNow();
      limiter.reconcile(limiter.reserve(RATE * 60 * 1000, t0));
      const result = await distillerRequests(limiter, 1000, { recheck: true });
      limiter.free();
      return { t0, ...result };
    },
  },
  {
    name: "limiter `RateLimiter`",
    config: `\`{ tokensPerInterval: ${RATE}, interval: "second" }\`; its ${RATE} tokens taken at t0 with \`tryRemoveTokens(1)\``,
    waits:
      "`await removeTokens(1)` (from its source: a caller that waited out the interval takes from the bucket without counting against the interval again, " +
      `and the bucket, of ${RATE}, refilled meanwhile)`,
    async run() {
      const limiter = new JsLimiterRateLimiter({ tokensPerInterval: RATE, interval: "second" });
      const t0 = epochNow();
      for (let k = 0; k < RATE; k++) {
        if (!limiter.tryRemoveTokens(1)) throw new Error("limiter: the RateLimiter was not full");
      }
      const starts = new Array(N);
      await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          await limiter.removeTokens(1);
          starts[i] = epochNow();
        }),
      );
      return { t0, starts, notes: [] };
    },
  },
  {
    name: "limiter `TokenBucket`",
    config: `\`{ bucketSize: ${RATE}, tokensPerInterval: ${RATE}, interval: "second" }\`, which starts empty (at t0)`,
    waits: "`await removeTokens(1)`",
    async run() {
      const t0 = epochNow();
      const bucket = new TokenBucket({ bucketSize: RATE, tokensPerInterval: RATE, interval: "second" });
      const starts = new Array(N);
      await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          await bucket.removeTokens(1);
          starts[i] = epochNow();
        }),
      );
      return { t0, starts, notes: [] };
    },
  },
  {
    name: "bottleneck, `minTime`",
    config: `\`{ minTime: ${GAP_MS} }\`; one job submitted at t0 (and let go at once)`,
    waits: "`schedule(job)`",
    async run() {
      const limiter = new Bottleneck({ minTime: GAP_MS });
      // t0 is when the first job is submitted: bottleneck lets it go a millisecond or two
      // later, and counts `minTime` from that moment.
      const t0 = epochNow();
      await limiter.schedule(async () => {});
      const starts = new Array(N);
      await Promise.all(
        Array.from({ length: N }, (_, i) =>
          limiter.schedule(async () => {
            starts[i] = epochNow();
          }),
        ),
      );
      await limiter.disconnect();
      return { t0, starts, notes: [] };
    },
  },
  {
    name: "bottleneck, reservoir",
    config: `\`{ reservoir: 0, reservoirRefreshAmount: ${RATE}, reservoirRefreshInterval: 1000 }\` made at t0 (so: ${RATE} a second, refilled all at once; the refresh is checked by a 250 ms heartbeat)`,
    waits: "`schedule(job)`",
    async run() {
      const t0 = epochNow();
      const limiter = new Bottleneck({ reservoir: 0, reservoirRefreshAmount: RATE, reservoirRefreshInterval: 1000 });
      const starts = new Array(N);
      await Promise.all(
        Array.from({ length: N }, (_, i) =>
          limiter.schedule(async () => {
            starts[i] = epochNow();
          }),
        ),
      );
      await limiter.disconnect();
      return { t0, starts, notes: [] };
    },
  },
];

/** The figures of one pacing run; times in ms from t0. */
function pacingFigures({ t0, starts }) {
  const times = starts.map((s) => s - t0);
  const sorted = [...times].sort((a, b) => a - b);
  const total = sorted.at(-1);
  // The most starts in any window [s, s + 1 s) beginning at a start, and the shortest span
  // of RATE + 1 consecutive starts (1 000 ms or more keeps every 1-s window within RATE).
  let maxInSecond = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (j < sorted.length && sorted[j] < sorted[i] + 1000) j++;
    maxInSecond = Math.max(maxInSecond, j - i);
  }
  let tightest = Infinity;
  for (let i = 0; i + RATE < sorted.length; i++) tightest = Math.min(tightest, sorted[i + RATE] - sorted[i]);
  const gaps = sorted.slice(1).map((t, i) => t - sorted[i]);
  // Against the ideal schedule: the k-th start (in time order) at k × GAP_MS.
  const lags = sorted.map((t, i) => t - (i + 1) * GAP_MS);
  // Requests let go before one submitted earlier.
  let outOfOrder = 0;
  let latest = -Infinity;
  for (const t of times) {
    if (t < latest) outOfOrder++;
    latest = Math.max(latest, t);
  }
  return {
    total,
    rate: (N * 1000) / total,
    maxInSecond,
    tightest,
    gapMedian: median(gaps),
    gapSd: stdev(gaps),
    gapMin: Math.min(...gaps),
    gapMax: Math.max(...gaps),
    lagMin: Math.min(...lags),
    lagMedian: median(lags),
    lagMax: Math.max(...lags),
    outOfOrder,
  };
}

// ---------------------------------------------------------------------------------------
// Formatting.

const row = (cells) => `| ${cells.join(" | ")} |`;
/** A Markdown table; `align` has an `l` or an `r` per column (default: text, then figures). */
const table = (head, rows, align = "l" + "r".repeat(head.length - 1)) =>
  [row(head), row(head.map((_, i) => (align[i] === "r" ? "---:" : "---"))), ...rows.map(row)].join("\n");
const mps = (rate) => (rate / 1e6 >= 10 ? (rate / 1e6).toFixed(1) : (rate / 1e6).toFixed(2));
const ns = (rate) => `${(1e9 / rate).toFixed(1e9 / rate >= 100 ? 0 : 1)} ns`;
const times = (x) => `${x.toFixed(x >= 10 ? 0 : x >= 1 ? 1 : 2)}×`;
const ms = (x, digits = 1) => `${x.toFixed(digits)} ms`;
const signed = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(1)}`;

// ---------------------------------------------------------------------------------------
// The run.

const out = [];
const print = (line = "") => out.push(line);
const cpus = os.cpus();
const wasmBytes = readFileSync(new URL("../pkg/llm_distiller_bg.wasm", import.meta.url)).length;

print("# Rate limiting from JavaScript: llm-distiller vs `limiter` and `bottleneck`");
print();
print(`- Machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, ${os.platform()} ${os.arch()}, Node ${process.version}`);
print(`- Date: ${new Date().toISOString()}; load average at the start ${os.loadavg()[0].toFixed(2)}`);
print(`- llm-distiller: pkg/ (${wasmBytes.toLocaleString("en")} bytes of wasm, built \`opt-level = "z"\`); limiter ${version("limiter")}; bottleneck ${version("bottleneck")}`);
print();

progress("decisions under the limit");
const decisions = await measureDecisions(DECISIONS);
const checkLatency = await bottleneckCheckLatency();
const ours = decisions[0].rate;
print("## 1. Decisions per second under the limit");
print();
print(
  `Limits so high that every decision goes at once (checked: every wait is 0, every answer yes). ` +
    `Median of ${RUNS} samples of about ${SAMPLE_MS} ms after ${WARMUP} warm-up samples${quick ? " (--quick)" : ""}, each on a fresh limiter; ` +
    `IQR is the interquartile range of the samples (as a share of the median). The last column is the contender's rate over llm-distiller's \`reserveWait(1, Date.now())\`.`,
);
print();
print(
  table(
    ["decision", "M decisions/s", "± IQR / 2", "per decision", "vs `reserveWait(1, Date.now())`", "what one decision includes"],
    decisions.map(({ contender, rate, iqr }) => [
      contender.name,
      mps(rate),
      `±${((iqr / 2 / rate) * 100).toFixed(0)}%`,
      ns(rate),
      times(rate / ours),
      contender.does,
    ]),
    "lrrrrl",
  ),
);
print();
print(`A single awaited bottleneck \`check()\`, alone: ${ms(checkLatency, 2)} (its \`setTimeout(0)\` is clamped to 1 ms by Node).`);
print();

print(`## 2. Pacing over the limit: ${N} requests at once, ${RATE} a second`);
print();
print(
  `Every limiter is configured to the same budget, ${RATE} requests a second (${GAP_MS} ms apart), and starts the run *at* that budget: ` +
    `its allowance for bursts already spent at t0, as if it had been busy, so that every one of the ${N} requests, all submitted at t0, must be paced. ` +
    `llm-distiller's limits are per minute, so its request window (exact, 60 s) is filled with a minute of history at ${RATE}/s, or its token bucket ` +
    `(a minute's tokens, refilling continuously) is emptied; then either alone binds. The ideal schedule is the k-th start at t0 + k × ${GAP_MS} ms; ` +
    `the theoretical minimum for the last one is ${((N * GAP_MS) / 1000).toFixed(1)} s. ` +
    `A start is when the caller's code runs after the limiter let it go (\`performance.timeOrigin + performance.now()\`, which llm-distiller also gets as \`nowMs\`). ` +
    `The runs are one after another, each with the event loop to itself.`,
);
print();
const pacing = [];
for (const pacer of PACERS) {
  progress(`pacing: ${pacer.name}`);
  collectGarbage();
  const result = await pacer.run();
  pacing.push({ pacer, result, figures: pacingFigures(result) });
  await sleep(200);
}
print(
  table(
    [
      "limiter",
      "last start (ideal " + `${((N * GAP_MS) / 1000).toFixed(1)} s)`,
      `rate (limit ${RATE}/s)`,
      `most starts in any 1 s (limit ${RATE})`,
      `shortest span of ${RATE + 1} starts (≥ 1000 ms keeps the limit)`,
      `gap median (ideal ${GAP_MS})`,
      "gap jitter (sd)",
      "gap min – max",
      "vs ideal schedule: min / median / max",
      "out of order",
    ],
    pacing.map(({ pacer, figures: f }) => [
      pacer.name,
      `${(f.total / 1000).toFixed(3)} s (${signed(f.total - N * GAP_MS)} ms)`,
      `${f.rate.toFixed(2)}/s`,
      String(f.maxInSecond),
      ms(f.tightest),
      ms(f.gapMedian, 2),
      ms(f.gapSd, 2),
      `${f.gapMin.toFixed(1)} – ${f.gapMax.toFixed(1)} ms`,
      `${signed(f.lagMin)} / ${signed(f.lagMedian)} / ${signed(f.lagMax)} ms`,
      String(f.outOfOrder),
    ]),
  ),
);
print();
print("How each was set up and waited:");
print();
for (const { pacer, result } of pacing) {
  const notes = result.notes.length ? `; ${result.notes.join("; ")}` : "";
  print(`- **${pacer.name}**: ${pacer.config}; ${pacer.waits}${notes}.`);
}
print();
print(
  "\"vs ideal schedule\": each start (in time order) minus its ideal time; negative is ahead of the budget. " +
    "\"Out of order\": requests let go before one submitted earlier (FIFO would be 0).",
);
print();

// Findings computed from the figures.
const rateOf = (prefix) => decisions.find((d) => d.contender.name.startsWith(prefix)).rate;
const nsOf = (prefix) => 1e9 / rateOf(prefix);
const wait = rateOf("llm-distiller `reserveWait(1, Date.now())`");
print("## Findings");
print();
print(
  `- llm-distiller's cheapest decision, \`reserveWait(1, Date.now())\`, makes ${mps(wait)} M decisions/s: ` +
    `${times(wait / rateOf("limiter `RateLimiter"))} limiter's \`RateLimiter.tryRemoveTokens\`, ${times(wait / rateOf("limiter `TokenBucket"))} its \`TokenBucket.tryRemoveTokens\`, ` +
    `${times(wait / rateOf("bottleneck"))} bottleneck's \`check()\` (1 000 in flight), while deciding more (a start time, not a yes/no).`,
);
print(
  `- Of its ${ns(wait)}, the clock read is about ${ns(rateOf("reference: `Date.now()`"))}; without it (\`reserveWait(1, t)\`) a decision costs ${ns(rateOf("llm-distiller `reserveWait(1, t)`"))}, ` +
    "the call into wasm included (compare `cargo bench --bench rate_limit` for the same work natively).",
);
const round = nsOf("llm-distiller `reserve(1, Date.now())` + ");
const reserveAlone = nsOf("llm-distiller `reserve(1, Date.now())` alone");
print(
  `- The full round \`reserve\` + \`reconcile\` costs ${(round / 1000).toFixed(1)} µs, ${times(round / (1e9 / wait))} \`reserveWait\`: ` +
    `\`reserve\` ${(reserveAlone / 1000).toFixed(1)} µs, \`reconcile\` about ${((round - reserveAlone) / 1000).toFixed(1)} µs. ` +
    `The reservation crosses as a plain object of five numbers, one call each way; for scale, \`JSON.parse(JSON.stringify(reservation))\` alone takes ${ns(rateOf("reference: `JSON"))} in JS.`,
);
// Evenly spaced: the schedule is one start every GAP_MS, so one start over in a 1-s window is
// timer jitter; a limiter that lets requests go in batches gets no such excuse.
const evenlySpaced = (f) => Math.abs(f.gapMedian - GAP_MS) < GAP_MS / 10;
for (const { pacer, figures: f } of pacing) {
  const issues = [];
  if (f.maxInSecond > (evenlySpaced(f) ? RATE + 1 : RATE)) issues.push(`${f.maxInSecond} starts in one 1-s window, ${times(f.maxInSecond / RATE)} the budget`);
  if (f.outOfOrder) issues.push(`${f.outOfOrder} of ${N} requests let go before one submitted earlier (not FIFO)`);
  if (f.total - N * GAP_MS > 10) issues.push(`the last start ${(f.total - N * GAP_MS).toFixed(0)} ms after the ideal`);
  if (issues.length) print(`- ${pacer.name}: ${issues.join("; ")}.`);
}
const jitterOnly = pacing.filter(({ figures: f }) => evenlySpaced(f) && f.maxInSecond === RATE + 1).map(({ pacer }) => pacer.name);
if (jitterOnly.length) {
  print(
    `- ${RATE + 1} starts in some 1-s window (${jitterOnly.join("; ")}): a start a fraction of a millisecond late followed, ${RATE} starts on, by one on time. ` +
      "Timer jitter, not a scheduling error: the schedules are exactly spaced, the timers that carry them out are not.",
  );
}
const bare = pacing.filter(({ result }) => result.early && !result.early.recheck);
const rechecked = pacing.find(({ result }) => result.early?.recheck);
if (bare.some(({ result }) => result.early.count)) {
  const count = bare.reduce((n, { result }) => n + result.early.count, 0);
  const by = Math.max(...bare.map(({ result }) => result.early.by));
  print(
    `- Sleeping \`wait_ms\` with \`setTimeout\`, as the typings say to, woke ${count} of ${bare.length * N} llm-distiller callers before their \`start_at_ms\`, by up to ${by.toFixed(2)} ms: ` +
      "Node's timers count whole milliseconds of a loop clock that may lag, so a fractional wait can end early. At the edge of the request window, such a caller sends request rpm + 1 up to that much before the 60 s are up. " +
      (rechecked ? `The client's own wait re-checks with \`blockedFor\` and sleeps again: its earliest start was ${signed(rechecked.figures.lagMin)} ms from the ideal schedule.` : ""),
  );
}
print();

console.log(out.join("\n"));
