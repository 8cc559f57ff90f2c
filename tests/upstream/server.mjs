// A scripted OpenAI-compatible upstream for llm-distiller's tests, demo and benchmarks.
//
// The client under test is pointed at a base URL that names a scenario and a key:
//   http://127.0.0.1:PORT/s/<scenario>/<key>/v1/chat/completions                 (OpenAI)
//   http://127.0.0.1:PORT/s/<scenario>/<key>/openai/deployments/<d>/chat/completions?api-version=V  (Azure)
// The scenario decides the answer (errors, broken bodies, split streams, rate limits); the
// key scopes the state (request counters, token buckets, the request log) to one test, so
// tests can run side by side against one server. README.md has the scenario table.
//
// Dependency-free on purpose: it runs under `wasm-pack test`, headless Chrome, `wrangler dev`
// end-to-end tests and benchmarks, none of which should need an `npm install` first.
//
// Secrets: request headers carry API keys. Nothing here logs, and the request log stores
// the credential headers as "present". The one exception is deliberate and never stored:
// `echo_key_error` quotes the key back in its error body, to test the client's redaction.

import http from 'node:http';
import { realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

/** Bodies above this are refused with 413, like a real API gateway would. */
const MAX_BODY_BYTES = 2 * 1024 * 1024;
/** Past this a client is a runaway, not a test: stop draining its body and hang up. */
const MAX_DRAIN_BYTES = 16 * 1024 * 1024;
/** Benchmarks send thousands of requests per key; the log keeps the most recent ones. */
const MAX_LOG_ENTRIES_PER_KEY = 1000;
/** OpenAI counts `max_tokens` toward TPM; a request without one is estimated with this. */
const DEFAULT_MAX_TOKENS = 256;
const DEFAULT_MODEL = 'test-model';
const SYSTEM_FINGERPRINT = 'fp_upstream';
const MINUTE_MS = 60_000;
/** Node turns larger timeouts into 1 ms with a warning; such a delay is a typo anyway. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** Every header a client may need to read, named one by one: browsers expose to `fetch`
 * only the listed ones when the request carries credentials, `*` is not enough then. */
const EXPOSED_HEADERS = [
  'x-ratelimit-limit-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-reset-requests',
  'x-ratelimit-reset-tokens',
  'retry-after',
  'retry-after-ms',
  'x-should-retry',
  'x-request-id',
  'apim-request-id',
];

const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  // `*` does not cover `authorization` in the Fetch standard, so it is named as well.
  'access-control-allow-headers': '*, authorization, api-key, content-type, x-llm-provider',
  'access-control-allow-methods': 'GET, POST, OPTIONS',
  'access-control-expose-headers': ['*', ...EXPOSED_HEADERS].join(', '),
  'access-control-max-age': '600',
};

/** A budget no test exhausts, sent with every successful answer outside `budget`, so the
 * client's header-adaptive limiter has something real to read without slowing down. */
const GENEROUS_BUDGET_HEADERS = {
  'x-ratelimit-limit-requests': '10000',
  'x-ratelimit-remaining-requests': '9999',
  'x-ratelimit-reset-requests': '6ms',
  'x-ratelimit-limit-tokens': '1000000',
  'x-ratelimit-remaining-tokens': '999000',
  'x-ratelimit-reset-tokens': '1ms',
};

/** Headers whose values are credentials: the request log records only that they were sent. */
const SECRET_HEADERS = new Set(['authorization', 'api-key', 'x-api-key', 'proxy-authorization', 'cookie']);

const SAFE = { filtered: false, severity: 'safe' };
/** Azure's content-filter annotations, as Azure attaches them to prompts and choices. */
const PROMPT_FILTER_RESULTS = [
  {
    prompt_index: 0,
    content_filter_results: {
      hate: SAFE,
      jailbreak: { filtered: false, detected: false },
      self_harm: SAFE,
      sexual: SAFE,
      violence: SAFE,
    },
  },
];
const CHOICE_FILTER_RESULTS = { hate: SAFE, self_harm: SAFE, sexual: SAFE, violence: SAFE };
/** Azure opens a stream with this chunk: no choices, empty id/model/object, the prompt's
 * filter results. Clients that assume `choices[0]` exists break on it. */
const AZURE_PRELUDE_CHUNK = {
  choices: [],
  created: 0,
  id: '',
  model: '',
  object: '',
  prompt_filter_results: PROMPT_FILTER_RESULTS,
};

const AZURE_ACCESS_DENIED =
  'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide ' +
  'a valid key for an active subscription and use a correct regional API endpoint for your resource.';

// ---------------------------------------------------------------------------------------
// Scenarios

/**
 * Each scenario: `args` turns the `:`-separated parameters of its name into values (or null
 * when they are invalid), `respond` answers one request. Parameters live in the name because
 * the client appends `/chat/completions` to the base URL, so a query string would not survive.
 */
