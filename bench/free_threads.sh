#!/usr/bin/env bash
# free_threads.sh - what free threads, C extensions and start-up data cost, in one run.
#
# 1. /cpu?work=$WORK at 1, 2, 4 and 8 connections: gil beside nogil with its single-thread
#    overhead off (0%), at 3.14t's default and at 3.13t's 40%. nogil should lose at one
#    connection by about its overhead and win at eight.
# 2. /cpu?work=$WORK&native=F for F = 0, 0.5, 0.9, 1 at 1 and 4 connections: gil's speedup
#    against Amdahl's 1/((1 − F) + F/cores), and nogil's beside it.
# 3. One hot start-up object read $TOUCHES times a request (/cache/preload-0?touches=N) at 1, 2,
#    4 and 8 connections, with cache.refcount immortal, atomic (nogil) and plain (gil, prefork).
# 4. Every mode's memory with $PRELOAD start-up objects of $PRELOAD_BYTES bytes (the compare
#    suite's), idle and after loadtest has read them all for $DURATION.
#
# Each figure is the median of $ROUNDS wrk runs of $DURATION; in parts 1 to 3 every server runs
# at once and they take turns, so a drift in the machine's speed reaches them alike.
# Usage: bench/free_threads.sh   env: DURATION (3s), ROUNDS (3), WORK (1000), TOUCHES (10000),
#        PRELOAD (5000), PRELOAD_BYTES (4000)
BENCH=free_threads
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-1000}
TOUCHES=${TOUCHES:-10000}
PRELOAD=${PRELOAD:-5000}
PRELOAD_BYTES=${PRELOAD_BYTES:-4000}
for name in ROUNDS WORK TOUCHES PRELOAD PRELOAD_BYTES; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$name must be a non-negative integer, got '${!name}'"
done
(( ROUNDS >= 1 )) || die "ROUNDS must be at least 1"
command -v python3 >/dev/null || die "python3 not found (it reads the JSON)"
"$SWIFT" build "${RELEASE[@]}" --product loadtest || die "swift build failed"
LOADTEST=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)/loadtest
all_cores="0-$(($(nproc) - 1))"
cores=$(nproc)
overhead=$(awk '/^free_threading_overhead_percent:/ { print $2 }' config/nogil.yaml)

echo "machine: $cores cores, $(uname -m); each figure the median of $ROUNDS runs of wrk -t1 -cN -d$DURATION"
echo

# measure NAME PATH CONNS : median req/s of PATH on server NAME (started with `start NAME ...`),
# stored as rate_NAME_CONNS.
measure() {
    local name=$1 path=$2 conns=$3 url_var="${1}_url" values="" round
    for ((round = 0; round < ROUNDS; round++)); do
        wrk_rps "${!url_var}$path" "$DURATION" -t1 -c"$conns"
        values+="$rps "
    done
    printf -v "rate_${name}_${conns}" %s "$(median "$values")"
}

# interleaved PATH CONNS... -- NAME... : every server's median at each connection count, the
# servers taking turns at each count.
interleaved() {
    local path=$1; shift
    local counts=() names=() c n
    while [[ $1 != -- ]]; do counts+=("$1"); shift; done
    shift
    names=("$@")
    for n in "${names[@]}"; do local url_var="${n}_url"; wrk_rps "${!url_var}$path" 1s -t1 -c1; done
    for c in "${counts[@]}"; do
        for n in "${names[@]}"; do measure "$n" "$path" "$c"; done
    done
}

rate() { local var="rate_${1}_${2}"; echo "${!var}"; }

# row LABEL NAME CONNS... : LABEL, NAME's rates and the last over the first.
row() {
    local label=$1 name=$2; shift 2
    printf "%-34s" "$label"
    local c
    for c in "$@"; do printf " | %8.0f" "$(rate "$name" "$c")"; done
    awk -v a="$(rate "$name" "${@: -1}")" -v b="$(rate "$name" "$1")" 'BEGIN { printf " | %6.2f\n", a / b }'
}

header() { # TITLE CONNS...
    printf "%-34s" "$1"; shift
    local c
    for c in "$@"; do printf " | %8s" "$c conn"; done
    printf " | %6s\n" "last/1"
    printf -- '-%.0s' {1..90}; echo
}

stop_all() { local n pid_var; for n in "$@"; do pid_var="${n}_pid"; stop_server "${!pid_var}"; done; }

