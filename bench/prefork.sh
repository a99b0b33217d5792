#!/usr/bin/env bash
# prefork.sh - what processes buy and what they cost, next to threads.
#
# 1. /cpu?work=$WORK req/s at 1, 2, 4 and 8 keep-alive connections for prefork (one worker
#    per core, one thread each), gil and nogil (8 threads).
# 2. How evenly workers share the load with accept: reuseport (a SO_REUSEPORT socket per
#    worker) and accept: shared (one socket all workers wait on): connections and requests per
#    worker, and the busiest worker's share against the mean, with 8 workers.
# 3. Memory after the same warm-up: RSS and Pss (smaps_rollup) of each prefork worker and in
#    total, next to one nogil process.
# 4. prefork-async (gunicorn with uvicorn workers), one worker per core: 4 keep-alive
#    connections of CPU work, with accept: shared and accept: reuseport. A connection stays on
#    the loop that accepted it, so the figure to read is how the 4 were dealt out.
#
# Usage: bench/prefork.sh     env: DURATION (default 5s), WORK (default 1000, about 1 ms)
BENCH=prefork
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-5s}
WORK=${WORK:-1000}
[[ $WORK =~ ^[0-9]+$ ]] || die "WORK must be a non-negative integer, got '$WORK'"
command -v python3 >/dev/null || die "python3 not found (it reads /stats)"
cores=$(nproc)
all_cores="0-$((cores - 1))"

echo "machine: $cores cores, $(uname -m); $(wrk -v 2>&1 | head -n1 || true)"
echo

# stats_field URL PYTHON-EXPRESSION : evaluates the expression on /stats as `s`.
stats() { curl -sf "$1/stats" | python3 -c "import json, sys; s = json.load(sys.stdin); print($2)"; }

echo "1. /cpu?work=$WORK req/s (wrk -t1 -cN -d$DURATION)"
scaling_header mode
scaling_row "prefork --workers $cores" "/cpu?work=$WORK" --mode prefork --workers "$cores"
scaling_row "gil --threads 8" "/cpu?work=$WORK" --mode gil --threads 8
scaling_row "nogil --threads 8" "/cpu?work=$WORK" --mode nogil --threads 8
scaling_row "async" "/cpu?work=$WORK" --mode async
scaling_row "prefork-async --workers $cores" "/cpu?work=$WORK" --mode prefork-async --workers "$cores"

echo
echo "2. balance over 8 workers (wrk -t2, /cpu?work=50, $DURATION): per worker, sorted; busiest / mean"
for accept in reuseport shared; do
    for load in "keep-alive -c64" "close -c16"; do
        start srv "prefork $accept" "$all_cores" "$TB" serve --port 0 --mode prefork --workers 8 --accept "$accept"
        options=(-t2 "${load#* }")
        [[ $load == close* ]] && options+=(-H "Connection: close")
        wrk_rps "$srv_url/cpu?work=50" "$DURATION" "${options[@]}"
        sleep 1.2 # every worker publishes its connection count with its next heartbeat
        stats "$srv_url" "'%-10s %-16s %6.0f req/s  connections %s (%.2f)  requests %s (%.2f)' % (
            '$accept', '$load', $rps,
            sorted([w['connections'] for w in s['workers']['each']], reverse=True),
            max(w['connections'] for w in s['workers']['each']) / (s['workers']['connections'] / 8),
            sorted([w['requests'] for w in s['workers']['each']], reverse=True),
            max(w['requests'] for w in s['workers']['each']) / (s['workers']['requests'] / 8))"
        stop_server "$srv_pid"
    done
done

echo
echo "3. memory after 2 s of /cpu?work=50 and 1000 cache entries of 1 KiB (MB)"
fill() { # URL : 1000 PUTs of 1 KiB over fresh connections, spread over the workers
    head -c 1024 /dev/zero >"$tmp/value"
    for i in $(seq 1000); do curl -sf -o /dev/null -X PUT --data-binary @"$tmp/value" "$1/cache/key$i"; done
}
start srv prefork "$all_cores" "$TB" serve --port 0 --mode prefork --workers "$cores"
wrk_rps "$srv_url/cpu?work=50" 2s -t2 -c16
fill "$srv_url"
# kb FILE FIELD : a /proc figure in kB, as MB.
kb() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "$1"; }
master_rss=$(kb "/proc/$srv_pid/status" VmRSS)
master_pss=$(kb "/proc/$srv_pid/smaps_rollup" Pss)
stats "$srv_url" "'\n'.join(['%-26s RSS %6.1f  Pss %6.1f' % ('prefork worker %d' % w['pid'], w['rss_bytes'] / 1e6, w['pss_bytes'] / 1e6)
    for w in s['workers']['each']] + ['%-26s RSS %6.1f  Pss %6.1f' % ('prefork master', $master_rss, $master_pss),
    '%-26s RSS %6.1f  Pss %6.1f' % ('prefork, %d workers: total' % s['workers']['count'],
        s['workers']['rss_bytes'] / 1e6 + $master_rss, s['workers']['pss_bytes'] / 1e6 + $master_pss)])"
stop_server "$srv_pid"
start srv nogil "$all_cores" "$TB" serve --port 0 --mode nogil --threads 8
wrk_rps "$srv_url/cpu?work=50" 2s -t2 -c16
fill "$srv_url"
printf "%-26s RSS %6.1f  Pss %6.1f\n" "nogil, one process" "$(kb "/proc/$srv_pid/status" VmRSS)" "$(kb "/proc/$srv_pid/smaps_rollup" Pss)"
stop_server "$srv_pid"

echo
echo "4. prefork-async, $cores workers: /cpu?work=$WORK, 1 then 4 keep-alive connections (wrk -t1, $DURATION each)"
printf "%-10s | %9s | %9s | %7s | %s\n" accept "1 conn" "4 conn" "4 / 1" "requests per worker with 4 connections"
printf -- '-%.0s' {1..86}; echo
for accept in reuseport shared; do
    start srv "prefork-async $accept" "$all_cores" "$TB" serve --port 0 --mode prefork-async --workers "$cores" --accept "$accept"
    wrk_rps "$srv_url/cpu?work=$WORK" 1s -t1 -c1
    wrk_rps "$srv_url/cpu?work=$WORK" "$DURATION" -t1 -c1
    one=$rps
    sleep 1.2 # every worker publishes its request count with its next heartbeat
    before=$(stats "$srv_url" "' '.join('%d:%d' % (w['pid'], w['requests']) for w in s['workers']['each'])")
    wrk_rps "$srv_url/cpu?work=$WORK" "$DURATION" -t1 -c4
    four=$rps
    sleep 1.2
    spread=$(stats "$srv_url" "(lambda before: sorted([w['requests'] - before.get(w['pid'], 0) for w in s['workers']['each']], reverse=True))(
        dict(tuple(map(int, p.split(':'))) for p in '$before'.split()))")
    awk -v a="$accept" -v o="$one" -v f="$four" -v s="$spread" 'BEGIN { printf "%-10s | %9.0f | %9.0f | %7.2f | %s\n", a, o, f, f / o, s }'
    stop_server "$srv_pid"
done