const SCENARIOS = {
  normal: { args: noArgs, respond: (ctx) => reply(ctx, normalReply(ctx.prompt)) },
  plain: { args: noArgs, respond: (ctx) => reply(ctx, plainReply(ctx.prompt)) },

  rate_limited_then_ok: {
    args: optionalCount(2),
    respond: (ctx, [failures]) =>
      ctx.n <= failures ? sendRateLimited(ctx) : reply(ctx, normalReply(ctx.prompt)),
  },
  server_error: { args: noArgs, respond: (ctx) => sendServerError(ctx) },
  server_error_then_ok: {
    args: optionalCount(2),
    respond: (ctx, [failures]) =>
      ctx.n <= failures ? sendServerError(ctx) : reply(ctx, normalReply(ctx.prompt)),
  },
  bad_gateway: {
    args: noArgs,
    respond: (ctx) =>
      sendRaw(ctx, 502, '<html>502 Bad Gateway</html>', { 'content-type': 'text/html' }),
  },

  // Well-formed enough to look like JSON to a sniffing client, but a parser must reject it.
  malformed: {
    args: noArgs,
    respond: (ctx) =>
      sendRaw(ctx, 200, '{"id":"x","choices":[{"message":{"content":"hi"}}]garbage}}', {
        'content-type': 'application/json',
      }),
  },
  truncated: { args: noArgs, respond: (ctx) => sendTruncated(ctx) },

  slow: {
    args: (args) => {
      const delayMs = args.length === 0 ? 1000 : args.length === 1 ? parseCount(args[0], MAX_DELAY_MS) : null;
      return delayMs === null ? null : [delayMs];
    },
    respond: async (ctx, [delayMs]) => {
      if (await sleep(delayMs, ctx.signal)) await reply(ctx, normalReply(ctx.prompt));
    },
  },

  stream_split: {
    args: (args) => (args.length === 0 || (args.length === 1 && args[0] === 'utf8') ? [args[0] === 'utf8'] : null),
    respond: (ctx, [utf8]) => {
      const content = utf8
        ? '<think>step one → step two</think>The answer is 4 ✓ (½ of 8) 🎉'
        : '<think>step one, step two</think>The answer is 4.';
      return ctx.body.stream === true ? streamSplit(ctx, { content }) : reply(ctx, { content });
    },
  },
  stream_break: {
    args: noArgs,
    respond: (ctx) => (ctx.body.stream === true ? streamBreak(ctx) : reply(ctx, normalReply(ctx.prompt))),
  },

  azure: { args: noArgs, respond: (ctx) => respondAzure(ctx) },
  auth: {
    args: noArgs,
    respond: (ctx) =>
      /^Bearer\s+\S/i.test(ctx.req.headers.authorization ?? '')
        ? reply(ctx, normalReply(ctx.prompt))
        : sendJson(
            ctx,
            401,
            openAiError(
              "You didn't provide an API key. You need to provide your API key in an Authorization " +
                'header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).',
              'invalid_request_error',
              'invalid_api_key',
            ),
          ),
  },
  echo_key_error: {
    args: noArgs,
    respond: (ctx) => {
      const { authorization = '', 'api-key': apiKey = '' } = ctx.req.headers;
      const presented = authorization.replace(/^Bearer\s+/i, '') || apiKey;
      return sendJson(
        ctx,
        401,
        openAiError(
          `Incorrect API key provided: ${presented}. You can find your API key at ` +
            'https://platform.openai.com/account/api-keys.',
          'invalid_request_error',
          'invalid_api_key',
        ),
      );
    },
  },

  json: { args: noArgs, respond: (ctx) => reply(ctx, { content: JSON.stringify({ answer: ctx.prompt }) }) },
  json_bad: { args: noArgs, respond: (ctx) => reply(ctx, { content: 'Sure! {"answer": 1}' }) },
  length: {
    args: noArgs,
    respond: (ctx) =>
      reply(ctx, { content: `<think>I started thinking about ${ctx.prompt} and`, finishReason: 'length' }),
  },
  empty: { args: noArgs, respond: (ctx) => reply(ctx, { content: '<think>only thoughts</think>' }) },

  budget: { args: budgetArgs, respond: (ctx, args) => respondBudget(ctx, args) },

  demo: {
    args: noArgs,
    respond: (ctx) => reply(ctx, demoReply(ctx), { split: wordPieces, pauseMs: 20 }),
  },
};

function normalReply(prompt) {
  return {
    content: `<think>Thinking about: ${prompt}</think>\nAnswer to: ${prompt}`,
    reasoning: `Reasoning about: ${prompt}`,
  };
}

function plainReply(prompt) {
  return { content: `Answer to: ${prompt}` };
}

/** Canned answers for the demo page: varied, with a few sentences of thinking each, and
 * labeled so nobody mistakes them for a model's output. */
