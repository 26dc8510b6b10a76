#!/usr/bin/env bash
# End-to-end WSGI benchmark through a real Mongrel2, on loopback:
#
#   hello world (bench/seed/hello.py, 13 bytes) served by
#     seed-N    the Python m2wsgi 0.5.2 that this project succeeds (Python 2, bench/seed/setup.sh), --num-threads=N
#     m2wsgi-N  this crate's m2wsgi command, --num-threads N
#     rust-N    the raw Rust handler examples/hello.rs, --workers N
#   for N in 1 and 4, interleaved over several rounds (medians reported; these 2-core machines
#   vary 10-30% between runs), Mongrel2 restarted for every run;
#
#   then memory: 1 GiB downloaded (download.flow_control=1) and 1 GiB uploaded (read 64 KiB at
#   a time by the app) through m2wsgi, and its peak RSS (VmHWM).
#
#   With --baseline REV, the m2wsgi command and the raw Rust handler of git revision REV are built
#   too (in $BASELINE_DIR, default /var/tmp/m2wsgi-baseline: outside this checkout, so that its
#   .cargo/config.toml does not apply to REV's build) and measured in the same rounds as
#   base-m2wsgi-N and base-rust-N, so a change is judged against its parent in one run.
#
#   With --workers, the process model: workers-m2wsgi-2 (m2wsgi --workers 2 --num-threads 1: a
#   supervisor and two processes behind its device) against m2wsgi-2 (one process, 2 threads)
#   and granian-2 (granian --workers 2 --interface wsgi, from PyPI into .bench/granian-venv,
#   serving HTTP itself: no Mongrel2 in its path), with per-round ratios. CPU per request
#   counts every process of the peer (supervisor and workers).
#
#   With --sleep, sleep-m2wsgi-1 and sleep-m2wsgi-4 serve bench/seed/sleepy.py (1 ms of
#   time.sleep, the GIL released, then the same answer): what more threads give an app that
#   waits (goal: 4 threads >= 3.5x one).
#
#   With --profile PEER (m2wsgi-1, rust-1, ...), PEER is also run once under `perf record -g`
#   (call graphs, 999 Hz) for --duration seconds of load, and the handler's hottest symbols
#   (self time) and the shares of its main parts (Python, ZeroMQ, the kernel, this crate) are
#   printed; the raw profile is kept in .bench/profile-PEER.data for `perf report -i`.
#
#   With --peers "A B ...", only those peers are measured (any of the names above), e.g.
#   --peers "m2wsgi-1 m2wsgi-4" for a close look at one ratio.
#
#   With --observe, m2wsgi also runs as log-m2wsgi-N (--access-log /dev/null, the default
#   format) and metrics-m2wsgi-N (--metrics on a loopback port, scraped once after the run),
#   measured in the same rounds, with their per-round ratios to m2wsgi-N: the cost of the
#   access log and of the metrics.
#
# Usage: bench/wsgi.sh [--rounds N] [--duration SECS] [--connections C] [--no-seed] [--no-memory]
#                      [--baseline REV] [--observe] [--workers] [--sleep] [--profile PEER]
#                      [--peers "A B ..."]
# Goals: m2wsgi >= 3x the best of the Python m2wsgi 0.5.2 and >= 0.95x raw Rust (c16 and c64);
# 4 threads >= 1x one (>= 3.5x with --sleep); with --baseline, handler CPU per request against
# the baseline's (the per-request work: <= 0.5x the state before it); peak RSS <= 64 MiB.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
ROUNDS=3
DURATION=10
CONNS=32
SEED=1
MEMORY=1
BASELINE=""
OBSERVE=0
WORKERS=0
PROFILE=""
SLEEP=0
ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --no-seed) SEED=0; shift ;;
        --no-memory) MEMORY=0; shift ;;
        --baseline) BASELINE="$2"; shift 2 ;;
        --observe) OBSERVE=1; shift ;;
        --workers) WORKERS=1; shift ;;
        --profile) PROFILE="$2"; shift 2 ;;
        --sleep) SLEEP=1; shift ;;
        --peers) ONLY="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^set -euo/ {exit} NR > 1' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "wsgi.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { printf '[wsgi-bench] %s\n' "$*" >&2; }
die() { printf '[wsgi-bench] ERROR: %s\n' "$*" >&2; exit 1; }
TOOLS=(mongrel2 m2sh wrk curl)
[[ -n "$PROFILE" ]] && TOOLS+=(perf)
for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh"
done

