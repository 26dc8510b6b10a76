#!/usr/bin/env bash
# The Python package end to end: builds a wheel per supported CPython (scripts/wheel.sh),
# installs each into a fresh venv of its Python with the test apps' packages
# (scripts/requirements-test.txt), and runs through a real Mongrel2 with that venv's
# `m2wsgi` console script:
#   - tests/wheel.rs: `--help` identical to the binary's (console script and `python -m
#     m2wsgi`), no libpython and nothing outside the manylinux allow-list linked,
#     `m2wsgi.serve()` from Python code;
#   - the command's own suites: wsgiref.validate, Werkzeug, Flask and Django apps, app errors
#     (tests/wsgi_e2e.rs), SIGINT/SIGTERM with requests in flight and stdout flushed at exit
#     (tests/wsgi_traps.rs), worker processes started as `python -m m2wsgi` (tests/wsgi_workers.rs).
#
#   scripts/wheel-test.sh              CPython 3.10-3.13, unoptimised wheels (PROFILE=dev)
#   scripts/wheel-test.sh 3.12         one version
#   PROFILE=release scripts/wheel-test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
PROFILE="${PROFILE:-dev}" bash scripts/wheel.sh "$@"
PYO3_PYTHON="$(bash scripts/python.sh)"
export PYO3_PYTHON

TESTS=(
    # tests/wsgi_e2e.rs
    validated_probe_through_mongrel2 werkzeug_test_app flask_app django_app
    app_errors_give_500_and_the_next_request_is_served seed_style_dotted_app_name_and_pythonpath
    # tests/wsgi_traps.rs
    trap3_signals_exit_zero_idle_and_in_flight trap4_python_stdout_flushed_at_exit
    # tests/wsgi_workers.rs
    workers_serve_a_dead_one_is_replaced_and_sigterm_drains_all
    sighup_and_max_requests_replace_workers_without_losing_a_request
    # tests/wheel.rs: all of it
    the_console_script python_code_serves the_extension_links a_second_signal
)
cargo build --features wheel --tests --bins -q
for whl in dist/*.whl; do
    tag="$(basename "$whl" | cut -d- -f3)"            # cp311
    v="${tag#cp}"; v="${v:0:1}.${v:1}"                # 3.11
    py="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python3 | sort -V | tail -1)"
    venv="$REPO/target/wheel-venvs/$tag"
    echo "== $(basename "$whl"): a fresh venv of $("$py" -V), then the suites"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q "$whl" -r scripts/requirements-test.txt
    M2WSGI_TEST_VENV="$venv" M2WSGI_TEST_COMMAND="$venv/bin/m2wsgi" \
        cargo test --features wheel -q --test wheel --test wsgi_e2e --test wsgi_traps \
        --test wsgi_workers -- "${TESTS[@]}"
done
echo "== pip install . from the checkout, into a fresh venv"
venv="$REPO/target/wheel-venvs/checkout"
rm -rf "$venv"
"$(bash scripts/python.sh)" -m venv "$venv"
CARGO_TARGET_DIR="$REPO/target/wheel" MATURIN_PEP517_ARGS="--profile ${PROFILE:-dev}" \
    "$venv/bin/pip" install -q .
[[ "$("$venv/bin/m2wsgi" --version)" == "$("$venv/bin/python" -m m2wsgi --version)" ]]
"$venv/bin/python" -c 'import m2wsgi; assert callable(m2wsgi.serve)'
echo "== every wheel passed: $(cd dist && ls *.whl | tr '\n' ' '); pip install . works"
