//! Is Redis reachable? Fast failure while it is not, and the periodic health check.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};

use super::{Pool, UpstreamError};
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
        16.. => Cause::Io(KINDS[usize::from(code - 16).min(KINDS.len() - 1)]),
        _ => Cause::Unknown,
    }
}

/// Every `interval` (every `probe_every` while Redis is down): PING each idle
/// connection and close those that fail, so a client never meets a stale one;
/// while down, try one connection so service resumes without a restart.
pub fn spawn_health_checker(
    pool: Pool,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let wait = if pool.health.is_down() {
                pool.health.probe_every.min(interval)
            } else {
                interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            check_once(&pool).await;
        }
    })
}

/// One health-check round; public so tests and the admin server can run one now.
pub async fn check_once(pool: &Pool) {
    pool.stats.health_check_ran();
    let started = Instant::now();
    let state = pool.bb8().state();
    let idle = state.idle_connections;
    let was_down = pool.health.is_down();
    if idle == 0 && !was_down && state.connections > 0 {
        // Every connection is in use and answering: nothing idle to test,
        // and a probe would be one connection more than the pool allows.
        return;
    }
    if idle == 0 || was_down {
        // Nothing pooled to test: take one the pool opens (within its max,
        // so Redis never sees more than max_connections from poolside).
        // Idle connections left from before Redis went away are closed:
        // skip them (the pool then opens a new one).
        for _ in 0..=idle {
            match pool.bb8().get().await {
                Ok(mut conn) => {
                    if conn.is_closed() {
                        conn.mark_broken();
                        continue;
                    }
                    match conn.ping().await {
                        Ok(()) => {
                            pool.health.mark_up();
                            pool.health.record_check(started.elapsed());
                        }
                        Err(e) => {
                            conn.mark_broken();
                            pool.stats.health_check_failed();
                            warn!(error = %e, "health check: PING failed");
                        }
                    }
                    return;
                }
                Err(e) => {
                    pool.stats.health_check_failed();
                    debug!(error = %e, "health check: cannot connect");
                    return;
                }
            }
        }
        return;
    }
    // Hold every idle connection at once so each is tested exactly once.
    let mut held = Vec::with_capacity(idle as usize);
    for _ in 0..idle {
        match tokio::time::timeout(Duration::from_millis(10), pool.bb8().get()).await {
            Ok(Ok(conn)) => held.push(conn),
            _ => break,
        }
    }
    let mut failed = 0;
    for conn in held.iter_mut() {
        let ping_started = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(2), conn.ping()).await;
        match ok {
            Ok(Ok(())) => pool.health.record_check(ping_started.elapsed()),
            _ => {
                conn.mark_broken();
                failed += 1;
            }
        }
    }
    if failed > 0 {
        pool.stats.health_check_failed();
        warn!(
            failed,
            checked = held.len(),
            "health check: closed stale connections"
        );
    } else {
        pool.health.mark_up();
    }
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
