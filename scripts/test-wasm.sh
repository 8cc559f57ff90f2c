#!/usr/bin/env bash
# The wasm tests: the JavaScript surface in Node and in headless Chromium, against the
# scripted upstream on 127.0.0.1. Starts the upstream, builds the tests with its URL baked
# in, runs both, and stops the upstream whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

dir=$(mktemp -d)
node tests/upstream/server.mjs --port-file "$dir/port" > "$dir/upstream.log" 2>&1 &
upstream=$!
trap 'kill "$upstream" 2>/dev/null; wait "$upstream" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  [ -s "$dir/port" ] && break
  sleep 0.1
done
[ -s "$dir/port" ] || { echo "test-wasm: the upstream did not start" >&2; cat "$dir/upstream.log" >&2; exit 1; }
export UPSTREAM_URL="http://127.0.0.1:$(cat "$dir/port")"
echo "test-wasm: upstream at $UPSTREAM_URL"

wasm-pack test --node --features js --test js_node
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}" \
  wasm-pack test --headless --chrome --chromedriver "${CHROMEDRIVER:-/usr/bin/chromedriver}" --features js --test js_browser
