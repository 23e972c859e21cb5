#!/usr/bin/env bash
# Memory per idle client: poolside (each pool mode) and twemproxy, in one run.
# Starts a throwaway redis-server, poolside and nutcracker on free loopback
# ports, opens N client connections to each (every one sends PING, reads
# PONG, then stays silent) and prints the growth of each process' RSS
# (VmRSS) divided by N.
#
#   loadtest/idle-memory.sh [N] [path/to/poolside]   # default 5000, target/release/poolside
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-5000}
bin=${2:-target/release/poolside}
[ -x "$bin" ] || { echo "idle-memory: no binary at $bin (cargo build --release)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
ulimit -n $((3 * n + 100)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

. loadtest/lib.sh
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients $((n + 1000)) --dir "$work" --logfile "$work/redis.log" &
pids+=($!)

# Starts a target; sets $pid and $port.
start_poolside() {
    port=$(free_port)
    (cd "$work" && exec "$bin" --profile production --upstream "redis://127.0.0.1:$redis_port" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$(free_port)" \
        --pool-mode "$1" 2>"$work/poolside-$1.log") &
    pid=$!
    pids+=("$pid")
}
start_twemproxy() {
    port=$(free_port)
    cat >"$work/nutcracker.yml" <<EOF
pool:
  listen: 127.0.0.1:$port
  servers:
    - 127.0.0.1:$redis_port:1
  redis: true
  server_connections: 1
EOF
    nutcracker -c "$work/nutcracker.yml" -s "$(free_port)" -o "$work/nutcracker.log" &
    pid=$!
    pids+=("$pid")
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

measure() {
    local name=$1
    python3 - "$port" "$n" "$pid" "$name" <<'EOF'
import socket, sys, time

port, n, pid, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def connect():
    for _ in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            if s.recv(16) == b"+PONG\r\n":
                return s
            s.close()
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"idle-memory: {name} does not answer PING")

warm = [connect() for _ in range(50)]
before = rss()
idle = [connect() for _ in range(n)]
after = rss()
print(f"| {name} | {before} | {after} | {(after - before) * 1024 / n:.0f} |")
EOF
}

command -v nutcracker >/dev/null || echo "idle-memory: nutcracker missing; twemproxy skipped" >&2
echo "$n idle clients (each sent one PING), RSS in KiB:"
echo
echo "| target | RSS before | RSS after | bytes per idle client |"
echo "|---|---|---|---|"
for mode in transaction multiplexed; do
    start_poolside "$mode"
    measure "poolside $mode"
    kill "$pid"
done
if command -v nutcracker >/dev/null; then
    start_twemproxy
    measure "twemproxy (nutcracker)"
fi
