// The npm package in a real browser: headless Chromium (playwright-core) opens
// tests/npm/page.html, which imports the package from /pkg/browser.js (the files of the
// installed tarball, served with the MIME types a web server gives them), loads the wasm,
// and calls extractThinking, generate and stream against the scripted upstream on another
// origin (so CORS, exposed rate-limit headers and credentials all take the real path).
//
//   node --test tests/npm/            (needs pkg/: scripts/build-pkg.sh, Chromium at /usr/bin/chromium)

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, fileWithin, serveStatic } from '../support/local-stack.mjs';
import { startUpstream } from '../upstream/server.mjs';
import { installPackage, uniqueKey, upstreamLog } from './support.mjs';

const PAGE = fileURLToPath(new URL('./page.html', import.meta.url));

/** Serves `/page.html` and the directory `pkgDir` under `/pkg/`. */
function startStaticServer(pkgDir) {
  return serveStatic((urlPath) => {
    if (urlPath === '/page.html') return PAGE;
    if (urlPath.startsWith('/pkg/')) return fileWithin(pkgDir, urlPath.slice('/pkg/'.length));
    return undefined;
  });
}

let installed;
let upstream;
let site;
let browser;

before(async () => {
  installed = await installPackage();
  upstream = await startUpstream({ port: 0, latencyMs: 0 });
  site = await startStaticServer(installed.packageDir);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await site?.close();
  await upstream?.close();
  await installed?.remove();
});

test('the package loads in Chromium and generates and streams against the upstream', { timeout: 30_000 }, async (t) => {
  const key = uniqueKey('browser');
  const page = await browser.newPage();
  const messages = [];
  page.on('console', (message) => messages.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => messages.push(`pageerror: ${error.message}`));
  try {
    const query = new URLSearchParams({ upstream: upstream.url, key });
    await page.goto(`${site.url}/page.html?${query}`, { timeout: 10_000 });
    await page
      .waitForFunction(() => window.__results !== undefined, null, { timeout: 15_000 })
      .catch((error) => {
        throw new Error(`the page reported nothing: ${error.message}\n${messages.join('\n')}`);
      });
    const results = await page.evaluate(() => window.__results);
    t.diagnostic(`page timings (ms since navigation): ${JSON.stringify(results.timings)}`);
    assert.equal(results.failed, undefined, `${results.failed}\n${messages.join('\n')}`);
    // Chromium logs every error status; the 429 is the `limited` call's, on purpose.
    const expected = /^error: Failed to load resource: the server responded with a status of 429 /;
    assert.deepEqual(
      messages.filter((m) => !expected.test(m)),
      [],
      'nothing else on the console (a wasm MIME-type fallback would warn there)',
    );

    // The wasm came from the package with its proper MIME type (streaming compilation).
    const packageRequests = site.served
      .filter((s) => s.path.startsWith('/pkg/'))
      .map((s) => [s.path.replace(/\/snippets\/[^/]+\//, '/snippets/*/'), s.type])
      .sort();
    assert.deepEqual(packageRequests, [
      ['/pkg/api.js', 'text/javascript; charset=utf-8'],
      ['/pkg/browser.js', 'text/javascript; charset=utf-8'],
      ['/pkg/llm_distiller.js', 'text/javascript; charset=utf-8'],
      ['/pkg/llm_distiller_bg.wasm', 'application/wasm'],
      ['/pkg/snippets/*/inline0.js', 'text/javascript; charset=utf-8'],
    ]);

    assert.deepEqual(results.extracted, {
      content: 'The answer is 4.',
      thinking: 'First, reasoning.\n\n2 and 2 make 4.',
      unclosed: false,
    });

    const generated = results.generated;
    assert.equal(generated.content, 'Answer to: What is 2 + 2?');
    assert.equal(generated.thinking, 'Reasoning about: What is 2 + 2?\n\nThinking about: What is 2 + 2?');
    assert.equal(generated.provider, 'keyed');
    assert.equal(generated.attempts, 1);
    assert.ok(generated.usage.total_tokens > 0);

    const items = results.streamed;
    const deltas = items.slice(0, -1);
    assert.ok(deltas.length >= 1);
    assert.ok(deltas.every((d) => d.type === 'delta'));
    assert.equal(items.at(-1).type, 'done');
    const done = items.at(-1).response;
    const [content, thinking] = ['The answer is 4 ✓ (½ of 8) 🎉', 'step one → step two'];
    assert.equal(done.content, content);
    assert.equal(done.thinking, thinking);
    assert.equal(deltas.map((d) => d.content).join(''), content);
    assert.equal(deltas.map((d) => d.thinking).join(''), thinking);
    // extractThinking in the browser, on the raw answer.
    assert.deepEqual(results.streamedOneShot, { content, thinking, unclosed: false });

    // A 429's retry-after-ms reaches the client through CORS (an exposed header).
    const { message, ...limited } = results.limited;
    assert.deepEqual(limited, {
      isError: true,
      name: 'LlmDistillerError',
      code: 'rate_limited',
      status: 429,
      retryAfterMs: 300,
      provider: 'limited',
    });
    assert.match(message, /provider 'limited' is rate limited/);

    const byName = results.status;
    assert.equal(byName.keyed.available, true);
    assert.equal(byName.keyed.rate_limiter.api_requests_per_minute, 10_000, 'x-ratelimit-* headers are readable cross-origin');
    assert.equal(byName.keyless.available, false);
    assert.match(byName.keyless.reason, /api_key/);

    // The key went out as a bearer token (a CORS preflight allowed `authorization`).
    const log = await upstreamLog(upstream, key);
    const keyed = log.find((e) => e.scenario === 'auth');
    assert.equal(keyed.headers.authorization, 'present');
    assert.ok(!log.some((e) => e.scenario === 'auth' && e.headers.authorization !== 'present'));
  } finally {
    await page.close();
  }
});
