// The demo page (www/) in a real browser, served by the real Worker: the whole stack as
// scripts/dev.sh starts it (the demo upstream, the local D1 with its migrations, `wrangler
// dev`), but on free ports, with a fresh database in a temp directory and a random access
// token. Headless Chromium (playwright-core) then uses the page as a person would: enters
// the token, types into the thinking playground, streams a prompt, runs a batch of 20
// through the npm package and batches on the Worker (followed across a reload, cancelled),
// browses the stored responses, downloads them as a training dataset and watches the
// providers.
// A screenshot of each view goes to test-output/demo/ (their paths are printed),
// with the log of wrangler dev and what the page logged.
//
//   node --test tests/demo/       (needs pkg/ and Chromium at /usr/bin/chromium; about
//                                  30 s warm, minutes when wrangler dev builds cold)

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, ROOT, WRANGLER, fileWithin, serveStatic, startWranglerDev, wranglerEnv } from '../support/local-stack.mjs';
import { startUpstream } from '../upstream/server.mjs';

const execFileP = promisify(execFile);

const SCREENSHOTS = path.join(ROOT, 'test-output/demo');
/** wrangler dev builds the Worker first (scripts/build-worker.sh): about 2 min cold. */
const STARTUP_TIMEOUT_MS = 240_000;
const STEP_TIMEOUT_MS = 60_000;
const TOKEN = randomBytes(24).toString('base64url');
const BATCH_SIZE = 20;

let tmp;
let upstream;
let worker;
let browser;
let page;
/** What the page said on its console and its uncaught errors. */
const pageMessages = [];

// ---------------------------------------------------------------------------------------
// The stack

const logTail = (file, lines = 40) => {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
};

/** A plain static server of the page on another origin, as a user might serve build/site.
 * It serves a copy taken when the Worker came up: another `wrangler dev` in this checkout
 * may be rebuilding build/site meanwhile. */
function startStaticSite() {
  const root = path.join(tmp, 'site');
  return serveStatic((urlPath) => fileWithin(root, urlPath.endsWith('/') ? `${urlPath}index.html` : urlPath));
}

/** Takes a full-page screenshot of the current view and prints where it went. */
async function screenshot(t, name) {
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: 15_000 });
  t.diagnostic(`screenshot: ${file}`);
}

async function openSection(name) {
  await page.click(`#tab-${name}`);
  await page.waitForSelector(`#panel-${name}:not([hidden])`, { timeout: 5_000 });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llm-distiller-demo-'));
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  const persistDir = path.join(tmp, 'state');
  const envFile = path.join(tmp, 'dev.env');
  fs.writeFileSync(envFile, `DISTILLER_TOKEN=${TOKEN}\n`, { mode: 0o600 });

  upstream = await startUpstream({ demo: true });
  await execFileP(WRANGLER, ['d1', 'migrations', 'apply', 'llm-distiller', '--local', '--persist-to', persistDir], {
    cwd: ROOT, env: wranglerEnv(path.join(tmp, 'wrangler-logs')), timeout: 90_000, maxBuffer: 16 * 1024 * 1024,
  });
  // As scripts/dev.sh configures it without real keys (the demo provider on the upstream),
  // plus a second name for the same upstream, so that choosing a provider is observable.
  const demo = {
    type: 'custom',
    base_url: `${upstream.url}/v1`,
    model: 'demo-model',
    rate_limit: { requests_per_minute: 600, tokens_per_minute: 1_000_000 },
  };
  // `slow` answers after 1.5 s and takes 10 requests a minute: a batch on it is still
  // running when the page cancels it.
  const slow = {
    ...demo,
    base_url: `${upstream.url}/s/slow:1500/demo/v1`,
    rate_limit: { requests_per_minute: 10, tokens_per_minute: 1_000_000 },
  };
  const config = { providers: { demo, echo: { ...demo }, slow }, default_provider: 'demo' };
  worker = await startWranglerDev({
    persistDir,
    envFile,
    config,
    // Kept in test-output/demo/ (it shows no secret: wrangler prints bound values as hidden).
    logPath: path.join(SCREENSHOTS, 'wrangler-dev.log'),
    env: wranglerEnv(path.join(tmp, 'wrangler-logs')),
    startupTimeoutMs: STARTUP_TIMEOUT_MS,
  });
  // The page must come from the static assets, not the Worker's 404.
  const home = await fetch(`${worker.url}/`, { signal: AbortSignal.timeout(10_000) });
  const html = await home.text();
  assert.equal(home.status, 200, `GET / answered ${home.status}: the demo page is not in build/site\n${logTail(worker.logPath)}`);
  assert.match(html, /llm-distiller/);
  fs.cpSync(path.join(ROOT, 'build/site'), path.join(tmp, 'site'), { recursive: true });

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(15_000);
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') pageMessages.push(`${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => pageMessages.push(`pageerror: ${error.message}`));
  await page.goto(`${worker.url}/`, { timeout: 15_000 });
}, { timeout: STARTUP_TIMEOUT_MS + 120_000 });

