#!/usr/bin/env bash
# wasm-opt as worker-build calls it, but keeping the function names (the wasm's name
# section), so that a CPU profile names Rust functions: for `node bench/worker.mjs --profile`
# (WASM_OPT_BIN=bench/wasm-opt-with-names.sh scripts/build-worker.sh).
set -euo pipefail
args=()
for arg in "$@"; do
  [ "$arg" = "--strip-debug" ] || args+=("$arg")
done
exec "$(dirname "$0")/../node_modules/.bin/wasm-opt" "${args[@]}" -g
