#!/usr/bin/env bash
# Direct Redis vs poolside (each pool mode) vs twemproxy, in one run on this
# machine: starts its own redis-server, poolside and nutcracker on free
# loopback ports, runs redis-benchmark and poolside-loadtest scenarios
# interleaved over rounds, and prints medians with ratios to direct Redis as
# a Markdown table; scenario (f) runs loadtest/failover.sh (Sentinel
# failovers) and (g) loadtest/cluster-compare.sh (a Redis Cluster straight
# and through poolside) and add their tables. See loadtest/README.md.
#
#   loadtest/compare.sh                       # everything, 3 rounds (~40 min)
#   loadtest/compare.sh --quick               # 1 round, short runs (smoke test)
#   loadtest/compare.sh --scenarios a,c --out results.md
set -euo pipefail

usage() {
    cat <<'EOF'
usage: loadtest/compare.sh [options]
  --quick               1 round, -n 10000/100000, 3 s load tests (smoke test)
  --rounds N            rounds per scenario (default 3)
  --scenarios LIST      of a,b,c,d,e,f,g (default all; f: failover.sh,
                        g: cluster-compare.sh)
  --targets LIST        of direct,transaction,multiplexed,twemproxy (default: all
                        that exist; multiplexed only when poolside has --pool-mode)
  --presets LIST        (d) presets, of baseline,stress,ultimate (default all)
  --connections LIST    (d) connection modes, of persistent,per-request (default both)
  --duration SECS       (d) seconds per load-test run (default 20; --quick 3)
  --maxclients N        (d) Redis maxclients free for the fleet (default 500)
  --out FILE            also write the Markdown table to FILE (raw data: FILE.tsv)
  --no-build            use the existing target/release binaries
  --keep                keep the work directory (logs, configs, JSON reports)
Environment: POOLSIDE_ARGS adds flags to both poolside instances (word-split).
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/loadtest/lib.sh"
rounds=3 quick=0 scenarios=a,b,c,d,e,f,g targets_wanted="" presets=baseline,stress,ultimate
connections=persistent,per-request lt_duration="" fleet_maxclients=500 out="" build=1 keep=0
command_line="loadtest/compare.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --targets) targets_wanted=$2; shift ;;
    --presets) presets=$2; shift ;;
    --connections) connections=$2; shift ;;
    --duration) lt_duration=$2; shift ;;
    --maxclients) fleet_maxclients=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    rounds=1 n_a=10000 n_b=100000 n_c=10000 n_e=20000
    lt_duration=${lt_duration:-3}
else
    n_a=100000 n_b=1000000 n_c=100000 n_e=200000
    lt_duration=${lt_duration:-20}
fi
# Every external command gets a time limit, so a stuck target cannot hang the
# run. (`timeout --foreground` keeps it in our process group: Ctrl-C reaches it.)
bench_limit=600 lt_limit=$((lt_duration + 60))

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ",$1," == *",$2,"* ]]; }

