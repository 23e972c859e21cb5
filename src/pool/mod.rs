//! The bounded pool of upstream connections: bb8 with poolside's own
//! connection manager, fast failure while Redis is down, and usage stats.

mod conn;
mod error;
mod health;
mod manager;
mod primary;
mod stats;
mod tls;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bb8::{PooledConnection, RunError};
use tracing::debug;

pub use conn::{host_of, Address, ReplyHead, ReplyPart, Target, UpstreamConn, DB_UNKNOWN};
pub use error::UpstreamError;
pub use health::{check_once, spawn_health_checker, UpstreamHealth};
pub use manager::{Backoff, UpstreamManager};
pub use primary::{Primary, PrimaryView, MAX_SENTINELS};
pub use stats::{Snapshot, Stats};
pub use tls::{TlsTarget, UpstreamStream};

use crate::config::Config;
use crate::error::{Cause, Error};

/// The pool is marked stale at most this often (see [`Pool::mark_stale`]).
pub const STALE_EVERY: Duration = Duration::from_secs(1);

/// A batch held for a failover looks at the state again at least this often
/// (besides being woken by every change): the pool's health has no signal
/// of its own when Redis answers again.
const HOLD_RECHECK: Duration = Duration::from_millis(50);

/// bb8's default reaper period, kept unless a limit is shorter.
const REAPER_RATE: Duration = Duration::from_secs(30);

/// The data path's handle on the pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: bb8::Pool<UpstreamManager>,
    pub health: Arc<UpstreamHealth>,
    pub stats: Arc<Stats>,
    checkout_timeout: Duration,
    max: u32,
    /// How long a probe after a response timeout may take.
    probe_timeout: Duration,
    /// The manager's generation counter (see [`Pool::mark_stale`]).
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Times the pool was marked stale.
    stale_marks: Arc<std::sync::atomic::AtomicU64>,
    keep: Arc<Keep>,
}

/// How the pool keeps its connections fresh and its size down (one `Arc`:
/// a multiplexer holds a `Pool` inline).
struct Keep {
    /// When the pool was last marked stale.
    last_stale: std::sync::Mutex<Option<Instant>>,
    /// A probe is running: one at a time.
    probing: std::sync::atomic::AtomicBool,
    /// Opens the `min_idle` connections (bb8's own `min_idle` is off: see
    /// [`check_once`]).
    manager: UpstreamManager,
    min_idle: u32,
    /// `pool.health_check_interval_secs`: a connection Redis has not
    /// answered on for this long is PINGed before a client gets it.
    health_interval: Duration,
    /// How long that checkout PING may take: the response timeout.
    verify_timeout: Duration,
    max_lifetime: Option<Duration>,
    /// Held by a health round while it holds the warm connections, and by
    /// [`Pool::borrow`] while it checks out: the control plane never finds
    /// them all taken and makes the pool open one more.
    round: tokio::sync::Mutex<()>,
    /// Signalled when the primary moved (a Sentinel switch): pinned
    /// sessions on the old one close.
    moved: Arc<tokio::sync::Notify>,
    /// Sentinel mode: the primary connections go to, and the failover hold.
    primary: Option<Arc<Primary>>,
}

/// A connection checked out for a client. Counts as in use until dropped;
/// dropping it checks it back in, or closes it when it is broken.
pub struct Upstream {
    conn: PooledConnection<'static, UpstreamManager>,
    stats: Arc<Stats>,
    checked_out_at: Instant,
    /// A client's checkout (counted in utilization), not the control plane's.
    counted: bool,
}

impl Deref for Upstream {
    type Target = UpstreamConn;
    fn deref(&self) -> &UpstreamConn {
        &self.conn
    }
}

impl DerefMut for Upstream {
    fn deref_mut(&mut self) -> &mut UpstreamConn {
        &mut self.conn
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Back whole (a broken one is closed, whatever the stamp says).
        let now = Instant::now();
        self.conn.mark_verified(now);
        if self.counted {
            self.stats.checked_in_after(now - self.checked_out_at);
        }
    }
}