cd "$REPO"
PYO3_PYTHON="$(bash scripts/python.sh)"
export PYO3_PYTHON
say "building (release, --features wsgi) against $PYO3_PYTHON"
cargo build -q --release --features wsgi --bin m2wsgi --example hello
# Where cargo put them: CARGO_TARGET_DIR when it is set (else a stale binary would be measured).
M2WSGI="${CARGO_TARGET_DIR:-$REPO/target}/release/m2wsgi"
HELLO="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/hello"
if [[ -n "$BASELINE" ]]; then
    BASE_DIR="${BASELINE_DIR:-/var/tmp/m2wsgi-baseline}"
    BASE_SRC="$BASE_DIR/src"
    rm -rf "$BASE_SRC" && mkdir -p "$BASE_SRC"
    git -C "$REPO" archive "$BASELINE" | tar -x -C "$BASE_SRC"
    say "building the baseline $BASELINE ($(git -C "$REPO" rev-parse --short "$BASELINE"))"
    # The baseline's examples may need the cli feature (newer trees); older ones have none.
    (cd "$BASE_SRC" && CARGO_TARGET_DIR="$BASE_DIR/target" cargo build -q --release \
        --features wsgi --bin m2wsgi --example hello)
    BASE_M2WSGI="$BASE_DIR/target/release/m2wsgi"
    BASE_HELLO="$BASE_DIR/target/release/examples/hello"
fi
GRANIAN="$REPO/.bench/granian-venv/bin/granian"
if [[ "$WORKERS" -eq 1 && ! -x "$GRANIAN" ]]; then
    say "installing granian from PyPI into .bench/granian-venv"
    "$PYO3_PYTHON" -m venv "$REPO/.bench/granian-venv"
    "$REPO/.bench/granian-venv/bin/pip" install -q granian >&2
fi
SEED_PY="$REPO/.bench/seed/venv/bin/python"
if [[ "$SEED" -eq 1 && ! -x "$SEED_PY" ]]; then
    say "setting up the Python m2wsgi 0.5.2 (bench/seed/setup.sh)"
    bash bench/seed/setup.sh >&2
fi

