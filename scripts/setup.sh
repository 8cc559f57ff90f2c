#!/usr/bin/env bash
# Installs what the project needs on a fresh machine, idempotently: every step checks
# first and skips what is already there at the right version. See ../shared/TOOLCHAIN.md
# for why each tool is installed the way it is (no network but the package registries).
#
#   scripts/setup.sh            the Rust side: wasm target, wasm-bindgen CLI, wasm-pack,
#                               worker-build
#   scripts/setup.sh --node     also the npm dev dependencies (wrangler, binaryen, ...)
#   scripts/setup.sh --browser  also Debian's chromium and chromedriver
set -euo pipefail
cd "$(dirname "$0")/.."

want_node=0 want_browser=0
for arg in "$@"; do
  case "$arg" in
    --node) want_node=1 ;;
    --browser) want_browser=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# The version a tool reports ("wasm-pack 0.15.1", or just "0.8.7"), or nothing.
version_of() { "$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1; }

export PATH="$HOME/.cargo/bin:$PATH"

# The wasm-bindgen CLI must be exactly the version of the crate in Cargo.lock.
lock_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    log "adding $component"
    rustup component add "$component"
  fi
done

if [ ! -f Cargo.lock ]; then
  cargo generate-lockfile
fi
bindgen_version=$(lock_version wasm-bindgen)
if [ -n "$bindgen_version" ]; then
  if [ "$(version_of wasm-bindgen)" != "$bindgen_version" ]; then
    log "installing wasm-bindgen-cli $bindgen_version (a few minutes)"
    # No --locked: one of the CLI's locked dependencies is missing from the registry.
    cargo install wasm-bindgen-cli --version "=$bindgen_version" --force
  fi
fi

if [ "$(version_of wasm-pack)" != "0.15.1" ]; then
  log "installing wasm-pack 0.15.1 (a few minutes)"
  cargo install wasm-pack --version 0.15.1 --locked --force
fi

# worker-build builds the Worker; it is told where wasm-bindgen, wasm-opt and esbuild are
# (scripts/build-worker.sh), since its own downloads cannot work offline.
if [ "$(version_of worker-build)" != "0.8.7" ]; then
  log "installing worker-build 0.8.7 (a few minutes)"
  cargo install worker-build --version 0.8.7 --locked --force
fi

if [ "$want_node" = 1 ] && [ -f package.json ]; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "installing npm dev dependencies"
    npm ci --no-audit --no-fund
  fi
fi

if [ "$want_browser" = 1 ]; then
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    log "installing chromium and chromedriver from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  fi
fi

log "ready"