impl Pool {
    /// Builds the pool without connecting: poolside starts while Redis is down.
    pub fn new(config: &Config, target: Target) -> Pool {
        let health = Arc::new(UpstreamHealth::new(Duration::from_millis(
            config.pool.backoff_max_ms,
        )));
        let stats = Arc::new(Stats::new(config.pool.max_connections));
        let p = &config.pool;
        let max_lifetime = Some(Duration::from_secs(p.max_lifetime_secs)).filter(|d| !d.is_zero());
        let manager = UpstreamManager::new(
            target,
            Backoff::from_config(p),
            health.clone(),
            stats.clone(),
            max_lifetime,
        );
        let checkout_timeout = Duration::from_millis(p.checkout_timeout_ms);
        let generation = manager.generation().clone();
        let idle_timeout = Some(Duration::from_secs(p.idle_timeout_secs)).filter(|d| !d.is_zero());
        // bb8's reaper closes idle connections past `idle_timeout` (since
        // their last check-in) or `max_lifetime`, every `reaper_rate`
        // (bb8's default 30 s): sooner when a limit is shorter.
        let reaper_rate = [Some(REAPER_RATE), idle_timeout, max_lifetime]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(REAPER_RATE);
        // No bb8 `min_idle`: it would open a connection whenever a checkout
        // leaves fewer than `min_idle` idle, health checks included. The
        // health checker keeps `min_idle` open instead (see `check_once`).
        let inner = bb8::Pool::builder()
            .max_size(p.max_connections)
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(checkout_timeout)
            .max_lifetime(max_lifetime)
            .idle_timeout(idle_timeout)
            .reaper_rate(reaper_rate)
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .build_unchecked(manager.clone());
        let response_timeout = Duration::from_millis(p.response_timeout_ms);
        let moved = manager.moved().clone();
        let primary = match &manager.target().address {
            Address::Sentinel(primary) => Some(primary.clone()),
            Address::Fixed(_) => None,
        };
        Pool {
            inner,
            health,
            stats,
            checkout_timeout,
            max: p.max_connections,
            probe_timeout: Duration::from_millis(
                config.upstream.connect_timeout_ms + p.response_timeout_ms.max(1_000),
            ),
            generation,
            stale_marks: Default::default(),
            keep: Arc::new(Keep {
                last_stale: Default::default(),
                probing: Default::default(),
                manager,
                min_idle: p.min_idle,
                health_interval: Duration::from_secs(p.health_check_interval_secs),
                verify_timeout: Some(response_timeout)
                    .filter(|t| !t.is_zero())
                    .unwrap_or(health::PING_TIMEOUT),
                max_lifetime,
                round: Default::default(),
                moved,
                primary,
            }),
        }
    }

    /// Checks out a clean, open connection for one client batch.
    ///
    /// While Redis is known to be down this fails at once (one caller at a
    /// time is let through to probe), so clients get an error, not a hang.
    pub async fn check_out(&self) -> Result<Upstream, Error> {
        self.take(true).await
    }

    /// A connection for the control plane (INFO, CLIENT LIST): one of the
    /// pool's own, so Redis never sees more than `max_connections` from this
    /// poolside; not counted as a client's checkout.
    pub async fn borrow(&self) -> Result<Upstream, Error> {
        let _round = self.keep.round.lock().await;
        self.take(false).await
    }

    /// Sentinel mode: a failover holds new batches now (`ready` waits).
    pub fn holds(&self) -> bool {
        self.keep
            .primary
            .as_ref()
            .is_some_and(|p| p.holds(self.health.is_down()))
    }

    /// In Sentinel mode, a checkout or lane submit first waits here while
    /// the primary cannot take the batch (none known, a Sentinel reports it
    /// down or failing over, or it does not answer), up to
    /// `failover_hold_ms`; then `Error::NoPrimary`. Nothing
    /// has been written yet, so the batch runs on whichever primary comes.
    /// Returns at once otherwise.
    pub async fn ready(&self) -> Result<(), Error> {
        if self.keep.primary.is_none() {
            return Ok(());
        }
        self.ready_since(Instant::now()).await
    }

    async fn ready_since(&self, started: Instant) -> Result<(), Error> {
        let Some(primary) = &self.keep.primary else {
            return Ok(());
        };
        let mut counted = false;
        loop {
            let changed = primary.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !primary.holds(self.health.is_down()) {
                return Ok(());
            }
            let limit = primary.hold_limit();
            let waited = started.elapsed();
            if waited >= limit {
                primary.expired();
                return Err(Error::NoPrimary {
                    held_ms: limit.as_millis() as u64,
                });
            }
            if !counted {
                counted = true;
                primary.held();
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep((limit - waited).min(HOLD_RECHECK)) => {}
            }
        }
    }

    /// Awaits `f` (a batch waiting behind another that opens a connection);
    /// in Sentinel mode the batch counts as held if the hold is on while it
    /// waits, as it does when it waits in [`ready`](Self::ready) itself.
    pub async fn waiting<F: std::future::Future>(&self, f: F) -> F::Output {
        let Some(primary) = &self.keep.primary else {
            return f.await;
        };
        tokio::pin!(f);
        let mut counted = false;
        loop {
            tokio::select! {
                out = &mut f => return out,
                _ = tokio::time::sleep(HOLD_RECHECK), if !counted => {
                    if primary.holds(self.health.is_down()) {
                        counted = true;
                        primary.held();
                    }
                }
            }
        }
    }

