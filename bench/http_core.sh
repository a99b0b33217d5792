#!/usr/bin/env bash
# http_core.sh - Threadbare's core HTTP speed, judged against plain C evhttp.
#
# Builds Threadbare (release) and bench/evhttp_ok.c, runs both pinned to
# core 0 and wrk pinned to core 1, in interleaved rounds, and prints the
# median requests/sec of each target and its ratio to the C server measured
# in the same run. Targets: /health >= 0.95 of C, /cpu?work=0 >= 0.60 of C
# through the handler pool, /cpu?work=0 >= 0.95 of C in async mode (the handler
# runs on the loop that read it and never crosses threads), idle RSS <= 20 MB. The C server is also run with --changelist, the one
# event_base flag Threadbare sets, so the table separates what that flag buys
# from what the Swift layer costs. Missing a target is reported, not an error; a server
# that does not start, a failing wrk or any non-2xx response is (exit != 0).
#
# BASELINE=path/to/threadbare adds that binary's /health to the same rounds, with its ratio to
# this build's: how a change moved the speed, measured side by side rather than a day apart.
#
# Usage: bench/http_core.sh        env: DURATION (default 10s), ROUNDS (3), BASELINE
BENCH=http_core
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
(( $(nproc) >= 2 )) || die "needs at least 2 cores (servers on core 0, wrk on core 1)"
command -v cc >/dev/null || die "cc not found (apt-get install -y build-essential)"
cc -O2 -o "$tmp/evhttp_ok" bench/evhttp_ok.c $(pkg-config --cflags --libs libevent) \
    || die "could not compile bench/evhttp_ok.c (is libevent-dev installed?)"

start c "C server" 0 "$tmp/evhttp_ok" 127.0.0.1 0
# The same C server with the event_base flag Threadbare's loops use: the ratio of threadbare to
# this one is the cost of the Swift layer alone.
start cl "C server --changelist" 0 "$tmp/evhttp_ok" 127.0.0.1 0 --changelist
# A second, identical minimal C server measured in the same rounds: its ratio to the first is
# the noise floor of this machine, to read the other ratios against.
start c2 "second C server" 0 "$tmp/evhttp_ok" 127.0.0.1 0
start tb threadbare 0 "$TB" serve --port 0 --loops 1
start tba "threadbare async" 0 "$TB" serve --port 0 --mode async

# Idle RSS before any request reaches threadbare.
rss_mb=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$tb_pid/status")
[[ -n $rss_mb ]] || die "could not read VmRSS of threadbare (pid $tb_pid)"

WRK_PREFIX=(taskset -c 1)
names=("C evhttp /health" "C evhttp --changelist" "threadbare /health" "threadbare /cpu?work=0" "async /cpu?work=0" "C evhttp again (noise)")
urls=("$c_url/health" "$cl_url/health" "$tb_url/health" "$tb_url/cpu?work=0" "$tba_url/cpu?work=0" "$c2_url/health")
targets=("" "" 0.95 0.60 0.95 "")
if [[ -n ${BASELINE:-} ]]; then
    [[ -x $BASELINE ]] || die "BASELINE is not an executable: '$BASELINE'"
    start base "baseline threadbare" 0 "$BASELINE" serve --port 0 --loops 1
    # Right after this build's /health: a target measured later in a round tends to do better
    # here (the second C server beat the first by up to 12%), so the two are neighbours.
    names=("${names[@]:0:3}" "baseline /health" "${names[@]:3}")
    urls=("${urls[@]:0:3}" "$base_url/health" "${urls[@]:3}")
    targets=("${targets[@]:0:3}" "" "${targets[@]:3}")
fi

# bench URL DURATION : wrk pinned to core 1; sets $rps.
bench() { wrk_rps "$1" "$2" -t1 -c64; }

echo "machine: $(nproc) cores, $(uname -m); servers pinned with taskset -c 0"
echo "wrk:     ${WRK_PREFIX[*]} wrk -t1 -c64 -d$DURATION --latency URL"
echo "         $(wrk -v 2>&1 | head -n1 || true); 2s warm-up per target, $ROUNDS interleaved rounds, median"
echo

for url in "${urls[@]}"; do bench "$url" 2s; done
# runs[i] holds target i's rates, space-separated.
runs=()
for ((round = 1; round <= ROUNDS; round++)); do
    line="round $round/$ROUNDS:"
    for i in "${!urls[@]}"; do
        bench "${urls[i]}" "$DURATION"
        runs[i]+="$rps "
        line+="  ${names[i]} $rps"
    done
    echo "$line"
done

medians=()
for i in "${!urls[@]}"; do medians[i]=$(median "${runs[i]}"); done

echo
printf "%-24s | %14s | %10s | %14s | %s\n" target "req/s (median)" "vs C" "vs C changelist" "target (vs C)"
printf -- '-%.0s' {1..90}; echo
for i in "${!urls[@]}"; do
    awk -v n="${names[i]}" -v m="${medians[i]}" -v c="${medians[0]}" -v cl="${medians[1]}" -v t="${targets[i]}" 'BEGIN {
        r = m / c
        tgt = (t == "") ? "-" : sprintf("≥ %.2f %s", t, (r >= t) ? "ok" : "MISSED")
        printf "%-24s | %14.0f | %10.2f | %14.2f | %s\n", n, m, r, m / cl, tgt }'
done
echo
if [[ -n ${BASELINE:-} ]]; then
    awk -v now="${medians[2]}" -v before="${medians[3]}" 'BEGIN {
        printf "/health, this build over the baseline (%s): %.3f\n", ENVIRON["BASELINE"], now / before }'
fi
awk -v r="$rss_mb" 'BEGIN { printf "idle RSS threadbare: %.1f MB (target ≤ 20 MB) %s\n",
    r, (r <= 20) ? "ok" : "MISSED" }'
