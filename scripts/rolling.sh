#!/usr/bin/env bash
# Rolling restarts under load through a real Mongrel2, the full matrix: handler processes are
# replaced one at a time (the replacement taking requests first, the old one SIGTERMed and
# required to exit 0) while a paced keep-alive load runs, every request with a 5 s deadline.
# Prints one line per run: sent / answered / failed, drain times, the first failures. Fails
# when a request is lost behind the device. (CI runs the quick variants in tests/e2e_rolling.rs.)
#
#   scripts/rolling.sh                              # hello and m2wsgi, device and direct,
#                                                   # 2 and 3 processes, 20 and 1000 req/s,
#                                                   # 12 restarts 2 s apart
#   ROLLING_KINDS=hello ROLLING_MODES=device ROLLING_RESTARTS=30 scripts/rolling.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh
PYO3_PYTHON="$(bash scripts/python.sh)"
export PYO3_PYTHON
export ROLLING_KINDS="${ROLLING_KINDS:-hello m2wsgi}"
export ROLLING_MODES="${ROLLING_MODES:-device direct}"
export ROLLING_PROCS="${ROLLING_PROCS:-2 3}"
export ROLLING_RATES="${ROLLING_RATES:-20 1000}"
export ROLLING_RESTARTS="${ROLLING_RESTARTS:-12}"
# The time between restarts (at 1,000 req/s, 2 s makes about 24,000 requests per run).
export ROLLING_INTERVAL_MS="${ROLLING_INTERVAL_MS:-2000}"
cargo build --release --features e2e,wsgi --examples --bins
cargo test --release --features e2e,wsgi --test e2e_rolling -- --ignored --nocapture rolling_matrix
