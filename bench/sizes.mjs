#!/usr/bin/env node
// Sizes, side by side: what llm-distiller's npm package and Worker bundle weigh, against the
// `openai` and `ai` npm packages as installed (the pinned dev dependencies). Prints Markdown
// to stdout.
//
//   node bench/sizes.mjs      # after scripts/build-pkg.sh and scripts/build-worker.sh
//
// Three figures per contender:
// - shipped: what an app loads. For llm-distiller, the package's files (the `.wasm` and its
//   JS glue); for `openai` and `ai`, an esbuild bundle (minified, ESM, browser platform) of a
//   program that imports what a chat client needs, dependencies included: the size a
//   browser app or a Worker would carry.
// - gzipped: the same, each file gzipped at level 9 (what travels over the wire).
// - installed: every file of the package directory and of the dependencies it installs.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const at = (...parts) => path.join(root, ...parts);

for (const required of ['pkg/llm_distiller_bg.wasm', 'build/index_bg.wasm']) {
  if (!existsSync(at(required))) {
    console.error(`bench: ${required} is missing; run scripts/build-pkg.sh and scripts/build-worker.sh`);
    process.exit(1);
  }
}

const gz = (bytes) => gzipSync(bytes, { level: 9 }).length;
const kb = (n) => `${(n / 1000).toFixed(1)} KB`;

/** Every file under `dir`, recursively. */
function filesUnder(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(full));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

const sizeOf = (files) => files.reduce((sum, file) => sum + statSync(file).size, 0);
const gzOf = (files) => files.reduce((sum, file) => sum + gz(readFileSync(file)), 0);

/** A package's directory in node_modules and those of the dependencies it installs. */
function installedDirs(name, seen = new Set()) {
  if (seen.has(name)) return [];
  seen.add(name);
  const dir = at('node_modules', name);
  if (!existsSync(dir)) return [];
  const manifest = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const dirs = [dir];
  for (const dependency of Object.keys(manifest.dependencies ?? {})) dirs.push(...installedDirs(dependency, seen));
  return dirs;
}

function version(name) {
  return JSON.parse(readFileSync(at('node_modules', name, 'package.json'), 'utf8')).version;
}

/** esbuild's minified ESM bundle of `source` (a module importing the package), in bytes. */
function bundle(source) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-sizes-'));
  try {
    const entry = path.join(dir, 'entry.mjs');
    const out = path.join(dir, 'out.mjs');
    writeFileSync(entry, source);
    execFileSync(
      at('node_modules/.bin/esbuild'),
      [entry, '--bundle', '--minify', '--format=esm', '--platform=browser', `--outfile=${out}`, '--log-level=error'],
      { cwd: root, env: { ...process.env, NODE_PATH: at('node_modules') } },
    );
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows = [];

// llm-distiller's npm package: the files a browser app loads (browser.js imports api.js and
// the glue, and fetches the .wasm), and the whole directory as installed.
{
  const wasm = at('pkg/llm_distiller_bg.wasm');
  const glue = [at('pkg/browser.js'), at('pkg/api.js'), at('pkg/llm_distiller.js'), ...filesUnder(at('pkg/snippets'))];
  rows.push({
    name: 'llm-distiller npm package (`pkg/`): `.wasm`',
    shipped: sizeOf([wasm]),
    gzipped: gzOf([wasm]),
  });
  rows.push({ name: 'llm-distiller npm package: JS glue (`browser.js`, `api.js`, `llm_distiller.js`, snippets)', shipped: sizeOf(glue), gzipped: gzOf(glue) });
  rows.push({
    name: '**llm-distiller npm package, all it ships**',
    shipped: sizeOf([wasm, ...glue]),
    gzipped: gzOf([wasm, ...glue]),
    installed: sizeOf(filesUnder(at('pkg'))),
    bold: true,
  });
}

// The Worker, as worker-build leaves it for wrangler (whose own upload is gzipped likewise).
{
  const wasm = at('build/index_bg.wasm');
  const glue = [at('build/index.js'), ...filesUnder(at('build/worker'))];
  rows.push({ name: 'llm-distiller Worker bundle (`build/`): `.wasm`', shipped: sizeOf([wasm]), gzipped: gzOf([wasm]) });
  rows.push({ name: 'llm-distiller Worker bundle: JS glue and shim', shipped: sizeOf(glue), gzipped: gzOf(glue) });
}

// The alternatives: a bundle of what a chat client imports, and the installed packages.
const alternatives = [
  {
    name: `\`openai\` ${version('openai')}`,
    source: "import OpenAI from 'openai';\nexport const client = new OpenAI({ apiKey: 'x', dangerouslyAllowBrowser: true });\nexport const create = (body) => client.chat.completions.create(body);\n",
    what: '`new OpenAI()` and `chat.completions.create`',
    package: 'openai',
  },
  {
    name: `\`ai\` ${version('ai')} (Vercel AI SDK)`,
    source: "export { generateText, streamText, wrapLanguageModel, extractReasoningMiddleware } from 'ai';\n",
    what: '`generateText`, `streamText`, `wrapLanguageModel`, `extractReasoningMiddleware` (a provider package such as `@ai-sdk/openai` comes on top)',
    package: 'ai',
  },
];
for (const alternative of alternatives) {
  const bytes = bundle(alternative.source);
  const dirs = installedDirs(alternative.package);
  rows.push({
    name: `**${alternative.name}**, bundled: ${alternative.what}`,
    shipped: bytes.length,
    gzipped: gz(bytes),
    installed: dirs.reduce((sum, dir) => sum + sizeOf(filesUnder(dir)), 0),
    installedNote: dirs.length > 1 ? ` (with ${dirs.length - 1} dependencies)` : '',
    bold: true,
  });
}

const print = (line = '') => process.stdout.write(`${line}\n`);
print('# Sizes');
print();
print(`- Date: ${new Date().toISOString()}; esbuild ${execFileSync(at('node_modules/.bin/esbuild'), ['--version']).toString().trim()}, gzip level 9 per file.`);
print('- shipped: the files an app loads (for `openai` and `ai`, a minified ESM bundle of the imports named, dependencies included); installed: the package directory and the dependencies npm installs with it.');
print();
print('| what | shipped | gzipped | installed |');
print('|---|--:|--:|--:|');
for (const row of rows) {
  const installed = row.installed === undefined ? '' : `${kb(row.installed)}${row.installedNote ?? ''}`;
  print(`| ${row.name} | ${kb(row.shipped)} | ${kb(row.gzipped)} | ${installed} |`);
}
print();
const ours = rows.find((row) => row.name.startsWith('**llm-distiller npm package'));
for (const row of rows.filter((r) => r.bold && r !== ours)) {
  print(`- ${row.name.split('**')[1]}: llm-distiller ships ${(ours.gzipped / row.gzipped).toFixed(2)}× its gzipped size, ${(ours.installed / row.installed).toFixed(2)}× its installed size.`);
}
