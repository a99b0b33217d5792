#!/usr/bin/env bash
# http_core.sh - Threadbare's core HTTP speed, judged against plain C evhttp.
#
# Builds Threadbare (release) and bench/evhttp_ok.c, runs both pinned to
# core 0 and wrk pinned to core 1, in interleaved rounds, and prints the
# median requests/sec of each target and its ratio to the C server measured
# in the same run. Targets: /health >= 0.95 of C, /cpu?work=0 >= 0.60 of C,
# idle RSS <= 20 MB. Missing a target is reported, not an error; a server
# that does not start, a failing wrk or any non-2xx response is (exit != 0).
#
# Usage: bench/http_core.sh        env: DURATION (default 10s), ROUNDS (3)
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
RELEASE=(-c release --static-swift-stdlib)

die() { echo "http_core: $*" >&2; exit 1; }

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
(( $(nproc) >= 2 )) || die "needs at least 2 cores (servers on core 0, wrk on core 1)"
command -v taskset >/dev/null || die "taskset not found (package util-linux)"
command -v cc >/dev/null || die "cc not found (apt-get install -y build-essential)"
if ! command -v wrk >/dev/null; then
    if [[ $(id -u) == 0 ]]; then
        apt-get install -y wrk || { apt-get update && apt-get install -y wrk; } \
            || die "could not install wrk"
    else
        die "wrk not found; install it with: sudo apt-get install -y wrk"
    fi
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

"$SWIFT" build "${RELEASE[@]}" --product threadbare || die "swift build failed"
TB=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)/threadbare
[[ -x $TB ]] || die "$TB missing or not executable after build"
cc -O2 -o "$tmp/evhttp_ok" bench/evhttp_ok.c $(pkg-config --cflags --libs libevent) \
    || die "could not compile bench/evhttp_ok.c (is libevent-dev installed?)"

# start VAR LABEL CMD... : runs CMD on core 0, waits for its line
# "listening on http://HOST:PORT", sets ${VAR}_pid and ${VAR}_url.
start() {
    local name=$1 label=$2; shift 2
    taskset -c 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    local pid=$! line="" i
    pids+=("$pid")
    for ((i = 0; i < 100; i++)); do
        line=$(grep -m1 '^listening on http://' "$tmp/$name.out" || true)
        [[ -n $line ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ $line =~ ^listening\ on\ (http://.*:([0-9]+))$ ]] || {
        tail -n 20 "$tmp/$name.err" >&2
        kill -0 "$pid" 2>/dev/null \
            || die "$label exited before listening: $*"
        die "$label did not print 'listening on http://HOST:PORT' within 10 s: $*"
    }
    printf -v "${name}_pid" %s "$pid"
    printf -v "${name}_url" %s "${BASH_REMATCH[1]}"
}

start c "C server" "$tmp/evhttp_ok" 127.0.0.1 0
# A second, identical C server measured in the same rounds: its ratio to the first is the
# noise floor of this machine, to read the other ratios against.
start c2 "second C server" "$tmp/evhttp_ok" 127.0.0.1 0
start tb threadbare "$TB" serve --port 0 --loops 1

# Idle RSS before any request reaches threadbare.
rss_mb=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$tb_pid/status")
[[ -n $rss_mb ]] || die "could not read VmRSS of threadbare (pid $tb_pid)"

WRK=(taskset -c 1 wrk -t1 -c64)
names=("C evhttp /health" "threadbare /health" "threadbare /cpu?work=0" "C evhttp again (noise)")
urls=("$c_url/health" "$tb_url/health" "$tb_url/cpu?work=0" "$c2_url/health")

# bench URL DURATION : runs wrk, sets $rps; any error ends the script.
bench() {
    local out="$tmp/wrk.out"
    "${WRK[@]}" -d"$2" --latency "$1" >"$out" 2>&1 || {
        cat "$out" >&2; die "wrk failed against $1"; }
    if grep -q 'Non-2xx or 3xx responses' "$out"; then
        cat "$out" >&2; die "non-2xx responses from $1"
    fi
    if grep -q 'Socket errors' "$out"; then
        cat "$out" >&2; die "socket errors against $1"
    fi
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -n $rps ]] && awk -v r="$rps" 'BEGIN { exit !(r > 0) }' || {
        cat "$out" >&2; die "no requests completed against $1"; }
}

echo "machine: $(nproc) cores, $(uname -m); servers pinned with taskset -c 0"
echo "wrk:     ${WRK[*]} -d$DURATION --latency URL"
echo "         $(wrk -v 2>&1 | head -n1 || true); 2s warm-up per target, $ROUNDS interleaved rounds, median"
echo

for url in "${urls[@]}"; do bench "$url" 2s; done
r0=() r1=() r2=() r3=()
for ((round = 1; round <= ROUNDS; round++)); do
    bench "${urls[0]}" "$DURATION"; r0+=("$rps")
    bench "${urls[1]}" "$DURATION"; r1+=("$rps")
    bench "${urls[2]}" "$DURATION"; r2+=("$rps")
    bench "${urls[3]}" "$DURATION"; r3+=("$rps")
    echo "round $round/$ROUNDS: C ${r0[-1]}  threadbare /health ${r1[-1]}  /cpu?work=0 ${r2[-1]}  C again ${r3[-1]}"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
m0=$(median "${r0[@]}"); m1=$(median "${r1[@]}"); m2=$(median "${r2[@]}"); m3=$(median "${r3[@]}")

row() { # name median target
    awk -v n="$1" -v m="$2" -v c="$m0" -v t="$3" 'BEGIN {
        r = m / c
        tgt = (t == "") ? "-" : sprintf("≥ %.2f %s", t, (r >= t) ? "ok" : "MISSED")
        printf "%-24s | %14.0f | %10.2f | %s\n", n, m, r, tgt }'
}
echo
printf "%-24s | %14s | %10s | %s\n" target "req/s (median)" "ratio vs C" "target ratio"
printf -- '-%.0s' {1..72}; echo
row "${names[0]}" "$m0" ""
row "${names[1]}" "$m1" 0.95
row "${names[2]}" "$m2" 0.60
row "${names[3]}" "$m3" ""
echo
awk -v r="$rss_mb" 'BEGIN { printf "idle RSS threadbare: %.1f MB (target ≤ 20 MB) %s\n",
    r, (r <= 20) ? "ok" : "MISSED" }'
