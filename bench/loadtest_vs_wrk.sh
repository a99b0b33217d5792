#!/usr/bin/env bash
# loadtest_vs_wrk.sh - can loadtest generate as much load as wrk?
#
# Against the same server (the C evhttp server from bench/, threadbare's /health, then nginx
# with TLS for https://), pinned to core 0, runs wrk and loadtest in turn on core 1 with the same
# threads, connections and duration, and prints both rates, their ratio (target: loadtest >=
# 1.0 x wrk), and each client's CPU time per request (user + system). Over TLS neither client
# checks nginx's self-signed certificate (wrk never does; loadtest is given --insecure).
#
# Usage: bench/loadtest_vs_wrk.sh     env: DURATION (default 5s), ROUNDS (3), CONNECTIONS (64)
BENCH=loadtest_vs_wrk
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
(( $(nproc) >= 2 )) || die "needs at least 2 cores (server on core 0, clients on core 1)"
command -v cc >/dev/null || die "cc not found (apt-get install -y build-essential)"
"$SWIFT" build "${RELEASE[@]}" --product loadtest || die "swift build of loadtest failed"
LT=$("$SWIFT" build "${RELEASE[@]}" --show-bin-path)/loadtest
cc -O2 -o "$tmp/evhttp_ok" bench/evhttp_ok.c $(pkg-config --cflags --libs libevent) \
    || die "could not compile bench/evhttp_ok.c"

start c "C server" 0 "$tmp/evhttp_ok" 127.0.0.1 0
start tb threadbare 0 "$TB" serve --port 0 --loops 1

# nginx with TLS, one worker on core 0, a P-256 certificate made here, keep-alive unlimited.
if ! [[ -x /usr/sbin/nginx ]] || ! command -v openssl >/dev/null; then
    if [[ $(id -u) == 0 ]]; then
        apt-get install -y nginx openssl || { apt-get update && apt-get install -y nginx openssl; } || die "could not install nginx"
    else
        die "nginx or openssl not found; install them with: sudo apt-get install -y nginx openssl"
    fi
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/tls.key" -out "$tmp/tls.pem" \
    -days 2 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null || die "openssl could not make a certificate"
tls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $tmp/nginx/nginx.pid; error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off; keepalive_requests 100000000;
    client_body_temp_path $tmp/nginx/body; proxy_temp_path $tmp/nginx/proxy; fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi; scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$tls_port ssl;
        ssl_certificate $tmp/tls.pem; ssl_certificate_key $tmp/tls.key;
        location / { return 200 "ok\n"; }
    }
}
EOF
taskset -c 0 /usr/sbin/nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" >"$tmp/nginx.out" 2>&1 &
pids+=("$!")
for ((i = 0; i < 50; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null && break
    sleep 0.1
done
(( i < 50 )) || { cat "$tmp/nginx/error.log" >&2; die "nginx did not start"; }
tls_url=https://127.0.0.1:$tls_port

# measure CLIENT URL : sets $rate and $cpu_us (client CPU microseconds per request).
measure() {
    local client=$1 url=$2 out="$tmp/client.out" times="$tmp/client.time"
    TIMEFORMAT='%U %S'
    if [[ $client == wrk ]]; then
        { time taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$url" >"$out"; } 2>"$times" || die "wrk failed"
        rate=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        requests=$(awk '/requests in/ { print $1 }' "$out")
    else
        local insecure=()
        [[ $url == https://* ]] && insecure=(--insecure)
        { time taskset -c 1 "$LT" run "$url" -t 1 -c "$CONNECTIONS" -d "$DURATION" "${insecure[@]}" --json >"$out"; } 2>"$times" || die "loadtest failed"
        rate=$(python3 -c "import json; print(json.load(open('$out'))['rps'])")
        requests=$(python3 -c "import json; print(json.load(open('$out'))['requests'])")
    fi
    cpu_us=$(awk -v r="$requests" '{ printf "%.2f", ($1 + $2) * 1e6 / r }' "$times")
}

echo "clients on core 1: wrk -t1 -c$CONNECTIONS -d$DURATION and loadtest run -t 1 -c $CONNECTIONS -d $DURATION; servers on core 0"
echo "Each round runs wrk then loadtest; the ratios are the medians of the rounds' own ratios, so"
echo "drift between rounds cancels. When both clients saturate the server the rate ratio sits near"
echo "1.0, and the CPU time per request is what tells the clients apart."
echo
printf "%-22s | %10s | %10s | %11s | %10s | %10s | %14s\n" server "wrk req/s" "loadtest" "rate ratio" "wrk µs/req" "lt µs/req" "CPU wrk/lt"
printf -- '-%.0s' {1..102}; echo
for target in "C evhttp:$c_url/health" "threadbare /health:$tb_url/health" "nginx https:$tls_url/"; do
    name=${target%%:http*}
    url=${target#"$name":}
    w=() l=() wc=() lc=() ratios=() cpu_ratios=()
    for ((round = 0; round < ROUNDS; round++)); do
        measure wrk "$url"; w+=("$rate"); wc+=("$cpu_us")
        measure loadtest "$url"; l+=("$rate"); lc+=("$cpu_us")
        ratios+=("$(awk -v a="${l[-1]}" -v b="${w[-1]}" 'BEGIN { printf "%.4f", a / b }')")
        cpu_ratios+=("$(awk -v a="${wc[-1]}" -v b="${lc[-1]}" 'BEGIN { printf "%.4f", a / b }')")
    done
    awk -v n="$name" -v w="$(median "${w[*]}")" -v l="$(median "${l[*]}")" -v r="$(median "${ratios[*]}")" \
        -v wc="$(median "${wc[*]}")" -v lc="$(median "${lc[*]}")" -v cr="$(median "${cpu_ratios[*]}")" 'BEGIN {
        printf "%-22s | %10.0f | %10.0f | %11.2f | %10.2f | %10.2f | %14.2f\n", n, w, l, r, wc, lc, cr }'
done
echo
echo "target: rate ratio >= 1.0 (loadtest generates at least wrk's load); CPU wrk/lt > 1 means loadtest spends less per request"
