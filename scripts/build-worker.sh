#!/usr/bin/env bash
# Builds the Worker into build/ with worker-build (feature `worker`), pointing it at the
# tools the project installs (it would download wasm-bindgen, wasm-opt and esbuild
# otherwise, which cannot work offline). wrangler.toml's [build] runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
worker-build --release --features worker
