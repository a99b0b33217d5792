#!/usr/bin/env bash
# cache_backends.sh - shared state across processes: one read-through workload, five ways.
#
# The workload is the compare suite's shared-cache scenario: GET /cache/item-{key}?compute=$WORK
# over $KEYS keys drawn by Zipf's law (s = 1), 8 keep-alive connections (loadtest, closed
# model, after a $WARMUP warm-up), against a cache of 10 000 entries. A miss computes the
# value with $WORK units of CPU work under the lock and stores it. Every cache gets the same
# budget: 10 000 entries and 2.56 MB (the shm backend sizes its fixed slots from it, 256 bytes
# each; memcached gets -m 2, whose one 1 MiB slab page for items this size holds about as
# many). Rows:
#   gil, nogil             one process, one cache its threads share
#   prefork + local        one cache per worker: N copies, each its own hit ratio
#   prefork + shm          one shared-memory cache every worker maps
#   prefork + memcached    one memcached (Debian's, started here), a round trip per lookup
# Columns: hit ratio (the server's own counts over the run), req/s and p99 (loadtest), and the
# total Pss of every process involved (threadbare's and memcached's) after the run.
#
# Usage: bench/cache_backends.sh     env: DURATION (default 10s), WARMUP (2s), KEYS (100000),
#                                         WORK (500)
BENCH=cache_backends
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
KEYS=${KEYS:-100000}
WORK=${WORK:-500}
[[ $KEYS =~ ^[0-9]+$ && $WORK =~ ^[0-9]+$ ]] || die "KEYS and WORK must be non-negative integers"
command -v python3 >/dev/null || die "python3 not found (it reads the JSON)"
[[ -x /usr/bin/memcached ]] || die "memcached not found; make setup installs it (apt-get install memcached)"
"$SWIFT" build "${RELEASE[@]}" --product loadtest || die "swift build failed"
LOADTEST=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)/loadtest
cores=$(nproc)
all_cores="0-$((cores - 1))"

# cache_counts URL : "hits misses" from GET /cache (the whole cache, whichever worker answers).
cache_counts() {
    curl -sf "$1/cache" | python3 -c "import json, sys; c = json.load(sys.stdin); print(c['hits'], c['misses'])"
}

printf '%-22s | %9s | %9s | %9s | %10s | %s\n' "configuration" "hit ratio" "req/s" "p99 ms" "total Pss" "req/s vs best"
printf -- '-%.0s' {1..84}; echo
rows=()
row() { # LABEL SERVE-ARGS... : one configuration, measured and printed
    local label=$1; shift
    local memcached_pid="" args=("$@")
    if [[ " ${args[*]} " == *"cache.backend=memcached"* ]]; then
        local port=$((20000 + RANDOM % 10000))
        memcached -p "$port" -l 127.0.0.1 -U 0 -m 2 -t 2 $( (( $(id -u) == 0 )) && echo -u root) &
        memcached_pid=$!
        pids+=("$memcached_pid")
        args+=(--set "cache.memcached=127.0.0.1:$port")
        sleep 0.3
    fi
    start srv "$label" "$all_cores" "$TB" serve --port 0 --set cache.max_entries=10000 --set cache.max_bytes=2560000 "${args[@]}"
    local url="$srv_url/cache/item-{key}?compute=$WORK"
    "$LOADTEST" run "$url" --keys "$KEYS" --zipf 1 -c 8 -d "$WARMUP" --quiet >/dev/null || die "$label: warm-up failed"
    read -r hits0 misses0 < <(cache_counts "$srv_url")
    "$LOADTEST" run "$url" --keys "$KEYS" --zipf 1 -c 8 -d "$DURATION" --json --quiet >"$tmp/run.json" \
        || die "$label: loadtest failed"
    read -r hits1 misses1 < <(cache_counts "$srv_url")
    local total_pss
    total_pss=$(pss "$srv_pid" $memcached_pid)
    python3 - "$tmp/run.json" "$label" "$((hits1 - hits0))" "$((misses1 - misses0))" "$total_pss" >>"$tmp/rows" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
errors = {k: v for k, v in report["errors"].items() if k != "total" and v}
if errors:
    sys.exit(f"{sys.argv[2]}: errors {errors}")
hits, misses = int(sys.argv[3]), int(sys.argv[4])
print(f"{sys.argv[2]}\t{hits / max(1, hits + misses):.3f}\t{report['rps']:.0f}\t{report['latency_ms']['p99']:.2f}\t{int(sys.argv[5]) / 1e6:.1f}")
EOF
    stop_server "$srv_pid"
    [[ -z $memcached_pid ]] || kill "$memcached_pid"
}

row "gil" --mode gil
row "nogil" --mode nogil
row "prefork + local" --mode prefork --workers "$cores"
row "prefork + shm" --mode prefork --workers "$cores" --set cache.backend=shm
row "prefork + memcached" --mode prefork --workers "$cores" --set cache.backend=memcached
best=$(cut -f3 "$tmp/rows" | sort -g | tail -n1)
while IFS=$'\t' read -r label ratio rps p99 mb; do
    printf '%-22s | %8.1f%% | %9s | %9s | %7s MB | %.2f\n' "$label" "$(awk -v r="$ratio" 'BEGIN { print r * 100 }')" \
        "$rps" "$p99" "$mb" "$(awk -v a="$rps" -v b="$best" 'BEGIN { print a / b }')"
done <"$tmp/rows"
echo
echo "workload: GET /cache/item-{key}?compute=$WORK, $KEYS keys, Zipf s=1, 8 connections, $DURATION after $WARMUP;"
echo "cache: 10 000 entries and 2.56 MB per cache (prefork + local: one per worker; memcached: -m 2); $cores cores"
