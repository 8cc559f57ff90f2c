#!/usr/bin/env bash
# Runs every check and test of the project, on a fresh machine too: it installs what it
# needs first (scripts/setup.sh, idempotent). This is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (native, all targets)"
cargo clippy --all-targets --locked -- -D warnings

step "cargo clippy (wasm32, the pure core)"
cargo clippy --lib --locked --target wasm32-unknown-unknown -- -D warnings

step "cargo build (wasm32, release)"
cargo build --lib --locked --release --target wasm32-unknown-unknown

step "cargo test (native: unit, behaviour, property and doc tests)"
cargo test --locked

echo
echo "all checks passed"