WORK="$(mktemp -d /tmp/m2wsgi-bench.XXXXXX)"
M2PID=""
HPID=""
cleanup() {
    [[ -n "$HPID" ]] && kill "$HPID" 2>/dev/null && wait "$HPID" 2>/dev/null || true
    [[ -n "$M2PID" ]] && kill "$M2PID" 2>/dev/null && wait "$M2PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK"/{logs,run,tmp}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SEND_PORT="$(free_port)"; RECV_PORT="$(free_port)"; HTTP_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
GRANIAN_PORT="$(free_port)"
SEND="tcp://127.0.0.1:$SEND_PORT"
RECV="tcp://127.0.0.1:$RECV_PORT"
URL="http://127.0.0.1:$HTTP_PORT/"

write_config() { # $1 = flow control 0/1
    cat > "$WORK/mongrel2.conf" <<EOF
h = Handler(send_spec='$SEND', send_ident='9a8a4c4e-2d41-4a5e-b3c0-6b7f1c2a0001', recv_spec='$RECV', recv_ident='', protocol='tnetstring')
main = Server(uuid='bench', chroot='./', access_log='/logs/access.log', error_log='/logs/error.log',
    pid_file='/run/mongrel2.pid', default_host='localhost', name='main', bind_addr='127.0.0.1', port=$HTTP_PORT,
    hosts=[Host(name='localhost', routes={'/': h})])
settings = {'server.daemonize': 0, 'limits.content_length': 4096, 'upload.temp_store': '/tmp/upload.XXXXXX',
    'download.flow_control': $1}
servers = [main]
EOF
    rm -f "$WORK/config.sqlite"
    (cd "$WORK" && m2sh load -config mongrel2.conf -db config.sqlite >/dev/null 2>&1) \
        || die "m2sh load failed"
}

start_m2() {
    rm -f "$WORK/run/mongrel2.pid"
    (cd "$WORK" && exec mongrel2 config.sqlite bench >"$WORK/m2.out" 2>&1) &
    M2PID=$!
    for _ in $(seq 200); do
        # ready: "Running" logged and the HTTP port listening (no probe request: with no
        # handler connected it would hang in Mongrel2's queue)
        grep -q "Running. Copyright" "$WORK/logs/error.log" 2>/dev/null \
            && ss -ltn "sport = :$HTTP_PORT" 2>/dev/null | grep -q LISTEN && return 0
        sleep 0.05
    done
    die "mongrel2 did not start: $(tail -5 "$WORK/logs/error.log" 2>/dev/null)"
}

stop_m2() {
    [[ -n "$M2PID" ]] || return 0
    kill "$M2PID" 2>/dev/null || true
    wait "$M2PID" 2>/dev/null || true
    M2PID=""
    : > "$WORK/logs/error.log"
}

start_handler() { # name
    local name="$1" n="${1##*-}" url="$URL"
    case "$name" in
        workers-m2wsgi-*) env -u VIRTUAL_ENV "$M2WSGI" --pythonpath "$REPO/bench/seed" --workers "$n" \
                    --num-threads 1 --log-level warn hello:app "$SEND" "$RECV" >"$WORK/h.out" 2>&1 & ;;
        granian-*) url="http://127.0.0.1:$GRANIAN_PORT/"
                   (cd "$REPO/bench/seed" && exec "$GRANIAN" --interface wsgi --workers "$n" \
                    --host 127.0.0.1 --port "$GRANIAN_PORT" --log-level warning hello:app) \
                    >"$WORK/h.out" 2>&1 & ;;
        seed-*) (cd "$REPO/bench/seed" && exec "$SEED_PY" launcher.py --num-threads="$n" hello.app "$SEND" "$RECV") \
                    >"$WORK/h.out" 2>&1 & ;;
        m2wsgi-*) env -u VIRTUAL_ENV "$M2WSGI" --pythonpath "$REPO/bench/seed" --num-threads "$n" \
                    --log-level warn hello:app "$SEND" "$RECV" >"$WORK/h.out" 2>&1 & ;;
        sleep-m2wsgi-*) env -u VIRTUAL_ENV "$M2WSGI" --pythonpath "$REPO/bench/seed" --num-threads "$n" \
                    --log-level warn sleepy:app "$SEND" "$RECV" >"$WORK/h.out" 2>&1 & ;;
        log-m2wsgi-*) env -u VIRTUAL_ENV "$M2WSGI" --pythonpath "$REPO/bench/seed" --num-threads "$n" \
                    --log-level warn --access-log /dev/null hello:app "$SEND" "$RECV" \
                    >"$WORK/h.out" 2>&1 & ;;
        metrics-m2wsgi-*) env -u VIRTUAL_ENV "$M2WSGI" --pythonpath "$REPO/bench/seed" --num-threads "$n" \
                    --log-level warn --metrics "127.0.0.1:$METRICS_PORT" hello:app "$SEND" "$RECV" \
                    >"$WORK/h.out" 2>&1 & ;;
        rust-*) RUST_LOG=warn M2WSGI_LOG=warn "$HELLO" "$SEND" "$RECV" --workers "$n" \
                    >"$WORK/h.out" 2>&1 & ;;
        base-m2wsgi-*) env -u VIRTUAL_ENV "$BASE_M2WSGI" --pythonpath "$REPO/bench/seed" \
                    --num-threads "$n" --log-level warn hello:app "$SEND" "$RECV" >"$WORK/h.out" 2>&1 & ;;
        base-rust-*) RUST_LOG=warn M2WSGI_LOG=warn "$BASE_HELLO" "$SEND" "$RECV" --workers "$n" \
                    >"$WORK/h.out" 2>&1 & ;;
    esac
    HPID=$!
    for _ in $(seq 200); do
        if [[ "$(curl -s --max-time 2 "$url")" == "Hello, world!" ]]; then return 0; fi
        kill -0 "$HPID" 2>/dev/null || die "$name exited: $(tail -5 "$WORK/h.out")"
        sleep 0.05
    done
    die "$name does not answer: $(tail -5 "$WORK/h.out")"
}

stop_handler() {
    [[ -n "$HPID" ]] || return 0
    kill -TERM "$HPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$HPID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$HPID" 2>/dev/null || true
    wait "$HPID" 2>/dev/null || true
    HPID=""
}