after(async () => {
  // What the page said, for whoever reads a failure.
  fs.writeFileSync(path.join(SCREENSHOTS, 'page.log'), pageMessages.join('\n') + '\n');
  await browser?.close().catch(() => {});
  await worker?.stop();
  await upstream?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------
// The page, section by section (in order: each uses what the one before stored)

test('the page asks for the access token once and keeps it in sessionStorage only', { timeout: STEP_TIMEOUT_MS }, async (t) => {
  await page.waitForSelector('#connect-form:not([hidden])');
  assert.equal(await page.inputValue('#connect-url'), worker.url, 'the Worker URL defaults to the page origin');
  await screenshot(t, '0-connect');
  await page.fill('#connect-token', TOKEN);
  await page.press('#connect-token', 'Enter');
  await page.waitForFunction(() => !document.querySelector('#connect-done').hidden || !document.querySelector('#connect-message').hidden);
  assert.ok(await page.isVisible('#connect-done'), `not connected: ${await page.textContent('#connect-message')}`);
  assert.match(await page.textContent('#connection-status'), /Connected/);
  const stored = await page.evaluate(() => ({
    token: sessionStorage.getItem('llm-distiller.token'),
    url: sessionStorage.getItem('llm-distiller.worker-url'),
    local: localStorage.length,
    cookies: document.cookie,
  }));
  assert.deepEqual(stored, { token: TOKEN, url: worker.url, local: 0, cookies: '' });
  // Once: a reload reconnects from sessionStorage without asking.
  await page.reload({ timeout: 15_000 });
  await page.waitForFunction(() => /Connected/.test(document.querySelector('#connection-status').textContent) ||
    !document.querySelector('#connect-message').hidden);
  assert.match(await page.textContent('#connection-status'), /Connected/, `not reconnected: ${await page.textContent('#connect-message')}`);
  assert.ok(await page.isHidden('#connect-form'));
});

test('the thinking playground separates thinking from content as it is typed', { timeout: STEP_TIMEOUT_MS }, async (t) => {
  await openSection('playground');
  // Starts in thinking: the text opens inside a pre-filled <think>.
  await page.check('#pg-starts-thinking');
  await page.fill('#pg-input', 'x</think>y');
  await page.waitForFunction(() => document.querySelector('#pg-status .badge')?.textContent === 'final');
  assert.equal(await page.textContent('#pg-thinking'), 'x');
  assert.equal(await page.textContent('#pg-content'), 'y');

  await page.uncheck('#pg-starts-thinking');
  await page.fill('#pg-input', '');
  await page.click('#pg-input');
  await page.keyboard.type('<think>a</think>b', { delay: 15 });
  await page.waitForFunction(() => document.querySelector('#pg-status .badge')?.textContent === 'final');
  assert.equal(await page.textContent('#pg-thinking'), 'a');
  assert.equal(await page.textContent('#pg-content'), 'b');
  assert.match(await page.textContent('#pg-status'), /\d+ pushes/, 'each keystroke pushed only what it added');
  await screenshot(t, '1-playground');
});

test('a prompt streams its answer, with the thinking apart and the demo labelled', { timeout: STEP_TIMEOUT_MS }, async (t) => {
  await openSection('prompt');
  assert.equal(await page.inputValue('#pr-provider'), 'demo');
  assert.ok(await page.isVisible('#pr-demo'), 'the "Demo upstream" label shows for demo-model');
  await page.fill('#pr-prompt', 'Why is the sky blue?');
  await page.click('#pr-send');
  // Part of the answer is on the page while the stream is still running.
  const partialHandle = await page.waitForFunction(() => {
    const state = document.querySelector('#pr-state').dataset.state;
    const text = document.querySelector('#pr-answer').textContent;
    return state === 'streaming' && text.length > 0 ? text : false;
  }, null, { timeout: 20_000 });
  const partial = await partialHandle.jsonValue();
  await page.waitForFunction(() => ['done', 'failed', 'stopped'].includes(document.querySelector('#pr-state').dataset.state),
    null, { timeout: 30_000 });
  const error = await page.textContent('#pr-error');
  assert.equal(await page.getAttribute('#pr-state', 'data-state'), 'done', `the stream failed: ${error}`);
  const answer = await page.textContent('#pr-answer');
  assert.ok(answer.startsWith(partial) && answer.length > partial.length,
    `the answer grew after the first text appeared (${partial.length} then ${answer.length} characters)`);
  assert.match(answer, /demo upstream/);
  const thinking = await page.textContent('#pr-thinking');
  assert.ok(thinking.trim().length > 0 && !thinking.includes('no thinking'), 'the thinking pane has text');
  assert.doesNotMatch(answer, /<\/?think>/, 'no thinking tags in the answer');
  assert.ok(await page.isVisible('#pr-demo'));
  assert.match(await page.textContent('#pr-stored-id'), /^rsp_[0-9a-f]{28}$/);
  const meta = await page.textContent('#pr-meta');
  assert.match(meta, /stop/);
  assert.match(meta, /\d+ prompt \+ \d+ completion = \d+ tokens/);
  await screenshot(t, '2-prompt');

  // Stop ends a stream midway.
  await page.click('#pr-send');
  await page.waitForFunction(() => document.querySelector('#pr-state').dataset.state === 'streaming', null, { timeout: 20_000 });
  await page.click('#pr-stop');
  await page.waitForFunction(() => document.querySelector('#pr-state').dataset.state === 'stopped', null, { timeout: 10_000 });
  assert.equal(await page.textContent('#pr-error'), 'Stopped.');
  assert.ok(await page.isEnabled('#pr-send'));
});

test('a batch of 20 through the npm package reaches 100 % with 20 done items', { timeout: STEP_TIMEOUT_MS }, async (t) => {
  await openSection('batch');
  const prompts = Array.from({ length: BATCH_SIZE }, (_, i) => `Batch question ${i + 1}: what is ${i} + ${i}?`);
  await page.fill('#bt-prompts', prompts.join('\n'));
  assert.ok(await page.isChecked('input[name="bt-mode"][value="worker"]'), 'a batch runs on the Worker unless told otherwise');
  assert.ok(await page.isHidden('#bt-concurrency'), 'concurrency is the package\'s, not the Worker\'s');
  await page.check('input[name="bt-mode"][value="browser"]');
  await page.fill('#bt-concurrency', '5');
  assert.equal(await page.inputValue('#bt-provider'), 'demo', 'the default provider is chosen');
  // Another provider: the package passes config.provider through to the Worker's body.
  await page.selectOption('#bt-provider', 'echo');
  assert.ok(await page.isVisible('#bt-demo'));
  await page.click('#bt-run');
  await page.waitForFunction((n) => {
    const progress = document.querySelector('#bt-progress');
    return progress.max === n && progress.value === n && !document.querySelector('#bt-run').disabled;
  }, BATCH_SIZE, { timeout: 45_000 });
  assert.equal(await page.textContent('#bt-progress-text'), `${BATCH_SIZE} of ${BATCH_SIZE} (100 %)`);
  const statuses = await page.$$eval('#bt-items > li', (items) => items.map((item) => item.dataset.status));
  const failures = await page.$$eval('#bt-items > li[data-status="failed"]', (items) => items.map((item) => item.textContent));
  assert.deepEqual(statuses, Array(BATCH_SIZE).fill('done'), failures.join('\n'));
  assert.equal(await page.textContent('#bt-done'), String(BATCH_SIZE));
  assert.equal(await page.textContent('#bt-failed'), '0');
  assert.match(await page.textContent('#bt-retries'), /^\d+$/);
  assert.ok(await page.isHidden('#bt-status'), 'the batch status is the Worker mode\'s');
  await screenshot(t, '3-batch');
});

/** Waits until the page's server-side batch ended; returns its status. */
async function batchEnded(target, timeout = 45_000) {
  await target.waitForFunction(() => ['completed', 'failed', 'cancelled', 'expired'].includes(document.querySelector('#bt-status').textContent)
    && !document.querySelector('#bt-run').disabled, null, { timeout });
  return target.textContent('#bt-status');
}

test('a batch on the Worker: uploaded, followed after a reload, its output downloaded', { timeout: 2 * STEP_TIMEOUT_MS }, async (t) => {
  await openSection('batch');
  const prompts = Array.from({ length: BATCH_SIZE }, (_, i) => `Server batch ${i + 1}: name a colour`);
  await page.fill('#bt-prompts', prompts.join('\n'));
  await page.check('input[name="bt-mode"][value="worker"]');
  await page.selectOption('#bt-provider', 'demo');
  await page.click('#bt-run');
  // The batch exists once the page names it; a reload then picks it up from localStorage,
  // whether it still runs or has ended meanwhile.
  await page.waitForSelector('#bt-batch:not([hidden])', { timeout: 20_000 });
  const id = (await page.textContent('#bt-batch')).match(/batch_[0-9a-f]+/)?.[0];
  assert.ok(id, await page.textContent('#bt-batch'));
  await page.reload();
  await page.waitForSelector('#connect-done:not([hidden])', { timeout: 15_000 });
  await openSection('batch');
  await page.waitForFunction((batch) => document.querySelector('#bt-batch').textContent.includes(batch), id, { timeout: 15_000 });
  assert.equal(await batchEnded(page), 'completed', await page.textContent('#bt-error'));
  assert.equal(await page.textContent('#bt-progress-text'), `${BATCH_SIZE} of ${BATCH_SIZE} (100 %)`);
  assert.equal(await page.textContent('#bt-done'), String(BATCH_SIZE));
  assert.equal(await page.textContent('#bt-failed'), '0');
  // After the reload the items come from the batch's input file, answered from its output.
  const items = await page.$$eval('#bt-items > li', (list) => list.map((item) => ({
    status: item.dataset.status,
    prompt: item.querySelector('.items__prompt').textContent,
    detail: item.querySelector('.items__detail').textContent,
  })));
  assert.deepEqual(items.map((item) => item.prompt), prompts);
  assert.deepEqual(items.map((item) => item.status), Array(BATCH_SIZE).fill('done'), JSON.stringify(items));
  assert.ok(items.every((item) => item.detail.trim().length > 0), 'each item shows its answer');
  assert.ok(await page.isHidden('#bt-download-errors'), 'no error file');
  await screenshot(t, '3-batch-worker');

  // The output file downloads as OpenAI's JSONL: one answer per prompt, each custom_id once.
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 10_000 }), page.click('#bt-download-output')]);
  assert.equal(download.suggestedFilename(), `${id}-output.jsonl`);
  const lines = fs.readFileSync(await download.path(), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
  assert.deepEqual(lines.map((line) => line.custom_id).sort(), prompts.map((_, i) => `prompt-${i + 1}`).sort());
  for (const line of lines) {
    assert.equal(line.response.status_code, 200);
    assert.equal(line.error, null);
    assert.ok(line.response.body.choices[0].message.content.length > 0);
  }
  assert.ok(!JSON.stringify(lines).includes(TOKEN), 'the token is in no output line');
});

