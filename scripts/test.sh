#!/usr/bin/env bash
# The project's test command: what the README tells you to run and what CI runs.
#
# Installs what is missing (Mongrel2, a C++ compiler, the Python venv, cargo-fuzz), then runs the whole
# suite: the codec alone (no libzmq, no Python), the runtime against the fake Mongrel2 of
# `m2wsgi::testing`, every end-to-end suite (feature `e2e`: a real Mongrel2, curl; with `wsgi`:
# the WSGI bridge against real Flask/Django apps), and a short fuzz smoke over the committed
# corpus. The e2e suites are named explicitly, so a missing tool is a failure, never a skip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh --fuzz
# The WSGI bridge embeds the interpreter it is built against: always name it.
PYO3_PYTHON="$(bash scripts/python.sh)"
export PYO3_PYTHON

echo "== codec only (no default features: no libzmq, no Python)"
cargo test --no-default-features --lib --tests
echo "== default features + testing (the fake Mongrel2 of m2wsgi::testing; no external tools)"
cargo test --features testing
echo "== the async runtime too (tower, axum) against the fake Mongrel2"
cargo test --features testing,axum
echo "== e2e (real Mongrel2, m2sh, sqlite3, curl)"
cargo test --features e2e
echo "== e2e of the async runtime (examples/axum through a real Mongrel2)"
cargo build --features e2e,axum --examples
cargo test --features e2e,axum --test e2e_tower
echo "== e2e + wsgi (the Python bridge and the m2wsgi command, real Flask/Django apps)"
cargo test --features e2e,wsgi,testing
echo "== fuzz smoke"
bash scripts/fuzz-smoke.sh
echo "== the README's demo command, in check mode (real Mongrel2 + example WSGI apps, curl)"
bash scripts/demo.sh --check
