//! Is Redis reachable? Fast failure while it is not, and the periodic health check.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};

use bb8::{ManageConnection, PooledConnection};

use super::{Pool, UpstreamConn, UpstreamError, UpstreamManager};
use crate::error::Cause;

/// Upstream reachability as the pool last saw it.
#[derive(Debug)]
pub struct UpstreamHealth {
    down: AtomicBool,
    /// Milliseconds since `epoch` before which no new connect is attempted.
    next_probe_ms: AtomicU64,
    probe_every: Duration,
    epoch: Instant,
    notify: Notify,
    /// Why the last connect failed, as [`encode`]d: read on every fast failure.
    cause: AtomicU8,
    /// The last failure's full text when it is a configuration problem
    /// (TLS, credentials) the operator must see; read only to answer a client.
    detail: RwLock<Option<Arc<str>>>,
    /// Unix time (ms) of the last completed health check, 0 if none yet.
    pub last_check_unix_ms: AtomicU64,
    /// Round-trip time of the last health-check PING, in microseconds.
    pub last_latency_us: AtomicU64,
}

impl UpstreamHealth {
    pub fn new(probe_every: Duration) -> UpstreamHealth {
        UpstreamHealth {
            down: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            probe_every,
            epoch: Instant::now(),
            notify: Notify::new(),
            cause: AtomicU8::new(encode(Cause::Unknown)),
            detail: RwLock::new(None),
            last_check_unix_ms: AtomicU64::new(0),
            last_latency_us: AtomicU64::new(0),
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Whether a checkout may go ahead: always while up; while down, only the
    /// one caller that claims the next probe slot.
    pub fn may_try(&self) -> bool {
        if !self.is_down() {
            return true;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_probe_ms.load(Ordering::Acquire);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now + self.probe_every.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Why Redis is down, for the clients that fail fast meanwhile.
    pub fn cause(&self) -> Cause {
        decode(self.cause.load(Ordering::Acquire))
    }

    /// Resolves when a connect attempt fails for good.
    pub fn down_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    pub fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            info!("upstream up: Redis is reachable again");
        }
    }

    /// What to fix, for a configuration-type cause (see [`Cause::needs_detail`]).
    pub fn detail(&self) -> Option<Arc<str>> {
        self.detail.read().map_or(None, |d| d.clone())
    }

    pub fn mark_down(&self, error: &UpstreamError) {
        let cause = error.cause();
        if cause.needs_detail() {
            if let Ok(mut d) = self.detail.write() {
                *d = Some(error.to_string().into());
            }
        }
        self.cause.store(encode(cause), Ordering::Release);
        let now = self.epoch.elapsed().as_millis() as u64;
        self.next_probe_ms
            .store(now + self.probe_every.as_millis() as u64, Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            error!(reason = %error, "upstream down: cannot connect to Redis");
        }
        self.notify.notify_waiters();
    }

    fn record_check(&self, latency: Duration) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_check_unix_ms.store(unix_ms, Ordering::Relaxed);
        self.last_latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The I/O error kinds a connect failure is told apart by; others are `Other`.
const KINDS: [ErrorKind; 7] = [
    ErrorKind::ConnectionRefused,
    ErrorKind::ConnectionReset,
    ErrorKind::ConnectionAborted,
    ErrorKind::NotFound,
    ErrorKind::AddrNotAvailable,
    ErrorKind::BrokenPipe,
    ErrorKind::Other,
];

/// A [`Cause`] as one byte, so the fast-failure path reads it without a lock.
fn encode(cause: Cause) -> u8 {
    match cause {
        Cause::Unknown => 0,
        Cause::Closed => 1,
        Cause::TimedOut => 2,
        Cause::Auth => 3,
        Cause::Tls => 4,
        Cause::Malformed => 5,
        Cause::Refused => 6,
        Cause::NoPrimary => 7,
        Cause::Io(kind) => 16 + KINDS.iter().position(|k| *k == kind).unwrap_or(6) as u8,
    }
}

fn decode(code: u8) -> Cause {
    match code {
        1 => Cause::Closed,
        2 => Cause::TimedOut,
        3 => Cause::Auth,
        4 => Cause::Tls,
        5 => Cause::Malformed,
        6 => Cause::Refused,
        7 => Cause::NoPrimary,
        16.. => Cause::Io(KINDS[usize::from(code - 16).min(KINDS.len() - 1)]),
        _ => Cause::Unknown,
    }
}

/// How long one health-check PING may take.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Every `interval` runs [`check_once`]; every `probe_every` instead while
/// Redis is down or no check has succeeded yet (in Sentinel mode the first
/// one runs when the primary is known, and readiness waits for a success:
/// a failed first check must not leave it waiting a whole interval). A
/// connect that fails for good between checks brings the next one forward
/// the same way. In between, reopens up to `min_idle` connections as soon
/// as one is closed at check-in.
pub fn spawn_health_checker(
    pool: Pool,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let soon = pool.health.probe_every.min(interval);
        loop {
            let unsure = pool.health.is_down()
                || pool.health.last_check_unix_ms.load(Ordering::Relaxed) == 0;
            let mut due = tokio::time::Instant::now() + if unsure { soon } else { interval };
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    _ = pool.health.down_notified() => {
                        due = due.min(tokio::time::Instant::now() + soon);
                    }
                    _ = pool.keep.manager.closed() => refill_after_close(&pool).await,
                    _ = shutdown.changed() => return,
                }
            }
            check_once(&pool).await;
        }
    })
}

