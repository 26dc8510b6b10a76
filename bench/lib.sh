# Shell functions shared by the benchmark scripts (sourced, not run).

# cpu_ticks PID: CPU ticks (user + system) of PID and its children (the workers of a supervisor),
# from /proc; divide by `getconf CLK_TCK` for seconds.
cpu_ticks() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
