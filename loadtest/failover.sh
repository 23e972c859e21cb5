#!/usr/bin/env bash
# Failover benchmark: one primary, two replicas and three Sentinels on free
# loopback ports, built fresh for every run; `poolside-loadtest failover`
# forces a failover (SENTINEL FAILOVER, or kill -9 of the primary) in the
# middle of a SET/GET run through poolside (each pool mode, upstream
# redis+sentinel://) and straight to the primary with the redis crate's
# Sentinel client. Prints a Markdown table; see loadtest/README.md.
#
#   loadtest/failover.sh                  # 3 rounds, both kinds, every target (~8 min)
#   loadtest/failover.sh --quick          # 1 round, 12 s runs
#   loadtest/failover.sh --kinds kill --targets direct,transaction --out failover.md
set -euo pipefail

usage() {
    cat <<'EOF'
usage: loadtest/failover.sh [options]
  --quick               1 round, 12 s runs
  --rounds N            rounds (default 3); each runs every kind x target once
  --targets LIST        of direct,transaction,multiplexed (default: all that exist;
                        poolside targets only when poolside takes redis+sentinel://)
  --kinds LIST          of manual,kill (default both)
  --users N             concurrent users (default 50)
  --duration SECS       seconds per run (default 20; --quick 12)
  --failover-at SECS    when the failover is forced (default 3)
  --out FILE            also write the Markdown table to FILE (raw data: FILE.tsv)
  --no-build            use the existing target/release binaries
  --keep                keep the work directory (logs, configs, JSON reports)
Environment: POOLSIDE_ARGS adds flags to poolside (word-split); POOLSIDE_* settings
(e.g. POOLSIDE_UPSTREAM__SENTINEL__FAILOVER_HOLD_MS) reach poolside unchanged.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=3 quick=0 targets_wanted="" kinds=manual,kill users=50 duration="" failover_at=3
out="" build=1 keep=0
command_line="loadtest/failover.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --targets) targets_wanted=$2; shift ;;
    --kinds) kinds=$2; shift ;;
    --users) users=$2; shift ;;
    --duration) duration=$2; shift ;;
    --failover-at) failover_at=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "failover.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    rounds=1 duration=${duration:-12}
else
    duration=${duration:-20}
fi
run_limit=$((duration + 90))
service=mymaster

