// Extracts the OpenAI API schemas the tests validate against from the official OpenAPI
// spec (MIT, see tests/support/openai-openapi.LICENSE) into tests/support/openai-schemas.json:
// only the schemas named below and those they reference, with the spec's leftover OpenAPI
// 3.0 `nullable: true` turned into JSON Schema (`type: [T, "null"]`, `null` in an `enum`),
// so that ajv's 2020-12 draft reads them. The result is committed: the tests run without
// the spec at hand.
//
//   node scripts/vendor-openai-schemas.mjs [path/to/openai-openapi.yaml]
//   (default: ../shared/specs/openai-openapi.yaml beside this checkout)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const source = process.argv[2] ?? path.join(ROOT, '../shared/specs/openai-openapi.yaml');
const ROOTS = [
  'CreateChatCompletionRequest',
  'CreateChatCompletionResponse',
  'CreateChatCompletionStreamResponse',
  'ErrorResponse',
  'OpenAIFile',
  'ListFilesResponse',
  'DeleteFileResponse',
  'Batch',
  'ListBatchesResponse',
  'CreateBatchRequest',
];

const spec = YAML.parse(fs.readFileSync(source, 'utf8'));
const all = spec.components.schemas;
const picked = {};
const visit = (name) => {
  if (picked[name] || !all[name]) return;
  picked[name] = all[name];
  JSON.stringify(all[name], (key, value) => {
    if (key === '$ref' && typeof value === 'string' && value.startsWith('#/components/schemas/')) {
      visit(value.slice('#/components/schemas/'.length));
    }
    return value;
  });
};
ROOTS.forEach(visit);

/** OpenAPI 3.0's `nullable: true` as JSON Schema. */
function denullify(node) {
  if (Array.isArray(node)) return node.map(denullify);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [key, value] of Object.entries(node)) out[key] = denullify(value);
  if (out.nullable === true) {
    delete out.nullable;
    if (typeof out.type === 'string') out.type = [out.type, 'null'];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    if (!out.type && !out.enum) return { anyOf: [out, { type: 'null' }] };
  }
  return out;
}

const version = fs.existsSync(source.replace(/\.yaml$/, '.VERSION'))
  ? fs.readFileSync(source.replace(/\.yaml$/, '.VERSION'), 'utf8').trim()
  : 'unknown';
const out = {
  $comment: `From the OpenAI OpenAPI spec (MIT, tests/support/openai-openapi.LICENSE), commit ${version}; written by scripts/vendor-openai-schemas.mjs.`,
  components: { schemas: denullify(picked) },
};
const target = path.join(ROOT, 'tests/support/openai-schemas.json');
fs.writeFileSync(target, `${JSON.stringify(out)}\n`);
const license = source.replace(/\.yaml$/, '.LICENSE');
if (fs.existsSync(license)) fs.copyFileSync(license, path.join(ROOT, 'tests/support/openai-openapi.LICENSE'));
console.log(`${Object.keys(picked).length} schemas, ${fs.statSync(target).size} bytes: ${path.relative(ROOT, target)}`);
