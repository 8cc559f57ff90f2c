// The package's TypeScript declarations as a user meets them: tests/npm/usage.ts (the whole
// public API, with `@ts-expect-error` lines that must stay errors) type-checked with
// `tsc --strict` (nodenext) against the installed tarball, the declared exports compared
// with what the module really exports, and no `any` in the public surface.
//
//   node --test tests/npm/            (needs pkg/: scripts/build-pkg.sh)

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

import ts from 'typescript';

import { TSC, installPackage } from './support.mjs';

const execFileAsync = promisify(execFile);

const TSC_FLAGS = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022'];

let installed;

before(async () => {
  installed = await installPackage();
  await copyFile(new URL('./usage.ts', import.meta.url), join(installed.project, 'usage.ts'));
}, { timeout: 60_000 });

after(async () => {
  await installed?.remove();
});

/** Runs tsc in the project; resolves with its exit code and output. */
async function tsc(args) {
  try {
    const { stdout, stderr } = await execFileAsync(TSC, args, { cwd: installed.project, timeout: 60_000 });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    if (error.killed) throw error;
    return { code: error.code, output: `${error.stdout}${error.stderr}` };
  }
}

test('usage.ts type-checks with tsc --strict against the installed package', { timeout: 60_000 }, async () => {
  const { code, output } = await tsc([...TSC_FLAGS, '--lib', 'es2022,dom', 'usage.ts']);
  assert.equal(code, 0, `tsc reported errors:\n${output}`);
});

test('the type check can fail: a misuse of the API is reported', { timeout: 60_000 }, async () => {
  // Guards against a check that passes whatever the file says (types resolved to `any`,
  // or not found at all): a wrong prompt type must be an error.
  await writeFile(
    join(installed.project, 'misuse.ts'),
    'import { ProviderManager } from "llm-distiller";\n' +
      'const manager = new ProviderManager({ providers: { local: { type: "custom", base_url: "http://127.0.0.1:1/v1" } } });\n' +
      'export const answer = manager.generate(42);\n',
  );
  const { code, output } = await tsc([...TSC_FLAGS, '--lib', 'es2022,dom', 'misuse.ts']);
  assert.notEqual(code, 0);
  assert.match(output, /misuse\.ts\(3,\d+\): error TS2345: Argument of type 'number' is not assignable to parameter of type 'Prompt'/);
});

/** The value (not type-only) exports the declarations of `llm-distiller` promise. */
function declaredValueExports() {
  const probe = join(installed.project, 'exports-probe.ts');
  const program = ts.createProgram([probe], {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(probe);
  const [declaration] = source.statements;
  const moduleSymbol = checker.getSymbolAtLocation(declaration.moduleSpecifier);
  assert.ok(moduleSymbol, 'tsc resolves "llm-distiller"');
  return checker
    .getExportsOfModule(moduleSymbol)
    .filter((symbol) => {
      const target = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
      return (target.flags & ts.SymbolFlags.Value) !== 0;
    })
    .map((symbol) => symbol.name)
    .sort();
}

test('the declarations export exactly the values the module exports', {
  timeout: 60_000,
  // Guards against a past bug: a blanket `export *` in js/index.d.ts also declared
  // wasm-bindgen's `initSync`, which the entries do not export, so importing it
  // type-checked and then failed at load time with a SyntaxError.
}, async () => {
  await writeFile(join(installed.project, 'exports-probe.ts'), 'import * as api from "llm-distiller";\nexport { api };\n');
  const declared = declaredValueExports();
  const runtime = Object.keys(await import(pathToFileURL(join(installed.packageDir, 'node.js')).href)).sort();
  assert.deepEqual(runtime, ['CompletionStream', 'ProviderManager', 'RateLimiter', 'ThinkingStream', 'exportRecord', 'extractThinking']);
  assert.deepEqual(declared, runtime);
});

/** The declarations a user sees, comments removed. */
function publicSurface(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

test('the public declarations contain no `any`, and none of wasm-bindgen\'s loader', { timeout: 20_000 }, async () => {
  for (const file of ['index.d.ts', 'api.d.ts']) {
    const text = await readFile(join(installed.packageDir, file), 'utf8');
    const surface = publicSurface(text);
    if (file === 'api.d.ts') {
      assert.match(surface, /export class ProviderManager/, 'the surface checked is the API');
      assert.match(surface, /export function extractThinking/);
      assert.match(surface, /export function exportRecord/);
    }
    const lines = surface.split('\n').filter((line) => /\bany\b|InitInput|initSync/.test(line));
    assert.deepEqual(lines, [], `${file} uses \`any\` or names the loader in its public surface`);
  }
});
