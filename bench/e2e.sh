#!/usr/bin/env bash
# End-to-end throughput through a real Mongrel2, loopback only, bounded in time.
#
#   bench/e2e.sh                 3 rounds of wrk -t2 -c32 -d5s per target, then the fairness run
#   ROUNDS=5 DURATION=10s bench/e2e.sh
#   TARGETS="dir hello" bench/e2e.sh
#
# One Mongrel2 serves every target: a Dir route with the 13 bytes "Hello, world!" (Mongrel2's
# own static file server, the baseline) and one handler route per handler target. Targets run
# interleaved, round after round, and the table shows the median of the rounds: req/s, p50 and
# p99 latency, and the ratio to the Dir baseline, taken per round (both measured back to back)
# and then the median (goal for the Rust handler: >= 0.8).
#
# Adding a target NAME (for example a WSGI app) takes three functions and a word in TARGETS:
#   declare_NAME   calls `add_handler NAME /route` (allocates its send/recv specs)
#   start_NAME     starts its processes in the background with `spawn LOGNAME cmd...`; they
#                  connect to ${SEND[NAME]} / ${RECV[NAME]} with ident ${IDENT[NAME]}
#   url_NAME       prints the URL wrk should load
#   size_NAME      (optional) the body size its URL answers with, when not "Hello, world!"
# Everything spawned is killed on exit.
#
#   check_NAME     (optional) succeeds when the target answers as it should
#   wrkargs_NAME   (optional) more wrk arguments (a script that POSTs, say)
#
# Uploads: TARGETS="uprust upwsgi upread upseed" POSTs 10 MiB bodies through Mongrel2's async
# upload (a temp file) to the raw handler (examples/upload: reads the body in 64 KiB pieces,
# answers its CRC-32), to the bridge (bench/seed/upload_app.py: the same over wsgi.input; upread
# reads without the checksum) and to the Python m2wsgi 0.5.2 with its upload handling fixed
# (upseed, same app; upseedread without the checksum); each is compared with uprust, and the
# bridge with the Python m2wsgi. CONNS=4 suits them. Every target's table row has its handler's
# CPU time per request.
#
# Large responses: TARGETS="dir1m hello1m wsgi1m" compares a 1 MiB response from Mongrel2's
# own file server, the raw handler (examples/hello --body-bytes) and the WSGI bridge
# (bench/seed/big.py); CONNS=8 suits them.
#
# Async handlers: TARGETS="hello axum axum1 axumdirect" compares an axum Router behind Mongrel2
# (examples/axum on the async runtime, `/axum/hello`; axum1 on tokio's current-thread runtime)
# with the raw handler (hello) and with the same Router served directly over HTTP by axum's own
# server (axumdirect, no Mongrel2); the ratios are printed after the table.
#
# The Python package: TARGETS="wsgi wsgiwheel" WHEEL_VENV=target/wheel-venvs/cp311 compares the
# wheel's `m2wsgi` console script with the Rust binary on the same app.
#
# Needs: mongrel2, m2sh, wrk, curl, cargo. Runs as root (Mongrel2 chroots into its directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
THREADS="${THREADS:-2}"
CONNS="${CONNS:-32}"
WORKERS="${WORKERS:-4}"
TARGETS="${TARGETS:-dir hello}"
FAIRNESS="${FAIRNESS:-1}"

