// CPU profiles of the Worker under `wrangler dev`, taken through its inspector (the V8
// DevTools protocol that `--inspector-port` serves): how much CPU a call costs the isolate,
// and where it goes.
//
//   const inspector = await connectInspector(dev.inspectorPort);
//   const profile = await inspector.profile(() => sendCalls());
//   cpuMs(profile) / calls;  hotspots(profile);
//   inspector.close();
import WebSocket from 'ws';

/** A DevTools session with the Worker behind `wrangler dev --inspector-port port`. */
export async function connectInspector(port, { timeoutMs = 10_000 } = {}) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(timeoutMs) })).json();
  const target = targets.find((t) => t.webSocketDebuggerUrl);
  if (!target) throw new Error(`the inspector on port ${port} lists no Worker`);
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the inspector did not open its WebSocket')), timeoutMs);
    socket.once('open', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  let next = 0;
  const pending = new Map();
  socket.on('message', (data) => {
    let message;
    try {
      message = JSON.parse(data.toString('utf8'));
    } catch {
      return;
    }
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${waiter.method}: ${message.error.message}`));
    else waiter.resolve(message.result);
  });
  socket.on('close', () => {
    for (const waiter of pending.values()) waiter.reject(new Error('the inspector closed its WebSocket'));
    pending.clear();
  });
  const call = (method, params = {}) => new Promise((resolve, reject) => {
    const id = ++next;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`${method}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    pending.set(id, {
      method,
      resolve: (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      reject: (error) => {
        clearTimeout(timer);
        reject(error);
      },
    });
    socket.send(JSON.stringify({ id, method, params }));
  });
  await call('Profiler.enable');
  // 100 µs: fine enough for calls of a few milliseconds, cheap enough not to change them much.
  await call('Profiler.setSamplingInterval', { interval: 100 });
  return {
    /** The CPU profile of the isolate while `work()` runs. */
    async profile(work) {
      await call('Profiler.start');
      let failure = null;
      try {
        await work();
      } catch (error) {
        failure = error;
      }
      const { profile } = await call('Profiler.stop');
      if (failure) throw failure;
      return profile;
    },
    close: () => socket.close(),
  };
}

/**
 * The longest time one sample stands for, in µs. workerd's isolate is not sampled while it
 * waits for I/O, and such a gap would be counted to the sample before it; a sample stands
 * for the time since the one before it, up to this (a few sampling intervals on a busy
 * machine).
 */
const MAX_SAMPLE_US = 500;

/** The sampled CPU time of each node of `profile`, in ms. */
function selfTimes(profile) {
  const self = new Map();
  const { samples = [], timeDeltas = [] } = profile;
  for (let i = 0; i < samples.length; i += 1) {
    const ms = Math.min(timeDeltas[i] ?? 0, MAX_SAMPLE_US) / 1000;
    self.set(samples[i], (self.get(samples[i]) ?? 0) + ms);
  }
  return self;
}

const IDLE = new Set(['(idle)']);

/** The CPU time of `profile` in ms: every sample but the idle ones (GC and native work count). */
export function cpuMs(profile) {
  const self = selfTimes(profile);
  let total = 0;
  for (const node of profile.nodes) {
    if (!IDLE.has(node.callFrame.functionName)) total += self.get(node.id) ?? 0;
  }
  return total;
}

/** A frame's name for people: Rust's hash suffix dropped, JS frames with their file. */
export function frameName({ functionName, url, lineNumber }) {
  const name = (functionName || '(anonymous)').replace(/::h[0-9a-f]{16}$/, '');
  if (!url || url.startsWith('wasm://') || name.startsWith('(')) return name;
  return `${name} (${url.split('/').pop()}:${lineNumber + 1})`;
}

/**
 * The functions that took the most CPU in `profile`, per call (`calls` calls): self time
 * (in the function itself) and total time (with what it called, each sample counted once
 * per function however deep it recurses). Frames matching `hide` (runtime noise) are left
 * out of the list, not out of the totals.
 */
export function hotspots(profile, { calls = 1, top = 25, hide = /^\((idle|root)\)$/ } = {}) {
  const self = selfTimes(profile);
  const parent = new Map();
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const totals = new Map();
  for (const [id, ms] of self) {
    if (IDLE.has(byId.get(id).callFrame.functionName)) continue;
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const name = frameName(byId.get(at).callFrame);
      if (seen.has(name)) continue;
      seen.add(name);
      const entry = totals.get(name) ?? { name, self: 0, total: 0 };
      entry.total += ms;
      if (at === id) entry.self += ms;
      totals.set(name, entry);
    }
  }
  return [...totals.values()]
    .filter((entry) => !hide.test(entry.name))
    .sort((a, b) => b.total - a.total)
    .slice(0, top)
    .map((entry) => ({ name: entry.name, selfMs: entry.self / calls, totalMs: entry.total / calls }));
}