measure() { # name -> prints "req/s cpu-us-per-request"
    local name="$1" out rps reqs t0 t1 url="$URL"
    [[ "$name" == granian-* ]] && url="http://127.0.0.1:$GRANIAN_PORT/"
    start_m2
    start_handler "$name"
    wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null 2>&1 || true   # warm-up
    t0="$(cpu_ticks "$HPID")"
    out="$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" 2>&1)"
    t1="$(cpu_ticks "$HPID")"
    if [[ "$name" == metrics-* ]]; then
        # The counters saw the run: one scrape, checked, outside the measured time.
        curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" \
            | grep -q '^m2wsgi_requests_total{status="2xx"} [1-9]' \
            || say "$name: the metrics endpoint did not count the run"
    fi
    stop_handler
    stop_m2
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
        say "$name: $(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' ' | tr '\n' ' ')"
    fi
    # The handler's own CPU time per request: steadier than req/s on a busy machine.
    awk -v r="${rps:-0}" -v n="${reqs:-0}" -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%s %.1f\n", r, (n > 0 ? (b - a) / hz * 1e6 / n : 0) }'
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

PEERS=(m2wsgi-1 rust-1 m2wsgi-4 rust-4)
[[ "$SEED" -eq 1 ]] && PEERS=(seed-1 seed-4 "${PEERS[@]}")
[[ -n "$BASELINE" ]] && PEERS+=(base-m2wsgi-1 base-rust-1 base-m2wsgi-4 base-rust-4)
[[ "$OBSERVE" -eq 1 ]] && PEERS+=(log-m2wsgi-1 metrics-m2wsgi-1 log-m2wsgi-4 metrics-m2wsgi-4)
[[ "$WORKERS" -eq 1 ]] && PEERS+=(m2wsgi-2 workers-m2wsgi-2 granian-2)
[[ "$SLEEP" -eq 1 ]] && PEERS+=(sleep-m2wsgi-1 sleep-m2wsgi-4)
if [[ -n "$ONLY" ]]; then
    read -r -a PEERS <<<"$ONLY"
    for p in "${PEERS[@]}"; do
        [[ "$p" =~ ^(seed|m2wsgi|rust|base-m2wsgi|base-rust|log-m2wsgi|metrics-m2wsgi|sleep-m2wsgi|workers-m2wsgi|granian)-[0-9]+$ ]] \
            || die "--peers: unknown peer $p"
    done
fi
declare -A RESULTS
write_config 0
say "hello world: ${#PEERS[@]} peers x $ROUNDS rounds, wrk -t1 -c$CONNS -d${DURATION}s, $(nproc) cores"
declare -A CPU ROUND ROUND_CPU RATIO_CPU_BASE
RATIO_RUST1=""; RATIO_RUST4=""; RATIO_SEED=""
declare -A RATIO_BASE RATIO_OBS RATIO_W
# round_ratio A B [FIGURES]: this round's A / B (req/s, or the array FIGURES: ROUND_CPU) and a
# space, or nothing when either was not measured.
round_ratio() {
    local -n fig="${3:-ROUND}"
    awk -v a="${fig[$1]:-0}" -v b="${fig[$2]:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.4f ", a / b }'
}
# med_of "X Y ...": the median of a list of figures.
med_of() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median; }
# both A B: both peers were measured.
both() { [[ -n "${MED[$1]:-}" && -n "${MED[$2]:-}" ]]; }
RATIO_THREADS=""; RATIO_SLEEP=""
for round in $(seq "$ROUNDS"); do
    for p in "${PEERS[@]}"; do
        read -r r c <<<"$(measure "$p")"
        RESULTS[$p]="${RESULTS[$p]:-} $r"
        CPU[$p]="${CPU[$p]:-} $c"
        say "round $round: $p $r req/s, handler CPU $c us/request"
        ROUND[$p]="$r"
        ROUND_CPU[$p]="$c"
    done
    # Peers measured back to back in one round: their ratios are the least noisy figure.
    if [[ -n "$BASELINE" ]]; then
        for q in m2wsgi-1 rust-1 m2wsgi-4 rust-4; do
            RATIO_BASE[$q]+="$(round_ratio "$q" "base-$q")"
            RATIO_CPU_BASE[$q]+="$(round_ratio "$q" "base-$q" ROUND_CPU)"
        done
    fi
    if [[ "$OBSERVE" -eq 1 ]]; then
        for q in log-m2wsgi-1 metrics-m2wsgi-1 log-m2wsgi-4 metrics-m2wsgi-4; do
            RATIO_OBS[$q]+="$(round_ratio "$q" "${q#*-}")"
        done
    fi
    if [[ "$WORKERS" -eq 1 ]]; then
        RATIO_W[one]+="$(round_ratio "workers-m2wsgi-2" "m2wsgi-2")"
        RATIO_W[granian]+="$(round_ratio "workers-m2wsgi-2" "granian-2")"
    fi
    RATIO_THREADS+="$(round_ratio "m2wsgi-4" "m2wsgi-1")"
    if [[ "$SLEEP" -eq 1 ]]; then
        RATIO_SLEEP+="$(round_ratio "sleep-m2wsgi-4" "sleep-m2wsgi-1")"
    fi
    RATIO_RUST1+="$(round_ratio "m2wsgi-1" "rust-1")"
    RATIO_RUST4+="$(round_ratio "m2wsgi-4" "rust-4")"
    if [[ -n "${ROUND[seed-1]:-}${ROUND[seed-4]:-}" && -n "${ROUND[m2wsgi-1]:-}${ROUND[m2wsgi-4]:-}" ]]; then
        RATIO_SEED+="$(awk -v a="${ROUND[m2wsgi-1]:-0}" -v b="${ROUND[m2wsgi-4]:-0}" \
            -v c="${ROUND[seed-1]:-0}" -v d="${ROUND[seed-4]:-0}" \
            'BEGIN {m = a > b ? a : b; s = c > d ? c : d; printf "%.4f", m / s}') "
    fi
done

printf '\n%-14s %12s %14s   %s\n' peer "median req/s" "CPU us/req" "runs (req/s)"
declare -A MED
for p in "${PEERS[@]}"; do
    MED[$p]="$(tr ' ' '\n' <<<"${RESULTS[$p]}" | grep -v '^$' | median)"
    cpu="$(tr ' ' '\n' <<<"${CPU[$p]}" | grep -v '^$' | median)"
    printf '%-14s %12.0f %14.1f   %s\n' "$p" "${MED[$p]}" "$cpu" "${RESULTS[$p]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
med_ratio() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median | awk '{printf "%.2f", $1}'; }
best_m2="$(printf '%s\n' "${MED[m2wsgi-1]:-0}" "${MED[m2wsgi-4]:-0}" | sort -n | tail -1)"
echo
echo "ratios: of the medians | median of the per-round ratios"
if [[ -n "$RATIO_SEED" ]]; then
    best_seed="$(printf '%s\n' "${MED[seed-1]:-0}" "${MED[seed-4]:-0}" | sort -n | tail -1)"
    echo "m2wsgi best / m2wsgi-0.5.2 best:  $(ratio "$best_m2" "$best_seed")x | $(med_ratio "$RATIO_SEED")x   (goal >= 3)"