const DEMO_ANSWERS = [
  (q) =>
    `<think>The question is "${q}". There is no real model behind this upstream, so the honest ` +
    'thing is a friendly canned reply. It should still show every part of the pipeline: the ' +
    'thinking, the answer, and the stream arriving piece by piece.</think>\n' +
    `Thanks for asking "${q}". Your request reached the upstream, this thinking block was split ` +
    'from the answer, and the words you are reading arrived as a stream. (demo upstream)',
  (q) =>
    `<think>Let me take "${q}" step by step. First, what is being asked. Second, what a short and ` +
    'useful answer looks like. Third, whether anything needs a caveat. The caveat here is ' +
    'obvious: this is a demo.</think>\n' +
    'Short answer: every question deserves a considered reply, and yours got three steps of ' +
    '(pretend) thought before this one. Ask again to see another canned answer. (demo upstream)',
  (q) =>
    '<think>A haiku might be a nice change of pace. Five syllables, then seven, then five. It ' +
    'should be about the question without repeating it word for word.</think>\n' +
    'A question arrives —\ntokens stream in one by one,\nthe answer unfolds.\n\n' +
    `(That was for "${q}".) (demo upstream)`,
  (q) =>
    '<think>Two and two make four. That is simple enough to check twice: 2 + 2 = 4, and ' +
    '4 − 2 = 2. The reasoning holds, so the answer can be short.</think>\n' +
    `The answer to "${q}" is, as far as this demo knows, 4. A real model would do better. ` +
    '(demo upstream)',
];

function demoReply(ctx) {
  const question = [...ctx.prompt].length > 200 ? `${[...ctx.prompt].slice(0, 200).join('')}…` : ctx.prompt;
  return { content: DEMO_ANSWERS[(ctx.n - 1) % DEMO_ANSWERS.length](question) };
}

/** Azure answers only on its own URL shape, with its own credential header, and with its
 * own error shape (`code` is a string, no `type`). */
function respondAzure(ctx) {
  const azureError = (status, message) => sendJson(ctx, status, { error: { code: String(status), message } });
  if (ctx.route.style !== 'azure') return azureError(404, 'Resource not found');
  if (!ctx.query.has('api-version')) return azureError(404, 'Resource not found');
  if (ctx.req.headers.authorization !== undefined) {
    return azureError(401, `${AZURE_ACCESS_DENIED} (This test upstream expects the key in api-key only.)`);
  }
  if (!ctx.req.headers['api-key']) return azureError(401, AZURE_ACCESS_DENIED);
  return reply(ctx, normalReply(ctx.prompt));
}

// ---------------------------------------------------------------------------------------
// The `budget` scenario: OpenAI-like token buckets

function budgetArgs(args) {
  const [rpm, tpm, ...rest] = args;
  const requestsPerMinute = parseCount(rpm, 1e9);
  const tokensPerMinute = parseCount(tpm, 1e12);
  if (!requestsPerMinute || !tokensPerMinute) return null;
  if (rest.length === 0) return [requestsPerMinute, tokensPerMinute, 200];
  const latencyMs = rest.length === 2 && rest[0] === 'latency' ? parseCount(rest[1], MAX_DELAY_MS) : null;
  return latencyMs === null ? null : [requestsPerMinute, tokensPerMinute, latencyMs];
}

/** A bucket that starts full and refills continuously, `capacity` units per minute. */
function createBucket(capacity, now) {
  return { capacity, level: capacity, at: now };
}

function refill(bucket, now) {
  bucket.level = Math.min(bucket.capacity, bucket.level + ((now - bucket.at) * bucket.capacity) / MINUTE_MS);
  bucket.at = now;
}

function msUntilLevel(bucket, amount) {
  return amount <= bucket.level ? 0 : ((amount - bucket.level) * MINUTE_MS) / bucket.capacity;
}

async function respondBudget(ctx, [requestsPerMinute, tokensPerMinute, latencyMs]) {
  const now = performance.now();
  const bucketKey = `${ctx.scenario.id}\u0000${ctx.key}`;
  let buckets = ctx.state.buckets.get(bucketKey);
  if (!buckets) {
    buckets = { requests: createBucket(requestsPerMinute, now), tokens: createBucket(tokensPerMinute, now) };
    ctx.state.buckets.set(bucketKey, buckets);
  }
  refill(buckets.requests, now);
  refill(buckets.tokens, now);

  const maxTokens = maxTokensOf(ctx.body);
  const estimate = Math.ceil(ctx.promptChars / 4) + maxTokens;
  const headersNow = () => ({
    'x-ratelimit-limit-requests': String(requestsPerMinute),
    'x-ratelimit-limit-tokens': String(tokensPerMinute),
    'x-ratelimit-remaining-requests': String(Math.floor(buckets.requests.level)),
    'x-ratelimit-remaining-tokens': String(Math.floor(buckets.tokens.level)),
    'x-ratelimit-reset-requests': goDuration(msUntilLevel(buckets.requests, requestsPerMinute)),
    'x-ratelimit-reset-tokens': goDuration(msUntilLevel(buckets.tokens, tokensPerMinute)),
  });

  if (estimate > tokensPerMinute) {
    // Waiting cannot help: OpenAI answers 429 "Request too large" without a retry hint.
    return sendJson(
      ctx,
      429,
      openAiError(
        `Request too large for ${ctx.model}: Limit ${tokensPerMinute}, Requested ${estimate}. ` +
          'The input or output tokens must be reduced in order to run successfully.',
        'tokens',
        'rate_limit_exceeded',
      ),
      { ...headersNow(), 'x-should-retry': 'false' },
    );
  }

  const requestWait = msUntilLevel(buckets.requests, 1);
  const tokenWait = msUntilLevel(buckets.tokens, estimate);
  if (requestWait > 0 || tokenWait > 0) {
    const retryAfterMs = Math.max(1, Math.ceil(Math.max(requestWait, tokenWait)));
    const [kind, limit, used] =
      requestWait >= tokenWait
        ? ['requests', `${requestsPerMinute} / min`, `${requestsPerMinute - Math.floor(buckets.requests.level)}`]
        : ['tokens', `${tokensPerMinute} / min`, `${tokensPerMinute - Math.floor(buckets.tokens.level)}`];
    return sendJson(
      ctx,
      429,
      openAiError(
        `Rate limit reached for ${kind} per min (RPM/TPM) on ${ctx.model}: Limit ${limit}, Used ${used}. ` +
          `Please try again in ${goDuration(retryAfterMs)}.`,
        kind,
        'rate_limit_exceeded',
      ),
      {
        ...headersNow(),
        'retry-after-ms': String(retryAfterMs),
        'retry-after': String(Math.ceil(retryAfterMs / 1000)),
      },
    );
  }

  buckets.requests.level -= 1;
  buckets.tokens.level -= estimate;
  ctx.stats.tokens_charged += estimate;
  const headers = headersNow();
  if (!(await sleep(latencyMs, ctx.signal))) return;
  // A realistic length between 20 tokens and the cap, the same for the same request number.
  const random = mulberry32(ctx.n);
  const completionTokens = maxTokens <= 20 ? maxTokens : 20 + Math.floor(random() * (maxTokens - 20 + 1));
  await reply(ctx, { ...plainReply(ctx.prompt), completionTokens }, { headers });
}

