#!/usr/bin/env bash
# Builds the Worker into build/ with worker-build (feature `worker`), pointing it at the
# tools the project installs (it would download wasm-bindgen, wasm-opt and esbuild
# otherwise, which cannot work offline), then assembles the demo page into build/site.
# wrangler.toml's [build] runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
worker-build --release --features worker

# The demo page, served by the Worker's static assets: www/ and the npm package beside it.
[ -f pkg/llm_distiller_bg.wasm ] || scripts/build-pkg.sh
# Emptied in place, not removed: a running wrangler dev serves this folder and answers 500
# for good once it is deleted under it.
mkdir -p build/site
find build/site -mindepth 1 -delete
mkdir -p build/site/pkg
cp -R www/. build/site/
cp -R pkg/browser.js pkg/api.js pkg/llm_distiller.js pkg/llm_distiller_bg.wasm pkg/snippets build/site/pkg/
