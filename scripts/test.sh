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
echo "== e2e (real Mongrel2, m2sh, sqlite3, curl)"
cargo test --features e2e
echo "== the async runtime (tower, axum): against the fake Mongrel2, then through a real one"
cargo build --features e2e,axum,testing --examples --bins
cargo test --features e2e,axum,testing --lib --test runtime_tower --test e2e_tower
cargo test --features e2e,axum,testing --doc
echo "== e2e + wsgi (the Python bridge and the m2wsgi command, real Flask/Django apps)"
cargo test --features e2e,wsgi,testing
echo "== the Python package: a wheel per CPython 3.10-3.13, each in a fresh venv through real Mongrel2"
bash scripts/wheel-test.sh
echo "== fuzz smoke"
bash scripts/fuzz-smoke.sh
echo "== the README's demo command, in check mode (real Mongrel2 + example WSGI apps, curl)"
bash scripts/demo.sh --check
