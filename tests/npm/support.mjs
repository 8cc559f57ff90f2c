// Shared by the npm package's tests: install the packed package into a fresh project the
// way a user would, and run small ESM programs in that project as child processes.
//
// A child process is the honest test of the package: `import ... from "llm-distiller"`
// resolves through the installed package.json `exports`, the wasm loads from the installed
// files, and the process must end by itself (a timer or socket left behind keeps it alive,
// which `runChild` measures).
//
// Not a test file itself (node --test runs only `*.test.mjs` here).

import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import ts from 'typescript';

const execFileAsync = promisify(execFile);

export const REPO_DIR = fileURLToPath(new URL('../..', import.meta.url));
export const PKG_DIR = join(REPO_DIR, 'pkg');
export const TSC = join(REPO_DIR, 'node_modules', '.bin', 'tsc');

/** How long after its last line a child may take to exit: Node's own teardown takes a few
 * ms; anything left running (a timer, an open response body) holds it for much longer. */
export const EXIT_LAG_LIMIT_MS = 1000;

/** The environment of every child: the API-key variables and the test runner's own
 * variables removed, so a developer's real key can neither leak in nor change a result. */
export function childEnvironment(extra = {}) {
  const env = { ...process.env };
  for (const name of ['OPENAI_API_KEY', 'AZURE_OPENAI_API_KEY', 'CUSTOM_API_KEY', 'NODE_TEST_CONTEXT', 'NODE_OPTIONS']) {
    delete env[name];
  }
  return { ...env, ...extra };
}

export async function runCommand(command, args, cwd) {
  try {
    return await execFileAsync(command, args, {
      cwd,
      timeout: 60_000,
      env: childEnvironment({ npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' }),
    });
  } catch (error) {
    throw new Error(`${command} ${args.join(' ')} failed in ${cwd}:\n${error.stdout ?? ''}${error.stderr ?? error.message}`);
  }
}

/**
 * Packs `pkg/` with `npm pack` and installs the tarball into an empty ESM project, as a
 * user's `npm install llm-distiller` would. Returns the project's directory, the installed
 * package's directory and `remove()`, which deletes everything.
 */
export async function installPackage() {
  const root = await mkdtemp(join(tmpdir(), 'llm-distiller-npm-'));
  try {
    const packed = await packPackage(join(root, 'pack'));
    const project = join(root, 'project');
    await createProject(project, packed.tarball);
    return {
      root,
      project,
      tarball: packed.tarball,
      packedFiles: packed.files,
      packageDir: join(project, 'node_modules', 'llm-distiller'),
      remove: () => rm(root, { recursive: true, force: true }),
    };
  } catch (error) {
    await rm(root, { recursive: true, force: true });
    throw error;
  }
}

/** Packs `pkg/` with `npm pack` into the directory `packDir` (created). Resolves with the
 * tarball's path and the packed files' paths, sorted. */
export async function packPackage(packDir) {
  for (const file of ['package.json', 'api.js', 'llm_distiller_bg.wasm']) {
    if (!existsSync(join(PKG_DIR, file))) {
      throw new Error(`pkg/${file} is missing: build the package first with scripts/build-pkg.sh`);
    }
  }
  await mkdir(packDir, { recursive: true });
  const { stdout } = await runCommand('npm', ['pack', PKG_DIR, '--pack-destination', packDir, '--json', '--loglevel=error'], packDir);
  const [packed] = JSON.parse(stdout);
  return { tarball: join(packDir, packed.filename), files: packed.files.map((f) => f.path).sort() };
}

/** A new project in the directory `project` (created) whose package.json is `npm init`'s
 * with `manifest` over it, and `tarball` installed into it, as `npm install` would. */
export async function createProject(project, tarball, manifest = { type: 'module' }) {
  await mkdir(project, { recursive: true });
  await runCommand('npm', ['init', '-y', '--loglevel=error'], project);
  const manifestPath = join(project, 'package.json');
  const initial = JSON.parse(await readFile(manifestPath, 'utf8'));
  await writeFile(manifestPath, JSON.stringify({ ...initial, ...manifest }, null, 2));
  // The tarball has no dependencies, so this needs no registry.
  await runCommand('npm', ['install', tarball, '--offline', '--no-audit', '--no-fund', '--loglevel=error'], project);
}

/** Helpers for the child programs, written beside them as `harness.mjs`. */
const HARNESS = `// Written by tests/npm/support.mjs: helpers for the test programs in this project.
import util from "node:util";

export const upstream = process.env.UPSTREAM_URL;

/** The base URL of an OpenAI-compatible provider answering as \`scenario\`, state under \`key\`. */
export const baseUrl = (scenario, key) => \`\${upstream}/s/\${scenario}/\${key}/v1\`;

/** Everything a test asserts about an error, as plain data. */
export function errorFacts(error) {
  return {
    isError: error instanceof Error,
    name: error?.name,
    code: error?.code,
    status: error?.status,
    provider: error?.provider,
    retryAfterMs: error?.retryAfterMs,
    field: error?.field,
    message: error?.message,
    string: String(error),
    json: JSON.stringify(error),
    inspected: util.inspect(error, { depth: 5 }),
    stack: error?.stack,
    errors: error?.errors?.map((e) => ({ provider: e.provider, error: errorFacts(e.error) })),
  };
}

/** The promise's rejection as facts, and how long it took; fails if it resolves. */
export async function rejection(promise) {
  const started = performance.now();
  try {
    const value = await promise;
    return { resolved: true, value, ms: performance.now() - started };
  } catch (error) {
    return { ...errorFacts(error), ms: performance.now() - started };
  }
}

/** The program's result for the test; the last thing a program does. */
export function report(result) {
  process.stdout.write(\`RESULT \${JSON.stringify(result)}\\nEND \${Date.now()}\\n\`);
}
`;

let programCount = 0;

/**
 * Runs \`source\` (an ES module) with Node in \`project\`. Resolves with its exit code,
 * output, the value it passed to \`report()\` (\`result\`), and \`exitLagMs\`: how long the
 * process lived after reporting. Kills it after \`timeoutMs\`.
 */
export async function runChild(project, name, source, { env = {}, timeoutMs = 15_000 } = {}) {
  const harnessPath = join(project, 'harness.mjs');
  if (!existsSync(harnessPath)) await writeFile(harnessPath, HARNESS);
  const file = join(project, `${name}-${++programCount}.mjs`);
  await writeFile(file, source);
  return runFile(project, file, { env, timeoutMs });
}

/** Runs an existing file with Node in `cwd`; see `runChild`. */
export function runFile(cwd, file, { env = {}, timeoutMs = 15_000, args = [] } = {}) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [file, ...args], { cwd, env: childEnvironment(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text) => (stderr += text));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const exitedAt = Date.now();
      const resultLine = stdout.split('\n').find((line) => line.startsWith('RESULT '));
      const endLine = stdout.split('\n').find((line) => line.startsWith('END '));
      resolve({
        code,
        signal,
        timedOut,
        stdout,
        stderr,
        ms: exitedAt - started,
        result: resultLine ? JSON.parse(resultLine.slice('RESULT '.length)) : undefined,
        exitLagMs: endLine ? exitedAt - Number(endLine.slice('END '.length)) : undefined,
      });
    });
  });
}

