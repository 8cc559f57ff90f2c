// The local stack for the Node tests and the benchmarks: free ports, `wrangler dev` of this
// checkout (or any other dev server) in its own process group, its local D1, the checks for
// a test's secrets, calls of the Worker, headless Chromium's flags, a static file server, the scripted upstream's
// request log, and a server-sent events parser.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WRANGLER = path.join(ROOT, 'node_modules/.bin/wrangler');

/** Debian's Chromium (scripts/setup.sh --browser) and the flags to run it headless here. */
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
];

/** A free TCP port on 127.0.0.1 (listen on 0, close, reuse the number). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A test's secrets (`[label, value]` pairs): `assertAbsent(text, where)` fails naming the
 * secret found in `text`, never showing it; `redact(text)` masks them (in a log quoted by an
 * error). */
export function secretChecks(secrets) {
  return {
    assertAbsent(text, where) {
      for (const [label, secret] of secrets) {
        if (text.includes(secret)) assert.fail(`${label} appears in ${where}`);
      }
    },
    redact: (text) => secrets.reduce((masked, [label, secret]) => masked.split(secret).join(`<${label}>`), text),
  };
}

/**
 * How the Node tests call the Worker at `url()`: `call(method, path, { body, headers, token,
 * raw, signal })` sends `body` as JSON (as it is with `raw`: a string, bytes, a stream or a
 * `FormData`) with `Authorization: Bearer <token>` (`token: null` in a call sends none),
 * and resolves with `{ method, path, status, headers, text, json }` (`json` null when the
 * body is not JSON) once `assertAbsent` (of `secretChecks`) has passed the answer's body and
 * headers. A call without a `signal` gives up after `timeoutMs`.
 */
export function workerCalls({ url, token, assertAbsent, timeoutMs }) {
  return async (method, urlPath, { body, headers = {}, token: presented = token, raw = false, signal } = {}) => {
    const init = { method, headers: { ...headers }, signal: signal ?? AbortSignal.timeout(timeoutMs) };
    if (presented !== null) init.headers.authorization = `Bearer ${presented}`;
    if (body !== undefined) {
      init.body = raw ? body : JSON.stringify(body);
      if (!raw) init.headers['content-type'] = 'application/json';
      // A body that streams needs it; a string or a form does not.
      if (raw && typeof body !== 'string' && !(body instanceof FormData)) init.duplex = 'half';
    }
    const response = await fetch(`${url()}${urlPath}`, init);
    const text = await response.text();
    assertAbsent(text, `the body of ${method} ${urlPath}`);
    assertAbsent(JSON.stringify([...response.headers]), `the headers of ${method} ${urlPath}`);
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // Not JSON (a stream, JSONL, or a bug the caller's assertion shows).
    }
    return { method, path: urlPath, status: response.status, headers: response.headers, text, json };
  };
}

const execFileP = promisify(execFile);

/**
 * The local D1 database `db` of `wrangler dev --persist-to persistDir`, through wrangler (with
 * `env`, see `wranglerEnv`): `migrate()` applies the migrations, `execute(sql)` resolves with
 * the rows of each statement, `executeFile(file)` runs an SQL file.
 */
export function localD1({ persistDir, env, db = 'llm-distiller', timeoutMs = 120_000 }) {
  const wrangler = async (args) => {
    const { stdout } = await execFileP(WRANGLER, ['d1', ...args, '--local', '--persist-to', persistDir], {
      cwd: ROOT, env, timeout: timeoutMs, maxBuffer: 256 * 1024 * 1024,
    });
    return stdout;
  };
  return {
    migrate: () => wrangler(['migrations', 'apply', db]),
    async execute(sql) {
      const stdout = await wrangler(['execute', db, '--command', sql, '--json']);
      return JSON.parse(stdout.slice(stdout.indexOf('['))).map((statement) => statement.results);
    },
    executeFile: (file) => wrangler(['execute', db, '--file', file]),
  };
}

/** The environment for wrangler: no metrics, no provider key, token or Cloudflare
 * credential from the caller's shell (a stray OPENAI_API_KEY would make a keyless provider
 * available), its own logs in `logDir`. */
export function wranglerEnv(logDir) {
  const env = { ...process.env, WRANGLER_SEND_METRICS: 'false', WRANGLER_LOG_PATH: logDir };
  for (const name of Object.keys(env)) {
    if (/API_KEY$|^DISTILLER_TOKEN$|^CLOUDFLARE_|^NODE_TEST_CONTEXT$/.test(name)) delete env[name];
  }
  return env;
}