test('a batch on the Worker can be cancelled from the page', { timeout: STEP_TIMEOUT_MS }, async () => {
  await openSection('batch');
  // The slow provider takes 10 lines a minute: the batch is still running when the cancel
  // lands, so most lines are cancelled before they are sent.
  const prompts = Array.from({ length: 40 }, (_, i) => `Cancelled batch ${i + 1}`);
  await page.fill('#bt-prompts', prompts.join('\n'));
  await page.check('input[name="bt-mode"][value="worker"]');
  await page.selectOption('#bt-provider', 'slow');
  await page.click('#bt-run');
  await page.waitForFunction(() => document.querySelector('#bt-status').textContent === 'in_progress'
    && !document.querySelector('#bt-cancel').disabled, null, { timeout: 20_000 });
  await page.click('#bt-cancel');
  assert.equal(await batchEnded(page), 'cancelled', await page.textContent('#bt-error'));
  const statuses = await page.$$eval('#bt-items > li', (list) => list.map((item) => item.dataset.status));
  assert.equal(statuses.length, prompts.length);
  assert.ok(statuses.every((status) => ['done', 'failed', 'cancelled'].includes(status)), statuses.join(' '));
  assert.ok(statuses.includes('cancelled'), `lines not sent are shown cancelled: ${statuses.join(' ')}`);
  const done = statuses.filter((status) => status === 'done').length;
  assert.equal(await page.textContent('#bt-done'), String(done), 'the items answered are the batch\'s completed count');
});

