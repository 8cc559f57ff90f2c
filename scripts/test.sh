#!/usr/bin/env bash
# Runs every check and test of the project, on a fresh machine too: it installs what it
# needs first (scripts/setup.sh, idempotent). This is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh --node --browser

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "cargo clippy (native, all targets)"
cargo clippy --all-targets --locked -- -D warnings

step "cargo clippy (wasm32: the pure core; the JS bindings with their tests)"
cargo clippy --lib --locked --target wasm32-unknown-unknown -- -D warnings
cargo clippy --lib --tests --locked --target wasm32-unknown-unknown --features js -- -D warnings
cargo clippy --lib --locked --target wasm32-unknown-unknown --features worker -- -D warnings

step "cargo test (native: unit, behaviour, property and doc tests)"
cargo test --locked

step "fuzzing: every target in fuzz/ for 20 s (nightly, cargo-fuzz)"
scripts/fuzz.sh --smoke

step "the npm package (pkg/)"
scripts/build-pkg.sh

step "wasm tests: the JS surface in Node and headless Chromium"
scripts/test-wasm.sh

step "the Worker and the demo page (build/, build/site)"
scripts/build-worker.sh

step "node tests: the upstream, the packed npm package (Node, TypeScript, Chromium), the Worker under wrangler dev, the demo page"
export WRANGLER_SEND_METRICS=false
node --test --test-concurrency=1 tests/upstream/ tests/npm/ tests/worker/ tests/demo/

echo
echo "all checks passed"