function maxTokensOf(body) {
  const value = body.max_tokens ?? body.max_completion_tokens;
  return Number.isInteger(value) && value > 0 ? value : DEFAULT_MAX_TOKENS;
}

/** Go's `time.Duration.String()` at millisecond precision, the format of OpenAI's
 * `x-ratelimit-reset-*` headers: `20ms`, `1s`, `1.5s`, `6m0s`, `1h0m0s`. */
export function goDuration(ms) {
  const whole = Math.ceil(ms);
  if (!(whole > 0)) return '0s';
  if (whole < 1000) return `${whole}ms`;
  const hours = Math.floor(whole / 3_600_000);
  const minutes = Math.floor((whole % 3_600_000) / MINUTE_MS);
  const seconds = `${Number(((whole % MINUTE_MS) / 1000).toFixed(3))}s`;
  if (hours > 0) return `${hours}h${minutes}m${seconds}`;
  if (minutes > 0) return `${minutes}m${seconds}`;
  return seconds;
}

// ---------------------------------------------------------------------------------------
// Answers: JSON bodies and SSE streams in OpenAI's (and Azure's) chat-completion shapes

/**
 * Answers with a chat completion, as JSON or, when the request asked for `stream: true`,
 * as server-sent events. `reply` is `{ content, reasoning?, finishReason?, completionTokens? }`.
 */
async function reply(
  ctx,
  answer,
  { headers = GENEROUS_BUDGET_HEADERS, split = (text) => codePointPieces(text, 3), pauseMs = 0 } = {},
) {
  const full = { finishReason: 'stop', ...answer };
  if (ctx.body.stream !== true) return sendJson(ctx, 200, completionBody(ctx, full), headers);

  const chunks = completionChunks(ctx, full, split);
  const frames = chunks.map((chunk) => sseFrame(chunk));
  if (ctx.route.style === 'azure') frames.unshift(sseFrame(AZURE_PRELUDE_CHUNK));
  frames.push('data: [DONE]\n\n');
  if (!startStream(ctx, headers)) return;
  for (const frame of frames) {
    if (isGone(ctx.res)) return;
    ctx.res.write(frame);
    if (pauseMs > 0 && !(await sleep(pauseMs, ctx.signal))) return;
  }
  ctx.res.end();
}

function completionBody(ctx, answer) {
  const message = { role: 'assistant', content: answer.content, refusal: null };
  if (answer.reasoning !== undefined) message.reasoning_content = answer.reasoning;
  const choice = { index: 0, message, logprobs: null, finish_reason: answer.finishReason };
  const body = {
    id: ctx.completionId,
    object: 'chat.completion',
    created: ctx.created,
    model: ctx.model,
    choices: [choice],
    usage: usageOf(ctx, answer),
    system_fingerprint: SYSTEM_FINGERPRINT,
  };
  if (ctx.route.style === 'azure') {
    body.prompt_filter_results = PROMPT_FILTER_RESULTS;
    choice.content_filter_results = CHOICE_FILTER_RESULTS;
  }
  return body;
}

/** The chunk objects of a streamed answer: role, reasoning deltas, content deltas, finish,
 * and the usage chunk (`choices: []`) when `stream_options.include_usage` asks for it. */