test('the stored responses show the new rows, page by page, and a row opens to its thinking', { timeout: STEP_TIMEOUT_MS }, async (t) => {
  await openSection('stored');
  assert.equal(await page.getAttribute('#st-tab-valid', 'aria-selected'), 'true');
  assert.equal(await page.inputValue('#st-limit'), '20');
  const rowCount = () => page.$$eval('#st-rows > tr.summary-row', (rows) => rows.length);
  const settled = () => page.waitForFunction(() => document.querySelector('#st-table-region').getAttribute('aria-busy') === 'false');
  // The Worker stores after answering (ctx.waitUntil): refresh until the first page is full.
  const deadline = Date.now() + 20_000;
  for (;;) {
    await settled();
    if ((await rowCount()) === 20 && !(await page.isDisabled('#st-next'))) break;
    assert.ok(Date.now() < deadline, `the first page never filled: ${await page.textContent('#st-summary')} ${await page.textContent('#st-error')}`);
    await sleep(500);
    await page.click('#st-refresh');
  }
  const firstPage = await page.$$eval('#st-rows > tr.summary-row', (rows) => rows.map((r) => r.dataset.id));
  assert.ok(firstPage.every((id, i) => i === 0 || firstPage[i - 1] > id), 'newest first');

  await page.click('#st-next');
  await page.waitForFunction(() => document.querySelector('#st-page').textContent === 'Page 2');
  await settled();
  const secondPage = await page.$$eval('#st-rows > tr.summary-row', (rows) => rows.map((r) => r.dataset.id));
  assert.ok(secondPage.length >= 1, 'a second page');
  assert.ok(firstPage.length + secondPage.length >= BATCH_SIZE + 1, `at least ${BATCH_SIZE + 1} valid rows`);
  assert.ok(secondPage.every((id) => id < firstPage.at(-1)), 'the second page continues where the first ended');

  await page.click('#st-prev');
  await page.waitForFunction(() => document.querySelector('#st-page').textContent === 'Page 1');
  await settled();
  assert.deepEqual(await page.$$eval('#st-rows > tr.summary-row', (rows) => rows.map((r) => r.dataset.id)), firstPage);

  // The first row opens to its content and thinking (GET /v1/responses/{id}).
  const toggle = page.locator('#st-rows > tr.summary-row').first().locator('button.row-toggle');
  await toggle.click();
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
  const detail = page.locator(`#st-detail-${firstPage[0]}`);
  await detail.locator('.detail').waitFor({ timeout: 10_000 });
  const thinking = await detail.locator('pre.output--thinking').first().textContent();
  assert.ok(thinking.trim().length > 0, 'the row has its thinking');
  assert.match(await detail.textContent(), /Response time/);
  await screenshot(t, '4-stored');

  // The provider filter: the batch went to `echo`, the prompt to `demo`.
  await page.selectOption('#st-provider', 'echo');
  await page.waitForFunction(() => document.querySelector('#st-page').textContent === 'Page 1');
  await settled();
  const providersShown = await page.$$eval('#st-rows td[data-label="Provider"]', (cells) => cells.map((c) => c.textContent));
  assert.deepEqual(providersShown, Array(BATCH_SIZE).fill('echo'));
  await page.selectOption('#st-provider', '');
  await settled();

  // The invalid tab lists the other table (valid=false): none of the answers above.
  await page.click('#st-tab-invalid');
  await page.waitForFunction(() => /invalid/.test(document.querySelector('#st-summary').textContent));
  await settled();
  assert.ok(await page.isHidden('#st-error'));
  const invalid = await page.$$eval('#st-rows > tr.summary-row', (rows) => rows.map((r) => r.dataset.id));
  assert.ok(!invalid.some((id) => firstPage.includes(id)));
  await page.click('#st-tab-valid');
  await settled();
});

