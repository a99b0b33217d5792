#!/usr/bin/env bash
# lock_modes.sh - what each lock model does to CPU-bound and I/O-bound requests.
#
# Part 1: /cpu?work=$WORK throughput at 1, 2, 4 and 8 keep-alive connections for gil,
# subinterpreters (K=2) and nogil, each with 8 handler threads. Under the GIL, throughput stays
# flat as connections grow; with two lock domains or none it grows up to the core count.
#
# Part 2, the convoy effect: sequential /io?ms=0 requests (one connection) per second, alone
# and while a second connection keeps /cpu busy, under gil at switch intervals 5, 1 and
# 0.1 ms (and nogil for reference). An I/O request takes the lock several times before it can
# answer (its dispatcher's hand-over, its handler, and again after the sleep), and each
# contended take waits up to a switch interval behind the computing thread.
#
# Servers and wrk share both cores: the point is what the server does with all of them.
# Usage: bench/lock_modes.sh     env: DURATION (default 5s), WORK (default 1000, about 1 ms)
BENCH=lock_modes
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-5s}
WORK=${WORK:-1000}
HOG_WORK=50000
[[ $WORK =~ ^[0-9]+$ ]] || die "WORK must be a non-negative integer, got '$WORK'"
all_cores="0-$(($(nproc) - 1))"

echo "machine: $(nproc) cores, $(uname -m); $(wrk -v 2>&1 | head -n1 || true)"
echo "each figure: wrk -t1 -cN -d$DURATION after a 1 s warm-up"
echo

scaling_header "/cpu?work=$WORK req/s"
scaling_row gil "/cpu?work=$WORK" --threads 8 --mode gil
scaling_row subinterpreters "/cpu?work=$WORK" --threads 8 --mode subinterpreters --interpreters 2
scaling_row nogil "/cpu?work=$WORK" --threads 8 --mode nogil

echo
printf "%-26s | %12s | %15s | %8s\n" "sequential /io?ms=0" "alone req/s" "with /cpu busy" "slowdown"
printf -- '-%.0s' {1..72}; echo
convoy() { # LABEL SERVE-ARGS...
    local label=$1; shift
    start srv "$label" "$all_cores" "$TB" serve --port 0 --threads 8 "$@"
    wrk_rps "$srv_url/io?ms=0" 1s -t1 -c1
    wrk_rps "$srv_url/io?ms=0" "$DURATION" -t1 -c1
    local alone=$rps
    # One client keeps a handler thread computing: each /cpu request runs ~50 ms, back to back.
    "${WRK_PREFIX[@]}" wrk -t1 -c1 -d3600s "$srv_url/cpu?work=$HOG_WORK" >/dev/null 2>&1 &
    local hog=$!
    pids+=("$hog")
    sleep 0.5
    wrk_rps "$srv_url/io?ms=0" "$DURATION" -t1 -c1
    kill "$hog" 2>/dev/null || true
    wait "$hog" 2>/dev/null || true
    awk -v n="$label" -v a="$alone" -v b="$rps" \
        'BEGIN { printf "%-26s | %12.0f | %15.0f | %7.0f×\n", n, a, b, a / b }'
    stop_server "$srv_pid"
}
convoy "gil, switch 5 ms" --mode gil --switch-interval-ms 5
convoy "gil, switch 1 ms" --mode gil --switch-interval-ms 1
convoy "gil, switch 0.1 ms" --mode gil --switch-interval-ms 0.1
convoy "nogil" --mode nogil
