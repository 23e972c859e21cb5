#!/bin/sh
# redis-backup.sh: a fresh RDB snapshot of a running Redis, copied with its
# AOF into a timestamped directory; only the newest BACKUP_KEEP are kept.
# POSIX sh; needs redis-cli, and read access to Redis' data directory, so it
# runs on the Redis host (cron, a systemd timer, a Kubernetes CronJob sharing
# the volume).
#
#   REDISCLI_AUTH=... redis-backup.sh
#
# Environment, [default]:
#   REDIS_HOST [127.0.0.1]   REDIS_PORT [6379]
#   REDISCLI_AUTH            the password; redis-cli reads it from the
#                            environment, so it never shows in `ps`
#   REDIS_DATA_DIR [/var/lib/redis]   Redis' `dir`
#   REDIS_RDB_FILE [dump.rdb]         Redis' `dbfilename`
#   REDIS_AOF_DIR [appendonlydir]     Redis' `appenddirname`
#   BACKUP_DIR [/var/backups/redis]
#   BACKUP_KEEP [14]         backups kept; older ones are deleted
#   BACKUP_TIMEOUT [600]     seconds to wait for the snapshot
#
# Prints the backup directory and exits 0, or prints why and exits non-zero.
# Restore: stop Redis, put dump.rdb (and appendonlydir/, when AOF is on) into
# its `dir`, start it.

set -eu

REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_DATA_DIR=${REDIS_DATA_DIR:-/var/lib/redis}
REDIS_RDB_FILE=${REDIS_RDB_FILE:-dump.rdb}
REDIS_AOF_DIR=${REDIS_AOF_DIR:-appendonlydir}
BACKUP_DIR=${BACKUP_DIR:-/var/backups/redis}
BACKUP_KEEP=${BACKUP_KEEP:-14}
BACKUP_TIMEOUT=${BACKUP_TIMEOUT:-600}

# Backups hold all the data: readable by this user only.
umask 077

fail() {
    echo "redis-backup: $*" >&2
    exit 1
}

cli() {
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --no-auth-warning "$@"
}

# The numeric value of FIELD in `INFO persistence`.
persistence_field() {
    cli INFO persistence | tr -d '\r' | sed -n "s/^$1://p"
}

# Sleeps a tenth of a second where sleep takes fractions (GNU, busybox),
# else a second.
pause() {
    sleep 0.1 2>/dev/null || sleep 1
}

case $BACKUP_KEEP in
'' | *[!0-9]* | 0) fail "BACKUP_KEEP must be a positive integer, not '$BACKUP_KEEP'" ;;
esac
case $BACKUP_TIMEOUT in
'' | *[!0-9]*) fail "BACKUP_TIMEOUT must be a number of seconds, not '$BACKUP_TIMEOUT'" ;;
esac

pong=$(cli PING 2>&1) || fail "cannot reach Redis at $REDIS_HOST:$REDIS_PORT: $pong"
[ "$pong" = PONG ] || fail "Redis at $REDIS_HOST:$REDIS_PORT answered PING with: $pong"
[ -d "$REDIS_DATA_DIR" ] || fail "no data directory $REDIS_DATA_DIR (set REDIS_DATA_DIR)"
mkdir -p "$BACKUP_DIR"

# Deadlines come from the server's clock, which also stamps LASTSAVE.
server_time() {
    cli TIME | sed -n 1p
}
deadline=$(($(server_time) + BACKUP_TIMEOUT))

# 1. LASTSAVE counts whole seconds: when a save finished within the current
#    second, wait for the next one, so the new save is told apart from it.
before=$(cli LASTSAVE)
while [ "$(server_time)" -le "$before" ]; do
    pause
done

# 2. Start a snapshot. SCHEDULE queues it behind a running AOF rewrite; while
#    another snapshot runs, wait and ask again, so ours starts after now.
while :; do
    reply=$(cli BGSAVE SCHEDULE 2>&1)
    case $reply in
    "Background saving started" | "Background saving scheduled") break ;;
    *"already in progress"*) ;;
    *) fail "BGSAVE refused: $reply" ;;
    esac
    [ "$(server_time)" -lt "$deadline" ] || fail "another snapshot still running after ${BACKUP_TIMEOUT}s"
    pause
done

# 3. Done when LASTSAVE moves past the mark and no snapshot is running; the
#    snapshot must also have succeeded.
while :; do
    if [ "$(cli LASTSAVE)" -gt "$before" ] && [ "$(persistence_field rdb_bgsave_in_progress)" = 0 ]; then
        break
    fi
    [ "$(server_time)" -lt "$deadline" ] || fail "snapshot not finished after ${BACKUP_TIMEOUT}s"
    pause
done
status=$(persistence_field rdb_last_bgsave_status)
[ "$status" = ok ] || fail "snapshot failed (rdb_last_bgsave_status:$status); see the Redis log"

# 4. Copy into a directory that gets its final name only when complete.
stamp=$(date -u +%Y%m%dT%H%M%SZ)
dest="$BACKUP_DIR/redis-$stamp"
[ ! -e "$dest" ] || dest="$dest-$$"
partial="$dest.partial"
trap 'rm -rf "$partial"' EXIT
mkdir "$partial"
rdb="$REDIS_DATA_DIR/$REDIS_RDB_FILE"
[ -f "$rdb" ] || fail "no snapshot at $rdb (check REDIS_DATA_DIR and REDIS_RDB_FILE)"
cp "$rdb" "$partial/$REDIS_RDB_FILE"
# The AOF may take writes while it is copied; its tail can then be cut short,
# which Redis loads anyway (aof-load-truncated). The RDB is the consistent copy.
if [ -d "$REDIS_DATA_DIR/$REDIS_AOF_DIR" ]; then
    cp -R "$REDIS_DATA_DIR/$REDIS_AOF_DIR" "$partial/$REDIS_AOF_DIR"
fi
if command -v redis-check-rdb >/dev/null 2>&1; then
    check=$(redis-check-rdb "$partial/$REDIS_RDB_FILE" 2>&1) || fail "copied RDB does not check out: $check"
fi
mv "$partial" "$dest"
trap - EXIT

# 5. Retention: names sort by time, so all but the last BACKUP_KEEP go.
count=0
for backup in "$BACKUP_DIR"/redis-*; do
    case $backup in *.partial) continue ;; esac
    [ -d "$backup" ] && count=$((count + 1))
done
excess=$((count - BACKUP_KEEP))
for backup in "$BACKUP_DIR"/redis-*; do
    [ "$excess" -gt 0 ] || break
    case $backup in *.partial) continue ;; esac
    [ -d "$backup" ] || continue
    rm -rf "$backup"
    excess=$((excess - 1))
done

echo "$dest"