fi
both m2wsgi-1 rust-1 && echo "m2wsgi-1 / rust-1:        $(ratio "${MED[m2wsgi-1]}" "${MED[rust-1]}")x | $(med_ratio "$RATIO_RUST1")x   (goal >= 0.95)"
both m2wsgi-4 rust-4 && echo "m2wsgi-4 / rust-4:        $(ratio "${MED[m2wsgi-4]}" "${MED[rust-4]}")x | $(med_ratio "$RATIO_RUST4")x   (goal >= 0.95)"
both m2wsgi-4 m2wsgi-1 && echo "m2wsgi-4 / m2wsgi-1:      $(ratio "${MED[m2wsgi-4]}" "${MED[m2wsgi-1]}")x | $(med_ratio "$RATIO_THREADS")x   (goal >= 1.0: threads never slower)"
if both sleep-m2wsgi-4 sleep-m2wsgi-1; then
    echo "sleep-m2wsgi-4 / sleep-m2wsgi-1: $(ratio "${MED[sleep-m2wsgi-4]}" "${MED[sleep-m2wsgi-1]}")x | $(med_ratio "$RATIO_SLEEP")x   (goal >= 3.5: an app that waits)"
fi
if [[ -n "$BASELINE" ]]; then
    for q in m2wsgi-1 rust-1 m2wsgi-4 rust-4; do
        both "$q" "base-$q" || continue
        printf '%-26s %sx | %sx   (req/s; goal >= 1, within noise)\n' "$q / base-$q ($BASELINE):" \
            "$(ratio "${MED[$q]}" "${MED[base-$q]}")" "$(med_ratio "${RATIO_BASE[$q]}")"
        printf '%-26s %sx | %sx   (handler CPU per request; lower is better)\n' "$q / base-$q ($BASELINE):" \
            "$(ratio "$(med_of "${CPU[$q]}")" "$(med_of "${CPU[base-$q]}")")" \
            "$(med_ratio "${RATIO_CPU_BASE[$q]}")"
    done
