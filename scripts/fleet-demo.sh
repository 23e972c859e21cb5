#!/usr/bin/env bash
# The fleet's view, by hand: three poolside processes on one Redis.
#  1. starts a throwaway redis-server on $REDIS_PORT (default 6390) with
#     `--maxclients $MAXCLIENTS` (default 64);
#  2. starts three poolside processes (POD_NAME web-a, web-b, web-c,
#     development profile: max_connections 20) on free ports, with
#     min_idle 0 and a control-plane refresh every second;
#  3. sends one SET through each, waits until web-a's /pool/status shows
#     three instances, and prints its `fleet` object and recommendations,
#     then Redis' own CLIENT LIST names, counted;
#  4. stops the poolside processes, then Redis.
# Needs redis-server, redis-cli, curl and jq; poolside from
# $POOLSIDE (default: target/release/poolside, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=${REDIS_PORT:-6390}
maxclients=${MAXCLIENTS:-64}
poolside=${POOLSIDE:-${CARGO_TARGET_DIR:-target}/release/poolside}
pods=(web-a web-b web-c)
workdir=$(mktemp -d)
pids=()
redis_started=""

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    # Order: the poolside processes first, then Redis, then files.
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$redis_started" ]; then
        redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

# Polls `command` every 0.1 s for up to 10 s.
wait_for() {
    local what=$1
    shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "fleet-demo: timed out waiting for $what" >&2
    exit 1
}

if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    echo "fleet-demo: something already answers on port $redis_port" >&2
    exit 1
fi
if [ ! -x "$poolside" ]; then
    cargo build --release --bin poolside
fi
redis-server --port "$redis_port" --bind 127.0.0.1 --maxclients "$maxclients" \
    --save '' --appendonly no --daemonize yes --dir "$workdir" \
    --logfile "$workdir/redis.log"
redis_started=yes
wait_for "Redis" redis-cli -p "$redis_port" ping

for pod in "${pods[@]}"; do
    env -i PATH="$PATH" POD_NAME="$pod" REDIS_URL="redis://127.0.0.1:$redis_port" \
        POOLSIDE_POOL__MIN_IDLE=0 POOLSIDE_POOL__HEALTH_CHECK_INTERVAL_SECS=1 \
        "$poolside" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json \
        2>"$workdir/$pod.log" &
    pids+=("$!")
done

# The address `field` (listen or admin) that `pod` logged at start.
address() {
    jq -r --arg field "$2" 'select(.fields.message == "poolside started") | .fields[$field]' \
        "$workdir/$1.log" 2>/dev/null | head -n 1
}
for pod in "${pods[@]}"; do
    wait_for "$pod to start" grep -q '"poolside started"' "$workdir/$pod.log"
    client=$(address "$pod" listen)
    redis-cli -h "${client%:*}" -p "${client##*:}" set "greeting:$pod" hello >/dev/null
done

admin=$(address web-a admin)
three() {
    [ "$(curl -s "http://$admin/pool/status" | jq '.fleet.poolside_instances')" = 3 ]
}
wait_for "web-a to see three instances" three
curl -s "http://$admin/pool/status" | jq '{fleet, recommendations}'
echo "CLIENT LIST on Redis, by name (the asking redis-cli is the empty name):"
redis-cli -p "$redis_port" client list | grep -o 'name=[^ ]*' | sort | uniq -c
