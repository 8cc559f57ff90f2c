// OpenAI's own schemas (tests/support/openai-schemas.json, vendored from the official spec by
// scripts/vendor-openai-schemas.mjs) as assertions: what the Worker answers and what it
// sends upstream must validate against them, as any OpenAI client expects.
import assert from 'node:assert/strict';
import fs from 'node:fs';

import Ajv2020 from 'ajv/dist/2020.js';

const document = JSON.parse(fs.readFileSync(new URL('./openai-schemas.json', import.meta.url), 'utf8'));
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema(document, 'openai');

/** Asserts that `value` is a valid `name` (a schema of the spec's components). */
export function assertSchema(name, value, where = name) {
  const validate = ajv.getSchema(`openai#/components/schemas/${name}`);
  assert.ok(validate, `no schema ${name}`);
  if (!validate(value)) {
    const errors = validate.errors.slice(0, 5).map((e) => `${e.instancePath || '(root)'} ${e.message} ${JSON.stringify(e.params)}`);
    assert.fail(`${where} is not a valid ${name}:\n  ${errors.join('\n  ')}\n${JSON.stringify(value).slice(0, 600)}`);
  }
}