    /// Sentinel mode: `address` is the primary now. New connections go
    /// there; every older one is stale (closed at check-in, skipped at
    /// checkout, its lane takes nothing new) and pinned sessions on it are
    /// told to close. The pool's health starts afresh: it was the old node's.
    /// `true` when this moved the primary (a failover), not its first discovery.
    pub fn switch_primary(&self, address: &str) -> bool {
        use std::sync::atomic::Ordering;
        let Some(primary) = &self.keep.primary else {
            return false;
        };
        // The address first, then the generation: a connect that reads the
        // new generation (Acquire) reads the new address.
        let failover = primary.set(address);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.health.mark_up();
        // Only now may held batches go: every connection they can get is
        // the new primary's.
        primary.release();
        self.keep.moved.notify_waiters();
        let pool = self.clone();
        tokio::spawn(async move {
            pool.close_stale_idle().await;
            // Readiness, latency and `min_idle` follow the new primary now,
            // not a health interval later.
            check_once(&pool).await;
        });
        failover
    }

    /// Closes the idle connections to a node that is no longer the primary
    /// now rather than at their next checkout: each is taken and put back,
    /// and the check-in closes it as stale. Bounded: it stops at the first
    /// connection that does not come at once.
    async fn close_stale_idle(&self) {
        let idle = self.inner.state().idle_connections;
        let mut taken = Vec::new();
        for _ in 0..idle {
            match tokio::time::timeout(Duration::from_millis(50), self.inner.get()).await {
                Ok(Ok(conn)) => taken.push(conn),
                _ => break,
            }
        }
        let stale = taken.iter().filter(|c| self.is_stale(c)).count();
        drop(taken);
        if stale > 0 {
            debug!(stale, "closed idle connections to the old primary");
        }
    }

    /// Sentinel mode: the primary and hold state.
    pub fn primary(&self) -> Option<&Arc<Primary>> {
        self.keep.primary.as_ref()
    }

    /// Resolves once the primary moved away from connections of
    /// `generation` (a Sentinel switch); never in fixed-address mode.
    pub async fn moved_from(&self, generation: u64) {
        if self.keep.primary.is_none() {
            return std::future::pending().await;
        }
        loop {
            let moved = self.keep.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.generation() > generation {
                return;
            }
            moved.await;
        }
    }

    async fn take(&self, counted: bool) -> Result<Upstream, Error> {
        let Some(primary) = &self.keep.primary else {
            return self.take_once(counted).await;
        };
        if !counted {
            // The control plane does not wait out a failover (it holds the
            // health round's lock meanwhile): it tries again later.
            if primary.holds(self.health.is_down()) {
                return Err(Error::NoPrimary { held_ms: 0 });
            }
            return self.take_once(false).await;
        }
        let started = Instant::now();
        loop {
            self.ready_since(started).await?;
            match self.take_once(counted).await {
                // The primary did not answer: hold (the next `ready` waits
                // while the pool is marked down) rather than fail the batch.
                Err(Error::UpstreamDown(cause))
                    if !cause.needs_detail() && started.elapsed() < primary.hold_limit() =>
                {
                    tokio::task::yield_now().await;
                }
                other => return other,
            }
        }
    }

    async fn take_once(&self, counted: bool) -> Result<Upstream, Error> {
        let started = Instant::now();
        // Idle connections found closed (Redis restarted) are discarded and the
        // next one tried; nothing was sent on them, so this is no retry.
        for _ in 0..=self.max {
            if !self.health.may_try() {
                return Err(Error::UpstreamDown(self.health.cause()));
            }
            let down = self.health.down_notified();
            tokio::pin!(down);
            down.as_mut().enable();
            let got = tokio::select! {
                got = self.inner.get_owned() => got,
                _ = down => return Err(Error::UpstreamDown(self.health.cause())),
            };
            match got {
                Ok(mut conn) => {
                    if conn.is_closed() || self.is_stale(&conn) {
                        conn.mark_broken();
                        continue;
                    }
                    let mut now = Instant::now();
                    if conn.unverified_for(now) >= self.keep.health_interval {
                        if !self.verify(&mut conn).await? {
                            continue;
                        }
                        now = Instant::now();
                    }
                    if counted {
                        self.stats.checked_out(now - started);
                    }
                    return Ok(Upstream {
                        conn,
                        stats: self.stats.clone(),
                        checked_out_at: now,
                        counted,
                    });
                }
                Err(RunError::TimedOut) => {
                    // The control plane's waits are not the clients': not counted.
                    if counted {
                        self.stats.checkout_timed_out(started.elapsed());
                    }
                    if self.health.is_down() {
                        return Err(Error::UpstreamDown(self.health.cause()));
                    }
                    if counted {
                        self.stats.exhausted();
                    }
                    return Err(Error::PoolExhausted {
                        waited_ms: self.checkout_timeout.as_millis() as u64,
                        max: self.max,
                    });
                }
                Err(RunError::User(e)) => return Err(Error::UpstreamDown(e.cause())),
            }
        }
        Err(Error::UpstreamDown(Cause::Closed))
    }

