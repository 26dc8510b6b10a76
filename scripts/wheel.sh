#!/usr/bin/env bash
# Builds the Python package (pyproject.toml: maturin, the extension module in python/) as one
# wheel per CPython this machine has that the bridge supports, into dist/, and prints each
# wheel's tag, size and what `auditwheel show` says of it.
#
#   scripts/wheel.sh                  every CPython 3.10-3.13 under pyenv, release builds
#   scripts/wheel.sh 3.11             only that one
#   PROFILE=dev scripts/wheel.sh      unoptimised (faster to build; what the tests need)
#
# maturin and auditwheel come from PyPI into .bench/maturin-venv (made here when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
PROFILE="${PROFILE:-release}"
TOOLS="$REPO/.bench/maturin-venv"
if [[ ! -x "$TOOLS/bin/maturin" ]]; then
    echo "== installing maturin and auditwheel into $TOOLS"
    mkdir -p "$REPO/.bench"
    "$(bash scripts/python.sh)" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q "maturin>=1.7,<2" auditwheel
fi

versions=("$@")
if [[ ${#versions[@]} == 0 ]]; then versions=(3.10 3.11 3.12 3.13); fi
rm -rf dist
mkdir -p dist
for v in "${versions[@]}"; do
    py="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python3 2>/dev/null | sort -V | tail -1 || true)"
    [[ -x "$py" ]] || { echo "wheel: no CPython $v under pyenv" >&2; exit 1; }
    echo "== building the wheel for $("$py" -V) ($PROFILE)"
    # One target directory for every version: what does not depend on Python (libzmq, SQLite,
    # most crates) is compiled once.
    CARGO_TARGET_DIR="$REPO/target/wheel" "$TOOLS/bin/maturin" build --quiet \
        --profile "$PROFILE" --interpreter "$py" --out dist
done
echo "== wheels"
for w in dist/*.whl; do
    printf '%s  %s KiB\n' "$(basename "$w")" "$(( $(stat -c %s "$w") / 1024 ))"
    "$TOOLS/bin/auditwheel" show "$w" | tr '\n' ' ' | sed 's/  */ /g'
    echo
done
