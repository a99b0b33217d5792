# lib.sh - what every bench/ script needs: wrk, a release build, servers started and stopped.
# Source it after setting BENCH (the script's name, for messages). Provides: die, $tmp (removed
# on exit), $TB (the release threadbare), start, stop_server, wrk_rps.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
RELEASE=(-c release --static-swift-stdlib)

die() { echo "$BENCH: $*" >&2; exit 1; }

command -v taskset >/dev/null || die "taskset not found (package util-linux)"
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

# start VAR LABEL CORES CMD... : runs CMD on CORES (taskset list, e.g. 0 or 0,1), waits for its
# line "listening on http://HOST:PORT", sets ${VAR}_pid and ${VAR}_url.
start() {
    local name=$1 label=$2 cores=$3; shift 3
    taskset -c "$cores" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
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

# stop_server PID : SIGTERM, then wait for it (a server that ignores it is killed after 5 s).
stop_server() {
    kill "$1" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 50; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}

# wrk_rps URL DURATION [WRK OPTIONS...] : runs wrk (default -t1 -c64) behind $WRK_PREFIX (e.g.
# taskset -c 1), sets $rps and leaves its output in $tmp/wrk.out; any error, non-2xx answer or
# socket error ends the script.
WRK_PREFIX=()
wrk_rps() {
    local url=$1 duration=$2; shift 2
    local options=("$@")
    (( ${#options[@]} )) || options=(-t1 -c64)
    local out="$tmp/wrk.out"
    "${WRK_PREFIX[@]}" wrk "${options[@]}" -d"$duration" --latency "$url" >"$out" 2>&1 || {
        cat "$out" >&2; die "wrk failed against $url"; }
    if grep -q 'Non-2xx or 3xx responses' "$out"; then
        cat "$out" >&2; die "non-2xx responses from $url"
    fi
    if grep -q 'Socket errors' "$out"; then
        cat "$out" >&2; die "socket errors against $url"
    fi
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -n $rps ]] && awk -v r="$rps" 'BEGIN { exit !(r > 0) }' || {
        cat "$out" >&2; die "no requests completed against $url"; }
}

# scaling_header TITLE : the header of a table of scaling_row lines.
scaling_header() {
    printf "%-28s" "$1"
    local c
    for c in 1 2 4 8; do printf " | %8s" "$c conn"; done
    printf " | %s\n" "8 / 1"
    printf -- '-%.0s' {1..86}; echo
}

# scaling_row LABEL PATH SERVE-ARGS... : starts threadbare on every core with SERVE-ARGS and
# prints LABEL, PATH's req/s with wrk -t1 at 1, 2, 4 and 8 connections (each for $DURATION,
# after a 1 s warm-up), and the 8-connection rate over the 1-connection rate.
scaling_row() {
    local label=$1 path=$2 first="" c; shift 2
    start srv "$label" "0-$(($(nproc) - 1))" "$TB" serve --port 0 "$@"
    wrk_rps "$srv_url$path" 1s -t1 -c1
    printf "%-28s" "$label"
    for c in 1 2 4 8; do
        wrk_rps "$srv_url$path" "$DURATION" -t1 -c"$c"
        [[ -n $first ]] || first=$rps
        printf " | %8.0f" "$rps"
    done
    awk -v a="$rps" -v b="$first" 'BEGIN { printf " | %.2f\n", a / b }'
    stop_server "$srv_pid"
}

# pss PID... : total Pss in bytes of the processes and their children.
pss() {
    local total=0 pid child kb
    for pid in "$@"; do
        for child in "$pid" $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
            kb=$(awk '/^Pss:/ { print $2 }' "/proc/$child/smaps_rollup" 2>/dev/null || echo 0)
            total=$((total + ${kb:-0}))
        done
    done
    echo $((total * 1024))
}

# median VALUES : the median of space-separated numbers.
median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 }
    END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