/** Asserts that a child ran to the end, exited 0 by itself, promptly, and said nothing on
 * stderr; returns its result. */
export function finished(assert, run) {
  const context = `\n--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`;
  assert.equal(run.timedOut, false, `the program did not exit by itself within its time limit${context}`);
  assert.equal(run.code, 0, `the program exited with ${run.code ?? run.signal}${context}`);
  assert.equal(run.stderr, '', `the program wrote to stderr${context}`);
  assert.ok(run.result !== undefined, `the program reported no result${context}`);
  assert.ok(
    run.exitLagMs < EXIT_LAG_LIMIT_MS,
    `the process lived ${run.exitLagMs} ms after its last line: something was left running${context}`,
  );
  return run.result;
}

export { upstreamLog } from '../support/local-stack.mjs';

/** The fields of the interface `name` as the installed package declares it (api.d.ts):
 * each field's name and the kinds of value its type allows, as `typeof` names them
 * (`null` for null), e.g. `{ blocked_until_ms: 'null|number' }`. For comparing what the
 * package returns with what it declares, without a copy of the declaration. */
export function declaredFields(packageDir, name) {
  const file = join(packageDir, 'api.d.ts');
  const program = ts.createProgram([file], { noEmit: true, strict: true, lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'] });
  const checker = program.getTypeChecker();
  const declaration = program.getSourceFile(file).statements.find((s) => ts.isInterfaceDeclaration(s) && s.name.text === name);
  if (!declaration) throw new Error(`api.d.ts declares no interface ${name}`);
  const kindOf = (type) => (type.flags & ts.TypeFlags.Null ? 'null' : checker.typeToString(checker.getBaseTypeOfLiteralType(type)));
  return Object.fromEntries(
    declaration.members.map((member) => {
      const type = checker.getTypeAtLocation(member);
      const kinds = type.isUnion() ? type.types.map(kindOf) : [kindOf(type)];
      return [member.name.text, [...new Set(kinds)].sort().join('|')];
    }),
  );
}

/** Asserts that `value` has exactly the fields of `declared` (from `declaredFields`), each
 * of a kind its declaration allows (`object` stands for any object type). */
export function assertDeclared(assert, value, declared, label) {
  assert.deepEqual(Object.keys(value).sort(), Object.keys(declared).sort(), `${label}: the declared fields`);
  for (const [field, kinds] of Object.entries(declared)) {
    const kind = value[field] === null ? 'null' : typeof value[field];
    const allowed = kinds.split('|').map((k) => (/^(number|string|boolean|null|undefined)$/.test(k) ? k : 'object'));
    assert.ok(allowed.includes(kind), `${label}.${field}: a ${kind}, declared ${kinds}`);
  }
}

/** A key for the upstream's state, unique to this run and test. */
export function uniqueKey(label) {
  return `${label}-${process.pid}-${Date.now().toString(36)}`;
}
