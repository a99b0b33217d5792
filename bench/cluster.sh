#!/usr/bin/env bash
# cluster.sh - Threadbare beyond one machine: HOSTS hosts, each in a network namespace of its
# own with its own address, behind real nginx (config/deploy/nginx.conf, its upstream list
# rewritten to these hosts), the cache either local to each host or a memcached pool on two of
# them (cache.memcached, keys spread by ketama).
#
#   10.253.77.1      the bridge tbc-br0 in this namespace: nginx listens here, :8080
#   10.253.77.11 …   tbc-h1 … tbc-hN: threadbare (config/$MODE.yaml) on :8080; memcached on
#                    :11211 in tbc-h1 and tbc-h2
#   10.253.77.101/2  tbc-c1, tbc-c2: the two load clients whose interval logs `loadtest merge`
#                    adds up
#
# The load is a read-through cache: GET /cache/item-{key}?compute=$WORK over $KEYS keys drawn
# by Zipf's law (s = 1), $CONNECTIONS keep-alive connections to nginx (closed model). A miss
# computes the value ($WORK units of CPU under the lock) and stores it. Every step starts with
# fresh hosts and an empty memcached. Three tables:
#   1. 1 … HOSTS hosts, local caches against the pool: req/s, p99, hit ratio (the hosts' own
#      hit and miss counts over the step), from this namespace.
#   2. One host killed with SIGKILL halfway through a step (two clients, merged): the errors
#      and p99 the clients saw, and how many requests nginx retried on another host
#      (proxy_next_upstream).
#   3. Every host reloaded with HUP in turn under load, in $MODE (drain, then exec in place)
#      and in prefork (new workers beside the old): 0 errors expected.
# All of it shares this machine's cores: more hosts add no CPU, so the first table shows what
# the cache's placement costs, not how a cluster scales. Nothing leaves the machine: traffic
# goes only to the addresses above, which the script gives to namespaces it made; they are
# removed on every way out.
#
# Usage: sudo bench/cluster.sh    env: HOSTS (3), DURATION (5s per step), MODE (gil),
#                                      WORK (500), KEYS (20000), CONNECTIONS (32)
set -euo pipefail
BENCH=cluster
if [[ $(id -u) != 0 ]]; then
    echo "$BENCH: needs root to make network namespaces and veth pairs (ip netns); run: sudo bench/cluster.sh" >&2
    exit 1
fi
source "$(dirname "$0")/lib.sh"

HOSTS=${HOSTS:-3}
DURATION=${DURATION:-5s}
MODE=${MODE:-gil}
WORK=${WORK:-500}
KEYS=${KEYS:-20000}
CONNECTIONS=${CONNECTIONS:-32}
[[ $HOSTS =~ ^[0-9]+$ ]] && (( HOSTS >= 2 && HOSTS <= 9 )) || die "HOSTS must be 2 to 9 (one host killed must leave one), got '$HOSTS'"
[[ $DURATION =~ ^[0-9]+s$ ]] || die "DURATION must be whole seconds such as 5s, got '$DURATION'"
[[ $WORK =~ ^[0-9]+$ && $KEYS =~ ^[0-9]+$ && $CONNECTIONS =~ ^[0-9]+$ ]] || die "WORK, KEYS and CONNECTIONS must be integers"
[[ -f config/$MODE.yaml ]] || die "no config/$MODE.yaml"
(( CONNECTIONS >= 2 )) || die "CONNECTIONS must be at least 2 (two clients)"
for program in ip nginx memcached python3 curl; do command -v "$program" >/dev/null || die "$program not found; make setup installs it"; done
seconds=${DURATION%s}

"$SWIFT" build "${RELEASE[@]}" --product loadtest || die "swift build failed"
LOADTEST=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)/loadtest

NET=10.253.77
BRIDGE=tbc-br0
ROOT_ADDRESS=$NET.1
host_address() { echo "$NET.$((10 + $1))"; }

