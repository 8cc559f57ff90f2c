// Node 20's `node --test <directory>` runs only files named like tests (`*.test.mjs`,
// `test-*.mjs`, ...), and `selftest.mjs` is not one; this file makes
// `node --test tests/upstream/` run it. `node --test tests/upstream/selftest.mjs` works too.
import './selftest.mjs';