/** The Worker's stored rows of `provider`, oldest first, each with its request. */
async function storedRows(provider) {
  const get = async (urlPath) => {
    const response = await fetch(`${worker.url}${urlPath}`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(10_000) });
    assert.equal(response.status, 200, urlPath);
    return response.json();
  };
  const list = await get(`/v1/responses?provider=${provider}&limit=100`);
  return Promise.all(list.data.reverse().map((row) => get(`/v1/responses/${row.id}`)));
}

/** Clicks `button` and reads the file the page downloads: its name and its lines. */
async function downloaded(button) {
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 20_000 }), page.click(button)]);
  const text = fs.readFileSync(await download.path(), 'utf8');
  assert.ok(text.endsWith('\n'), 'the file ends with a line break');
  return { name: download.suggestedFilename(), lines: text.slice(0, -1).split('\n').map((line) => JSON.parse(line)) };
}

test('the export downloads the stored answers as JSONL, each line what was stored', { timeout: STEP_TIMEOUT_MS }, async (t) => {
  await openSection('export');
  // The batch of 20 went to `echo`: a ShareGPT file with the thinking inline.
  await page.selectOption('#ex-format', 'sharegpt');
  await page.selectOption('#ex-reasoning', 'inline');
  await page.selectOption('#ex-provider', 'echo');
  const shared = await downloaded('#ex-download');
  assert.match(shared.name, /^llm-distiller-sharegpt-inline-\d{8}T\d{6}Z\.jsonl$/);
  const stored = await storedRows('echo');
  assert.equal(stored.length, BATCH_SIZE);
  assert.equal(shared.lines.length, BATCH_SIZE);
  shared.lines.forEach((line, i) => {
    const row = stored[i];
    assert.ok(row.thinking, 'the demo answers have thinking');
    assert.deepEqual(line, { conversations: [
      ...row.request.messages.map((m) => ({ from: { system: 'system', user: 'human' }[m.role], value: m.content })),
      { from: 'gpt', value: `<think>\n${row.thinking}\n</think>\n\n${row.content}` },
    ] }, `line ${i + 1}`);
    assert.match(line.conversations.at(-2).value, /^Batch question \d+: /);
  });
  await page.waitForFunction(() => document.querySelector('#ex-status').dataset.state === 'done');
  assert.match(await page.textContent('#ex-summary'), new RegExp(`${BATCH_SIZE} lines`));
  assert.match(await page.textContent('#ex-preview'), /"conversations"/);
  await screenshot(t, '5-export');

  // Flat: every field; the reasoning choice does not apply.
  await page.selectOption('#ex-format', 'flat');
  assert.ok(await page.isDisabled('#ex-reasoning'));
  const flat = await downloaded('#ex-download');
  assert.match(flat.name, /^llm-distiller-flat-\d{8}T\d{6}Z\.jsonl$/);
  assert.deepEqual(flat.lines.map((l) => l.id), stored.map((r) => r.id));
  flat.lines.forEach((line, i) => {
    assert.equal(line.content, stored[i].content);
    assert.equal(line.thinking, stored[i].thinking);
    assert.deepEqual(line.messages, stored[i].request.messages);
    assert.equal(line.provider, 'echo');
  });

  // A time range the Worker refuses is shown with its parameter.
  await page.fill('#ex-since', '2030-01-02T00:00');
  await page.fill('#ex-until', '2030-01-01T00:00');
  await page.click('#ex-download');
  await page.waitForFunction(() => !document.querySelector('#ex-error').hidden);
  assert.match(await page.textContent('#ex-error'), /400 .*until.*\(parameter: until\)/);
  // Chromium logs the 400 this provoked; the other sections must log nothing.
  const provoked = pageMessages.findIndex((m) => /status of 400/.test(m));
  assert.ok(provoked >= 0, 'the 400 reached the console');
  pageMessages.splice(provoked, 1);
  await page.fill('#ex-since', '');
  await page.fill('#ex-until', '');
  await page.selectOption('#ex-format', 'openai_chat');
});

