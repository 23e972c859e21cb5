#!/usr/bin/env bash
# Measures poolside's memory and CPU under a short redis-benchmark load, to
# size the Kubernetes sidecar's requests and limits (deploy/kubernetes/README.md).
#
#   scripts/measure-sidecar.sh [path/to/poolside]   # default: target/release/poolside
#
# Starts a throwaway redis-server and poolside (production profile) on free
# loopback ports, runs each load below, and prints poolside's CPU time, average
# CPU (cores) and peak RSS (VmHWM) after each. Everything stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/poolside}
[ -x "$bin" ] || { echo "measure-sidecar: no binary at $bin (cargo build --release)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "measure-sidecar: $tool missing" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
proxy_port=$(free_port)
admin_port=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
# From the scratch directory, so that no profiles/*.toml of the work tree
# applies: the compiled-in production profile, as in the container image.
(cd "$work" && exec "$bin" --profile production --upstream "redis://127.0.0.1:$redis_port" \
    --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
    2>"$work/poolside.log") &
poolside=$!
pids+=("$poolside")

# Wait (with a deadline) until poolside answers through to Redis.
deadline=$((SECONDS + 20))
until redis-cli -p "$proxy_port" ping 2>/dev/null | grep -q PONG; do
    [ $SECONDS -lt $deadline ] || { echo "measure-sidecar: poolside did not answer" >&2; cat "$work/poolside.log" >&2; exit 1; }
    sleep 0.1
done

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$poolside/stat"; }
report() {
    local label=$1 t0=$2 c0=$3
    local t1 c1
    t1=$(date +%s.%N); c1=$(cpu_ticks)
    awk -v l="$label" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$ticks" \
        -v rss="$(awk '/VmRSS/ {print $2}' "/proc/$poolside/status")" \
        -v hwm="$(awk '/VmHWM/ {print $2}' "/proc/$poolside/status")" \
        'BEGIN { cpu = (c1 - c0) / hz; wall = t1 - t0;
                 printf "%-44s wall %6.2f s  cpu %6.2f s  avg %.2f cores  rss %6.1f MiB  peak rss %6.1f MiB\n",
                        l, wall, cpu, cpu / wall, rss / 1024, hwm / 1024 }'
}

t0=$(date +%s.%N); c0=$(cpu_ticks)
report "idle after start" "$t0" "$c0"
run() {
    local label=$1; shift
    local t0 c0
    t0=$(date +%s.%N); c0=$(cpu_ticks)
    redis-benchmark -p "$proxy_port" "$@" -q | tr '\r' '\n' | grep 'requests per second' | sed 's/^ */    /'
    report "$label" "$t0" "$c0"
}
run "-c 50 -n 100000 -t set,get" -c 50 -n 100000 -t set,get
run "-c 50 -n 100000 -t set,get -P 16" -c 50 -n 100000 -t set,get -P 16
run "-c 1000 -n 100000 -t set,get" -c 1000 -n 100000 -t set,get
run "-c 2000 -n 100000 -t set,get" -c 2000 -n 100000 -t set,get
echo "pool after load: $(curl -s "http://127.0.0.1:$admin_port/pool/status" 2>/dev/null || echo '(curl missing)')"
