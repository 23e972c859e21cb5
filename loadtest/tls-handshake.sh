#!/usr/bin/env bash
# TLS handshake cost with short-lived clients: each connects, runs one GET and
# disconnects (redis-benchmark -k 0). Compared:
#   direct    client --TLS--> Redis               (a handshake per client)
#   poolside  client --TCP--> poolside --TLS (pooled, handshake once)--> Redis
# Prints both rates and poolside/direct. Bounded: REQUESTS per run (default
# 20000), CLIENTS concurrent (default 20). Everything stays on 127.0.0.1.
#
#   loadtest/tls-handshake.sh
#   REQUESTS=5000 CLIENTS=10 loadtest/tls-handshake.sh
#   TLS_BENCH_BIN=target/release/poolside loadtest/tls-handshake.sh   # skip the build
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${REQUESTS:-20000}
clients=${CLIENTS:-20}
for tool in redis-server redis-benchmark openssl; do
    command -v "$tool" >/dev/null || { echo "tls-handshake: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
if [ -z "${TLS_BENCH_BIN:-}" ]; then
    cargo build --release --quiet --bin poolside
    TLS_BENCH_BIN=${CARGO_TARGET_DIR:-target}/release/poolside
fi
TLS_BENCH_BIN=$(realpath "$TLS_BENCH_BIN")

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A port nothing listens on (bash's /dev/tcp connect fails), below the
# kernel's ephemeral range so no outgoing connection holds it.
free_port() {
    local port
    while :; do
        port=$((10000 + RANDOM % 22000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

# Waits until something listens on port $1, while process $2 lives.
wait_port() {
    for _ in $(seq 500); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

# 1. A CA and a server certificate for localhost / 127.0.0.1 (P-256).
(
    cd "$work"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=poolside bench CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
        -extfile san.ext -out server.pem 2>/dev/null
)

# 2. Redis with TLS only, and poolside in front of it.
# The port may be taken between the check and the bind: then try another.
for attempt in 1 2 3 4 5; do
    redis_port=$(free_port)
    redis-server --port 0 --bind 127.0.0.1 --tls-port "$redis_port" \
        --tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key" \
        --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no \
        --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
    pids+=($!)
    wait_port "$redis_port" $! && break
    [ "$attempt" -lt 5 ] || { echo "tls-handshake: redis-server did not start" >&2; tail -n 5 "$work/redis.log" >&2; exit 1; }
done

# poolside binds port 0 and logs where it listens.
# From $work: no profiles/ file there, so the compiled-in defaults apply.
(cd "$work" && exec env POOLSIDE_TLS__CA_FILE="$work/ca.pem" RUST_LOG=info "$TLS_BENCH_BIN" \
    --profile development --upstream "rediss://127.0.0.1:$redis_port" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json \
    >"$work/poolside.log" 2>&1) &
pids+=($!)
poolside_port=
for _ in $(seq 500); do
    poolside_port=$(sed -n 's/.*"message":"poolside started".*"listen":"127.0.0.1:\([0-9]*\)".*/\1/p' \
        "$work/poolside.log" | head -1)
    [ -n "$poolside_port" ] && break
    sleep 0.02
done
[ -n "$poolside_port" ] || { echo "tls-handshake: poolside did not start" >&2; cat "$work/poolside.log" >&2; exit 1; }

# 3. The same workload both ways; a warm-up run fills poolside's pool first.
rate() {
    # "GET: 12345.67 requests per second, p50=..." -> 12345.67
    redis-benchmark "$@" -k 0 -t get -n "$requests" -c "$clients" -q 2>/dev/null |
        tr '\r' '\n' | awk '/^GET:/ { print $2 }' | tail -1
}
rate -p "$poolside_port" >/dev/null
direct=$(rate -p "$redis_port" --tls --cacert "$work/ca.pem")
through=$(rate -p "$poolside_port")
echo "connect + GET + disconnect, $requests requests, $clients clients:"
echo "  direct over TLS:                 $direct req/s"
echo "  through poolside (TLS upstream): $through req/s"
awk -v d="$direct" -v p="$through" 'BEGIN { printf "  poolside / direct:               %.2f\n", p / d }'
