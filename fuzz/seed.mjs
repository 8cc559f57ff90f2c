// Seeds the fuzz corpora from the test fixtures, afresh on every run (nothing is committed):
//
//   node fuzz/seed.mjs            every target
//   node fuzz/seed.mjs sse        one
//
// A seed is a payload alone (see src/lib.rs): a thinking fixture's text, a JSON body or an
// SSE stream found in the tests, as it is. It goes to fuzz/corpus/<target>/seed-<hash>,
// beside what the fuzzer keeps there. Targets whose input is built by `arbitrary`
// (rate_limiter, record) get no seeds.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const fuzz = dirname(fileURLToPath(import.meta.url));
const tests = join(fuzz, '..', 'tests');

/// Rust string literals of a source file, unescaped: raw (r"…", r#"…"#), byte (b"…") and
/// plain ("…") strings, as buffers.
function literals(source) {
  const out = [];
  const raw = /(?<![\\\w])b?r(#+)"([\s\S]*?)"\1|(?<![\\\w])b?r"([^"]*)"/g;
  const rest = source.replace(raw, (_, _hashes, hashed, plain) => {
    out.push(Buffer.from(hashed ?? plain, 'utf8'));
    return '';
  });
  // Character literals ('"') would put the quotes out of step.
  const noChars = rest.replace(/'(?:\\.|[^'\\\n])'/g, "''");
  for (const match of noChars.matchAll(/"((?:[^"\\]|\\[\s\S])*)"/g)) {
    out.push(unescape(match[1]));
  }
  return out;
}

function unescape(text) {
  const bytes = [];
  const push = (s) => bytes.push(...Buffer.from(s, 'utf8'));
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '\\') {
      const code = text.codePointAt(i);
      push(String.fromCodePoint(code));
      if (code > 0xffff) i++;
      continue;
    }
    const next = text[++i];
    const simple = { n: '\n', r: '\r', t: '\t', '0': '\0', '\\': '\\', '"': '"', "'": "'" };
    if (next in simple) push(simple[next]);
    else if (next === 'x') {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (next === 'u') {
      const end = text.indexOf('}', i);
      push(String.fromCodePoint(parseInt(text.slice(i + 2, end), 16)));
      i = end;
    } else if (next === '\n') {
      // A line continuation: the line break and the next line's indentation go.
      while (/\s/.test(text[i + 1] ?? '')) i++;
    }
  }
  return Buffer.from(bytes);
}

const sources = readdirSync(tests)
  .filter((f) => f.endsWith('.rs'))
  .map((f) => readFileSync(join(tests, f), 'utf8'));
const strings = sources.flatMap(literals);
const text = (b) => b.toString('utf8');
const isJson = (b) => {
  try {
    const value = JSON.parse(text(b));
    return typeof value === 'object' && value !== null;
  } catch {
    return false;
  }
};

const fixtures = JSON.parse(readFileSync(join(tests, 'thinking_fixtures.json'), 'utf8'));
const thinking = fixtures.map((f) =>
  Buffer.from(f.separate_reasoning == null ? f.input : `${f.input}\0${f.separate_reasoning}`),
);
const tagged = strings.filter((b) => /<\/?(think|reasoning)/i.test(text(b)));
const json = strings.filter(isJson);
const sseLines = strings.filter((b) => /^(data|event|id|retry)\s*:/m.test(text(b)));
// Each fixture file's data lines, joined into one stream, as an upstream sends them.
const streams = sources.map((source) => {
  const lines = literals(source).filter((b) => text(b).startsWith('data: '));
  return Buffer.from(lines.map((b) => `${text(b).trim()}\n\n`).join('') + 'data: [DONE]\n\n');
});
const short = strings.filter((b) => b.length > 0 && b.length <= 40 && !b.includes(0x0a));
// Bodies a server echoing the key sends: @K is the key, @J the key JSON-escaped (see
// fuzz_targets/provider.rs).
const echoes = [
  '{"error":{"message":"Incorrect API key provided: @K.","type":"invalid_request_error","code":"invalid_api_key"}}',
  '{"error":{"message":{"detail":"bad key @K"},"code":"@K","param":"@J"}}',
  '<html>401: {"api_key": "@J"}</html>',
  'Incorrect API key @K',
].map((s) => Buffer.from(s));
// Configurations with keys (fuzz_targets/config.rs checks the keys holding sk-).
const configs = [
  '{"providers":{"main":{"type":"openai","api_key":"sk-abcdef0123456789","model":"gpt-4o"}},"default_provider":"main"}',
  '{"providers":{"az":{"type":"azure_openai","api_key":"sk-azure\\"key","endpoint":"https://r.openai.azure.com","deployment_name":"d"},"local":{"type":"custom","base_url":"http://127.0.0.1:9/v1","api_key":"sk-[redacted]"}}}',
].map((s) => Buffer.from(s));
// Batch input files (fuzz_targets/batch_input.rs): a good one, and lines of each fault.
const batchLine = (id, body, extra = '') =>
  `{"custom_id":"${id}","method":"POST","url":"/v1/chat/completions","body":${body}${extra}}`;
