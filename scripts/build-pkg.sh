#!/usr/bin/env bash
# Builds the npm package into pkg/: wasm-pack (target web, feature js), wasm-opt from
# npm's binaryen (wasm-pack's own download of binaryen cannot work offline), and the
# package's entry point and manifest from js/. Prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

profile="${1:-release}"
wasm-pack build --target web --out-dir pkg --"$profile" --no-pack -- --features js

wasm_opt=node_modules/.bin/wasm-opt
if [ ! -x "$wasm_opt" ]; then
  echo "build-pkg: $wasm_opt is missing: run scripts/setup.sh --node" >&2
  exit 1
fi
# The features rustc enables for wasm32-unknown-unknown by default; wasm-opt must accept them.
"$wasm_opt" pkg/llm_distiller_bg.wasm -o pkg/llm_distiller_bg.wasm -Oz --converge \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue

cp js/index.js js/index.d.ts js/package.json pkg/
cp README.md pkg/README.md
rm -f pkg/.gitignore

raw=$(wc -c < pkg/llm_distiller_bg.wasm)
gz=$(gzip -9 -c pkg/llm_distiller_bg.wasm | wc -c)
glue=$(cat pkg/index.js pkg/llm_distiller.js | gzip -9 -c | wc -c)
echo "build-pkg: llm_distiller_bg.wasm $raw bytes, $gz bytes gzipped; JS glue $glue bytes gzipped"