function completionChunks(ctx, answer, split) {
  const includeUsage = ctx.body.stream_options?.include_usage === true;
  const chunk = (delta, finishReason = null) => ({
    id: ctx.completionId,
    object: 'chat.completion.chunk',
    created: ctx.created,
    model: ctx.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    // OpenAI sends `usage: null` on every chunk but the last when usage was asked for.
    ...(includeUsage ? { usage: null } : {}),
  });
  const chunks = [chunk({ role: 'assistant', content: '', refusal: null })];
  if (answer.reasoning) {
    for (const piece of split(answer.reasoning)) chunks.push(chunk({ reasoning_content: piece }));
  }
  if (answer.content) for (const piece of split(answer.content)) chunks.push(chunk({ content: piece }));
  chunks.push(chunk({}, answer.finishReason));
  if (includeUsage) {
    chunks.push({
      id: ctx.completionId,
      object: 'chat.completion.chunk',
      created: ctx.created,
      model: ctx.model,
      system_fingerprint: SYSTEM_FINGERPRINT,
      choices: [],
      usage: usageOf(ctx, answer),
    });
  }
  return chunks;
}

function usageOf(ctx, answer) {
  const prompt_tokens = Math.ceil(ctx.promptChars / 4);
  // Reasoning is generated text too, and providers bill it as completion tokens.
  const completion_tokens =
    answer.completionTokens ?? Math.ceil((countChars(answer.content) + countChars(answer.reasoning ?? '')) / 4);
  return { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
}

function sseFrame(data, { lineEnd = '\n', space = true } = {}) {
  return `data:${space ? ' ' : ''}${JSON.stringify(data)}${lineEnd}${lineEnd}`;
}

function startStream(ctx, headers) {
  if (isGone(ctx.res)) return false;
  ctx.res.writeHead(200, { ...headers, 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  return true;
}

/**
 * The hardest stream a conforming SSE parser must survive, all valid per the HTML standard:
 * Azure's prelude chunk, a comment, `\r\n` line endings on some events, one `data:` without
 * the optional space, content deltas of 1-3 characters, and the bytes written 1-3 at a time
 * (so a write may end inside `\r\n` or inside a UTF-8 character).
 */
async function streamSplit(ctx, answer) {
  const random = mulberry32(ctx.n);
  const pieceSizes = (text) => {
    const chars = [...text];
    const pieces = [];
    for (let at = 0; at < chars.length; ) {
      const size = 1 + Math.floor(random() * 3);
      pieces.push(chars.slice(at, at + size).join(''));
      at += size;
    }
    return pieces;
  };
  const chunks = completionChunks(ctx, { finishReason: 'stop', ...answer }, pieceSizes);
  const frames = [sseFrame(AZURE_PRELUDE_CHUNK, { lineEnd: '\r\n' }), ': keep-alive\n\n'];
  chunks.forEach((chunk, index) => {
    frames.push(sseFrame(chunk, { lineEnd: index % 3 === 1 ? '\r\n' : '\n', space: index !== 2 }));
  });
  frames.push('data: [DONE]\r\n\r\n');

  const bytes = Buffer.from(frames.join(''));
  if (!startStream(ctx, GENEROUS_BUDGET_HEADERS)) return;
  for (let at = 0; at < bytes.length; ) {
    const size = 1 + Math.floor(random() * 3);
    if (isGone(ctx.res)) return;
    ctx.res.write(bytes.subarray(at, at + size));
    at += size;
    // Yield so each write leaves as its own chunk instead of being coalesced with the next.
    if (!(await nextTurn(ctx.signal))) return;
  }
  ctx.res.end();
}

/** A stream that stops mid-answer: the role chunk, two content chunks, then the socket dies. */
async function streamBreak(ctx) {
  const chunks = completionChunks(ctx, { content: 'Partial answer', finishReason: 'stop' }, () => [
    'Partial ',
    'answer',
  ]).slice(0, 3);
  if (!startStream(ctx, GENEROUS_BUDGET_HEADERS)) return;
  for (const chunk of chunks) ctx.res.write(sseFrame(chunk));
  // Give the chunks time to reach the client, so it sees content and then a broken stream.
  if (await sleep(50, ctx.signal)) ctx.res.destroy();
}

/** Announces the full length, sends the first half, then hangs up. */
function sendTruncated(ctx) {
  const body = Buffer.from(JSON.stringify(completionBody(ctx, { ...normalReply(ctx.prompt), finishReason: 'stop' })));
  if (isGone(ctx.res)) return;
  ctx.res.writeHead(200, {
    ...GENEROUS_BUDGET_HEADERS,
    'content-type': 'application/json',
    'content-length': String(body.length),
  });
  ctx.res.write(body.subarray(0, Math.floor(body.length / 2)), () => ctx.res.destroy());
}

function sendRateLimited(ctx) {
  return sendJson(
    ctx,
    429,
    openAiError(
      `Rate limit reached for requests per min (RPM) on ${ctx.model}: Limit 10000, Used 10000. ` +
        'Please try again in 300ms.',
      'requests',
      'rate_limit_exceeded',
    ),
    {
      'retry-after-ms': '300',
      'retry-after': '1',
      'x-ratelimit-limit-requests': '10000',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '300ms',
      'x-ratelimit-limit-tokens': '1000000',
      'x-ratelimit-remaining-tokens': '999000',
      'x-ratelimit-reset-tokens': '1ms',
    },
  );
}

function sendServerError(ctx) {
  return sendJson(
    ctx,
    500,
    openAiError('The server had an error while processing your request. Sorry about that!', 'server_error', null),
  );
}

function openAiError(message, type, code, param = null) {
  return { error: { message, type, param, code } };
}

function sendJson(ctx, status, body, headers = {}) {
  return sendRaw(ctx, status, JSON.stringify(body), { ...headers, 'content-type': 'application/json' });
}

function sendRaw(ctx, status, text, headers = {}) {
  if (status === 429 && ctx.stats) ctx.stats.rejected_429 += 1;
  if (isGone(ctx.res)) return;
  const body = Buffer.from(text);
  ctx.res.writeHead(status, { ...headers, 'content-length': String(body.length) });
  ctx.res.end(body);
}

/** True once the response can take no more writes: finished, or the client went away. */
function isGone(res) {
  return res.destroyed || res.writableEnded;
}

// ---------------------------------------------------------------------------------------
// Requests: routing, bodies, the log

/**
 * Matches the chat-completion paths, with or without the `/s/<scenario>/<key>` prefix.
 * Returns `{ scenarioId, key, style, deployment, known }` or null for unrelated paths;
 * `known` is false for a scenario prefix followed by a path we do not serve (still logged).
 */
function matchChatRoute(segments) {
  let scenarioId = null;
  let key = null;
  let rest = segments;
  if (segments[0] === 's' && segments.length >= 3) {
    [scenarioId, key] = [segments[1], segments[2]];
    rest = segments.slice(3);
  }
  if (rest.length === 3 && rest[0] === 'v1' && rest[1] === 'chat' && rest[2] === 'completions') {
    return { scenarioId, key, style: 'openai', deployment: null, known: true };
  }
  if (
    rest.length === 5 &&
    rest[0] === 'openai' &&
    rest[1] === 'deployments' &&
    rest[2] !== '' &&
    rest[3] === 'chat' &&
    rest[4] === 'completions'
  ) {
    return { scenarioId, key, style: 'azure', deployment: rest[2], known: true };
  }
  return key === null ? null : { scenarioId, key, style: 'openai', deployment: null, known: false };
}

function parseScenario(id) {
  const [name, ...args] = id.split(':');
  const scenario = Object.hasOwn(SCENARIOS, name) ? SCENARIOS[name] : null;
  const values = scenario?.args(args) ?? null;
  return values === null ? null : { id, name, respond: scenario.respond, args: values };
}

function noArgs(args) {
  return args.length === 0 ? [] : null;
}

function optionalCount(fallback) {
  return (args) => {
    if (args.length === 0) return [fallback];
    const count = args.length === 1 ? parseCount(args[0], 1e9) : null;
    return count === null ? null : [count];
  };
}

/** A non-negative decimal integer no larger than `max`, else null. */
function parseCount(text, max) {
  if (typeof text !== 'string' || !/^\d{1,16}$/.test(text)) return null;
  const value = Number(text);
  return value <= max ? value : null;
}

/** Reads the body up to the limit. An oversized body is drained (up to a hard cap) rather
 * than cut off, so the client reads our 413 instead of a connection reset. */
function readBody(req, signal) {
  return new Promise((resolve) => {
    const declared = Number(req.headers['content-length']);
    if (declared > MAX_DRAIN_BYTES) return resolve({ status: 'too_large', drained: false });
    const chunks = [];
    let size = 0;
    const finish = (result) => {
      signal.removeEventListener('abort', onAbort);
      resolve(result);
    };
    const onAbort = () => finish({ status: 'aborted' });
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
      else chunks.length = 0;
      if (size > MAX_DRAIN_BYTES) {
        req.pause();
        finish({ status: 'too_large', drained: false });
      }
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) finish({ status: 'too_large', drained: true });
      else finish({ status: 'ok', bytes: Buffer.concat(chunks) });
    });
    req.on('error', () => finish({ status: 'aborted' }));
  });
}

