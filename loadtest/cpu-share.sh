#!/usr/bin/env bash
# Where the CPU goes in one redis-benchmark run: straight to Redis, through
# poolside (default configuration) and through twemproxy, alternating. For
# each run: requests/s, and the CPU seconds (user + system, from
# /proc/PID/stat) that redis-benchmark, the proxy and Redis used, and their
# sum as cores busy over the run's wall time. On a machine with fewer cores
# than processes this tells a proxy that costs CPU from one that waits.
# twemproxy's configuration is compare.sh's (loadtest/lib.sh).
#
#   loadtest/cpu-share.sh [ROUNDS] [-- redis-benchmark args]
#   loadtest/cpu-share.sh 3 -- -c 50 -P 16 -n 3000000 -t get    # scenario (b), the default
#   loadtest/cpu-share.sh 3 -- -c 5000 -n 400000 -t get         # scenario (e)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
shift || true
[ "${1:-}" = "--" ] && shift
bench_args=("$@")
[ ${#bench_args[@]} -gt 0 ] || bench_args=(-c 50 -P 16 -n 3000000 -t get)
bin=target/release/poolside
[ -x "$bin" ] || { echo "cpu-share: no binary at $bin (cargo build --release)" >&2; exit 1; }
bin=$PWD/$bin
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

. loadtest/lib.sh
wait_pong() {
    for _ in $(seq 200); do
        [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    echo "cpu-share: nothing answers PING on port $1" >&2
    exit 1
}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients 15000 --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_pong "$redis_port"

ps_port=$(free_port)
(cd "$work" && exec "$bin" --profile production --upstream "redis://127.0.0.1:$redis_port" \
    --listen "127.0.0.1:$ps_port" --admin-listen "127.0.0.1:$(free_port)" 2>"$work/poolside.log") &
ps_pid=$!
pids+=("$ps_pid")
wait_pong "$ps_port"

targets=(direct poolside)
ports=("$redis_port" "$ps_port")
proxies=("" "$ps_pid")
if command -v nutcracker >/dev/null; then
    tw_port=$(free_port)
    twemproxy_config pool "$tw_port" "$redis_port" >"$work/nutcracker.yml"
    nutcracker -c "$work/nutcracker.yml" -s "$(free_port)" -o "$work/nutcracker.log" \
        -p "$work/nutcracker.pid" &
    tw_pid=$!
    pids+=("$tw_pid")
    wait_pong "$tw_port"
    targets+=(twemproxy)
    ports+=("$tw_port")
    proxies+=("$tw_pid")
fi

# CPU clock ticks (user + system) a process used so far.
ticks() { [ -n "$1" ] && awk '{ print $14 + $15 }' "/proc/$1/stat" || echo 0; }
hz=$(getconf CLK_TCK)

echo "redis-benchmark ${bench_args[*]}, $rounds round(s); CPU seconds per run:"
echo
echo "| round | target | requests/s | benchmark | proxy | Redis | cores busy |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    for i in "${!targets[@]}"; do
        proxy=${proxies[$i]}
        p0=$(ticks "$proxy")
        r0=$(ticks "$redis_pid")
        start=$(date +%s.%N)
        # The benchmark's own CPU: its rusage, as /usr/bin/time reads it.
        out=$( { /usr/bin/time -f 'CPU %U %S' redis-benchmark -p "${ports[$i]}" -q \
            "${bench_args[@]}" 2>&1 1>&3 | grep '^CPU' ; } 3>&1 | tr '\r' '\n')
        end=$(date +%s.%N)
        p1=$(ticks "$proxy")
        r1=$(ticks "$redis_pid")
        rps=$(echo "$out" | awk '/requests per second/ { v = $2 } END { print v }')
        bench=$(echo "$out" | awk '/^CPU/ { print $2 + $3 }')
        python3 - "$round" "${targets[$i]}" "$rps" "$bench" "$p0" "$p1" "$r0" "$r1" "$hz" "$start" "$end" <<'EOF'
import sys
rnd, name, rps, bench, p0, p1, r0, r1, hz, start, end = sys.argv[1:]
hz = float(hz)
proxy = (int(p1) - int(p0)) / hz
redis = (int(r1) - int(r0)) / hz
bench = float(bench or 0)
wall = float(end) - float(start)
rps = f"{float(rps):,.0f}" if rps else "failed"
proxy_cell = f"{proxy:.2f}" if name != "direct" else "-"
print(f"| {rnd} | {name} | {rps} | {bench:.2f} | {proxy_cell} | {redis:.2f} | "
      f"{(bench + proxy + redis) / wall:.2f} of {wall:.2f} s |")
EOF
    done
done
