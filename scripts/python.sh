#!/usr/bin/env bash
# Prints the path of the CPython 3.11 interpreter the project builds against (not a pyenv shim):
# $M2WSGI_PYTHON if set, else the real executable behind `python3`. Fails if it is not 3.11
# with a shared libpython.
set -euo pipefail
py="${M2WSGI_PYTHON:-python3}"
exe="$("$py" -c 'import sys; print(sys.executable)')" || { echo "python.sh: no python3" >&2; exit 1; }
"$exe" - <<'PY' || exit 1
import sys, sysconfig
if sys.version_info[:2] != (3, 11):
    sys.exit(f"python.sh: need CPython 3.11, found {sys.version.split()[0]} at {sys.executable}")
if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
    sys.exit(f"python.sh: {sys.executable} has no shared libpython")
PY
echo "$exe"