# 1. Tools: install what is missing (Debian packages), once.
ensure_tools() {
    local packages=()
    command -v redis-server >/dev/null || packages+=(redis-server)
    command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null || packages+=(redis-tools)
    if [ -z "$targets_wanted" ] || has "$targets_wanted" twemproxy; then
        command -v nutcracker >/dev/null || packages+=(nutcracker)
    fi
    ! has "$scenarios" f || command -v redis-sentinel >/dev/null || packages+=(redis-sentinel)
    command -v python3 >/dev/null || packages+=(python3)
    [ ${#packages[@]} -eq 0 ] && return
    log "installing ${packages[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
}
ensure_tools

# 2. Build.
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

# 3. Limits and a work directory; every process started is killed on exit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[ "$(ulimit -n)" -ge 12000 ] || log "warning: ulimit -n is $(ulimit -n); (e) -c 5000 may fail"
work=$(mktemp -d -t poolside-compare.XXXXXX)
pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "$keep" = 1 ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports below the ephemeral range, so the thousands of client
# connections made later cannot collide with them.
read -r -a ports < <(python3 - <<'PY'
import random, socket
chosen, held = [], []
while len(chosen) < 8:
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
)
[ ${#ports[@]} -eq 8 ] || die "could not pick free ports"
redis_port=${ports[0]}

wait_pong() { # port what
    for _ in $(seq 100); do
        [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    die "$2 on port $1 did not answer PING (logs in $work)"
}
rcli() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }

# 4. Servers.
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --maxclients 10000 --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
wait_pong "$redis_port" redis-server
# Redis lowers maxclients itself when the fd limit is short: restore what it chose.
default_maxclients=$(rcli config get maxclients | tail -n 1)

names=() urls=() admins=()
add_target() { names+=("$1"); urls+=("redis://127.0.0.1:$2"); admins+=("${3:-}"); }
want() { [ -z "$targets_wanted" ] || has "$targets_wanted" "$1"; }
want direct && add_target direct "$redis_port"

start_poolside() { # name mode listen_port admin_port
    local args=(--profile production --listen "127.0.0.1:$3" --admin-listen "127.0.0.1:$4"
        --upstream "redis://127.0.0.1:$redis_port")
    if [ "$has_modes" = 1 ]; then args+=(--pool-mode "$2"); fi
    # Run in the work directory: compiled-in production defaults, no profiles/*.toml.
    # shellcheck disable=SC2086 # POOLSIDE_ARGS is meant to be word-split
    (cd "$work" && exec env -u REDIS_URL -u REDIS_HOST -u REDIS_PORT -u REDIS_PASSWORD \
        -u REDIS_USERNAME -u DEPLOYMENT_ENV -u POOLSIDE_ARGS RUST_LOG=warn "$poolside" "${args[@]}" ${POOLSIDE_ARGS:-} \
        >"$work/$1.log" 2>&1) &
    pids+=($!)
    wait_pong "$3" "$1"
    add_target "$1" "$3" "http://127.0.0.1:$4"
}
has_modes=0
"$poolside" --help 2>/dev/null | grep -q -- '--pool-mode' && has_modes=1
want transaction && start_poolside poolside-tx transaction "${ports[1]}" "${ports[2]}"
if want multiplexed; then
    if [ "$has_modes" = 1 ]; then
        start_poolside poolside-mx multiplexed "${ports[3]}" "${ports[4]}"
    else
        log "poolside has no --pool-mode: skipping multiplexed"
    fi
fi

if want twemproxy; then
    twemproxy_config compare "${ports[5]}" "$redis_port" >"$work/nutcracker.yml"
    nutcracker -t -c "$work/nutcracker.yml" >"$work/nutcracker-check.log" 2>&1 ||
        die "nutcracker rejected its config: $(cat "$work/nutcracker-check.log")"
    nutcracker -c "$work/nutcracker.yml" -o "$work/nutcracker.log" -p "$work/nutcracker.pid" \
        -s "${ports[6]}" -a 127.0.0.1 -v 4 &
    pids+=($!)
    wait_pong "${ports[5]}" nutcracker
    add_target twemproxy "${ports[5]}"
fi
[ ${#names[@]} -gt 0 ] || die "no targets selected"
log "targets: $(for i in "${!names[@]}"; do printf '%s=%s ' "${names[$i]}" "${urls[$i]}"; done)"

# 5. Runs. Raw results, one line per run:
# scenario  test  target  round  rps  p50_ms  p99_ms  errors  total
raw=$work/results.tsv
: >"$raw"

bench() { # target_index scenario round redis-benchmark-args...
    local i=$1 scenario=$2 round=$3 port
    shift 3
    port=${urls[$i]##*:}
    local base=$work/bench-$scenario-$round-${names[$i]} errors
    timeout --foreground "$bench_limit" redis-benchmark -h 127.0.0.1 -p "$port" --csv "$@" >"$base.csv" 2>"$base.err" ||
        log "redis-benchmark ($scenario, ${names[$i]}) exited $?"
    errors=$(grep -ci 'error' "$base.err" || true)
    # CSV columns: "test","rps","avg","min","p50","p95","p99","max"
    tr -d '"' <"$base.csv" | awk -F, -v s="$scenario" -v t="${names[$i]}" -v r="$round" -v e="$errors" \
        '$1 != "test" && NF >= 7 { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s, $1, t, r, $2, $5, $7, e }' >>"$raw"
}

loadtest_run() { # target_index preset connection round
    local i=$1 preset=$2 connection=$3 round=$4 rc=0 held
    local json=$work/lt-$preset-$connection-$round-${names[$i]}.json
    # The idle proxies keep upstream connections open; raise the limit by
    # what they hold so every target's fleet meets the same free slots.
    held=$(rcli info clients | awk -F: '/^connected_clients:/ { print $2 - 1 }' | tr -d '\r')
    rcli config set maxclients $((fleet_maxclients + held)) >/dev/null
    local args=(--target "${urls[$i]}" --preset "$preset" --connection "$connection"
        --duration "${lt_duration}s" --timeout-ms 2000 --json "$json")
    [ -z "${admins[$i]}" ] || args+=(--admin "${admins[$i]}")
    # Short runs still reach the preset's user count: ramp up in the first quarter.
    [ "$quick" = 0 ] || args+=(--ramp-up "$((lt_duration * 1000 / 4))ms")
    timeout --foreground "$lt_limit" "$loadtest" "${args[@]}" >"${json%.json}.txt" 2>&1 </dev/null || rc=$?
    # Status 3 (failure rate over the limit) is what direct Redis is expected to show.
    [ "$rc" = 0 ] || [ "$rc" = 3 ] || log "poolside-loadtest ($preset $connection, ${names[$i]}) exited $rc"
    [ -s "$json" ] || return 0
    python3 - "$json" "d-$preset-$connection" "${names[$i]}" "$round" >>"$raw" <<'PY'
import json, sys
path, scenario, target, rnd = sys.argv[1:]
t = json.load(open(path))["targets"][0]
lat = t["latency"]
print("\t".join(map(str, [scenario, "requests", target, rnd, round(t["throughput_rps"], 1),
                          lat["p50_ms"], lat["p99_ms"], t["failed"], t["total"]])))
PY
}

# Interleave: each round runs every target once, starting one further along.
for_targets() { # round function args...
    local round=$1 fn=$2 n=${#names[@]} k
    shift 2
    for ((k = 0; k < n; k++)); do "$fn" $(((k + round - 1) % n)) "$@"; done
}

for scenario in ${scenarios//,/ }; do
    for ((round = 1; round <= rounds; round++)); do
        case "$scenario" in
        a) log "(a) -c 50 set,get, round $round/$rounds"
           for_targets "$round" bench a "$round" -c 50 -n "$n_a" -t set,get -r 100000 ;;
        b) log "(b) -c 50 -P 16 set,get, round $round/$rounds"
           for_targets "$round" bench b "$round" -c 50 -P 16 -n "$n_b" -t set,get -r 100000 ;;
        c) log "(c) -c 1000 set,get, round $round/$rounds"
           for_targets "$round" bench c "$round" -c 1000 -n "$n_c" -t set,get -r 100000 ;;
        e) log "(e) -c 5000 set,get, round $round/$rounds"
           for_targets "$round" bench e "$round" -c 5000 -n "$n_e" -t set,get -r 100000 ;;
        d) for preset in ${presets//,/ }; do
               for connection in ${connections//,/ }; do
                   log "(d) $preset $connection, round $round/$rounds"
                   for_targets "$round" loadtest_run "$preset" "$connection" "$round"
               done
           done
           rcli config set maxclients "$default_maxclients" >/dev/null ;;
        f | g) break ;; # below: failover.sh and cluster-compare.sh run their own rounds
        *) die "unknown scenario $scenario" ;;
        esac
    done
done

# (f) Sentinel failovers, on a topology of their own (loadtest/failover.sh);
# twemproxy has no Sentinel support, so it has no column there.
failover_md=$work/failover.md
if has "$scenarios" f; then
    f_targets=""
    for t in direct transaction multiplexed; do
        if want "$t"; then f_targets+=${f_targets:+,}$t; fi
    done
    f_args=(--no-build --rounds "$rounds" --out "$failover_md")
    [ "$quick" = 0 ] || f_args+=(--quick)
    [ "$keep" = 0 ] || f_args+=(--keep)
    log "(f) failover.sh --targets $f_targets"
    if [ -z "$f_targets" ]; then
        log "(f): none of direct,transaction,multiplexed selected: skipped"
    elif ! CARGO_TARGET_DIR=$target_dir "$ROOT/loadtest/failover.sh" "${f_args[@]}" --targets "$f_targets" >"$work/failover.txt"; then
        log "(f) failover.sh failed (output in $work/failover.txt)"
    fi
fi

# (g) A Redis Cluster of three primaries, straight (redis-benchmark --cluster)
# and through poolside's default mode (loadtest/cluster-compare.sh).
cluster_md=$work/cluster.md
if has "$scenarios" g; then
    g_args=(--no-build --rounds "$rounds" --n 300000)
    [ "$quick" = 0 ] || g_args=(--no-build --rounds 1 --n 20000)
    log "(g) cluster-compare.sh ${g_args[*]}"
    if ! CARGO_TARGET_DIR=$target_dir "$ROOT/loadtest/cluster-compare.sh" "${g_args[@]}" >"$cluster_md" 2>"$work/cluster.err"; then
        log "(g) cluster-compare.sh failed (output in $work/cluster.err)"
        : >"$cluster_md"
    fi
fi

# 6. Medians of the rounds, ratios to direct Redis, as Markdown.
report=$work/report.md
twemproxy_version() {
    if command -v nutcracker >/dev/null; then nutcracker -V 2>&1 | head -1; else echo "no twemproxy"; fi
}
{
    echo "## poolside vs direct Redis vs twemproxy"
    echo
    echo "- command: \`$command_line\` ($rounds round(s), medians)"
    echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)"
    echo "- $(redis-server --version | cut -d' ' -f1-3), $(twemproxy_version), poolside $("$poolside" --version | awk '{ print $2 }')"
    echo "- run: $(date -u '+%Y-%m-%d %H:%M UTC'); (d): redis maxclients $fleet_maxclients, ${lt_duration}s per run"
    echo
    [ -s "$raw" ] && python3 - "$raw" "${names[@]}" <<'PY'
import statistics, sys
from collections import defaultdict
path, targets = sys.argv[1], sys.argv[2:]
runs = defaultdict(list)
order = []
for line in open(path):
    scenario, test, target, _rnd, rps, p50, p99, errors, total = line.rstrip("\n").split("\t")
    if (scenario, test) not in order:
        order.append((scenario, test))
    runs[(scenario, test, target)].append((float(rps), float(p50), float(p99), int(errors or 0), total))
LABELS = {"a": "(a) -c 50", "b": "(b) -c 50 -P 16", "c": "(c) -c 1000", "e": "(e) -c 5000"}
def label(scenario, test):
    if scenario.startswith("d-"):
        return "(d) " + scenario[2:].replace("-", " ", 1)
    return f"{LABELS.get(scenario, scenario)} {test}"
def cell(scenario, test, target):
    rs = runs.get((scenario, test, target))
    if not rs:
        return "-"
    rps = statistics.median(r[0] for r in rs)
    p50 = statistics.median(r[1] for r in rs)
    p99 = statistics.median(r[2] for r in rs)
    direct = runs.get((scenario, test, targets[0]))
    base = statistics.median(r[0] for r in direct) if direct else 0
    text = f"{rps:,.0f}"
    if base > 0 and target != targets[0]:
        text += f" ({rps / base:.2f}x)"
    text += f"<br>p50 {p50:.2f} / p99 {p99:.2f} ms"
    if scenario.startswith("d-"):
        failed = [r[3] / max(1, int(r[4])) * 100 for r in rs]
        text += f"<br>failed {statistics.median(failed):.2f} %"
    elif any(r[3] for r in rs):
        text += f"<br>**{sum(r[3] for r in rs)} error lines**"
    return text
print("| scenario | " + " | ".join(targets) + " |")
print("|---|" + "---|" * len(targets))
for scenario, test in order:
    print(f"| {label(scenario, test)} | " + " | ".join(cell(scenario, test, t) for t in targets) + " |")
print()
print(f"Cells: requests/s (ratio to {targets[0]}), latency p50 / p99; (d) adds the share of failed requests.")
PY
    if [ -s "$failover_md" ]; then
        echo
        cat "$failover_md"
    fi
    if [ -s "$cluster_md" ]; then
        echo
        echo "### (g) Redis Cluster, three primaries: redis-benchmark --cluster vs through poolside"
        echo
        cat "$cluster_md"
    fi
} >"$report"

cat "$report"
if [ -n "$out" ]; then
    cp "$report" "$out"
    cp "$raw" "$out.tsv"
    [ ! -s "$failover_md.tsv" ] || cp "$failover_md.tsv" "$out.failover.tsv"
    log "wrote $out and $out.tsv"
fi
