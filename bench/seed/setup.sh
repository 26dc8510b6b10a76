#!/usr/bin/env bash
# Build the environment for the OLD Python-2 m2wsgi 0.5.2 (the Python m2wsgi that this project succeeds), used as a
# baseline in side-by-side benchmarks. Idempotent: each step is skipped when its
# result is already there. Everything goes under $REPO/.bench/seed (gitignored).
#
# Recipe (worked out on Debian with pyenv): Python 2.7.18 from pyenv;
# virtualenv 20.15.1 installed with --target using the 2.7 interpreter; a
# virtualenv made from it; pyzmq 19.0.2 (2.7 wheel, bundles libzmq 4.3.2); the
# m2wsgi 0.5.2 sdist downloaded and installed with the 2.7 pip.
#
# Usage:  bash bench/seed/setup.sh
# Then:   .bench/seed/venv/bin/python bench/seed/launcher.py [--num-threads=N] \
#             hello.app tcp://127.0.0.1:SEND_PORT tcp://127.0.0.1:RECV_PORT
set -euo pipefail

say() { printf '[seed-setup] %s\n' "$*"; }
die() { printf '[seed-setup] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SEED="${SEED_DIR:-$REPO/.bench/seed}"
VENV="$SEED/venv"
VTOOL="$SEED/virtualenv-pkg"
DL="$SEED/dl"

PY_VERSION=2.7.18
VIRTUALENV_VERSION=20.15.1
PYZMQ_VERSION=19.0.2
M2WSGI_VERSION=0.5.2

# 1. Python 2.7 interpreter
if [ -n "${SEED_PYTHON27:-}" ]; then
    PY27="$SEED_PYTHON27"
else
    command -v pyenv >/dev/null 2>&1 || die "pyenv not found (need Python $PY_VERSION; or set SEED_PYTHON27=/path/to/python2.7)"
    PREFIX="$(pyenv prefix "$PY_VERSION" 2>/dev/null)" || die "pyenv has no Python $PY_VERSION (pyenv versions: $(pyenv versions --bare | tr '\n' ' '))"
    PY27="$PREFIX/bin/python2.7"
fi
[ -x "$PY27" ] || die "not an executable: $PY27"
"$PY27" -c 'import sys; assert sys.version_info[:2] == (2, 7), sys.version' \
    || die "$PY27 is not Python 2.7"
"$PY27" -m pip --version >/dev/null 2>&1 || die "$PY27 has no pip"
say "python 2.7: $PY27"
mkdir -p "$SEED"

# 2. virtualenv, installed into a private --target directory
if PYTHONPATH="$VTOOL" "$PY27" -c "import virtualenv, sys; sys.exit(virtualenv.__version__ != '$VIRTUALENV_VERSION')" 2>/dev/null; then
    say "virtualenv $VIRTUALENV_VERSION already in $VTOOL"
else
    say "installing virtualenv==$VIRTUALENV_VERSION into $VTOOL"
    rm -rf "$VTOOL"
    "$PY27" -m pip install --disable-pip-version-check --no-warn-script-location \
        --target "$VTOOL" "virtualenv==$VIRTUALENV_VERSION"
fi

# 3. the virtualenv itself
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
    say "virtualenv already at $VENV"
else
    say "creating virtualenv $VENV"
    rm -rf "$VENV"
    PYTHONPATH="$VTOOL" "$PY27" -m virtualenv --app-data "$SEED/virtualenv-appdata" --python "$PY27" "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# 4. pyzmq
if "$VENV/bin/python" -c "import zmq, sys; sys.exit(zmq.__version__ != '$PYZMQ_VERSION')" 2>/dev/null; then
    say "pyzmq $PYZMQ_VERSION already installed"
else
    say "installing pyzmq==$PYZMQ_VERSION"
    "${PIP[@]}" install --only-binary pyzmq "pyzmq==$PYZMQ_VERSION"
fi

# 5. m2wsgi from its sdist (no wheel exists; it must be built by Python 2)
SDIST="$DL/m2wsgi-$M2WSGI_VERSION.tar.gz"
if [ -f "$SDIST" ]; then
    say "sdist already downloaded: $SDIST"
else
    say "downloading m2wsgi==$M2WSGI_VERSION sdist into $DL"
    mkdir -p "$DL"
    "${PIP[@]}" download --no-deps --no-binary :all: -d "$DL" "m2wsgi==$M2WSGI_VERSION"
    [ -f "$SDIST" ] || die "download did not produce $SDIST"
fi
if "$VENV/bin/python" -c "import sys, pkg_resources; sys.exit(pkg_resources.get_distribution('m2wsgi').version != '$M2WSGI_VERSION')" 2>/dev/null; then
    say "m2wsgi $M2WSGI_VERSION already installed"
else
    say "installing $SDIST"
    "${PIP[@]}" install --no-deps "$SDIST"
fi

# 6. smoke test: the launcher's alias works and the CLI parses
say "checking the launcher"
"$VENV/bin/python" "$HERE/launcher.py" --help >/dev/null \
    || die "launcher.py --help failed"
"$VENV/bin/python" - "$HERE" <<'PY' || die "hello app check failed"
import sys
sys.path.insert(0, sys.argv[1])
import hello
out = []
body = b"".join(hello.app({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda s, h: out.append((s, h))))
assert body == b"Hello, world!" and out[0][0] == "200 OK", (body, out)
PY

say "ok. python: $VENV/bin/python   launcher: $HERE/launcher.py   app: hello.app"
