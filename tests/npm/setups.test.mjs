// The npm package in the setups its users have, each with nothing configured: the packed
// tarball installed into a fresh project per setup, an app that imports (or requires) the
// package the way that setup does, built by the setup's own tool (the versions pinned in
// the root package.json), and run for real: Node, headless Chromium, `wrangler dev`. Every
// app runs tests/npm/setups/checks.mjs: extractThinking, a ThinkingStream, and generate()
// and stream() against the scripted upstream on 127.0.0.1.
//
//   node --test tests/npm/setups.test.mjs   (needs pkg/: scripts/build-pkg.sh; Chromium at
//                                            /usr/bin/chromium; about a minute)
//
// The setups' fixtures are in tests/npm/setups/. The time of each setup (install, build
// and run) is printed at the end.

import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import {
  CHROMIUM,
  CHROMIUM_ARGS,
  WRANGLER,
  fileWithin,
  freePort,
  serveStatic,
  startServerProcess,
  wranglerEnv,
} from '../support/local-stack.mjs';
import { startUpstream } from '../upstream/server.mjs';
import {
  REPO_DIR,
  TSC,
  childEnvironment,
  createProject,
  finished,
  packPackage,
  runCommand,
  runFile,
  uniqueKey,
  upstreamLog,
} from './support.mjs';

const FIXTURES = fileURLToPath(new URL('./setups/', import.meta.url));
const BIN = join(REPO_DIR, 'node_modules', '.bin');
const USAGE_TS = fileURLToPath(new URL('./usage.ts', import.meta.url));

let root;
let tarball;
let upstream;
let browser;
/** Each setup's name and time, for the summary at the end. */
const timings = [];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'llm-distiller-setups-'));
  ({ tarball } = await packPackage(join(root, 'pack')));
  upstream = await startUpstream({ port: 0, latencyMs: 0 });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await upstream?.close();
  if (root) await rm(root, { recursive: true, force: true });
  if (timings.length > 0) {
    const width = Math.max(...timings.map(([name]) => name.length));
    const lines = timings.map(([name, ms]) => `  ${name.padEnd(width)}  ${(ms / 1000).toFixed(1)} s`);
    process.stdout.write(`setups (install, build, run):\n${lines.join('\n')}\n`);
  }
});

/**
 * A test of one setup, timed: `body(project)` gets a fresh project (the tarball installed,
 * `manifest` over npm init's package.json) with `files` copied into it from the fixtures:
 * `[from, to]` pairs of paths relative to tests/npm/setups/ and to the project.
 */
function setup(name, { manifest = { type: 'module' }, files, timeout = 60_000 }, body) {
  test(name, { timeout }, async (t) => {
    const started = Date.now();
    const project = join(root, name.replace(/[^a-z0-9]+/gi, '-').toLowerCase());
    await createProject(project, tarball, manifest);
    for (const [from, to] of files) {
      await mkdir(join(project, to, '..'), { recursive: true });
      await cp(from === 'usage.ts' ? USAGE_TS : join(FIXTURES, from), join(project, to));
    }
    try {
      await body(project, t);
    } finally {
      timings.push([name, Date.now() - started]);
    }
  });
}

/** The OpenAI-compatible base URL of the upstream's `normal` scenario, under a fresh key. */
function freshBaseUrl(label) {
  const key = uniqueKey(label);
  return { key, baseUrl: `${upstream.url}/s/normal/${key}/v1` };
}

/** Asserts what checks.mjs found, the same in every setup, and that the calls reached the
 * upstream under `key`. */
async function assertChecks(results, key) {
  assert.equal(results?.failed, undefined, results?.failed);
  assert.deepEqual(results.extracted, {
    content: 'The answer is 4.',
    thinking: 'First, reasoning.\n\n2 and 2 make 4.',
    unclosed: false,
  });
  assert.deepEqual(results.thinkingStream, { content: 'Hi there', thinking: 'hm', unclosed: false });
  assert.deepEqual(results.generated, {
    content: 'Answer to: What is 2 + 2?',
    thinking: 'Reasoning about: What is 2 + 2?\n\nThinking about: What is 2 + 2?',
    provider: 'local',
  });
  const streamed = {
    content: 'Answer to: Name a colour.',
    thinking: 'Reasoning about: Name a colour.\n\nThinking about: Name a colour.',
  };
  assert.deepEqual(results.streamed, { types: ['delta', 'done'], ...streamed, response: streamed });
  const log = await upstreamLog(upstream, key);
  assert.deepEqual(
    log.map((entry) => [entry.method, entry.body?.stream === true]),
    [['POST', false], ['POST', true]],
    'one generate() and one stream() reached the upstream',
  );
}

/** Runs `file` with Node in `project` against a fresh key; asserts a clean, prompt exit and
 * the checks' results. */