/**
 * `wrangler dev` of this checkout on a free port, with `config` as its `LLM_CONFIG`, as a
 * child in its own process group (workerd and the build included), its output in `logPath`.
 * Resolves with `{ url, logPath, pid, stop, kill, inspectorPort }` once `/health` answers
 * 200 (the inspector serves the Worker's DevTools protocol); `stop()` ends the whole group,
 * as does this process's exit. Errors quote the log's tail through `redact`.
 * `configPath` runs another wrangler.toml than the checkout's, and `name` names the Worker:
 * for a second Worker of this build that shares the first one's Durable Objects through
 * wrangler's dev registry (`WRANGLER_REGISTRY_PATH` in `env` keeps a test's registry its own).
 */
export async function startWranglerDev({ persistDir, envFile, config, logPath, env, startupTimeoutMs, redact = (text) => text, configPath, name }) {
  const port = await freePort();
  // Not the default 9229: another wrangler dev on this machine would make workerd fail.
  const inspectorPort = await freePort();
  const server = await startServerProcess({
    name: 'wrangler dev',
    command: WRANGLER,
    args: [
      'dev', '--local', '--ip', '127.0.0.1', '--port', String(port),
      '--inspector-port', String(inspectorPort),
      '--persist-to', persistDir,
      '--env-file', envFile,
      '--var', `LLM_CONFIG:${JSON.stringify(config)}`,
      '--show-interactive-dev-session=false', ...(process.env.EXTRA_ARGS ? process.env.EXTRA_ARGS.split(' ') : []),
      // Another wrangler.toml (a second Worker of this build), and the Worker's name.
      ...(configPath ? ['--config', configPath] : []),
      ...(name ? ['--name', name] : []),
    ],
    cwd: ROOT,
    env,
    url: `http://127.0.0.1:${port}`,
    readyPath: '/health',
    logPath,
    startupTimeoutMs,
    redact,
  });
  return { ...server, inspectorPort };
}

/**
 * The same Worker as `startWranglerDev` starts, through wrangler's programmatic dev server
 * (`unstable_startWorker`) in this process, without the DevTools inspector: `wrangler dev`
 * attaches one, whose proxy reports each subrequest (D1, a Durable Object, a fetch) to
 * wrangler's process and writes it to its debug log, a cost per subrequest that a deployed
 * Worker does not have. For benchmarks of the Worker's own cost. Runs build/ as built (no
 * build step). `vars` are the Worker's vars and secrets (`DISTILLER_TOKEN`, keys), `config`
 * its `LLM_CONFIG`; `configPath`/`name` as for `startWranglerDev`. Resolves with
 * `{ url, stop }` once `/health` answers 200.
 */
export async function startWorkerWithoutInspector({ persistDir, config, vars = {}, configPath, name }) {
  const { unstable_startWorker: startWorker } = await import('wrangler');
  const bindings = { LLM_CONFIG: { type: 'plain_text', value: JSON.stringify(config) } };
  for (const [key, value] of Object.entries(vars)) bindings[key] = { type: 'secret_text', value };
  const worker = await startWorker({
    config: configPath ?? path.join(ROOT, 'wrangler.toml'),
    ...(name ? { name } : {}),
    build: { custom: { command: undefined } },
    bindings,
    dev: { inspector: false, persist: persistDir, server: { hostname: '127.0.0.1', port: 0 }, watch: false, logLevel: 'error' },
  });
  await worker.ready;
  const url = (await worker.url).toString().replace(/\/$/, '');
  const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(10_000) });
  await response.arrayBuffer();
  if (response.status !== 200) throw new Error(`the Worker answered /health with ${response.status}`);
  return { url, stop: () => worker.dispose() };
}

/**
 * A server (`command args`, in `cwd`) that will listen at `url`, started as a child in its
 * own process group, its output in `logPath`. Resolves with `{ url, logPath, pid, stop,
 * kill }` once `url + readyPath` answers 200; `pid` is the child's, and its group's;
 * `stop()` ends the whole group (SIGTERM, then SIGKILL after 10 s), as does this process's
 * exit; `kill()` kills it at once. Errors name the server and quote the log's tail through
 * `redact`.
 */