test('the providers section shows availability and the rate limiter, refreshed while shown', { timeout: STEP_TIMEOUT_MS }, async (t) => {
  await openSection('providers');
  const card = page.locator('article[aria-labelledby="pv-demo"]');
  await card.waitFor();
  const text = await card.textContent();
  assert.match(text, /available/);
  assert.match(text, /Demo upstream/);
  assert.match(text, /of 600/);
  assert.match(text, /In flight/);
  const first = await page.textContent('#pv-updated');
  await page.waitForFunction((before) => document.querySelector('#pv-updated').textContent !== before, first, { timeout: 8_000 });
  await screenshot(t, '6-providers');
});

test('a refused token asks for the token again', { timeout: STEP_TIMEOUT_MS }, async () => {
  await page.click('#connect-change');
  await page.fill('#connect-token', 'not-the-token');
  await page.click('#connect-submit');
  await page.waitForFunction(() => !document.querySelector('#connect-message').hidden);
  assert.match(await page.textContent('#connect-message'), /refused the access token/);
  assert.match(await page.textContent('#connection-status'), /Not connected/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('llm-distiller.token')), null);
  // Nothing else reached the console than the 401 this test provoked.
  const unexpected = pageMessages.filter((m) => !/status of 401/.test(m));
  assert.deepEqual(unexpected, []);
});

