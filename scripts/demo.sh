#!/usr/bin/env bash
# The demo: a real Mongrel2 serving two Python WSGI applications through m2wsgi.
#
#   scripts/demo.sh            install what is missing, build, start, prove it answers, print the
#                              URL; Ctrl-C stops everything
#   scripts/demo.sh --check    the same, then stop at once (exit status says whether it worked)
#   scripts/demo.sh --port N   serve on port N (default 6767, or a free one if taken)
#
# Routes: / -> examples/wsgi/demo_app.py (a form, an upload, a streaming response, the environ),
#         /hello -> examples/wsgi/hello_app.py. Each is its own m2wsgi process, configured from
#         Mongrel2's config database (--config-db), with download flow control on.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECK=0
PORT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --check) CHECK=1; shift ;;
        --port) PORT="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "demo: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

# 1. What is missing (Mongrel2, a C++ compiler, curl, a CPython 3.11 with a venv): installed.
bash "$REPO/scripts/install-deps.sh"
PYO3_PYTHON="$(bash "$REPO/scripts/python.sh")"
export PYO3_PYTHON

# 2. The command.
say "building m2wsgi (cargo build --release --features wsgi) against $PYO3_PYTHON"
(cd "$REPO" && cargo build --release --features wsgi --bin m2wsgi)
# Where cargo put it: CARGO_TARGET_DIR when set (relative to the repo, where cargo ran).
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$REPO/$TARGET_DIR"
M2WSGI="$TARGET_DIR/release/m2wsgi"

# 3. A Mongrel2 configuration in a fresh chroot directory.
free_port() {
    "$PYO3_PYTHON" -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); print(s.getsockname()[1])' "${1:-0}" 2>/dev/null
}
if [[ -z "$PORT" ]]; then
    PORT="$(free_port 6767 || free_port 0)"
fi
DEMO_PORT="$(free_port 0)"; DEMO_RECV="$(free_port 0)"
HELLO_PORT="$(free_port 0)"; HELLO_RECV="$(free_port 0)"
CHROOT="$(mktemp -d /tmp/m2wsgi-demo.XXXXXX)"
mkdir -p "$CHROOT"/{logs,run,tmp}
cat > "$CHROOT/mongrel2.conf" <<EOF
demo = Handler(send_spec='tcp://127.0.0.1:$DEMO_PORT', send_ident='d3m0a9b1-6f0e-4c1a-9d55-0d3e5f7a1c01',
               recv_spec='tcp://127.0.0.1:$DEMO_RECV', recv_ident='', protocol='tnetstring')
hello = Handler(send_spec='tcp://127.0.0.1:$HELLO_PORT', send_ident='d3m0a9b1-6f0e-4c1a-9d55-0d3e5f7a1c02',
                recv_spec='tcp://127.0.0.1:$HELLO_RECV', recv_ident='', protocol='tnetstring')
main = Server(uuid='m2wsgi-demo', chroot='./', access_log='/logs/access.log',
              error_log='/logs/error.log', pid_file='/run/mongrel2.pid', default_host='localhost',
              name='main', bind_addr='127.0.0.1', port=$PORT,
              hosts=[Host(name='localhost', routes={'/': demo, '/hello': hello})])
settings = {'server.daemonize': 0, 'limits.content_length': 20480,
            'upload.temp_store': '/tmp/upload.XXXXXX', 'download.flow_control': 1}
servers = [main]
EOF
(cd "$CHROOT" && m2sh load -config mongrel2.conf -db config.sqlite >"$CHROOT/m2sh.out" 2>&1) \
    || die "m2sh load failed: $(cat "$CHROOT/m2sh.out")"

PIDS=()
stop_all() {
    trap - INT TERM EXIT
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$CHROOT"
}
trap 'echo; say "stopping"; stop_all; exit 0' INT TERM
trap stop_all EXIT

# 4. Mongrel2, then one m2wsgi per handler, both configured from the database.
say "starting Mongrel2 in $CHROOT on port $PORT"
(cd "$CHROOT" && exec mongrel2 config.sqlite m2wsgi-demo >"$CHROOT/mongrel2.out" 2>&1) &
PIDS+=($!)
for _ in $(seq 200); do
    grep -q "Running. Copyright" "$CHROOT/logs/error.log" 2>/dev/null && break
    sleep 0.05
done
grep -q "Running. Copyright" "$CHROOT/logs/error.log" 2>/dev/null \
    || die "Mongrel2 did not start: $(tail -5 "$CHROOT/logs/error.log" "$CHROOT/mongrel2.out" 2>/dev/null)"

# As root Mongrel2 chroots (upload paths are inside $CHROOT, which the database says);
# otherwise it does not, and its paths are the host's.
CHROOT_ARGS=()
[[ "$(id -u)" -eq 0 ]] || CHROOT_ARGS=(--mongrel2-chroot /)
"$M2WSGI" --config-db "$CHROOT/config.sqlite" --route / "${CHROOT_ARGS[@]}" --num-threads 4 \
    --chdir "$REPO/examples/wsgi" demo_app >"$CHROOT/demo.log" 2>&1 &
PIDS+=($!)
"$M2WSGI" --config-db "$CHROOT/config.sqlite" --route /hello "${CHROOT_ARGS[@]}" \
    --chdir "$REPO/examples/wsgi" hello_app >"$CHROOT/hello.log" 2>&1 &
PIDS+=($!)

URL="http://127.0.0.1:$PORT"
ok=0
for _ in $(seq 100); do
    if [[ "$(curl -s --max-time 2 "$URL/hello")" == "Hello, world!" ]]; then ok=1; break; fi
    sleep 0.1
done
[[ "$ok" -eq 1 ]] || die "no answer from $URL/hello: $(tail -5 "$CHROOT/hello.log")"

# 5. Proof that it answers.
say "curl $URL/hello"
curl -s -i "$URL/hello"
echo
check() { # what, expected substring, curl args...
    local what="$1" want="$2" out
    shift 2
    out="$(curl -s --max-time 10 "$@")"
    if [[ "$out" == *"$want"* ]]; then
        say "ok: $what"
    else
        printf 'demo: FAILED: %s: wanted %q in:\n%s\n--- demo.log ---\n%s\n' "$what" "$want" "$out" \
            "$(tail -20 "$CHROOT/demo.log")" >&2
        exit 1
    fi
}
check "GET / (the demo app)" "m2wsgi demo" "$URL/"
check "POST /form" "Hello, Ada!" -d "name=Ada" "$URL/form"
head -c 300000 /dev/urandom > "$CHROOT/upload.bin"
check "POST /upload (300 kB, an async upload)" "Received 30" -F "file=@$CHROOT/upload.bin" "$URL/upload"
check "GET /stream (streamed, chunked)" "done: each line" "$URL/stream"
check "GET /environ" "wsgi.input_terminated" "$URL/environ"

if [[ "$CHECK" -eq 1 ]]; then
    say "check passed; stopping"
    exit 0
fi

cat <<EOF

  Open $URL/ in a browser (the demo app), $URL/hello (the hello app).
  Logs: $CHROOT/{demo.log,hello.log,logs/error.log}
  Ctrl-C stops Mongrel2 and both m2wsgi processes.

EOF
while true; do
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "process $pid exited; see the logs in $CHROOT"
    done
    sleep 1
done