async function assertNodeApp(project, file, label) {
  const { key, baseUrl } = freshBaseUrl(label);
  const run = await runFile(project, join(project, file), { env: { BASE_URL: baseUrl }, timeoutMs: 15_000 });
  await assertChecks(finished(assert, run), key);
}

/** Runs a tool from the repository's node_modules/.bin in `project`; resolves with its
 * output. Fails with the output if it fails. */
function tool(project, name, args) {
  return runCommand(join(BIN, name), args, project);
}

/** Opens `pageUrl` in Chromium with `?base=` a fresh upstream URL, waits for the checks,
 * and asserts them and a quiet console. Resolves with the paths the page requested. */
async function assertPage(pageUrl, label) {
  const { key, baseUrl } = freshBaseUrl(label);
  const page = await browser.newPage();
  const messages = [];
  const requested = [];
  page.on('console', (message) => messages.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => messages.push(`pageerror: ${error.message}`));
  page.on('request', (request) => requested.push(new URL(request.url()).pathname));
  try {
    await page.goto(`${pageUrl}?${new URLSearchParams({ base: baseUrl })}`, { timeout: 15_000 });
    await page
      .waitForFunction(() => window.__results !== undefined, null, { timeout: 15_000 })
      .catch((error) => {
        throw new Error(`the page reported nothing: ${error.message}\n${messages.join('\n')}`);
      });
    await assertChecks(await page.evaluate(() => window.__results), key);
    // Vite's dev client says it is connecting and connected; nothing else may be said.
    const quiet = messages.filter((m) => !/^debug: \[vite\] connect/.test(m));
    assert.deepEqual(quiet, [], 'nothing on the console');
    return requested;
  } finally {
    await page.close();
  }
}

/** A page that loads the classic script `script`, for the bundles of esbuild and webpack. */
const pageLoading = (script) =>
  `<!doctype html>\n<meta charset="utf-8">\n<link rel="icon" href="data:,">\n<title>llm-distiller</title>\n<script src="${script}"></script>\n`;

/** Serves the directory `dir` over HTTP on 127.0.0.1 while `body(url)` runs. */
async function serving(dir, body) {
  const site = await serveStatic((urlPath) => fileWithin(dir, urlPath === '/' ? 'index.html' : urlPath));
  try {
    return await body(site.url, site.served);
  } finally {
    await site.close();
  }
}

/** The `.wasm` files under `dir` (recursively). */
async function wasmFiles(dir) {
  const entries = await readdir(dir, { recursive: true });
  return entries.filter((entry) => entry.endsWith('.wasm'));
}

setup('Node ESM import', { files: [['checks.mjs', 'checks.mjs'], ['node-esm/app.mjs', 'app.mjs']] }, async (project) => {
  await assertNodeApp(project, 'app.mjs', 'node-esm');
});

setup(
  'Node CommonJS require',
  { manifest: { type: 'commonjs' }, files: [['checks.mjs', 'checks.mjs'], ['node-cjs/app.js', 'app.js']] },
  async (project) => {
    // `finished` also asserts an empty stderr: no warning about require() of an ES module.
    await assertNodeApp(project, 'app.js', 'node-cjs');
  },
);

setup(
  'TypeScript strict, Node-only lib, module nodenext',
  {
    files: [
      ['checks.mjs', 'checks.mjs'],
      ['checks.d.mts', 'checks.d.mts'],
      ['ts-node/app.ts', 'app.ts'],
      ['ts-node/no-dom.ts', 'no-dom.ts'],
      ['ts-node/tsconfig.json', 'tsconfig.json'],
      ['usage.ts', 'usage.ts'],
    ],
  },
  async (project) => {
    // What `npm install -D @types/node` puts there (a Node project's own types), offline.
    await mkdir(join(project, 'node_modules', '@types'), { recursive: true });
    await symlink(join(REPO_DIR, 'node_modules', '@types', 'node'), join(project, 'node_modules', '@types', 'node'), 'dir');
    await tool(project, 'tsc', ['-p', 'tsconfig.json']);
    await assertNodeApp(project, 'app.js', 'ts-node');
  },
);

// The Vite project is a TypeScript one, as Vite's templates make it: its tsconfig resolves
// modules as a bundler does. The next three setups share it.
const VITE_FILES = [
  ['vite/index.html', 'index.html'],
  ['vite/tsconfig.json', 'tsconfig.json'],
  ['browser/main.js', 'src/main.ts'],
  ['checks.mjs', 'src/checks.mjs'],
  ['checks.d.mts', 'src/checks.d.mts'],
  ['usage.ts', 'src/usage.ts'],
];

setup('TypeScript strict, moduleResolution bundler', { files: VITE_FILES }, async (project) => {
  await tool(project, 'tsc', ['-p', 'tsconfig.json']);
});

