#!/usr/bin/env bash
# soak.sh - every mode at about 70% of its capacity for a long while: does anything fail, and
# does memory keep growing?
#
# For each mode (its file in config/): a 5 s closed-model run of the mix below at 16
# connections finds its capacity; then an open-model run at 70% of it lasts $SOAK_DURATION.
# The mix, by weight: /io?ms=2 (4), /cpu?work=200 (2), read-through
# /cache/item-{key}?compute=100 over 20 000 Zipf keys (4). RSS (all of a mode's processes) is
# taken after the first minute of the soak, once the caches have filled, and at its end.
# Targets: 0 errors, RSS growth under 5%.
#
# Usage: bench/soak.sh     env: SOAK_DURATION (default 10m), MODES (default "gil subinterpreters prefork nogil")
BENCH=soak
source "$(dirname "$0")/lib.sh"

SOAK_DURATION=${SOAK_DURATION:-10m}
MODES=${MODES:-"gil subinterpreters prefork nogil"}
command -v python3 >/dev/null || die "python3 not found (it reads the JSON)"
"$SWIFT" build "${RELEASE[@]}" --product loadtest || die "swift build failed"
LOADTEST=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)/loadtest
seconds=$(python3 -c "
import re, sys
m = re.fullmatch(r'(\d+(?:\.\d+)?)(ms|s|m|h)', '$SOAK_DURATION') or sys.exit('SOAK_DURATION: expected e.g. 90s or 10m')
print(float(m[1]) * {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600}[m[2]])") || die "bad SOAK_DURATION '$SOAK_DURATION'"
settle=$(python3 -c "print(min(60, $seconds / 4))")

# rss PID : resident bytes of the process and its children.
rss() {
    local total=0 pid kb
    for pid in "$1" $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo $((total * 1024))
}

printf '%-16s | %9s | %9s | %9s | %7s | %9s | %9s | %7s\n' mode capacity "soak rate" requests errors "RSS at ${settle%.*}s" "RSS end" growth
printf -- '-%.0s' {1..98}; echo
for mode in $MODES; do
    [[ -f config/$mode.yaml ]] || die "no config/$mode.yaml"
    start srv "$mode" "0-$(($(nproc) - 1))" "$TB" serve --config "config/$mode.yaml" --port 0
    urls=("$srv_url/io?ms=2=4" --url "$srv_url/cpu?work=200=2" --url "$srv_url/cache/item-{key}?compute=100=4" --keys 20000 --zipf 1)
    "$LOADTEST" run "${urls[@]}" -c 16 -d 5s --warmup 1s --json --quiet >"$tmp/capacity.json" || die "$mode: capacity run failed"
    capacity=$(python3 -c "import json; print(round(json.load(open('$tmp/capacity.json'))['rps']))")
    rate=$((capacity * 7 / 10))
    "$LOADTEST" run "${urls[@]}" --rate "$rate" -c 64 -d "$SOAK_DURATION" --json --quiet >"$tmp/soak.json" &
    load=$!
    sleep "$settle"
    rss_settled=$(rss "$srv_pid")
    wait "$load" || die "$mode: soak run failed"
    rss_end=$(rss "$srv_pid")
    python3 - "$tmp/soak.json" "$mode" "$capacity" "$rate" "$rss_settled" "$rss_end" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
mode, capacity, rate, settled, end = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
errors = sum(v for k, v in report["errors"].items() if k != "total")
print(f"{mode:<16} | {capacity:>9} | {rate:>9} | {report['requests']:>9} | {errors:>7} | {settled / 1e6:>7.1f}MB | {end / 1e6:>7.1f}MB | {100 * (end - settled) / settled:>+6.1f}%")
if errors:
    print(f"  errors: {report['errors']}")
EOF
    stop_server "$srv_pid"
done
echo
echo "open model at 70% of each mode's closed-model capacity (16 connections), for $SOAK_DURATION; $(nproc) cores"
