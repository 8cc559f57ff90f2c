#!/usr/bin/env bash
# Runs every side-by-side benchmark of bench/ and writes bench/RESULTS.md: thinking
# extraction, rate-limiter decisions, a batch against a rate-limited upstream, the Worker's
# own cost per call (with a CPU profile; and, not re-measured, its cost before the speed
# work, from bench/worker-before.md), the shared limiter, batches on the Worker and the
# sizes, each against what users would pick instead. Installs what it needs
# first (scripts/setup.sh --node, idempotent) and builds the package and the Worker.
#
#   scripts/bench.sh            # the full run, about 12 minutes once built; writes bench/RESULTS.md
#   scripts/bench.sh --quick    # fewer samples and a smaller batch; writes bench/RESULTS-quick.md
#
# The benchmarks run one after the other, never side by side; each prints Markdown, with its
# own medians and ratios measured in one process. Progress goes to the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

quick=()
out=bench/RESULTS.md
worker_requests=400
case "${1:-}" in
  --quick) quick=(--quick); out=bench/RESULTS-quick.md; worker_requests=50 ;;
  "") ;;
  *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*" >&2; }

step "setup"
scripts/setup.sh --node >&2
step "the npm package"
scripts/build-pkg.sh >&2
step "the Worker"
scripts/build-worker.sh >&2

body="$(mktemp)"
trap 'rm -f "$body"' EXIT

# Each part's headings move one level down under the file's own.
part() {
  local name="$1"
  shift
  step "$name"
  {
    "$@" | sed -e 's/^#/##/'
    echo
  } >>"$body"
}

# First: the sizes of what was just built.
part "sizes (bench/sizes.mjs)" node bench/sizes.mjs
part "thinking extraction (bench/thinking.mjs)" node bench/thinking.mjs "${quick[@]}"
part "rate-limiter decisions (bench/rate-limit.mjs)" node bench/rate-limit.mjs "${quick[@]}"
part "a batch against a rate-limited upstream (bench/batch.mjs)" node bench/batch.mjs "${quick[@]}"
part "the Worker's own cost per call (bench/worker.mjs)" node bench/worker.mjs --profile --requests "$worker_requests"
# Not measured in this run: the same benchmark on the commit before the Worker's speed work.
part "the Worker's cost before its speed work (bench/worker-before.md)" cat bench/worker-before.md
part "one rate limit across isolates (bench/shared-limit.mjs)" node bench/shared-limit.mjs "${quick[@]}"
part "batches on the Worker (bench/batch-worker.mjs)" node bench/batch-worker.mjs "${quick[@]}"

cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || true)"
# Taken before the file is written; the results files themselves do not count.
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git diff --quiet -- . ':!bench/RESULTS.md' ':!bench/RESULTS-quick.md' 2>/dev/null || echo ' (with local changes)')"
{
  echo "# Benchmark results${quick:+ (quick run)}"
  echo
  echo "Written by \`scripts/bench.sh${quick:+ --quick}\` on $(date -u +%Y-%m-%d) at commit"
  echo "\`${commit}\`${dirty},"
  echo "on ${cpu:-an unknown CPU} ($(nproc) cores), $(uname -sm), Node $(node --version)."
  echo "Every figure below was measured in this one run (but the one part that says it was not); each part states its own method."
  echo "Shared machines are noisy: compare the ratios within a table, not absolute figures across runs."
  echo
  cat "$body"
} >"$out"
step "wrote $out"
