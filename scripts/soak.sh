#!/usr/bin/env bash
# The full reliability soak: tests/soak.rs with large figures (the same test that
# `cargo test --features e2e,wsgi` runs with 20,000 requests to m2wsgi and 10,000 to the raw
# handlers; the variables it reads are listed at its top). Mixed traffic through a real
# Mongrel2, first to the raw Rust handlers (examples/streaming.rs, examples/upload.rs), then to
# the m2wsgi command (--num-threads 2, tests/apps/soak.py); one summary line per phase and per
# handler, then the comparison of Mongrel2's own losses. Exit status 0 when every check passed.
#
# Usage: scripts/soak.sh [--requests N] [--raw-requests N] [--threads N] [--phases N]
#                        [--warmup N] [--leaves PER_MILLE] [--max-secs S] [--debug]
#                        [--default-malloc] [--log FILE]
#   --requests N       requests to m2wsgi, warm-up included (default 1000000)
#   --raw-requests N   requests to the raw handlers (default: the same; 0 skips them)
#   --threads N        client threads (default 4)
#   --phases N         phases after the warm-up, one summary line each (default: one per
#                      100,000 requests, at least 4)
#   --warmup N         warm-up requests (default 5 %, at most 20,000)
#   --leaves P         per mille of requests that leave mid-response (default 80)
#   --max-secs S       time bound per handler (default 60 + requests / 100)
#   --debug            build with the dev profile, as cargo test does (default: --release)
#   --default-malloc   leave glibc's malloc tuning alone (see handler_env in tests/soak.rs)
#   --log FILE         also write the output to FILE (default: a file under /tmp, printed)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUESTS=1000000
RAW=""
PROFILE=(--release)
LOG=""
declare -a ENVS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --requests) REQUESTS="$2"; shift 2 ;;
        --raw-requests) RAW="$2"; shift 2 ;;
        --threads) ENVS+=("SOAK_THREADS=$2"); shift 2 ;;
        --phases) ENVS+=("SOAK_PHASES=$2"); shift 2 ;;
        --warmup) ENVS+=("SOAK_WARMUP=$2"); shift 2 ;;
        --leaves) ENVS+=("SOAK_LEAVES=$2"); shift 2 ;;
        --max-secs) ENVS+=("SOAK_MAX_SECS=$2"); shift 2 ;;
        --debug) PROFILE=(); shift ;;
        --default-malloc) ENVS+=("SOAK_DEFAULT_MALLOC=1"); shift ;;
        --log) LOG="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "soak: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$REQUESTS" =~ ^[0-9]+$ ]] || { echo "soak: --requests takes a number" >&2; exit 2; }
ENVS+=("SOAK_REQUESTS=$REQUESTS" "SOAK_RAW_REQUESTS=${RAW:-$REQUESTS}")
[[ -n "$LOG" ]] || LOG="$(mktemp /tmp/m2wsgi-soak.XXXXXX.log)"

cd "$REPO"
bash scripts/install-deps.sh
PYO3_PYTHON="$(bash scripts/python.sh)"
export PYO3_PYTHON
# A filtered test run does not build the examples the test starts: build them (and m2wsgi).
echo "soak: building (${PROFILE[*]:-dev profile}) against $PYO3_PYTHON"
cargo build "${PROFILE[@]}" --features e2e,wsgi --bins --examples
cargo test "${PROFILE[@]}" --features e2e,wsgi --test soak --no-run

echo "soak: ${ENVS[*]}; output also in $LOG"
status=0
env "${ENVS[@]}" cargo test "${PROFILE[@]}" --features e2e,wsgi --test soak -- --nocapture \
    2>&1 | tee "$LOG" || status=$?
echo
echo "soak: summary (from $LOG)"
grep -E '^soak (raw|m2wsgi) +(total|Mongrel2)|^soak result' "$LOG" || true
exit "$status"