setup('Vite build', { files: VITE_FILES }, async (project) => {
  const { stdout, stderr } = await tool(project, 'vite', ['build']);
  assert.doesNotMatch(stdout + stderr, /warn/i, `vite build warned:\n${stdout}${stderr}`);
  const dist = join(project, 'dist');
  assert.equal((await wasmFiles(dist)).length, 1, 'the .wasm is emitted once');
  await serving(dist, async (url) => {
    const requested = await assertPage(`${url}/`, 'vite-build');
    assert.ok(requested.some((path) => path.endsWith('.wasm')), 'the page fetched the .wasm');
  });
});

setup('Vite dev server', { files: VITE_FILES }, async (project) => {
  const port = await freePort();
  const server = await startServerProcess({
    name: 'vite',
    command: join(BIN, 'vite'),
    args: ['--host', '127.0.0.1', '--port', String(port), '--strictPort', '--clearScreen', 'false'],
    cwd: project,
    env: childEnvironment(),
    url: `http://127.0.0.1:${port}`,
    logPath: join(project, 'vite.log'),
    startupTimeoutMs: 30_000,
  });
  try {
    const requested = await assertPage(`${server.url}/`, 'vite-dev');
    assert.ok(requested.some((path) => path.endsWith('.wasm')), 'the page fetched the .wasm');
  } finally {
    await server.stop();
  }
});

setup(
  'esbuild --bundle --platform=browser',
  { files: [['browser/main.js', 'app.js'], ['checks.mjs', 'checks.mjs']] },
  async (project) => {
    const dist = join(project, 'dist');
    const { stderr } = await tool(project, 'esbuild', ['app.js', '--bundle', '--platform=browser', `--outfile=${join(dist, 'app.js')}`]);
    assert.doesNotMatch(stderr, /warning|error/i, `esbuild warned:\n${stderr}`);
    await writeFile(join(dist, 'index.html'), pageLoading('app.js'));
    const requested = await serving(dist, (url) => assertPage(`${url}/`, 'esbuild'));
    assert.deepEqual(requested.filter((path) => path.endsWith('.wasm')), [], 'the wasm is inside the bundle');
  },
);

setup(
  'webpack 5, minimal config',
  { files: [['browser/main.js', 'src/index.js'], ['checks.mjs', 'src/checks.mjs'], ['webpack/webpack.config.js', 'webpack.config.js']] },
  async (project) => {
    const { stdout, stderr } = await tool(project, 'webpack', []);
    // webpack's only warnings are its size hints (any asset over 244 KiB), not a problem.
    const warnings = (stdout + stderr).split('\n').filter((line) => /^WARNING/.test(line));
    assert.ok(
      warnings.every((line) => /asset size limit|performance recommendations/.test(line)),
      `webpack warned:\n${stdout}${stderr}`,
    );
    const dist = join(project, 'dist');
    assert.equal((await wasmFiles(dist)).length, 1, 'the .wasm is emitted once');
    await writeFile(join(dist, 'index.html'), pageLoading('main.js'));
    const requested = await serving(dist, (url) => assertPage(`${url}/`, 'webpack'));
    assert.ok(requested.some((path) => path.endsWith('.wasm')), 'the page fetched the .wasm');
  },
);

setup(
  'Cloudflare Worker (JavaScript) under wrangler dev',
  {
    files: [['worker/wrangler.toml', 'wrangler.toml'], ['worker/src/index.js', 'src/index.js'], ['checks.mjs', 'src/checks.mjs']],
    timeout: 120_000,
  },
  async (project) => {
    const port = await freePort();
    const logDir = join(project, 'wrangler-logs');
    await mkdir(logDir);
    const worker = await startServerProcess({
      name: 'wrangler dev',
      command: WRANGLER,
      args: [
        'dev', '--local', '--ip', '127.0.0.1', '--port', String(port),
        '--inspector-port', String(await freePort()),
        '--show-interactive-dev-session=false',
      ],
      cwd: project,
      env: { ...wranglerEnv(logDir), CLOUDFLARE_CF_FETCH_ENABLED: 'false' },
      url: `http://127.0.0.1:${port}`,
      readyPath: '/health',
      logPath: join(project, 'wrangler.log'),
      startupTimeoutMs: 60_000,
    });
    try {
      const { key, baseUrl } = freshBaseUrl('worker');
      const response = await fetch(`${worker.url}/?${new URLSearchParams({ base: baseUrl })}`, { signal: AbortSignal.timeout(20_000) });
      const results = await response.json();
      assert.equal(response.status, 200, results.failed);
      await assertChecks(results, key);
      const log = await readFile(worker.logPath, 'utf8');
      assert.doesNotMatch(log, /\[ERROR\]|\[WARNING\]/, `wrangler dev reported a problem:\n${log}`);
    } finally {
      await worker.stop();
    }
  },
);
