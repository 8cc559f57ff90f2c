#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer, the nightly toolchain).
#
#   scripts/fuzz.sh TARGET [SECONDS]   one target, for SECONDS (until a crash or Ctrl-C
#                                      without them); a crash leaves its input in
#                                      fuzz/artifacts/TARGET/
#   scripts/fuzz.sh --smoke [SECONDS]  every target, SECONDS each (default 20): what CI
#                                      runs, so that a target that no longer builds or
#                                      crashes at once fails it
#   scripts/fuzz.sh --list             the targets
#
# It installs cargo-fuzz when missing (idempotent, like scripts/setup.sh) and seeds each
# corpus from the test fixtures first (fuzz/seed.mjs). The nightly toolchain must be there
# already (rustup cannot download one offline). Targets build without a sanitizer: the
# crate has no unsafe code outside its wasm bindings, and they run about twice as fast
# (FUZZ_SANITIZER=address to use one anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

CARGO_FUZZ_VERSION=0.13.2
sanitizer="${FUZZ_SANITIZER:-none}"

log() { printf '\033[1mfuzz:\033[0m %s\n' "$*"; }
die() { printf 'fuzz: %s\n' "$*" >&2; exit 1; }

targets() { sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^llm-distiller-fuzz$'; }

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in
  --list) targets; exit 0 ;;
  --smoke) mode=smoke; seconds="${2:-20}" ;;
  -*) usage ;;
  *) mode=one; target="$1"; seconds="${2:-0}"
     targets | grep -qx "$target" || die "no target '$target' (scripts/fuzz.sh --list)" ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, got '$seconds'"

rustup run nightly rustc --version >/dev/null 2>&1 \
  || die "the nightly toolchain is needed (rustup toolchain list shows none)"
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
fi

if command -v node >/dev/null; then
  node fuzz/seed.mjs >/dev/null
else
  log "node is missing: the corpora are not seeded from the test fixtures"
fi

fuzz() { (cd fuzz && cargo +nightly fuzz "$@"); }

log "building the targets (sanitizer: $sanitizer)"
fuzz build --sanitizer "$sanitizer"

# libFuzzer's options: the time budget, a final line of statistics, and an input that takes
# 30 s counts as a failure (a hang), as does one that needs more than 2 GB.
run() {
  fuzz run --sanitizer "$sanitizer" "$1" -- \
    -max_total_time="$2" -print_final_stats=1 -timeout=30 -rss_limit_mb=2048
}

if [ "$mode" = one ]; then
  run "$target" "$seconds"
  exit
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
for target in $(targets); do
  if run "$target" "$seconds" >"$logs/$target" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target")
    log "$target: clean, ${runs:-?} executions in ${seconds} s"
  else
    log "$target: FAILED; the end of its log:"
    tail -n 40 "$logs/$target" >&2
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  die "failed: ${failed[*]} (inputs in fuzz/artifacts/; rerun one with scripts/fuzz.sh TARGET)"
fi
log "every target ran clean"
