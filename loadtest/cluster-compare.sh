#!/usr/bin/env bash
# A Redis Cluster straight (redis-benchmark --cluster) vs through poolside,
# in one run on this machine: starts three cluster-enabled redis-servers
# (primaries, no replicas) and poolside on free loopback ports, runs the
# scenarios interleaved over rounds and prints medians of SET and GET with
# the ratio to the direct cluster client, and the most connections any node
# saw during each run (sampled every 100 ms).
#
#   loadtest/cluster-compare.sh                 # (a) and (c), 3 rounds
#   loadtest/cluster-compare.sh --rounds 1 --n 20000
#   loadtest/cluster-compare.sh --flags '--worker-threads 2'   # poolside's flags
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=3 n=300000 build=1 flags=
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift ;;
    --n) n=$2; shift ;;
    --no-build) build=0 ;;
    --flags) flags=$2; shift ;;
    *) echo "cluster-compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$build" = 1 ]; then
    (cd "$ROOT" && cargo build --release --bin poolside >&2)
fi
poolside="${CARGO_TARGET_DIR:-$ROOT/target}/release/poolside"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
. "$ROOT/loadtest/lib.sh"
# A node's cluster bus listens on its port + 10000: keep both under 65536.
node_port() {
    local port
    port=$(free_port)
    while [ "$port" -gt 55000 ]; do port=$(free_port); done
    echo "$port"
}

ports=()
for i in 1 2 3; do
    port=$(node_port)
    ports+=("$port")
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --maxclients 10000 \
        --cluster-enabled yes --cluster-config-file "$work/nodes-$port.conf" --dir "$work" \
        --logfile "$work/redis-$port.log" &
    pids+=($!)
done
for i in 0 1 2; do
    until redis-cli -p "${ports[$i]}" ping >/dev/null 2>&1; do
        kill -0 "${pids[$i]}" 2>/dev/null || { cat "$work/redis-${ports[$i]}.log" >&2; exit 1; }
        sleep 0.05
    done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-yes >/dev/null
for port in "${ports[@]}"; do
    until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
listen=$(free_port) admin=$(free_port)
seeds=$(printf '127.0.0.1:%s,' "${ports[@]}")
# shellcheck disable=SC2086 # $flags is meant to be word-split
"$poolside" $flags --listen "127.0.0.1:$listen" --admin-listen "127.0.0.1:$admin" \
    --upstream "redis+cluster://${seeds%,}" >"$work/poolside.log" 2>&1 &
pids+=($!)
until redis-cli -p "$listen" set warm up >/dev/null 2>&1; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/poolside.log" >&2; exit 1; }
    sleep 0.05
done

# The most connected_clients any node reports while "$@" runs (minus the sampler).
max_node_clients() {
    local max=0 c
    "$@" &
    local bench=$!
    while kill -0 "$bench" 2>/dev/null; do
        for port in "${ports[@]}"; do
            c=$(redis-cli -p "$port" info clients | tr -d '\r' | awk -F: '/^connected_clients/{print $2}')
            [ "${c:-0}" -gt "$max" ] && max=$c
        done
        sleep 0.1
    done
    wait "$bench"
    echo $((max - 1))
}

# bench TARGET CLIENTS: "set get conns" (requests per second; -q --csv).
bench() {
    local target=$1 clients=$2 out="$work/bench.csv" conns
    local args=(-n "$n" -c "$clients" -t set,get -r 100000 --csv)
    case "$target" in
    direct) conns=$(max_node_clients sh -c "redis-benchmark -p ${ports[0]} --cluster ${args[*]} >$out") ;;
    poolside) conns=$(max_node_clients sh -c "redis-benchmark -p $listen ${args[*]} >$out") ;;
    esac
    local set get
    set=$(awk -F, '$1=="\"SET\""{gsub(/"/,"",$2); print $2}' "$out")
    get=$(awk -F, '$1=="\"GET\""{gsub(/"/,"",$2); print $2}' "$out")
    echo "$set $get $conns"
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

echo "| scenario | target | SET rps | GET rps | ratio SET/GET | max connections per node |"
echo "|---|---|---|---|---|---|"
for scenario in a c; do
    clients=50
    [ "$scenario" = c ] && clients=1000
    : >"$work/direct" && : >"$work/poolside"
    for _ in $(seq "$rounds"); do
        for target in direct poolside; do
            bench "$target" "$clients" >>"$work/$target"
        done
    done
    d_set=$(cut -d' ' -f1 "$work/direct" | median) d_get=$(cut -d' ' -f2 "$work/direct" | median)
    for target in direct poolside; do
        set=$(cut -d' ' -f1 "$work/$target" | median)
        get=$(cut -d' ' -f2 "$work/$target" | median)
        conns=$(cut -d' ' -f3 "$work/$target" | median)
        ratio=$(awk -v s="$set" -v g="$get" -v ds="$d_set" -v dg="$d_get" \
            'BEGIN {printf "%.2f / %.2f", s/ds, g/dg}')
        echo "| ($scenario) -c $clients | $target | $set | $get | $ratio | $conns |"
    done
done
echo
echo "$(nproc) cores; redis $(redis-server --version | awk '{print $3}'); -n $n, $rounds round(s), medians;" \
    "command: loadtest/cluster-compare.sh --rounds $rounds --n $n${flags:+ --flags '$flags'}"