/** The text of a message's `content`: a string, or the text parts of a content array. */
function messageText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (typeof part === 'string' ? part : typeof part?.text === 'string' ? part.text : ''))
      .join('');
  }
  return '';
}

function countChars(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

function codePointPieces(text, size) {
  const chars = [...text];
  const pieces = [];
  for (let at = 0; at < chars.length; at += size) pieces.push(chars.slice(at, at + size).join(''));
  return pieces;
}

/** Words with their trailing whitespace: small chunks that read naturally in the demo. */
function wordPieces(text) {
  return text.match(/\s+|\S+\s*/g) ?? [];
}

function logEntry(req, path, query, body, scenarioId) {
  const headers = {};
  for (const [name, value] of Object.entries(req.headers)) {
    headers[name] = SECRET_HEADERS.has(name) ? 'present' : value;
  }
  return {
    at_ms: Date.now(),
    method: req.method,
    path,
    query: Object.fromEntries(query),
    headers,
    body,
    scenario: scenarioId,
  };
}

function safeDecode(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

// ---------------------------------------------------------------------------------------
// Timers that never outlive their request

/** Resolves true after `ms`, or false as soon as `signal` aborts (the timer is cleared). */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    if (ms <= 0) return resolve(true);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function nextTurn(signal) {
  return new Promise((resolve) => setImmediate(() => resolve(!signal.aborted)));
}

/** A small seeded generator: the "random" splits and lengths repeat run after run. */
function mulberry32(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------
// The server

function createState() {
  return {
    /** `${scenarioId}\0${key}` -> requests seen, so scenarios can answer by call number. */
    counters: new Map(),
    /** `${scenarioId}\0${key}` -> the `budget` scenario's buckets. */
    buckets: new Map(),
    /** key -> log entries. */
    logs: new Map(),
    /** key -> { requests, rejected_429, tokens_charged }. */
    stats: new Map(),
  };
}

function statsFor(state, key) {
  let stats = state.stats.get(key);
  if (!stats) {
    stats = { requests: 0, rejected_429: 0, tokens_charged: 0 };
    state.stats.set(key, stats);
  }
  return stats;
}

/**
 * Starts the upstream on 127.0.0.1 (port 0 picks a free one).
 * `latencyMs` delays every chat-completion answer; `demo` makes `demo` the scenario of
 * paths without `/s/<scenario>/<key>`.
 * Resolves to `{ url, port, close() }`; `close()` resolves once every connection is gone.
 */
export async function startUpstream({ port = 0, host = '127.0.0.1', latencyMs = 0, demo = false } = {}) {
  let state = createState();
  let requestCount = 0;

  const server = http.createServer();

  server.on('request', (req, res) => {
    const controller = new AbortController();
    // 'close' fires when the answer is complete, the client hung up or close() destroyed
    // the connection; in every case each timer and loop of this request must stop.
    res.on('close', () => controller.abort());
    res.on('error', () => controller.abort());
    req.on('error', () => controller.abort());
    requestCount += 1;
    for (const [name, value] of Object.entries(CORS_HEADERS)) res.setHeader(name, value);
    res.setHeader('x-request-id', `req_${requestCount}`);
    handle(req, res, controller.signal).catch(() => {
      // A bug here must cost one request, not the server.
      if (!res.headersSent && !isGone(res)) {
        sendJson({ res }, 500, openAiError('The test upstream failed on this request.', 'server_error', null));
      } else {
        res.destroy();
      }
    });
  });

  async function handle(req, res, signal) {
    const queryAt = req.url.indexOf('?');
    const path = queryAt === -1 ? req.url : req.url.slice(0, queryAt);
    const query = new URLSearchParams(queryAt === -1 ? '' : req.url.slice(queryAt + 1));
    const segments = path.split('/').slice(1).map(safeDecode);
    const bare = { res };

    if (req.method === 'OPTIONS') {
      // Chrome's private-network preflight, for a demo page served from a public origin.
      if (req.headers['access-control-request-private-network'] === 'true') {
        res.setHeader('access-control-allow-private-network', 'true');
      }
      res.writeHead(204);
      res.end();
      return;
    }

    if (path === '/health') {
      if (req.method !== 'GET') return sendMethodNotAllowed(bare, 'GET');
      return sendJson(bare, 200, { ok: true });
    }
    if (path === '/__reset') {
      if (req.method !== 'POST') return sendMethodNotAllowed(bare, 'POST');
      state = createState();
      return sendJson(bare, 200, { ok: true });
    }
    if ((segments[0] === '__log' || segments[0] === '__stats') && segments.length === 2) {
      if (req.method !== 'GET') return sendMethodNotAllowed(bare, 'GET');
      const key = segments[1];
      if (segments[0] === '__log') return sendJson(bare, 200, state.logs.get(key) ?? []);
      return sendJson(bare, 200, state.stats.get(key) ?? { requests: 0, rejected_429: 0, tokens_charged: 0 });
    }

    const route = matchChatRoute(segments);
    if (!route) return sendNotFound(bare, req.method, path);

    const read = await readBody(req, signal);
    if (read.status === 'aborted') return;
    let body = null;
    let malformed = false;
    if (read.status === 'ok' && read.bytes.length > 0) {
      try {
        body = JSON.parse(read.bytes.toString('utf8'));
      } catch {
        malformed = true;
      }
    } else if (read.status === 'ok') {
      malformed = true;
    }

    const requestState = state;
    const scenarioId = route.scenarioId ?? (demo ? 'demo' : 'normal');
    const stats = route.key === null ? null : statsFor(requestState, route.key);
    if (route.key !== null) {
      let log = requestState.logs.get(route.key);
      if (!log) requestState.logs.set(route.key, (log = []));
      log.push(logEntry(req, path, query, body, scenarioId));
      if (log.length > MAX_LOG_ENTRIES_PER_KEY) log.shift();
      stats.requests += 1;
    }
    const ctx = { req, res, signal, state: requestState, stats, query, route };

    if (read.status === 'too_large') {
      if (!read.drained) res.setHeader('connection', 'close');
      return sendJson(
        ctx,
        413,
        openAiError(
          `Request body too large: the limit is ${MAX_BODY_BYTES} bytes.`,
          'invalid_request_error',
          'request_too_large',
        ),
      );
    }
    if (!route.known) return sendNotFound(ctx, req.method, path);
    if (req.method !== 'POST') return sendMethodNotAllowed(ctx, 'POST');
    if (malformed) {
      return sendJson(
        ctx,
        400,
        openAiError(
          'We could not parse the JSON body of your request. The API expects a JSON payload.',
          'invalid_request_error',
          null,
        ),
      );
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      const error = openAiError('The request body must be a JSON object.', 'invalid_request_error', null);
      return sendJson(ctx, 400, error);
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      return sendJson(
        ctx,
        400,
        openAiError(
          "Missing required parameter: 'messages'.",
          'invalid_request_error',
          'missing_required_parameter',
          'messages',
        ),
      );
    }

    const scenario = parseScenario(scenarioId);
    if (!scenario) {
      return sendJson(
        ctx,
        404,
        openAiError(
          `Unknown scenario or bad parameters: '${scenarioId}'. See tests/upstream/README.md.`,
          'invalid_request_error',
          'unknown_scenario',
        ),
      );
    }

    const counterKey = `${scenarioId}\u0000${route.key ?? ''}`;
    const n = (requestState.counters.get(counterKey) ?? 0) + 1;
    requestState.counters.set(counterKey, n);

    const messages = body.messages;
    const lastUser = [...messages].reverse().find((message) => message?.role === 'user') ?? messages.at(-1);
    Object.assign(ctx, {
      body,
      scenario,
      key: route.key,
      n,
      prompt: messageText(lastUser?.content),
      promptChars: messages.reduce((sum, message) => sum + countChars(messageText(message?.content)), 0),
      model: route.deployment ?? (typeof body.model === 'string' && body.model !== '' ? body.model : DEFAULT_MODEL),
      completionId: `chatcmpl-${n}`,
      created: Math.floor(Date.now() / 1000),
    });
    if (route.style === 'azure') res.setHeader('apim-request-id', `apim-${requestCount}`);

    if (!(await sleep(latencyMs, signal))) return;
    await scenario.respond(ctx, scenario.args);
  }

  function sendNotFound(ctx, method, path) {
    return sendJson(
      ctx,
      404,
      openAiError(`Invalid URL (${method} ${path})`, 'invalid_request_error', 'unknown_url'),
    );
  }

  function sendMethodNotAllowed(ctx, allowed) {
    return sendJson(
      ctx,
      405,
      openAiError(`Method not allowed: use ${allowed}.`, 'invalid_request_error', 'method_not_allowed'),
      { allow: `${allowed}, OPTIONS` },
    );
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // After listening, an error on the server object must not crash the host process.
  server.on('error', () => {});

  const boundPort = server.address().port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  let closing = null;
  return {
    url: `http://${urlHost}:${boundPort}`,
    port: boundPort,
    close() {
      closing ??= new Promise((resolve) => {
        server.close(() => resolve());
        // Destroys idle, half-received and mid-answer connections alike; each destroyed
        // response emits 'close', which clears that request's timers.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

// ---------------------------------------------------------------------------------------
// The command line

const USAGE = 'usage: node tests/upstream/server.mjs [--port N] [--port-file PATH] [--latency MS] [--demo]';

function parseCommandLine(argv) {
  const options = { port: 0, portFile: null, latencyMs: 0, demo: false };
  for (let i = 0; i < argv.length; i += 1) {
    const [flag, inline] = argv[i].startsWith('--') && argv[i].includes('=') ? argv[i].split(/=(.*)/s) : [argv[i]];
    const value = () => inline ?? argv[++i];
    if (flag === '--demo') options.demo = true;
    else if (flag === '--port') options.port = parseCount(value(), 65535);
    else if (flag === '--latency') options.latencyMs = parseCount(value(), MAX_DELAY_MS);
    else if (flag === '--port-file') options.portFile = value() ?? '';
    else throw new Error(`unknown argument: ${argv[i]}`);
    if (options.port === null || options.latencyMs === null || options.portFile === '') {
      throw new Error(`bad value for ${flag}`);
    }
  }
  return options;
}

async function main(argv) {
  let options;
  try {
    options = parseCommandLine(argv);
  } catch (error) {
    process.stderr.write(`${error.message}\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  const upstream = await startUpstream({ port: options.port, latencyMs: options.latencyMs, demo: options.demo });
  if (options.portFile) {
    // Written whole, then renamed: a script polling for the file never reads half a number.
    const partial = `${options.portFile}.${process.pid}.tmp`;
    writeFileSync(partial, String(upstream.port));
    renameSync(partial, options.portFile);
  }
  process.stdout.write(`upstream listening on ${upstream.url}\n`);

  const shutdown = async () => {
    process.off('SIGTERM', shutdown);
    process.off('SIGINT', shutdown);
    // A stale port file would send the next run's scripts to a dead port.
    if (options.portFile) rmSync(options.portFile, { force: true });
    await upstream.close();
    // The process ends by itself now that nothing is open; this only guards against a leak.
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

function isMainModule() {
  try {
    return process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isMainModule()) await main(process.argv.slice(2));