# Namespaces, veths and the bridge are this script's (tbc-); processes in them go first, as a
# namespace whose name is removed lives on while anything runs in it.
namespaces=()
teardown() {
    # TERM first: an nginx master killed outright leaves its workers behind, still listening.
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do stop_server "$p"; done
    wait 2>/dev/null || true
    pids=()
    local ns
    for ns in "${namespaces[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -rf "$tmp"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# A run that was killed may have left ours behind (with processes still in them, and veth
# ends here); anyone else's use of the range is refused.
for stale in $(ip netns list | awk '{print $1}' | grep '^tbc-' || true); do
    ip netns pids "$stale" | xargs -r kill -9 2>/dev/null || true
    ip netns del "$stale"
done
for stale in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^tbc-' || true); do ip link del "$stale" 2>/dev/null || true; done
if ip -4 addr show | grep -q "inet $NET\."; then die "$NET.0/24 is already in use on this machine; not touching it"; fi

ip link add "$BRIDGE" type bridge
ip addr add "$ROOT_ADDRESS/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

# make_namespace NAME ADDRESS : a namespace joined to the bridge by a veth pair.
make_namespace() {
    local name=$1 address=$2
    namespaces+=("$name")
    ip netns add "$name"
    ip link add "$name-v" type veth peer name "$name-b"
    ip link set "$name-v" netns "$name"
    ip link set "$name-b" master "$BRIDGE" up
    ip -n "$name" addr add "$address/24" dev "$name-v"
    ip -n "$name" link set "$name-v" up
    ip -n "$name" link set lo up
}
for ((i = 1; i <= HOSTS; i++)); do make_namespace "tbc-h$i" "$(host_address "$i")"; done
make_namespace tbc-c1 "$NET.101"
make_namespace tbc-c2 "$NET.102"

# --- memcached on the first two hosts ---------------------------------------------------------
pool="$(host_address 1):11211,$(host_address 2):11211"
for i in 1 2; do
    ip netns exec "tbc-h$i" memcached -l "$(host_address "$i")" -p 11211 -U 0 -m 64 -t 1 -u root &
    pids+=($!)
done
memcached_command() { # ADDRESS COMMAND : one text-protocol command, its first reply line
    python3 - "$1" "$2" <<'PYEOF'
import socket, sys
with socket.create_connection((sys.argv[1], 11211), timeout=2) as s:
    s.sendall(sys.argv[2].encode() + b"\r\n")
    print(s.recv(4096).decode().splitlines()[0])
PYEOF
}
for i in 1 2; do
    for ((tries = 0; tries < 50; tries++)); do
        memcached_command "$(host_address "$i")" version >/dev/null 2>&1 && break
        sleep 0.1
    done
    memcached_command "$(host_address "$i")" version >/dev/null || die "memcached on tbc-h$i did not answer"
done

# --- hosts --------------------------------------------------------------------------------------
host_pids=()
# start_host I MODE CACHE : threadbare in tbc-hI on its own address; CACHE is local or pool.
start_host() {
    local i=$1 mode=$2 cache=$3
    local settings=(--host "$(host_address "$i")" --port 8080 --set request_timeout=10)
    [[ $cache == pool ]] && settings+=(--set cache.backend=memcached --set "cache.memcached=$pool")
    [[ $mode == prefork ]] && settings+=(--workers 2)
    start "h$i" "threadbare on tbc-h$i" "0-$(($(nproc) - 1))" ip netns exec "tbc-h$i" "$TB" serve --config "config/$mode.yaml" "${settings[@]}"
    local pid_var="h${i}_pid"
    host_pids[$i]=${!pid_var}
}
# forget PID : it has been reaped; teardown must not signal whatever gets its number next.
forget() {
    local kept=() p
    for p in "${pids[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    pids=("${kept[@]}")
}
stop_hosts() {
    local i
    for i in "${!host_pids[@]}"; do stop_server "${host_pids[$i]}"; wait "${host_pids[$i]}" 2>/dev/null || true; forget "${host_pids[$i]}"; done
    host_pids=()
}

# --- nginx, from the deploy file --------------------------------------------------------------
# The deploy file's upstream hosts (between its "hosts begin" and "hosts end" markers) become
# ours, with the file's own server parameters, and it listens on the bridge; its pid and logs go
# to $tmp. Everything else (least_conn, keep-alive to the hosts, proxy_next_upstream, the
# timeouts) is the file's own.
nginx_pid=""
start_nginx() { # COUNT : nginx in front of hosts 1 … COUNT
    local count=$1 dir=$tmp/nginx addresses="" i
    rm -rf "$dir"
    mkdir -p "$dir/logs"
    for ((i = 1; i <= count; i++)); do addresses+="$(host_address "$i"):8080 "; done
    awk -v addresses="$addresses" '
        /# hosts begin/ { print; inside = 1; next }
        /# hosts end/   { inside = 0 }
        inside && /^[[:space:]]*server[[:space:]]/ {
            if (!done) {
                # The first server line gives the parameters (max_fails, fail_timeout, …).
                indent = $0; sub(/server.*/, "", indent)
                parameters = $0; sub(/^[[:space:]]*server[[:space:]]+[^[:space:];]+/, "", parameters)
                n = split(addresses, list, " ")
                for (j = 1; j <= n; j++) print indent "server " list[j] parameters
                done = 1
            }
            next
        }
        { print }' config/deploy/nginx.conf \
        | sed -E -e "s|^([[:space:]]*)listen[[:space:]]+[^;]*;|\1listen $ROOT_ADDRESS:8080;|" \
                 -e "s|^([[:space:]]*)pid[[:space:]]+[^;]*;|\1pid $dir/nginx.pid;|" \
                 -e "s|^([[:space:]]*)error_log[[:space:]]+[^[:space:];]+|\1error_log $dir/logs/error.log|" \
                 -e "s|^([[:space:]]*)access_log[[:space:]]+[^[:space:];]+|\1access_log $dir/logs/access.log|" >"$dir/nginx.conf"
    grep -q "server $(host_address 1):8080" "$dir/nginx.conf" || die "config/deploy/nginx.conf lacks the '# hosts begin' / '# hosts end' markers around its server lines"
    nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -g 'daemon off;' &
    nginx_pid=$!
    pids+=("$nginx_pid")
    for ((i = 0; i < 50; i++)); do curl -sf "http://$ROOT_ADDRESS:8080/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
    cat "$dir/logs/error.log" >&2
    die "nginx did not answer on $ROOT_ADDRESS:8080"
}
stop_nginx() {
    [[ -n $nginx_pid ]] || return 0
    stop_server "$nginx_pid"
    wait "$nginx_pid" 2>/dev/null || true
    forget "$nginx_pid"
    nginx_pid=""
}
# How many requests nginx sent to more than one host (the access log's upstream= lists each try).
nginx_retries() { grep -cE 'upstream=[^ ]+, ' "$tmp/nginx/logs/access.log" || true; }

# --- load ---------------------------------------------------------------------------------------
scenario() { # CONNECTIONS : the scenario file for that many connections
    cat >"$tmp/load-$1.yaml" <<EOF
target: http://$ROOT_ADDRESS:8080
connections: $1
duration: $DURATION
timeout: 15s
endpoints:
  - path: /cache/item-{key}?compute=$WORK
    keys: {count: $KEYS, zipf: 1.0}
EOF
    echo "$tmp/load-$1.yaml"
}
# host_reads COUNT : "hits misses" summed over hosts 1 … COUNT (each host's own reads).
host_reads() {
    local i total_hits=0 total_misses=0 reads
    for ((i = 1; i <= $1; i++)); do
        reads=$(curl -sf "http://$(host_address "$i"):8080/cache" | python3 -c "import json, sys; c = json.load(sys.stdin); print(c['hits'], c['misses'])") \
            || { echo "$BENCH: GET /cache on tbc-h$i failed" >&2; return 1; }
        total_hits=$((total_hits + ${reads% *}))
        total_misses=$((total_misses + ${reads#* }))
    done
    echo "$total_hits $total_misses"
}
json_field() { python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

echo "$BENCH: $HOSTS hosts ($MODE, config/$MODE.yaml) behind nginx $(nginx -v 2>&1 | sed 's|.*/||'); GET /cache/item-{key}?compute=$WORK over $KEYS keys (Zipf 1.0), $CONNECTIONS connections, $DURATION a step"
echo
echo "1. Hosts added, the cache local to each host or one memcached pool (tbc-h1 and tbc-h2)"
printf '%-6s | %-22s | %8s | %8s | %9s | %6s | %s\n' hosts cache "req/s" "p99 ms" "hit ratio" errors "req/s vs local"
for ((count = 1; count <= HOSTS; count++)); do
    local_rps=""
    for cache in local pool; do
        for i in 1 2; do memcached_command "$(host_address "$i")" flush_all >/dev/null; done
        for ((i = 1; i <= count; i++)); do start_host "$i" "$MODE" "$cache"; done
        start_nginx "$count"
        "$LOADTEST" scenario "$(scenario "$CONNECTIONS")" --json --quiet >"$tmp/run.json"
        reads=$(host_reads "$count") || die "could not read the hosts' cache counts"
        read -r hits misses <<<"$reads"
        stop_nginx
        stop_hosts
        rps=$(json_field "$tmp/run.json" 'd["rps"]')
        p99=$(json_field "$tmp/run.json" 'd["latency_ms"]["p99"]')
        errors=$(json_field "$tmp/run.json" 'd["errors"]["total"]')
        ratio=$(python3 -c "print(f'{100 * $hits / max(1, $hits + $misses):.1f}%')")
        label=$([[ $cache == local ]] && echo "local (one per host)" || echo "memcached pool (2)")
        versus=""
        if [[ $cache == local ]]; then local_rps=$rps; else versus=$(python3 -c "print(f'{$rps / max(1, $local_rps):.2f}')"); fi
        printf '%-6s | %-22s | %8.0f | %8.1f | %9s | %6s | %s\n' "$count" "$label" "$rps" "$p99" "$ratio" "$errors" "$versus"
    done
done

# two_clients ACTION : the load from tbc-c1 and tbc-c2 at once, ACTION run meanwhile in this
# shell; leaves the merged report in $tmp/merged.json.
two_clients() {
    local half=$((CONNECTIONS / 2)) file
    file=$(scenario "$half")
    rm -f "$tmp"/c1.hlog "$tmp"/c2.hlog
    ip netns exec tbc-c1 "$LOADTEST" scenario "$file" --quiet --json --interval-log "$tmp/c1.hlog" >"$tmp/c1.json" &
    local c1=$!
    ip netns exec tbc-c2 "$LOADTEST" scenario "$file" --quiet --json --interval-log "$tmp/c2.hlog" >"$tmp/c2.json" &
    local c2=$!
    "$@"
    wait "$c1" || die "the load client in tbc-c1 failed: $(cat "$tmp/c1.json")"
    wait "$c2" || die "the load client in tbc-c2 failed: $(cat "$tmp/c2.json")"
    "$LOADTEST" merge "$tmp/c1.hlog" "$tmp/c2.hlog" --json >"$tmp/merged.json"
}
kill_second_host() {
    sleep $((seconds / 2))
    kill -9 "${host_pids[2]}"
    # Reaped here, so bash reports no "Killed" of its own.
    wait "${host_pids[2]}" 2>/dev/null || true
}
# reload_every_host MODE : HUP each host in turn, the next once the last serves again.
reload_every_host() {
    local mode=$1 i before deadline
    sleep 1
    for ((i = 1; i <= HOSTS; i++)); do
        if [[ $mode == prefork ]]; then
            before=$(grep -c 'SIGHUP: reloaded' "$tmp/h$i.err" || true)
        else
            before=$(grep -c '^listening on' "$tmp/h$i.out" || true)
        fi
        kill -HUP "${host_pids[$i]}"
        for ((deadline = 0; deadline < 200; deadline++)); do
            if [[ $mode == prefork ]]; then
                (( $(grep -c 'SIGHUP: reloaded' "$tmp/h$i.err" || true) > before )) && break
            else
                (( $(grep -c '^listening on' "$tmp/h$i.out" || true) > before )) && break
            fi
            sleep 0.05
        done
        (( deadline < 200 )) || die "host $i did not come back from its HUP within 10 s"
    done
}
merged_row() { # LABEL
    local requests errors p99 max
    requests=$(json_field "$tmp/merged.json" 'd["requests"]')
    errors=$(json_field "$tmp/merged.json" 'd["errors"]["total"]')
    p99=$(json_field "$tmp/merged.json" 'd["latency_ms"]["p99"]')
    max=$(json_field "$tmp/merged.json" 'd["latency_ms"]["max"]')
    printf '%-34s | %8s | %6s | %8.1f | %8.1f | %s\n' "$1" "$requests" "$errors" "$p99" "$max" "$(nginx_retries)"
}

echo
echo "2. One host of $HOSTS killed (SIGKILL) halfway, memcached pool, two clients merged"
echo "3. Every host reloaded (HUP) in turn under load, memcached pool, two clients merged"
printf '%-34s | %8s | %6s | %8s | %8s | %s\n' "step" requests errors "p99 ms" "max ms" "retried by nginx"
for ((i = 1; i <= HOSTS; i++)); do start_host "$i" "$MODE" pool; done
start_nginx "$HOSTS"
two_clients kill_second_host
merged_row "2. $MODE, host 2 killed"
stop_nginx
stop_hosts
for mode in "$MODE" prefork; do
    for ((i = 1; i <= HOSTS; i++)); do start_host "$i" "$mode" pool; done
    start_nginx "$HOSTS"
    two_clients reload_every_host "$mode"
    merged_row "3. $mode, rolling HUP"
    stop_nginx
    stop_hosts
done
