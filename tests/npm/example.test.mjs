// examples/node-quickstart.mjs, run as a newcomer would run it: copied into a project that
// installed the package from its tarball, `node node-quickstart.mjs`, with LLM_BASE_URL
// pointing at the scripted upstream.
//
//   node --test tests/npm/            (needs pkg/: scripts/build-pkg.sh)

import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { startUpstream } from '../upstream/server.mjs';
import { installPackage, runFile, uniqueKey, upstreamLog } from './support.mjs';

let installed;
let upstream;

before(async () => {
  installed = await installPackage();
  await copyFile(new URL('../../examples/node-quickstart.mjs', import.meta.url), join(installed.project, 'node-quickstart.mjs'));
  upstream = await startUpstream({ port: 0, latencyMs: 0 });
}, { timeout: 60_000 });

after(async () => {
  await upstream?.close();
  await installed?.remove();
});

test('the Node quickstart answers, streams and runs a batch', { timeout: 20_000 }, async () => {
  const key = uniqueKey('quickstart');
  const run = await runFile(installed.project, join(installed.project, 'node-quickstart.mjs'), {
    env: { LLM_BASE_URL: `${upstream.url}/s/normal/${key}/v1` },
    timeoutMs: 15_000,
  });
  const context = `\n--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`;
  assert.equal(run.timedOut, false, `the example did not exit by itself${context}`);
  assert.equal(run.code, 0, context);
  assert.equal(run.stderr, '', context);

  const lines = run.stdout.split('\n');
  const expected = [
    'Answer: Answer to: What is 17 × 23?',
    'Thinking: Reasoning about: What is 17 × 23?',
    '',
    'Thinking about: What is 17 × 23?',
  ];
  assert.deepEqual(lines.slice(0, 4), expected, context);
  assert.match(lines[4], /^Tokens: \d+, \d+ ms$/);
  assert.equal(lines[5], 'Streamed: Answer to: Name three primary colours.');
  assert.match(lines[6], /^Stream done: stop, thinking \d+ chars$/);
  assert.deepEqual(lines.slice(7), [
    'Batch progress: 1/3',
    'Batch progress: 2/3',
    'Batch progress: 3/3',
    'Batch 1: What is the capital of France? -> Answer to: What is the capital of France?',
    'Batch 2: What is 2 + 2? -> Answer to: What is 2 + 2?',
    'Batch 3: Who wrote Hamlet? -> Answer to: Who wrote Hamlet?',
    '',
  ], context);

  const log = await upstreamLog(upstream, key);
  assert.equal(log.length, 5, 'one answer, one stream, three batch items');
  assert.ok(log.every((entry) => entry.body.model === 'qwen3'), 'LLM_MODEL defaults to qwen3');
  assert.equal(log.filter((entry) => entry.body.stream === true).length, 1);
  // The upstream answers at once: a process still alive after seconds had something left running.
  assert.ok(run.ms < 5_000, `the example took ${run.ms} ms`);
});