for tool in mongrel2 m2sh wrk curl cargo; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not installed (scripts/install-deps.sh)" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/m2wsgi-bench.XXXXXX)"
PIDS=()
cleanup() {
    [[ -f "$WORK/run/mongrel2.pid" ]] && PIDS+=("$(cat "$WORK/run/mongrel2.pid")")
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# spawn LOGNAME cmd...: start in the background, log to $WORK/LOGNAME.log, kill on exit. The
# process (and its children) is the target LOGNAME's handler, whose CPU time is measured
# (cpu_ticks, bench/lib.sh).
declare -A TPID
spawn() {
    local name="$1"; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    TPID[$name]="$!"
}

declare -A SEND RECV IDENT ROUTE
HANDLERS=()
add_handler() {
    local name="$1" route="$2"
    SEND[$name]="tcp://127.0.0.1:$(free_port)"
    RECV[$name]="tcp://127.0.0.1:$(free_port)"
    IDENT[$name]="$(cat /proc/sys/kernel/random/uuid)"
    ROUTE[$name]="$route"
    HANDLERS+=("$name")
}

# ---------------------------------------------------------------- targets
declare_dir() { :; }
start_dir() { :; }
url_dir() { echo "http://127.0.0.1:$PORT/static/hello.txt"; }

HELLO_BIN="$REPO/target/release/examples/hello"
declare_hello() { add_handler hello /hello; }
# run_hello NAME ARGS...: the raw handler as target NAME.
run_hello() {
    local name="$1"; shift
    spawn "$name" env M2WSGI_LOG=warn "$HELLO_BIN" "${SEND[$name]}" "${RECV[$name]}" \
        --send-ident "${IDENT[$name]}" --workers "$WORKERS" "$@"
}
start_hello() { run_hello hello --allow-sleep; }
# BASE_HELLO=path/to/an/older/build/of/examples/hello: the same handler from another build
# (before/after comparisons in one run).
declare_hellobase() { add_handler hellobase /hellobase; }
start_hellobase() {
    spawn hellobase env M2WSGI_LOG=warn "${BASE_HELLO:?set BASE_HELLO}" "${SEND[hellobase]}" \
        "${RECV[hellobase]}" --send-ident "${IDENT[hellobase]}" --workers "$WORKERS" --allow-sleep
}
url_hellobase() { echo "http://127.0.0.1:$PORT/hellobase"; }
url_hello() { echo "http://127.0.0.1:$PORT/hello"; }

# The WSGI bridge: bench/seed/hello.py (the same 13 bytes) under the m2wsgi command, with
# $WORKERS threads. (bench/wsgi.sh compares it with the Python m2wsgi 0.5.2 and the raw handler.)
M2WSGI_BIN="$REPO/target/release/m2wsgi"
declare_wsgi() { add_handler wsgi /wsgi; }
# run_wsgi NAME APP [OPTIONS...]: the m2wsgi command serving APP (from bench/seed) as target NAME.
run_wsgi() {
    local name="$1" app="$2"; shift 2
    spawn "$name" env -u VIRTUAL_ENV "$M2WSGI_BIN" --log-level warn --num-threads "$WORKERS" \
        --pythonpath "$REPO/bench/seed" --send-ident "${IDENT[$name]}" "$@" \
        "$app" "${SEND[$name]}" "${RECV[$name]}"
}
start_wsgi() { run_wsgi wsgi hello:app; }
url_wsgi() { echo "http://127.0.0.1:$PORT/wsgi"; }
# The same app under the Python package's `m2wsgi` (WHEEL_VENV: a venv with the wheel
# installed, e.g. target/wheel-venvs/cp311 after scripts/wheel-test.sh; a release wheel for
# figures: PROFILE=release scripts/wheel-test.sh 3.11).
declare_wsgiwheel() { add_handler wsgiwheel /wsgiwheel; }
start_wsgiwheel() {
    local bin="${WHEEL_VENV:?set WHEEL_VENV to a venv with the wheel installed}/bin/m2wsgi"
    spawn wsgiwheel "$bin" --log-level warn --num-threads "$WORKERS" \
        --pythonpath "$REPO/bench/seed" --send-ident "${IDENT[wsgiwheel]}" \
        hello:app "${SEND[wsgiwheel]}" "${RECV[wsgiwheel]}"
}
url_wsgiwheel() { echo "http://127.0.0.1:$PORT/wsgiwheel"; }

# 1 MiB responses: Mongrel2's file server, the raw handler, the WSGI bridge.
MIB=1048576
declare_dir1m() { :; }
start_dir1m() { :; }
url_dir1m() { echo "http://127.0.0.1:$PORT/static/big.bin"; }
size_dir1m() { echo "$MIB"; }
declare_hello1m() { add_handler hello1m /hello1m; }
start_hello1m() { run_hello hello1m --body-bytes "$MIB"; }
url_hello1m() { echo "http://127.0.0.1:$PORT/hello1m"; }
size_hello1m() { echo "$MIB"; }
declare_wsgi1m() { add_handler wsgi1m /wsgi1m; }
start_wsgi1m() { run_wsgi wsgi1m big:app; }
url_wsgi1m() { echo "http://127.0.0.1:$PORT/wsgi1m"; }
size_wsgi1m() { echo "$MIB"; }

# 10 MiB uploads (async upload: upload.temp_store is set below for every target; smaller bodies
# are not affected).
UP_BYTES=10485760
UPLOAD_BIN="$REPO/target/release/examples/upload"
post_check() { # URL: the answer to one 10 MiB POST is its size and CRC-32
    [[ "$(curl -s --noproxy '*' --max-time 20 -H 'Expect:' --data-binary @"$WORK/up.bin" "$1")" \
        == "size=$UP_BYTES crc32=$UP_CRC" ]]
}
read_check() { # URL: the same without the checksum (?crc=0)
    [[ "$(curl -s --noproxy '*' --max-time 20 -H 'Expect:' --data-binary @"$WORK/up.bin" "$1")" \
        == "size=$UP_BYTES crc32=00000000" ]]
}
declare_uprust() { add_handler uprust /uprust; }
start_uprust() {
    spawn uprust env M2WSGI_LOG=warn "$UPLOAD_BIN" "${SEND[uprust]}" "${RECV[uprust]}" \
        --send-ident "${IDENT[uprust]}" --workers "$WORKERS" --upload-dir /tmp --chroot "$WORK"
}
url_uprust() { echo "http://127.0.0.1:$PORT/uprust"; }
check_uprust() { post_check "$(url_uprust)"; }
wrkargs_uprust() { echo "-s $WORK/post.lua"; }
declare_upwsgi() { add_handler upwsgi /upwsgi; }
start_upwsgi() { run_wsgi upwsgi upload_app:app --upload-dir /tmp --mongrel2-chroot "$WORK"; }
url_upwsgi() { echo "http://127.0.0.1:$PORT/upwsgi"; }
check_upwsgi() { post_check "$(url_upwsgi)"; }
wrkargs_upwsgi() { echo "-s $WORK/post.lua"; }
# The Python m2wsgi 0.5.2 (Python 2, bench/seed/setup.sh, run on the first use) on the same app,
# with $WORKERS threads and its async-upload handling fixed (bench/seed/launcher.py
# --upload-root: as released it hangs on a 10 MiB upload).
SEED_PY="$REPO/.bench/seed/venv/bin/python"
need_seed() { [[ -x "$SEED_PY" ]] || bash bench/seed/setup.sh >&2; }
declare_upseed() { need_seed; add_handler upseed /upseed; }
# run_seed NAME: the Python m2wsgi on bench/seed/upload_app.py as target NAME.
run_seed() {
    spawn "$1" env -C "$REPO/bench/seed" "$SEED_PY" launcher.py --upload-root="$WORK" \
        --num-threads="$WORKERS" upload_app.app "${SEND[$1]}" "${RECV[$1]}"
}
start_upseed() { run_seed upseed; }
url_upseed() { echo "http://127.0.0.1:$PORT/upseed"; }
check_upseed() { post_check "$(url_upseed)"; }
wrkargs_upseed() { echo "-s $WORK/post.lua"; }
# upseedread: the same, reading without the checksum (as upread).
declare_upseedread() { need_seed; add_handler upseedread /upseedread; }
start_upseedread() { run_seed upseedread; }
url_upseedread() { echo "http://127.0.0.1:$PORT/upseedread?crc=0"; }
check_upseedread() { read_check "$(url_upseedread)"; }
wrkargs_upseedread() { echo "-s $WORK/post.lua"; }
declare_upread() { add_handler upread /upread; }
start_upread() { run_wsgi upread upload_app:app --upload-dir /tmp --mongrel2-chroot "$WORK"; }
url_upread() { echo "http://127.0.0.1:$PORT/upread?crc=0"; }
check_upread() { read_check "$(url_upread)"; }
wrkargs_upread() { echo "-s $WORK/post.lua"; }

# An axum Router on the async runtime, and the same Router straight over HTTP (no Mongrel2).
AXUM_BIN="$REPO/target/release/examples/axum"
declare_axum() { add_handler axum /axum; }
start_axum() {
    spawn axum env M2WSGI_LOG=warn "$AXUM_BIN" "${SEND[axum]}" "${RECV[axum]}" \
        --send-ident "${IDENT[axum]}" --nest /axum ${AXUM_ARGS:-}
}
url_axum() { echo "http://127.0.0.1:$PORT/axum/hello"; }
# The same on tokio's current-thread runtime (everything on one thread).
declare_axum1() { add_handler axum1 /axum1; }
start_axum1() {
    spawn axum1 env M2WSGI_LOG=warn "$AXUM_BIN" "${SEND[axum1]}" "${RECV[axum1]}" \
        --send-ident "${IDENT[axum1]}" --nest /axum1 --runtime-threads 1
}
url_axum1() { echo "http://127.0.0.1:$PORT/axum1/hello"; }
declare_axumdirect() { AXUM_PORT="$(free_port)"; }
start_axumdirect() {
    spawn axumdirect env M2WSGI_LOG=warn "$AXUM_BIN" unused unused --listen "127.0.0.1:$AXUM_PORT" \
        ${AXUM_ARGS:-}
}
url_axumdirect() { echo "http://127.0.0.1:$AXUM_PORT/hello"; }

# Ratios printed after the table, each the median of the per-round ratios: "A:B" is A / B.
PAIRS="${PAIRS:-axum:hello axum1:hello axum:axumdirect wsgi:hello wsgiwheel:wsgi hello:hellobase upwsgi:upseed upread:upseedread}"

# ---------------------------------------------------------------- build and configure
echo "== building examples/hello (release)"
cargo build --release --example hello --example upload -q
if [[ " $TARGETS " == *" axum"* ]]; then
    echo "== building examples/axum (release, --features axum)"
    cargo build --release --features axum --example axum -q
fi
if [[ "$TARGETS" == *wsgi* || " $TARGETS " == *" upread "* ]]; then
    echo "== building m2wsgi (release, --features wsgi)"
    PYO3_PYTHON="$(bash scripts/python.sh)" cargo build --release --features wsgi --bin m2wsgi -q
fi

PORT="$(free_port)"
for t in $TARGETS; do "declare_$t"; done

mkdir -p "$WORK"/{logs,run,tmp,static}
printf 'Hello, world!' >"$WORK/static/hello.txt"
head -c 1048576 /dev/zero | tr '\0' 'x' >"$WORK/static/big.bin"
head -c "$UP_BYTES" /dev/urandom >"$WORK/up.bin"
UP_CRC="$(python3 -c 'import sys, zlib; print("%08x" % zlib.crc32(open(sys.argv[1], "rb").read()))' "$WORK/up.bin")"
cat >"$WORK/post.lua" <<LUA
local f = io.open("$WORK/up.bin", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
{
    routes="'/static/': Dir(base='static/', index_file='index.html', default_ctype='text/plain')"
    for h in "${HANDLERS[@]}"; do
        echo "$h = Handler(send_spec='${SEND[$h]}', send_ident='${IDENT[$h]}', recv_spec='${RECV[$h]}', recv_ident='', protocol='tnetstring')"
        routes="$routes, '${ROUTE[$h]}': $h"
    done
    echo "main = Server(uuid='bench', name='main', chroot='./', bind_addr='127.0.0.1', port=$PORT,"
    echo "    access_log='/logs/access.log', error_log='/logs/error.log', pid_file='/run/mongrel2.pid',"
    echo "    control_port='ipc://run/control', default_host='localhost',"
    echo "    hosts=[Host(name='localhost', routes={$routes})])"
    echo "settings = {'server.daemonize': 0, 'limits.min_ping': 0, 'upload.temp_store': '/tmp/upload.XXXXXX'}"
    echo "servers = [main]"
} >"$WORK/mongrel2.conf"
(cd "$WORK" && LOGNAME="${LOGNAME:-root}" m2sh load -config mongrel2.conf -db config.sqlite >/dev/null)
cd "$WORK"
spawn mongrel2 mongrel2 config.sqlite bench
cd "$REPO"
for _ in $(seq 100); do
    curl -s --noproxy '*' --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/static/hello.txt" && break
    sleep 0.1
done
for t in $TARGETS; do "start_$t"; done
for t in $TARGETS; do
    url="$("url_$t")"
    ok=
    for _ in $(seq 100); do
        if declare -F "check_$t" >/dev/null; then
            if "check_$t"; then ok=1; break; fi
        elif declare -F "size_$t" >/dev/null; then
            got="$(curl -s --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "$url" || true)"
            if [[ "$got" == "200 $("size_$t")" ]]; then ok=1; break; fi
        elif [[ "$(curl -s --noproxy '*' --max-time 2 "$url")" == "Hello, world!" ]]; then ok=1; break; fi
        sleep 0.1
    done
    [[ -n "$ok" ]] || { echo "bench: target $t ($url) does not answer as expected" >&2; tail -5 "$WORK"/*.log >&2; exit 1; }
done

# ---------------------------------------------------------------- measure
# to_ms "1.23ms" / "456.00us" / "1.02s" -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%.3f", v }'
}
# run_wrk URL ARGS... -> "rps p50_ms p99_ms errors"
run_wrk() {
    local url="$1"; shift
    local out
    out="$(timeout 120 wrk --latency "$@" "$url")"
    local rps p50 p99 errs reqs
    rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
    p50="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    errs="$(awk '/Non-2xx|Socket errors/ {n++} END {print n+0}' <<<"$out")"
    echo "$rps $p50 $p99 $errs ${reqs:-0}"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A RPS P50 P99 ERRS ROUND_RPS RATIOS CPU
HZ="$(getconf CLK_TCK)"
echo "== $ROUNDS rounds of wrk -t$THREADS -c$CONNS -d$DURATION, targets interleaved: $TARGETS"
for r in $(seq "$ROUNDS"); do
    for t in $TARGETS; do
        extra=()
        declare -F "wrkargs_$t" >/dev/null && read -r -a extra <<<"$("wrkargs_$t")"
        c0=0; [[ -n "${TPID[$t]:-}" ]] && c0="$(cpu_ticks "${TPID[$t]}")"
        read -r rps p50 p99 errs reqs < <(run_wrk "$("url_$t")" -t"$THREADS" -c"$CONNS" -d"$DURATION" "${extra[@]}")
        cpu=-
        if [[ -n "${TPID[$t]:-}" && "$reqs" -gt 0 ]]; then
            cpu="$(awk -v a="$c0" -v b="$(cpu_ticks "${TPID[$t]}")" -v n="$reqs" -v hz="$HZ" \
                'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / n }')"
            CPU[$t]+="$cpu "
        fi
        printf '   round %d  %-12s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  handler CPU %s us/req\n' \
            "$r" "$t" "$rps" "$p50" "$p99" "$cpu"
        RPS[$t]+="$rps "; P50[$t]+="$p50 "; P99[$t]+="$p99 "; ERRS[$t]=$(( ${ERRS[$t]:-0} + errs ))
        ROUND_RPS[$t]="$rps"
    done
    # Each round measures every target back to back: its ratios are the least noisy figure.
    for t in $TARGETS; do
        # Against Mongrel2's file server for the same size (dir1m for the *1m targets).
        base=dir; [[ "$t" == *1m ]] && base=dir1m; [[ "$t" == up* ]] && base=uprust
        rr="$(awk -v a="${ROUND_RPS[$t]}" -v b="${ROUND_RPS[$base]:-0}" 'BEGIN { if (b > 0) printf "%.4f", a / b }')"
        [[ -z "$rr" ]] || RATIOS[$t]+="$rr "   # no baseline target in TARGETS: the table shows "-"
    done
done

echo
printf '| %-12s | %10s | %9s | %9s | %8s | %12s |\n' target 'req/s' 'p50 ms' 'p99 ms' 'vs Dir' 'CPU us/req'
printf '|%s|%s|%s|%s|%s|%s|\n' '--------------' '------------' '-----------' '-----------' '----------' '--------------'
for t in $TARGETS; do
    m_rps="$(tr ' ' '\n' <<<"${RPS[$t]}" | grep . | median)"
    m_p50="$(tr ' ' '\n' <<<"${P50[$t]}" | grep . | median)"
    m_p99="$(tr ' ' '\n' <<<"${P99[$t]}" | grep . | median)"
    ratio=""; [[ -z "${RATIOS[$t]:-}" ]] || ratio="$(tr ' ' '\n' <<<"${RATIOS[$t]}" | grep . | median)"
    ratio="$(awk -v r="$ratio" 'BEGIN { if (r != "") printf "%.2f", r; else print "-" }')"
    m_cpu=-; [[ -n "${CPU[$t]:-}" ]] && m_cpu="$(tr ' ' '\n' <<<"${CPU[$t]}" | grep . | median)"
    printf '| %-12s | %10.0f | %9.3f | %9.3f | %8s | %12s |\n' "$t" "$m_rps" "$m_p50" "$m_p99" "$ratio" "$m_cpu"
    [[ "${ERRS[$t]}" == 0 ]] || echo "   ($t: wrk reported errors or non-2xx answers)"
done
echo "(medians of $ROUNDS rounds; 'vs Dir' is the median of the per-round ratios; wrk -t$THREADS -c$CONNS -d$DURATION; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
for pair in $PAIRS; do
    a="${pair%%:*}" b="${pair##*:}"
    [[ " $TARGETS " == *" $a "* && " $TARGETS " == *" $b "* ]] || continue
    read -r -a ra <<<"${RPS[$a]}"; read -r -a rb <<<"${RPS[$b]}"
    ratio="$(for i in "${!ra[@]}"; do awk -v x="${ra[$i]}" -v y="${rb[$i]}" 'BEGIN { if (y > 0) printf "%.4f\n", x / y }'; done | median)"
    printf '%s / %s: %.2f (median of the per-round ratios)\n' "$a" "$b" "$ratio"
done

# ---------------------------------------------------------------- fairness
if [[ "$FAIRNESS" == 1 && " $TARGETS " == *" hello "* ]]; then
    echo
    echo "== fairness: hello with $WORKERS workers; 3 clients keep 2 s requests running while wrk -t1 -c2 -d$DURATION sends fast ones"
    slow_loop() {
        local end=$((SECONDS + ${DURATION%s} + 3))
        while (( SECONDS < end )); do
            curl -s --noproxy '*' --max-time 10 -o /dev/null "http://127.0.0.1:$PORT/hello?sleep=2000" || true
        done
    }
    for _ in 1 2 3; do slow_loop & PIDS+=("$!"); done
    sleep 0.5
    read -r rps p50 p99 errs < <(run_wrk "$(url_hello)" -t1 -c2 -d"$DURATION")
    printf '| %-28s | %10s | %9s | %9s |\n' 'fast requests during slow' 'req/s' 'p50 ms' 'p99 ms'
    printf '| %-28s | %10.0f | %9.3f | %9.3f |\n' "hello, $WORKERS workers, 3 slow" "$rps" "$p50" "$p99"
    wait "${PIDS[@]: -3}" 2>/dev/null || true
fi
