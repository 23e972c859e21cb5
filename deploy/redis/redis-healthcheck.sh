#!/bin/sh
# redis-healthcheck.sh: is Redis answering, within its memory, persisting, and
# are its dangerous commands closed? One line per check; the exit code is the
# worst result, as monitoring plugins expect: 0 OK, 1 WARNING, 2 CRITICAL.
# POSIX sh; needs redis-cli.
#
#   REDISCLI_AUTH=... redis-healthcheck.sh
#
# Environment, [default]:
#   REDIS_HOST [127.0.0.1]   REDIS_PORT [6379]
#   REDISCLI_AUTH            the password (read by redis-cli, not shown in `ps`)
#   MEMORY_WARN_PCT [80]     used_memory as a share of maxmemory that warns
#   MEMORY_CRIT_PCT [90]     ... and that is critical
#   SAVE_MAX_AGE [3600]      seconds since the last snapshot, with changes
#                            pending, before a warning

set -u

REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
MEMORY_WARN_PCT=${MEMORY_WARN_PCT:-80}
MEMORY_CRIT_PCT=${MEMORY_CRIT_PCT:-90}
SAVE_MAX_AGE=${SAVE_MAX_AGE:-3600}

worst=0

cli() {
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --no-auth-warning "$@"
}

ok() { echo "OK $*"; }
warning() {
    echo "WARNING $*"
    [ "$worst" -ge 1 ] || worst=1
}
critical() {
    echo "CRITICAL $*"
    worst=2
}

# The value of FIELD in an INFO reply held in $info.
field() {
    printf '%s\n' "$info" | sed -n "s/^$1://p"
}

# 1. Answering at all; nothing else can be checked otherwise.
pong=$(cli PING 2>&1)
if [ "$pong" != PONG ]; then
    critical "ping: $REDIS_HOST:$REDIS_PORT answered: $pong"
    exit 2
fi
ok "ping: PONG"

# 2. Memory against maxmemory.
info=$(cli INFO memory | tr -d '\r')
used=$(field used_memory)
used_human=$(field used_memory_human)
max=$(field maxmemory)
max_human=$(field maxmemory_human)
policy=$(field maxmemory_policy)
if [ -z "$used" ] || [ -z "$max" ]; then
    critical "memory: INFO memory has no used_memory/maxmemory"
elif [ "$max" -eq 0 ]; then
    warning "memory: no maxmemory set; $used_human used"
else
    pct=$((used * 100 / max))
    line="memory: $pct% of maxmemory ($used_human of $max_human, policy $policy)"
    if [ "$pct" -ge "$MEMORY_CRIT_PCT" ]; then
        critical "$line"
    elif [ "$pct" -ge "$MEMORY_WARN_PCT" ]; then
        warning "$line"
    else
        ok "$line"
    fi
fi

# 3. Persistence: the last snapshot and AOF write worked, and snapshots are
#    not falling behind.
info=$(cli INFO persistence | tr -d '\r')
now=$(cli TIME | sed -n 1p)
if [ "$(field loading)" = 1 ]; then
    warning "persistence: still loading the dataset from disk"
fi
rdb_status=$(field rdb_last_bgsave_status)
last_save=$(field rdb_last_save_time)
changes=$(field rdb_changes_since_last_save)
age=$((now - last_save))
if [ "$rdb_status" != ok ]; then
    critical "persistence: last RDB snapshot failed ($rdb_status); writes stop while stop-writes-on-bgsave-error is on"
elif [ "$changes" -gt 0 ] && [ "$age" -gt "$SAVE_MAX_AGE" ]; then
    warning "persistence: last snapshot ${age}s ago with $changes changes since"
else
    ok "persistence: RDB last snapshot ${age}s ago, ok"
fi
if [ "$(field aof_enabled)" != 1 ]; then
    warning "persistence: AOF is off (production.conf turns it on)"
elif [ "$(field aof_last_write_status)" != ok ]; then
    critical "persistence: AOF writes failing ($(field aof_last_write_status))"
elif [ "$(field aof_last_bgrewrite_status)" != ok ]; then
    warning "persistence: last AOF rewrite failed"
else
    ok "persistence: AOF on, writes ok"
fi

# 4. CONFIG under its usual name is how a stolen password becomes a shell
#    (CONFIG SET dir); production.conf renames it.
reply=$(cli CONFIG GET maxmemory 2>&1)
case $reply in
*"unknown command"*) ok "commands: CONFIG is renamed" ;;
*) warning "commands: CONFIG answers under its usual name; rename it (production.conf)" ;;
esac

exit "$worst"
