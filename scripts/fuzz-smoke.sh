#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ with the nightly toolchain and runs each one briefly,
# seeded from tests/data (fuzz/seed.sh). CI runs this; a crash fails it, and libFuzzer leaves the
# input in fuzz/artifacts/<target>/ (copy it to tests/data/fuzz/<target>-<name> once fixed, so
# tests/fuzz_regressions.rs replays it on stable).
#
#   scripts/fuzz-smoke.sh                      # every target, 30 s each
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh request
#   FUZZ_RUNS=10000000 FUZZ_SECONDS=7200 scripts/fuzz-smoke.sh   # the long run: 10 M executions each
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${FUZZ_SECONDS:-30}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tnetstring request roundtrip)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

"$root/fuzz/seed.sh"
cargo +nightly fuzz build --fuzz-dir "$root/fuzz"

for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    log="$(mktemp)"
    if ! cargo +nightly fuzz run --fuzz-dir "$root/fuzz" "$t" "$root/fuzz/corpus/$t" -- \
        -max_total_time="$secs" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz-smoke: $t FAILED; the input is in $root/fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units)' "$log" || tail -n 3 "$log"
    rm -f "$log"
done
echo "fuzz-smoke: ${targets[*]}: no crashes"
