#!/usr/bin/env bash
# The main command: sets everything up on a fresh machine and starts the Worker locally,
# with its local D1, its Durable Objects (the shared rate limiters), its Queues (the batches'
# work) and the demo page, on http://127.0.0.1:${PORT:-8787}/.
#
# Providers: with OPENAI_API_KEY in the environment, OpenAI (model $OPENAI_MODEL, default
# gpt-4o-mini); with AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_DEPLOYMENT,
# Azure OpenAI; with neither, a local demo upstream on 127.0.0.1 whose answers carry
# <think> blocks (the page labels it as a demo). Keys reach the Worker as secrets through
# a private env file, never through wrangler.toml. The access token is generated once and
# kept in .wrangler/dev-token (it is not printed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export WRANGLER_SEND_METRICS=false

port="${PORT:-8787}"
upstream_port="${UPSTREAM_PORT:-8788}"
wrangler=node_modules/.bin/wrangler

scripts/setup.sh --node
[ -f pkg/llm_distiller_bg.wasm ] || scripts/build-pkg.sh

mkdir -p .wrangler
umask 077
if [ ! -s .wrangler/dev-token ]; then
  node -e 'process.stdout.write(require("crypto").randomBytes(24).toString("base64url"))' > .wrangler/dev-token
fi
env_file=.wrangler/dev.env
{
  echo "DISTILLER_TOKEN=$(cat .wrangler/dev-token)"
  [ -n "${OPENAI_API_KEY:-}" ] && echo "OPENAI_API_KEY=$OPENAI_API_KEY"
  [ -n "${AZURE_OPENAI_API_KEY:-}" ] && echo "AZURE_OPENAI_API_KEY=$AZURE_OPENAI_API_KEY"
  true
} > "$env_file"

pids=()
cleanup() {
  rm -f "$env_file"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

providers=()
if [ -n "${OPENAI_API_KEY:-}" ]; then
  providers+=("\"openai\": {\"type\": \"openai\", \"model\": \"${OPENAI_MODEL:-gpt-4o-mini}\"}")
fi
if [ -n "${AZURE_OPENAI_API_KEY:-}" ] && [ -n "${AZURE_OPENAI_ENDPOINT:-}" ] && [ -n "${AZURE_OPENAI_DEPLOYMENT:-}" ]; then
  providers+=("\"azure\": {\"type\": \"azure_openai\", \"endpoint\": \"$AZURE_OPENAI_ENDPOINT\", \"deployment_name\": \"$AZURE_OPENAI_DEPLOYMENT\"}")
fi
if [ ${#providers[@]} -eq 0 ]; then
  echo "dev: no OPENAI_API_KEY or Azure credentials: starting the local demo upstream on 127.0.0.1:$upstream_port"
  node tests/upstream/server.mjs --demo --port "$upstream_port" &
  pids+=($!)
  providers+=("\"demo\": {\"type\": \"custom\", \"base_url\": \"http://127.0.0.1:$upstream_port/v1\", \"model\": \"demo-model\", \"rate_limit\": {\"requests_per_minute\": 600, \"tokens_per_minute\": 1000000}}")
fi
config="{\"providers\": {$(IFS=,; echo "${providers[*]}")}}"

"$wrangler" d1 migrations apply llm-distiller --local

echo "dev: open http://127.0.0.1:$port/ (the access token is in .wrangler/dev-token)"
"$wrangler" dev --local --ip 127.0.0.1 --port "$port" --env-file "$env_file" \
  --var "LLM_CONFIG:$config" --show-interactive-dev-session=false &
pids+=($!)
wait "${pids[-1]}"