export async function startServerProcess({ name, command, args, cwd, env, url, readyPath = '/', logPath, startupTimeoutMs, redact = (text) => text }) {
  const log = fs.openSync(logPath, 'w');
  const child = spawn(command, args, { cwd, env, detached: true, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exited = null;
  const exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve((exited = { code, signal }))));
  const killGroup = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {
      // Already gone.
    }
  };
  // Should this process die first, the group must not outlive it.
  const onExit = () => killGroup('SIGKILL');
  process.once('exit', onExit);
  const server = {
    url,
    logPath,
    /** The process group's id (the child's pid): wrangler dev, workerd and the build. */
    pid: child.pid,
    async stop() {
      process.off('exit', onExit);
      if (exited) return;
      killGroup('SIGTERM');
      const done = await Promise.race([exit.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) killGroup('SIGKILL');
      await Promise.race([exit, sleep(5_000)]);
    },
    /** Kills the whole group at once (SIGKILL), as a crash would: nothing is flushed. */
    async kill() {
      process.off('exit', onExit);
      if (exited) return;
      killGroup('SIGKILL');
      await Promise.race([exit, sleep(5_000)]);
    },
  };
  const logTail = () => {
    try {
      return redact(fs.readFileSync(logPath, 'utf8')).split('\n').slice(-40).join('\n');
    } catch {
      return '(no log)';
    }
  };

  const deadline = Date.now() + startupTimeoutMs;
  for (;;) {
    if (exited) {
      throw new Error(`${name} exited (${JSON.stringify(exited)}) before it served ${readyPath}; ${logPath}:\n${logTail()}`);
    }
    try {
      const response = await fetch(`${url}${readyPath}`, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.status === 200) return server;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`${name} did not serve ${readyPath} within ${startupTimeoutMs / 1000} s; ${logPath}:\n${logTail()}`);
    }
    await sleep(500);
  }
}

/**
 * A wrangler.toml for another Worker of this checkout's build (build/index.js, already
 * built: no build step), named `name`, with the local D1 and, as `limiter` says, the
 * shared rate limiters: `'own'` hosts the Durable Object class itself (with its migration),
 * a Worker's name binds that Worker's objects (through the dev registry), `null` binds
 * none (each isolate then limits on its own). Written to `file`; returns `file`.
 */
export function writeWranglerConfig(file, { name, limiter }) {
  const abs = (relative) => JSON.stringify(path.join(ROOT, relative));
  let text = `name = "${name}"
main = ${abs('build/index.js')}
compatibility_date = "2025-09-01"

[[d1_databases]]
binding = "DB"
database_name = "llm-distiller"
database_id = "00000000-0000-0000-0000-000000000000"
migrations_dir = ${abs('migrations')}
`;
  if (limiter) {
    text += `
[[durable_objects.bindings]]
name = "LIMITER"
class_name = "RateLimiterObject"
${limiter === 'own' ? '' : `script_name = "${limiter}"
`}`;
  }
  if (limiter === 'own') {
    text += `
[[migrations]]
tag = "v1"
new_sqlite_classes = ["RateLimiterObject"]
`;
  }
  fs.writeFileSync(file, text);
  return file;
}

/** The scripted upstream's request log for `key`, oldest first. */
export async function upstreamLog(upstream, key) {
  const response = await fetch(`${upstream.url}/__log/${encodeURIComponent(key)}`);
  return response.json();
}

const MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
};

/** `relative` inside the directory `root`, or undefined when it would lead out of it. */
export function fileWithin(root, relative) {
  const file = path.normalize(path.join(root, relative));
  return file.startsWith(root + path.sep) ? file : undefined;
}

/** A static file server on 127.0.0.1, port 0, with the MIME types a web server gives.
 * `fileFor(urlPath)` names the file to serve (undefined: 404). `served` records each
 * request's path and the type it was served as (null for a 404). */
export function serveStatic(fileFor) {
  const served = [];
  const server = http.createServer(async (request, response) => {
    const urlPath = decodeURIComponent(new URL(request.url, 'http://localhost').pathname);
    const file = fileFor(urlPath);
    try {
      if (!file) throw new Error('not served');
      const body = await fs.promises.readFile(file);
      const type = MIME_TYPES[path.extname(file)] ?? 'application/octet-stream';
      served.push({ path: urlPath, type });
      response.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
      response.end(body);
    } catch {
      served.push({ path: urlPath, type: null });
      response.writeHead(404, { 'content-type': 'text/plain' });
      response.end('not found');
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        served,
        close: () => new Promise((done) => {
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}

/** A spec-following SSE parser (HTML standard), independent of the server's framing code. */
export function parseSse(text) {
  const events = [];
  const comments = [];
  let data = null;
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (data !== null) events.push(data.join('\n'));
      data = null;
    } else if (line.startsWith(':')) {
      comments.push(line.slice(1).trim());
    } else {
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') (data ??= []).push(value);
    }
  }
  return { events, comments };
}
