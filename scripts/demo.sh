#!/usr/bin/env bash
# Runs poolside in front of a Redis and sends a command through it.
#  1. installs redis-server and redis-cli when missing;
#  2. uses the Redis answering on 6379, or starts a throwaway one there
#     (no persistence, in a temp dir);
#  3. builds poolside (release) and starts it on 6380;
#  4. waits until poolside answers PING, then SET/GET through it;
#  5. keeps poolside in the foreground until Ctrl-C, then stops the Redis it
#     started and removes its temp dir.
# A Redis on 6379 with requirepass: export REDIS_PASSWORD first.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=6379
poolside_port=6380
target_dir=${CARGO_TARGET_DIR:-target}

redis_pid=""
poolside_pid=""
workdir=""

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    # Order: poolside first (it drains towards Redis), then Redis, then files.
    if [ -n "$poolside_pid" ] && kill -0 "$poolside_pid" 2>/dev/null; then
        kill -TERM "$poolside_pid" 2>/dev/null || true
        wait "$poolside_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_pid" ]; then
        echo "demo: stopping the Redis started on $redis_port" >&2
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [ -n "$workdir" ]; then
        rm -rf "$workdir"
    fi
}
trap cleanup EXIT

# PING on `port`; the upstream may need REDIS_PASSWORD, poolside does not.
ping() {
    local port=$1
    if [ "$port" = "$redis_port" ] && [ -n "${REDIS_PASSWORD:-}" ]; then
        REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -p "$port" ping 2>/dev/null || true
    else
        redis-cli -p "$port" ping 2>/dev/null || true
    fi
}

# Polls PING every 100 ms until PONG, the deadline, or the death of `pid`.
wait_for_pong() {
    local port=$1 name=$2 pid=$3 seconds=$4
    local deadline=$((SECONDS + seconds))
    until [ "$(ping "$port")" = "PONG" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "demo: $name exited before answering on port $port" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "demo: $name did not answer PING on port $port within ${seconds}s" >&2
            return 1
        fi
        sleep 0.1
    done
}

bash scripts/install-deps.sh redis

reply=$(ping "$redis_port")
if [ "$reply" = "PONG" ]; then
    echo "demo: using the Redis already answering on $redis_port" >&2
elif [ -n "$reply" ]; then
    echo "demo: the Redis on $redis_port answered '$reply' (set REDIS_PASSWORD?)" >&2
    exit 1
else
    workdir=$(mktemp -d)
    echo "demo: starting a throwaway redis-server on $redis_port in $workdir" >&2
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$workdir" --logfile "$workdir/redis.log" &
    redis_pid=$!
    wait_for_pong "$redis_port" redis-server "$redis_pid" 10
fi

if [ -n "$(redis-cli -p "$poolside_port" ping 2>/dev/null || true)" ]; then
    echo "demo: something already answers on $poolside_port; stop it first" >&2
    exit 1
fi

echo "demo: building poolside (release)" >&2
cargo build --release --bin poolside

# The binary itself rather than `cargo run`, so signals reach poolside.
"$target_dir/release/poolside" \
    --listen "127.0.0.1:$poolside_port" \
    --upstream "redis://127.0.0.1:$redis_port" &
poolside_pid=$!
# A background job ignores SIGINT in a script: forward Ctrl-C (and a closed
# terminal) as SIGTERM.
trap 'kill -TERM "$poolside_pid" 2>/dev/null || true' INT TERM HUP
wait_for_pong "$poolside_port" poolside "$poolside_pid" 30

echo "\$ redis-cli -p $poolside_port set greeting hello"
redis-cli -p "$poolside_port" set greeting hello
echo "\$ redis-cli -p $poolside_port get greeting"
redis-cli -p "$poolside_port" get greeting
echo "demo: poolside is serving on 127.0.0.1:$poolside_port (admin: http://127.0.0.1:9180/pool/status); Ctrl-C stops it" >&2

status=0
wait "$poolside_pid" || status=$?
# A trapped Ctrl-C interrupts `wait`; wait again while poolside drains.
if kill -0 "$poolside_pid" 2>/dev/null; then
    status=0
    wait "$poolside_pid" || status=$?
fi
poolside_pid=""
exit "$status"
