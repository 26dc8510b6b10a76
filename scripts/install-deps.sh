#!/usr/bin/env bash
# Install everything the m2wsgi tests need, but only what is missing.
#
#   scripts/install-deps.sh          Debian packages + Python venv at $REPO/.venv
#   scripts/install-deps.sh --fuzz   ... and cargo-fuzz (needs the nightly toolchain)
#
# Idempotent and quick (a few seconds) when everything is already present.
# Any failure exits non-zero with a message saying what could not be installed.
# Environment: M2WSGI_PYTHON=/path/to/python3.11 overrides the interpreter lookup.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQS="$REPO/scripts/requirements-test.txt"
WANT_PY="3.11"

FUZZ=0
for arg in "$@"; do
    case "$arg" in
        --fuzz) FUZZ=1 ;;
        -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "install-deps: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { echo "install-deps: $*"; }
die() { echo "install-deps: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages
# package -> a command it provides ('' = check with dpkg only)
declare -A PKG_CMD=(
    [mongrel2-core]=mongrel2
    [g++]=c++
    [sqlite3]=sqlite3
    [curl]=curl
    [wrk]=wrk
)
PKG_ORDER=(mongrel2-core g++ sqlite3 curl wrk)

pkg_present() {
    local pkg="$1" cmd="${PKG_CMD[$1]}"
    if [[ -n "$cmd" ]]; then
        command -v "$cmd" >/dev/null 2>&1 && return 0
    fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in "${PKG_ORDER[@]}"; do
    pkg_present "$pkg" || missing+=("$pkg")
done
# mongrel2-core also ships m2sh; make sure both binaries really are there.
if [[ ${#missing[@]} -eq 0 ]] && ! command -v m2sh >/dev/null 2>&1; then
    missing+=(mongrel2-core)
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get is not available"
    [[ "$(id -u)" -eq 0 ]] || die "missing ${missing[*]}: run this script as root (apt-get install)"
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
    for pkg in "${PKG_ORDER[@]}"; do
        pkg_present "$pkg" || die "package $pkg still missing after apt-get install"
    done
    command -v m2sh >/dev/null 2>&1 || die "m2sh not found after installing mongrel2-core"
else
    log "Debian packages present: ${PKG_ORDER[*]}"
fi

# ---------------------------------------------------------------- Python venv
find_python() {
    local cand exe
    for cand in ${M2WSGI_PYTHON:-} python3.11 python3; do
        command -v "$cand" >/dev/null 2>&1 || [[ -x "$cand" ]] || continue
        # Resolve pyenv shims etc. to the real interpreter.
        exe="$("$cand" -c 'import sys; print(sys.executable)' 2>/dev/null)" || continue
        if [[ -n "$exe" ]] && "$exe" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$WANT_PY' else 1)" 2>/dev/null; then
            echo "$exe"
            return 0
        fi
    done
    return 1
}

PY="$(find_python)" || die "no CPython $WANT_PY interpreter found (tried \${M2WSGI_PYTHON}, python3.11, python3); set M2WSGI_PYTHON"
"$PY" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PY lacks the venv/ensurepip modules (on Debian: apt-get install python3-venv)"

STAMP="$VENV/.m2wsgi-deps"
want_stamp="$PY $(sha256sum "$REQS" | cut -d' ' -f1)"

venv_ok() {
    [[ -x "$VENV/bin/python" ]] || return 1
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] || return 1
    "$VENV/bin/python" -c 'import flask, django, werkzeug, websocket, requests' 2>/dev/null
}

if venv_ok; then
    log "venv up to date: $VENV ($("$VENV/bin/python" -V 2>&1))"
else
    # Recreate when the venv is missing, broken, or built from another interpreter.
    if [[ -x "$VENV/bin/python" ]] \
        && ! "$VENV/bin/python" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$WANT_PY' else 1)" 2>/dev/null; then
        log "removing venv built from another Python"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating venv $VENV from $PY"
        rm -rf "$VENV"
        "$PY" -m venv "$VENV" || die "could not create venv at $VENV with $PY"
    fi
    log "pip-installing $(grep -cvE '^\s*(#|$)' "$REQS") packages from $REQS"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" \
        || die "pip install -r $REQS failed"
    "$VENV/bin/python" -c 'import flask, django, werkzeug, websocket, requests' \
        || die "venv packages do not import after pip install"
    echo "$want_stamp" > "$STAMP"
    log "venv ready: $VENV ($("$VENV/bin/python" -V 2>&1))"
fi

# ---------------------------------------------------------------- cargo-fuzz (optional)
if [[ "$FUZZ" -eq 1 ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (needed for cargo-fuzz)"
    if cargo fuzz --version >/dev/null 2>&1; then
        log "cargo-fuzz present: $(cargo fuzz --version 2>/dev/null)"
    else
        log "installing cargo-fuzz"
        cargo install cargo-fuzz --locked || die "cargo install cargo-fuzz failed"
        cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz not runnable after install"
    fi
    if command -v rustup >/dev/null 2>&1; then
        rustup toolchain list | grep -q '^nightly' \
            || die "cargo-fuzz needs a nightly toolchain and none is installed (rustup toolchain install nightly)"
    else
        die "rustup not found: cargo-fuzz needs a nightly toolchain"
    fi
fi

log "done"