fi
if [[ "$OBSERVE" -eq 1 ]]; then
    for q in log-m2wsgi-1 metrics-m2wsgi-1 log-m2wsgi-4 metrics-m2wsgi-4; do
        both "$q" "${q#*-}" || continue
        printf '%-26s %sx | %sx   (goal >= 0.97)\n' "$q / ${q#*-}:" \
            "$(ratio "${MED[$q]}" "${MED[${q#*-}]}")" "$(med_ratio "${RATIO_OBS[$q]}")"
    done
fi
if [[ "$WORKERS" -eq 1 ]]; then
    echo "workers-m2wsgi-2 / m2wsgi-2:  $(ratio "${MED[workers-m2wsgi-2]}" "${MED[m2wsgi-2]}")x | $(med_ratio "${RATIO_W[one]}")x   (2 processes x 1 thread / 1 process x 2 threads)"
    echo "workers-m2wsgi-2 / granian-2: $(ratio "${MED[workers-m2wsgi-2]}" "${MED[granian-2]}")x | $(med_ratio "${RATIO_W[granian]}")x   (granian serves HTTP itself)"
fi
echo "($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"

if [[ -n "$PROFILE" ]]; then
    echo
    say "profile: $PROFILE under perf record -g for ${DURATION}s of wrk -c$CONNS"
    mkdir -p "$REPO/.bench"
    DATA="$REPO/.bench/profile-$PROFILE.data"
    start_m2
    start_handler "$PROFILE"
    wrk -t1 -c"$CONNS" -d2s "$URL" >/dev/null 2>&1 || true   # warm-up
    perf record -q -F 999 -g -o "$DATA" -p "$HPID" -- sleep "$DURATION" >/dev/null 2>&1 &
    PERF=$!
    wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL" >/dev/null 2>&1 || true
    wait "$PERF" || true
    stop_handler
    stop_m2
    REPORT="$(perf report -i "$DATA" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9.]+%' || true)"
    echo "hottest symbols (self time):"
    head -25 <<<"$REPORT"
    echo "by part (self time, % of the handler's samples):"
    awk '{ pct = $1; sub("%", "", pct); dso = $2
           part = "other"
           if (dso ~ /python|libpython/) part = "Python"
           else if (dso ~ /kernel/) part = "kernel"
           else if (dso ~ /libc|ld-linux/) part = "libc"
           else if ($0 ~ /zmq|zmq_|ypipe|mailbox|signaler/) part = "ZeroMQ"
           else if (dso ~ /m2wsgi|hello/) part = "m2wsgi (Rust)"
           sum[part] += pct }
         END { for (p in sum) printf "  %-14s %5.1f %%\n", p, sum[p] }' <<<"$REPORT" | sort -k2 -nr
fi

if [[ "$MEMORY" -eq 1 ]]; then
    echo
    say "memory: 1 GiB down (download.flow_control=1) and 1 GiB up through m2wsgi"
    write_config 1
    start_m2
    chroot=/
    [[ "$(id -u)" -eq 0 ]] && chroot="$WORK"   # as root mongrel2 really chroots
    VIRTUAL_ENV="$REPO/.venv" "$M2WSGI" --chdir "$REPO/tests/apps" --log-level warn --flow-control \
        --upload-dir /tmp --mongrel2-chroot "$chroot" probe "$SEND" "$RECV" >"$WORK/h.out" 2>&1 &
    HPID=$!
    for _ in $(seq 200); do
        [[ "$(curl -s --max-time 2 "${URL}hello")" == "Hello, world!" ]] && break
        sleep 0.05
    done
    t0=$(date +%s.%N)
    down="$(curl -s --max-time 600 -o /dev/null -w '%{http_code} %{size_download}' "${URL}big?mb=1024")"
    t1=$(date +%s.%N)
    truncate -s 1G "$WORK/gib.bin"
    up="$(curl -s --max-time 600 -X POST -H 'Expect:' -T "$WORK/gib.bin" "${URL}input?op=hash")"
    t2=$(date +%s.%N)
    rm -f "$WORK/gib.bin"
    hwm="$(awk '/VmHWM/ {print $2}' "/proc/$HPID/status")"
    stop_handler
    stop_m2
    echo "download: $down  in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"
    echo "upload:   ${up//$'\n'/}  in $(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.1f", b - a}') s"
    echo "m2wsgi peak RSS (VmHWM): $((hwm / 1024)) MiB   (goal <= 64)"
fi