log() { printf '[failover %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ",$1," == *",$2,"* ]]; }

# 1. Tools (Debian packages) and binaries.
packages=()
command -v redis-server >/dev/null || packages+=(redis-server)
command -v redis-cli >/dev/null || packages+=(redis-tools)
command -v redis-sentinel >/dev/null || packages+=(redis-sentinel)
command -v python3 >/dev/null || packages+=(python3)
if [ ${#packages[@]} -gt 0 ]; then
    log "installing ${packages[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
fi
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$build" = 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release -p poolside -p poolside-loadtest) || die "build failed"
fi
poolside=$target_dir/release/poolside
loadtest=$target_dir/release/poolside-loadtest
if [ ! -x "$poolside" ] || [ ! -x "$loadtest" ]; then
    die "missing $poolside or $loadtest (build first)"
fi

# 2. A work directory; every process of the current run is killed when the
# run ends, and on exit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
work=$(mktemp -d -t poolside-failover.XXXXXX)
dir=$work
run_pids=()
stop_pids() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_pids "${run_pids[@]}"
    if [ "$keep" = 1 ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() { # count: free loopback ports below the ephemeral range
    python3 - "$1" <<'PY'
import random, socket, sys
chosen, held = [], []
while len(chosen) < int(sys.argv[1]):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)
    chosen.append(port)
print(*chosen)
PY
}
rcli() { redis-cli -h 127.0.0.1 -p "$@"; }
fetch() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())' "$1"; }
answers_ping() { [ "$(rcli "$1" ping 2>/dev/null)" = PONG ]; }
field() { tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }
wait_until() { # what command...: polls every 0.1 s for 30 s; fails at once when
    # a process of the run has exited (a port taken between the pick and the bind)
    local what=$1 pid
    shift
    for _ in $(seq 300); do
        "$@" && return 0
        for pid in "${run_pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || { log "$what: a process of the run exited"; return 1; }
        done
        sleep 0.1
    done
    log "$what: not ready after 30 s"
    return 1
}

# 3. The topology, in $dir: primary $p0, replicas $p1 $p2, Sentinels $s0 $s1 $s2.
primary_ready() { [ "$(rcli "$p0" info replication | grep -c 'state=online')" = 2 ]; }
replica_ready() { [ "$(rcli "$1" info replication | field master_link_status)" = up ]; }
sentinel_ready() { # port: sees the primary, 2 replicas and 2 other Sentinels
    local info
    info=$(rcli "$1" sentinel master "$service" 2>/dev/null | paste - - | tr '\t' ' ') || return 1
    grep -qx 'flags master' <<<"$info" && grep -qx 'num-slaves 2' <<<"$info" &&
        grep -qx 'num-other-sentinels 2' <<<"$info"
}
start_topology() {
    local port
    for port in "$p0" "$p1" "$p2"; do
        local args=(--port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no
            --repl-diskless-sync-delay 0 --dir "$dir" --logfile "$dir/redis-$port.log")
        [ "$port" = "$p0" ] || args+=(--replicaof 127.0.0.1 "$p0")
        redis-server "${args[@]}" &
        run_pids+=($!)
        # The kill -9 runs kill the primary: disowned, bash does not report it.
        disown "$!"
    done
    for port in "$s0" "$s1" "$s2"; do
        # Sentinel rewrites its config file: one per Sentinel, in the run's directory.
        cat >"$dir/sentinel-$port.conf" <<EOF
port $port
bind 127.0.0.1
daemonize no
dir $dir
logfile $dir/sentinel-$port.log
sentinel monitor $service 127.0.0.1 $p0 2
sentinel down-after-milliseconds $service 1000
sentinel failover-timeout $service 5000
sentinel parallel-syncs $service 1
EOF
        redis-sentinel "$dir/sentinel-$port.conf" &
        run_pids+=($!)
    done
    wait_until "replica $p1" replica_ready "$p1" && wait_until "replica $p2" replica_ready "$p2" &&
        wait_until "primary $p0" primary_ready || return 1
    for port in "$s0" "$s1" "$s2"; do wait_until "Sentinel $port" sentinel_ready "$port" || return 1; done
}

start_poolside() { # mode listen_port admin_port
    local args=(--profile production --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3"
        --upstream "$sentinel_url" --pool-mode "$1")
    # Run in the run's directory: compiled-in production defaults, no profiles/*.toml.
    # shellcheck disable=SC2086 # POOLSIDE_ARGS is meant to be word-split
    (cd "$dir" && exec env -u REDIS_URL -u REDIS_HOST -u REDIS_PORT -u REDIS_PASSWORD \
        -u REDIS_USERNAME -u DEPLOYMENT_ENV RUST_LOG=${RUST_LOG:-info} "$poolside" "${args[@]}" \
        ${POOLSIDE_ARGS:-} >"$dir/poolside.log" 2>&1) &
    run_pids+=($!)
    wait_until "poolside on $2" answers_ping "$2"
}

# 4. Targets: poolside only when it takes a Sentinel upstream.
targets=()
want() { [ -z "$targets_wanted" ] || has "$targets_wanted" "$1"; }
want direct && targets+=(direct)
if want transaction || want multiplexed; then
    probe="redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/$service"
    if (cd "$work" && "$poolside" --upstream "$probe" config >/dev/null 2>&1); then
        want transaction && targets+=(transaction)
        if want multiplexed; then
            if "$poolside" --help | grep -q -- '--pool-mode'; then targets+=(multiplexed)
            else log "poolside has no --pool-mode: skipping multiplexed"; fi
        fi
    else
        log "poolside does not take a redis+sentinel:// upstream: skipping its targets"
    fi
fi
[ ${#targets[@]} -gt 0 ] || die "no targets selected"
log "targets: ${targets[*]}; kinds: $kinds; $rounds round(s) of ${duration}s runs, failover at ${failover_at}s"

# 5. Runs. One JSON report per run; raw results, one line per run:
# kind target round ok failed lost p50_ms p99_ms max_ms recovered_ms switch_ms last_lost_ms disrupted_ms
raw=$work/results.tsv
: >"$raw"
run_one() { # kind target round
    local kind=$1 target=$2 round=$3 rc=0 url attempt
    for attempt in 1 2 3; do
        dir=$work/$kind-$round-$target
        rm -rf "$dir" && mkdir -p "$dir"
        read -r p0 p1 p2 s0 s1 s2 listen admin < <(free_ports 8)
        sentinel_url="redis+sentinel://127.0.0.1:$s0,127.0.0.1:$s1,127.0.0.1:$s2/$service"
        url=$sentinel_url
        run_pids=()
        if start_topology && { [ "$target" = direct ] || start_poolside "$target" "$listen" "$admin"; }; then
            break
        fi
        stop_pids "${run_pids[@]}"
        [ "$attempt" -lt 3 ] || die "$kind, $target: could not start the topology 3 times (logs in $dir)"
        mv "$dir" "$dir.failed-$attempt"
        log "$kind, $target: starting again on fresh ports"
    done
    [ "$target" = direct ] || url=redis://127.0.0.1:$listen
    log "$kind failover, $target, round $round/$rounds"
    timeout --foreground "$run_limit" "$loadtest" failover --target "$url" --sentinel "$sentinel_url" \
        --failover "$kind" --failover-at "${failover_at}s" --duration "${duration}s" --users "$users" \
        --name "$target" --json "$dir/report.json" >"$dir/report.txt" 2>&1 </dev/null || rc=$?
    [ "$rc" = 0 ] || log "poolside-loadtest failover ($kind, $target) exited $rc: $(tail -n 1 "$dir/report.txt")"
    if [ "$target" != direct ]; then
        # poolside's own account of the failover, kept with the run.
        fetch "http://127.0.0.1:$admin/metrics" >"$dir/metrics.txt" || log "no /metrics from poolside ($target)"
        fetch "http://127.0.0.1:$admin/pool/status" >"$dir/status.json" || log "no /pool/status from poolside ($target)"
    fi
    stop_pids "${run_pids[@]}"
    [ -s "$dir/report.json" ] || return 0
    python3 - "$dir/report.json" "$round" >>"$raw" <<'PY'
import json, sys
r, rnd = json.load(open(sys.argv[1])), sys.argv[2]
lat, w = r["latency"], r["writes"]
blank = lambda v: "" if v is None else round(v, 1)
print("\t".join(map(str, [r["failover"], r["name"], rnd, r["ok"], r["failed"], w["lost"],
                          lat["p50_ms"], lat["p99_ms"], lat["max_ms"], blank(r["recovered_after_ms"]),
                          blank(r["switch_after_ms"]), blank(w["last_lost_after_ms"]),
                          r["disrupted_ms"]])))
PY
}

# Interleave: each round runs every target once per kind, starting one further along.
for ((round = 1; round <= rounds; round++)); do
    for kind in ${kinds//,/ }; do
        n=${#targets[@]}
        for ((k = 0; k < n; k++)); do run_one "$kind" "${targets[$(((k + round - 1) % n))]}" "$round"; done
    done
done

# 6. Medians of the rounds as Markdown.
report=$work/report.md
{
    echo "## Failover: poolside vs a Sentinel-aware client straight to Redis"
    echo
    echo "- command: \`$command_line\` ($rounds round(s), medians; lost writes: total over rounds)"
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)"
    echo "- $(redis-server --version | cut -d' ' -f1-3), poolside $("$poolside" --version | awk '{ print $2 }'), redis crate $(awk '/^name = "redis"$/ { getline; print $3 }' "$ROOT/Cargo.lock" | tr -d '"')"
    echo "- run: $(date -u '+%Y-%m-%d %H:%M UTC'); $users users, SET/GET, ${duration}s per run, failover at ${failover_at}s;" \
        "1 primary, 2 replicas, 3 Sentinels (quorum 2, down-after 1000 ms, failover-timeout 5000 ms)"
    echo
    python3 - "$raw" <<'PY'
import statistics, sys
from collections import defaultdict
runs, order = defaultdict(list), []
for line in open(sys.argv[1]):
    kind, target, _rnd, *values = line.rstrip("\n").split("\t")
    if (kind, target) not in order:
        order.append((kind, target))
    runs[(kind, target)].append([float(v) if v else None for v in values])
def med(rows, i):
    values = [r[i] for r in rows if r[i] is not None]
    return statistics.median(values) if values else None
def secs(rows, i):
    values = [r[i] for r in rows]
    if all(v is None for v in values):
        return "not recovered"
    text = f"{med(rows, i) / 1000:.2f} s"
    if any(v is None for v in values):
        text += f" ({sum(v is None for v in values)} not recovered)"
    return text
KINDS = {"manual": "SENTINEL FAILOVER", "kill": "kill -9 primary"}
print("| failover | target | requests ok | failed | lost acked writes | latency p50 / p99 / max ms | recovered after | Sentinel switch after |")
print("|---|---|---|---|---|---|---|---|")
for kind, target in order:
    rows = runs[(kind, target)]
    lost = int(sum(r[2] for r in rows))
    lost_text = f"{lost:,}"
    if lost:
        lost_text += f" (until {max(r[8] for r in rows if r[8] is not None) / 1000:+.1f} s)"
    print(f"| {KINDS.get(kind, kind)} | {target} | {med(rows, 0):,.0f} | {med(rows, 1):,.0f} | {lost_text} | "
          f"{med(rows, 3):.2f} / {med(rows, 4):.2f} / {med(rows, 5):,.0f} | "
          f"{secs(rows, 6)} ({med(rows, 9) / 1000:.2f} s disrupted) | {secs(rows, 7)} |")
print()
print("Times are from the moment the failover was forced. Latency covers every request, ok or failed.")
print("Recovered: end of the last 50 ms with a failure or without a success (disrupted: all such 50 ms added up).")
PY
} >"$report"

cat "$report"
if [ -n "$out" ]; then
    cp "$report" "$out"
    cp "$raw" "$out.tsv"
    log "wrote $out and $out.tsv"
fi