    /// PINGs a connection Redis has not answered on for a health interval
    /// (one the health checker leaves alone, see [`check_once`]) before a
    /// client gets it: `Ok(false)` when it failed and was discarded (nothing
    /// of the client's was sent: the next one is tried). No answer within
    /// the response timeout fails the checkout, as the batch would have.
    async fn verify(
        &self,
        conn: &mut PooledConnection<'static, UpstreamManager>,
    ) -> Result<bool, Error> {
        match tokio::time::timeout(self.keep.verify_timeout, conn.ping()).await {
            Ok(Ok(())) => {
                conn.mark_verified(Instant::now());
                Ok(true)
            }
            Ok(Err(e)) => {
                debug!(error = %e, "checkout: stale connection discarded");
                conn.mark_broken();
                Ok(false)
            }
            Err(_) => {
                conn.mark_broken();
                self.probe_now();
                Err(Error::TimedOut {
                    ms: self.keep.verify_timeout.as_millis() as u64,
                })
            }
        }
    }

    /// A batch timed out: probe Redis now (one probe at a time) on a pooled
    /// connection (within `max_connections`). If it does not answer either, Redis is marked down: new
    /// batches fail fast and readiness turns 503, until a health check finds
    /// it answering again.
    pub fn probe_now(&self) {
        use std::sync::atomic::Ordering;
        if let Some(primary) = &self.keep.primary {
            // Sentinel mode: hold new batches until the primary answers
            // ROLE again or the Sentinels name another.
            primary.suspect("a batch got no reply within the response timeout".into());
        }
        if self.keep.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let probe = async {
                let mut conn = pool.inner.get().await.map_err(|e| match e {
                    RunError::User(e) => e,
                    RunError::TimedOut => UpstreamError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no pooled connection free for a probe",
                    )),
                })?;
                let stale = pool.is_stale(&conn);
                let pinged = conn.ping().await;
                if pinged.is_err() {
                    conn.mark_broken();
                }
                // The node a switch left says nothing about the new primary.
                if stale {
                    return Ok(());
                }
                pinged
            };
            match tokio::time::timeout(pool.probe_timeout, probe).await {
                Ok(Ok(())) => pool.health.mark_up(),
                Ok(Err(e)) => pool.health.mark_down(&e),
                Err(_) => pool
                    .health
                    .mark_down(&UpstreamError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer to a probe after a response timeout",
                    ))),
            }
            pool.keep.probing.store(false, Ordering::Release);
        });
    }

    /// Redis is no longer where this pool's connections point (a `-READONLY`
    /// from a node believed primary, a health check finding a replica): every
    /// connection made before now is stale, closed at its next check-in or
    /// checkout instead of being used again, and new connections resolve the
    /// name afresh. Connections made from `generation` on are not affected, so
    /// several reports of one failover close each old connection once.
    ///
    /// At most once per [`STALE_EVERY`]: a name that keeps pointing at a
    /// replica (or a fixed address whose node was demoted) must not turn
    /// every refused write into a new connection.
    pub fn mark_stale(&self, generation: u64) {
        use std::sync::atomic::Ordering;
        if let Some(primary) = &self.keep.primary {
            if generation >= self.generation() {
                // Sentinel mode: the node the Sentinels named refuses writes.
                // Hold until they are asked again (now).
                primary.suspect("the primary answered -READONLY (demoted?)".into());
            }
        }
        let next = generation + 1;
        if self.generation() >= next {
            return;
        }
        {
            let mut last = self
                .keep
                .last_stale
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < STALE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if self.generation.fetch_max(next, Ordering::AcqRel) < next {
            self.stale_marks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                generation = next,
                "upstream moved (failover): closing connections made before now"
            );
        }
    }

    /// The current generation: connections made now belong to it.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_stale(&self, conn: &UpstreamConn) -> bool {
        conn.generation < self.generation()
    }

    /// How many times the pool was marked stale.
    pub fn stale_marks(&self) -> u64 {
        self.stale_marks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fewer connections are open than `max_connections`.
    pub fn has_room(&self) -> bool {
        self.inner.state().connections < self.max
    }

    /// Pool occupancy and counters right now.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.inner.state();
        self.stats.snapshot(&state)
    }

    /// How often bb8's reaper looks for idle connections past their limits.
    pub(crate) fn reaper_rate(&self) -> Duration {
        self.inner.config().reaper_rate
    }

    /// The underlying bb8 pool, for the health checker.
    pub(crate) fn bb8(&self) -> &bb8::Pool<UpstreamManager> {
        &self.inner
    }
}