/// One health-check round; public so tests and the admin server can run one now.
///
/// The round PINGs the *warm* connections only: the `min_idle` idle ones on
/// top of bb8's LIFO stack (the most recently used, which clients get
/// first), closes those that fail, and opens connections until `min_idle`
/// will still be open at the next round. It leaves every other idle
/// connection alone, for two reasons found in bb8 0.9:
///
/// 1. bb8's `min_idle` counts *idle* connections: any checkout that leaves
///    fewer idle makes bb8 open more. A round that held every idle
///    connection made it open `min_idle` new ones each time, so with no
///    traffic the pool grew to `max_connections`. So bb8's `min_idle` is
///    off (`Pool::new`), and this round (and a close at check-in) keeps
///    `min_idle` open instead.
/// 2. bb8 measures idle time from the last check-in, and a health PING
///    is a checkout and a check-in: PINGing a connection restarts its
///    idle timer, so idle connections beyond `min_idle` never reached
///    `idle_timeout`. Left alone, bb8's reaper closes them.
///
/// A connection a round leaves alone is still not met stale: a checkout
/// PINGs any connection Redis has not answered on for a health interval
/// (`Pool::verify`). While Redis is down, or nothing is open, the round
/// tries one connection instead, so service resumes without a restart.
pub async fn check_once(pool: &Pool) {
    pool.stats.health_check_ran();
    // The control plane's borrow waits: it would find the warm ones taken.
    let _round = pool.keep.round.lock().await;
    let state = pool.bb8().state();
    // Until a check has succeeded, one connection is PINGed whatever is
    // open: a connection another task opened first (the control plane's)
    // is no warm one with `min_idle = 0`, and the round would check nothing.
    let never_checked = pool.health.last_check_unix_ms.load(Ordering::Relaxed) == 0;
    let found = if pool.health.is_down() || state.connections == 0 || never_checked {
        probe(pool, state.idle_connections).await
    } else {
        check_warm(pool).await
    };
    let refilled = refill(pool, pool.keep.min_idle.saturating_sub(found.lasting)).await;
    if !found.healthy || refilled.is_err() {
        pool.stats.health_check_failed();
    }
}

/// What a round found.
struct Found {
    /// Every PING was answered.
    healthy: bool,
    /// Connections still open at the next round: the warm ones that
    /// answered, are not stale and that `max_lifetime` leaves alone until
    /// then, and the checked-out ones. Other idle ones do not count: bb8 closes them
    /// once they have been idle for `idle_timeout`.
    lasting: u32,
}

/// Takes one connection (idle ones left from before Redis went away are
/// closed: skipped, so the pool opens a new one) and PINGs it.
async fn probe(pool: &Pool, idle: u32) -> Found {
    let failed = Found {
        healthy: false,
        lasting: 0,
    };
    let started = Instant::now();
    for _ in 0..=idle {
        let mut conn = match pool.bb8().get().await {
            Ok(conn) => conn,
            Err(e) => {
                debug!(error = %e, "health check: cannot connect");
                return failed;
            }
        };
        if conn.is_closed() || pool.is_stale(&conn) {
            conn.mark_broken();
            continue;
        }
        // Bounded: a half-open connection must not hang the health task.
        let answered = tokio::time::timeout(PING_TIMEOUT, conn.ping()).await;
        if let Err(e) = answered.unwrap_or_else(|_| {
            Err(UpstreamError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer to a health-check PING",
            )))
        }) {
            conn.mark_broken();
            warn!(error = %e, "health check: PING failed");
            return failed;
        }
        conn.mark_verified(Instant::now());
        pool.health.mark_up();
        pool.health.record_check(started.elapsed());
        return Found {
            healthy: true,
            lasting: pool.bb8().state().connections,
        };
    }
    failed
}