const chat = '{"model":"m","messages":[{"role":"user","content":"Hi"}]}';
const batchFiles = [
  [batchLine('a', chat), batchLine('b', '{"messages":[{"role":"user","content":"x"}],"provider":"backup"}')].join('\n'),
  [batchLine('a', chat), batchLine('a', chat), '[1]', 'not json', ''].join('\r\n'),
  batchLine('c', '{"messages":[],"stream":true}', ',"extra":1'),
  '\ufeff' + batchLine('d', '{"messages":[{"role":"user","content":"x"}],"fallback":["nobody","backup"]}') + '\n',
].map((s) => Buffer.from(s));
// Messages to the shared limiter's object (fuzz_targets/limiter_object.rs), one per seed.
const limits = '{"requests_per_minute":60,"tokens_per_minute":100000,"requests_refill":"continuous"}';
const reservation = '{"id":0,"tokens":10,"wait_ms":0,"start_at_ms":1700000000000,"reserved_through":10}';
const limiterMessages = [
  `{"v":1,"limits":${limits},"ops":[{"op":"reserve","tokens":10},{"op":"reserve","tokens":10,"ahead":true},{"op":"status"}]}`,
  `{"v":1,"limits":${limits},"ops":[{"op":"observe","reservation":${reservation},"status":429,"headers":[["retry-after-ms","1500"],["x-ratelimit-remaining-requests","3"]]},{"op":"reconcile","reservation":${reservation},"tokens":5},{"op":"cancel","reservation":${reservation}},{"op":"blocked_for","reservation":${reservation}}]}`,
  `{"v":2,"limits":${limits},"ops":[]}`,
  `{"v":1,"limits":${limits},"ops":[{"op":"forecast"},42,{"op":"reserve"}]}`,
].map((s) => Buffer.from(s));
const queries = ['limit=5&valid=true', 'cursor=rsp_018bcfe5680000000000ffffffff&provider=main&model=gpt-4o', 'Bearer sk-abc\nsk-abc']
  .map((s) => Buffer.from(s));

const seeds = {
  thinking: [...thinking, ...tagged],
  utf16_spans: [...thinking, ...tagged],
  sse: [...sseLines, ...streams],
  stream_assembler: [...streams, ...sseLines],
  config: [...json, ...configs],
  worker_request: [...json, ...queries],
  provider: [...json, ...echoes],
  headers: short,
  batch_input: batchFiles,
  limiter_object: limiterMessages,
};

const wanted = process.argv.slice(2);
for (const [target, list] of Object.entries(seeds)) {
  if (wanted.length > 0 && !wanted.includes(target)) continue;
  const dir = join(fuzz, 'corpus', target);
  mkdirSync(dir, { recursive: true });
  const unique = new Map(list.map((b) => [createHash('sha1').update(b).digest('hex'), b]));
  for (const [hash, bytes] of unique) writeFileSync(join(dir, `seed-${hash.slice(0, 16)}`), bytes);
  console.log(`seed.mjs: ${target}: ${unique.size} seeds`);
}
