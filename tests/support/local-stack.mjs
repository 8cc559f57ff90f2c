// The local stack for the Node tests and the benchmarks: free ports, `wrangler dev` of this
// checkout in its own process group, and headless Chromium's flags.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

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
 * Resolves with `{ url, logPath, stop }` once `/health` answers 200; `stop()` ends the
 * whole group, as does this process's exit. Errors quote the log's tail through `redact`.
 */
export async function startWranglerDev({ persistDir, envFile, config, logPath, env, startupTimeoutMs, redact = (text) => text }) {
  const port = await freePort();
  const log = fs.openSync(logPath, 'w');
  const child = spawn(
    WRANGLER,
    [
      'dev', '--local', '--ip', '127.0.0.1', '--port', String(port),
      // Not the default 9229: another wrangler dev on this machine would make workerd fail.
      '--inspector-port', String(await freePort()),
      '--persist-to', persistDir,
      '--env-file', envFile,
      '--var', `LLM_CONFIG:${JSON.stringify(config)}`,
      '--show-interactive-dev-session=false',
    ],
    { cwd: ROOT, env, detached: true, stdio: ['ignore', log, log] },
  );
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
  const worker = {
    url: `http://127.0.0.1:${port}`,
    logPath,
    async stop() {
      process.off('exit', onExit);
      if (exited) return;
      killGroup('SIGTERM');
      const done = await Promise.race([exit.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) killGroup('SIGKILL');
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
      throw new Error(`wrangler dev exited (${JSON.stringify(exited)}) before it served /health; ${logPath}:\n${logTail()}`);
    }
    try {
      const response = await fetch(`${worker.url}/health`, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.status === 200) return worker;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await worker.stop();
      throw new Error(`wrangler dev did not serve /health within ${startupTimeoutMs / 1000} s; ${logPath}:\n${logTail()}`);
    }
    await sleep(500);
  }
}