/// PINGs the warm connections at once, closes those that fail, and puts
/// the others back in their order.
async fn check_warm(pool: &Pool) -> Found {
    let held = hold_warm(pool).await;
    let state = pool.bb8().state();
    let checked_out =
        (state.connections - state.idle_connections).saturating_sub(held.len() as u32);
    let checked = held.len();
    let mut pings = tokio::task::JoinSet::new();
    for (place, mut conn) in held.into_iter().enumerate() {
        pings.spawn(async move {
            let started = Instant::now();
            let answered = tokio::time::timeout(PING_TIMEOUT, conn.ping()).await;
            let latency = matches!(answered, Ok(Ok(()))).then(|| started.elapsed());
            (place, conn, latency)
        });
    }
    let mut back: Vec<_> = (0..checked).map(|_| None).collect();
    let (mut failed, mut lasting) = (0, checked_out);
    while let Some(joined) = pings.join_next().await {
        // A PING task that panicked dropped its connection mid-command: closed.
        let Ok((place, mut conn, latency)) = joined else {
            failed += 1;
            continue;
        };
        if let Some(latency) = latency {
            conn.mark_verified(Instant::now());
            pool.health.record_check(latency);
            lasting += u32::from(lasts(pool, &conn));
        } else {
            conn.mark_broken();
            failed += 1;
        }
        back[place] = Some(conn);
    }
    // Last first: the most recently used ends on top of the stack again.
    while let Some(conn) = back.pop() {
        drop(conn);
    }
    if failed > 0 {
        warn!(failed, checked, "health check: closed stale connections");
    } else if checked > 0 {
        pool.health.mark_up();
    }
    Found {
        healthy: failed == 0,
        lasting,
    }
}

/// Checks out idle connections, most recent first, until `min_idle` of
/// them outlast the next round (those `max_lifetime` closes sooner, and
/// stale ones, are taken along, not counted: their replacements are opened
/// now). Never
/// waits for one: a checkout that finds none idle makes bb8 open one. (A
/// client taking the last idle one between the look and the checkout still
/// can; that connection is unused, and closes after `idle_timeout`.)
async fn hold_warm(pool: &Pool) -> Vec<PooledConnection<'static, UpstreamManager>> {
    let mut held = Vec::new();
    let mut lasting = 0;
    while lasting < pool.keep.min_idle && pool.bb8().state().idle_connections > 0 {
        match tokio::time::timeout(Duration::from_millis(10), pool.bb8().get_owned()).await {
            Ok(Ok(conn)) => {
                lasting += u32::from(lasts(pool, &conn));
                held.push(conn);
            }
            _ => break,
        }
    }
    held
}

/// `conn` is still open at the next round: not stale (`Pool::mark_stale`:
/// closed at check-in), and not closed by bb8 for its age (`max_lifetime`)
/// before the next round (or the reaper period after it) could PING it.
fn lasts(pool: &Pool, conn: &UpstreamConn) -> bool {
    let horizon = pool.keep.health_interval + pool.reaper_rate();
    let expiring = pool
        .keep
        .max_lifetime
        .is_some_and(|l| l.saturating_sub(conn.created.elapsed()) < horizon);
    !expiring && !pool.is_stale(conn)
}

/// Opens up to `missing` connections, within `max_connections`. Stops at
/// the first failed connect (which marks Redis down), and while Redis is
/// known to be down: the round's probe finds it back.
async fn refill(pool: &Pool, missing: u32) -> Result<(), UpstreamError> {
    for _ in 0..missing {
        if pool.health.is_down() {
            break;
        }
        let conn = pool.keep.manager.connect().await?;
        if pool.bb8().add(conn).is_err() {
            break;
        }
    }
    Ok(())
}

/// After a connection was closed at check-in: opens connections until
/// `min_idle` are open, counting every open one. (Should this run before
/// bb8 has counted the close, or should bb8's reaper close idle ones
/// counted here, the next round makes up for it.)
async fn refill_after_close(pool: &Pool) {
    let open = pool.bb8().state().connections;
    let _ = refill(pool, pool.keep.min_idle.saturating_sub(open)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_survive_the_one_byte_encoding() {
        for cause in [
            Cause::Unknown,
            Cause::Closed,
            Cause::TimedOut,
            Cause::Auth,
            Cause::Tls,
            Cause::Malformed,
            Cause::Refused,
            Cause::Io(ErrorKind::ConnectionRefused),
            Cause::Io(ErrorKind::NotFound),
        ] {
            assert_eq!(decode(encode(cause)), cause);
        }
        assert_eq!(
            decode(encode(Cause::Io(ErrorKind::PermissionDenied))),
            Cause::Io(ErrorKind::Other)
        );
    }
}