# --- 1. The free-threaded build's own cost -------------------------------------------------
start gil "gil" "$all_cores" "$TB" serve --config config/gil.yaml --port 0
start ft0 "nogil 0%" "$all_cores" "$TB" serve --config config/nogil.yaml --port 0 --set free_threading_overhead_percent=0
start ft "nogil default" "$all_cores" "$TB" serve --config config/nogil.yaml --port 0
start ft313 "nogil 40%" "$all_cores" "$TB" serve --config config/nogil.yaml --port 0 --set free_threading_overhead_percent=40
interleaved "/cpu?work=$WORK" 1 2 4 8 -- gil ft0 ft ft313
echo "1. The free-threaded build's own cost"
header "/cpu?work=$WORK req/s" 1 2 4 8
row "gil" gil 1 2 4 8
row "nogil, overhead 0%" ft0 1 2 4 8
row "nogil, overhead ${overhead}% (3.14t, default)" ft 1 2 4 8
row "nogil, overhead 40% (3.13t)" ft313 1 2 4 8
for pair in "ft:nogil ${overhead}% / gil" "ft313:nogil 40% / gil" "ft:nogil ${overhead}% / nogil 0%"; do
    name=${pair%%:*} label=${pair#*:}
    reference=gil; [[ $label == *"nogil 0%" ]] && reference=ft0
    printf "%-34s" "$label"
    for c in 1 2 4 8; do awk -v a="$(rate "$name" "$c")" -v b="$(rate "$reference" "$c")" 'BEGIN { printf " | %8.2f", a / b }'; done
    echo
done
stop_all gil ft0 ft ft313
echo

# --- 2. Native work and Amdahl's law --------------------------------------------------------
start gil "gil" "$all_cores" "$TB" serve --config config/gil.yaml --port 0
start ft "nogil" "$all_cores" "$TB" serve --config config/nogil.yaml --port 0
echo "2. /cpu?work=$WORK&native=F: a C extension that releases the lock for the share F, 100 units a step"
printf "%-8s | %9s | %9s | %8s | %14s | %8s | %14s\n" "F" "gil 1 conn" "gil 4 conn" "gil ×" "Amdahl ($cores cores)" "gil/Amdahl" "nogil ×"
printf -- '-%.0s' {1..90}; echo
for share in 0 0.5 0.9 1; do
    interleaved "/cpu?work=$WORK&native=$share" 1 4 -- gil ft
    awk -v f="$share" -v g1="$(rate gil 1)" -v g4="$(rate gil 4)" -v n1="$(rate ft 1)" -v n4="$(rate ft 4)" -v cores="$cores" 'BEGIN {
        amdahl = 1 / ((1 - f) + f / cores)
        printf "%-8s | %9.0f | %9.0f | %7.2f× | %13.2f× | %8.2f | %13.2f×\n", f, g1, g4, g4 / g1, amdahl, g4 / g1 / amdahl, n4 / n1 }'
done
stop_all gil ft
echo

# --- 3. One hot shared object ----------------------------------------------------------------
preload=(--set cache.preload=16)
start immortal "nogil immortal" "$all_cores" "$TB" serve --config config/nogil.yaml --port 0 "${preload[@]}" --set cache.refcount=immortal
start atomic "nogil atomic" "$all_cores" "$TB" serve --config config/nogil.yaml --port 0 "${preload[@]}" --set cache.refcount=atomic
start plain "gil plain" "$all_cores" "$TB" serve --config config/gil.yaml --port 0 "${preload[@]}"
start forked "prefork plain" "$all_cores" "$TB" serve --config config/prefork.yaml --port 0 "${preload[@]}"
interleaved "/cache/preload-0?touches=$TOUCHES" 1 2 4 8 -- immortal atomic plain forked
echo "3. One hot object: /cache/preload-0?touches=$TOUCHES"
header "req/s" 1 2 4 8
row "nogil, cache.refcount immortal" immortal 1 2 4 8
row "nogil, cache.refcount atomic" atomic 1 2 4 8
row "gil, cache.refcount plain" plain 1 2 4 8
row "prefork ($cores workers), plain" forked 1 2 4 8
stop_all immortal atomic plain forked
echo

# --- 4. Memory with start-up data -------------------------------------------------------------
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
data_bytes=$((PRELOAD * (PRELOAD_BYTES + 12)))
echo "4. Memory with $PRELOAD start-up objects of $PRELOAD_BYTES bytes ($(mb $data_bytes) MB), total Pss of every process"
printf "%-16s | %9s | %8s | %11s | %8s | %s\n" "mode" "processes" "idle MB" "after reads" "grew MB" "grew / start-up data"
printf -- '-%.0s' {1..80}; echo
for mode in nogil gil subinterpreters async nogil-async prefork prefork-async; do
    start srv "$mode" "$all_cores" "$TB" serve --config "config/$mode.yaml" --port 0 \
        --set cache.preload="$PRELOAD" --set cache.preload_bytes="$PRELOAD_BYTES"
    sleep 0.5
    idle=$(pss "$srv_pid")
    "$LOADTEST" run "$srv_url/cache/preload-{key}" --keys "$PRELOAD" -c 8 -d "$DURATION" --quiet >/dev/null \
        || die "$mode: loadtest failed"
    loaded=$(pss "$srv_pid")
    processes=$((1 + $(wc -w < "/proc/$srv_pid/task/$srv_pid/children")))
    awk -v m="$mode" -v p="$processes" -v i="$idle" -v l="$loaded" -v d="$data_bytes" 'BEGIN {
        printf "%-16s | %9d | %8.1f | %11.1f | %8.1f | %.2f\n", m, p, i / 1048576, l / 1048576, (l - i) / 1048576, (l - i) / d }'
    stop_server "$srv_pid"
done