test('served by another static server, the page calls the Worker cross-origin', { timeout: STEP_TIMEOUT_MS }, async () => {
  const site = await startStaticSite();
  const other = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const messages = [];
  other.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') messages.push(`${message.type()}: ${message.text()}`);
  });
  other.on('pageerror', (error) => messages.push(`pageerror: ${error.message}`));
  try {
    await other.goto(`${site.url}/`, { timeout: 15_000 });
    await other.fill('#connect-url', worker.url);
    await other.fill('#connect-token', TOKEN);
    await other.click('#connect-submit');
    await other.waitForSelector('#connect-done:not([hidden])', { timeout: 15_000 });
    // The stream and its x-distiller-id header cross origins.
    await other.click('#tab-prompt');
    await other.fill('#pr-prompt', 'Hello from another origin');
    await other.click('#pr-send');
    await other.waitForFunction(() => ['done', 'failed'].includes(document.querySelector('#pr-state').dataset.state), null, { timeout: 30_000 });
    assert.equal(await other.getAttribute('#pr-state', 'data-state'), 'done', await other.textContent('#pr-error'));
    assert.match(await other.textContent('#pr-stored-id'), /^rsp_/);
    // So do a batch's upload, creation and polling, and the package's calls.
    await other.click('#tab-batch');
    await other.fill('#bt-prompts', 'one\ntwo');
    await other.click('#bt-run');
    assert.equal(await batchEnded(other, 30_000), 'completed', await other.textContent('#bt-error'));
    assert.deepEqual(await other.$$eval('#bt-items > li', (items) => items.map((i) => i.dataset.status)), ['done', 'done']);
    await other.check('input[name="bt-mode"][value="browser"]');
    await other.click('#bt-run');
    await other.waitForFunction(() => document.querySelector('#bt-progress').value === 2 && !document.querySelector('#bt-run').disabled,
      null, { timeout: 30_000 });
    assert.deepEqual(await other.$$eval('#bt-items > li', (items) => items.map((i) => i.dataset.status)), ['done', 'done']);
    assert.deepEqual(messages, []);
  } finally {
    await other.close();
    await site.close();
  }
});
