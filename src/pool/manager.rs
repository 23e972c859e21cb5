//! bb8's `ManageConnection` for raw upstream connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::Notify;
use tracing::debug;

use super::conn::{Target, UpstreamConn};
use super::{Stats, UpstreamError, UpstreamHealth};
use crate::config::PoolConfig;

/// Reconnect policy: `retries` after the first attempt, delays
/// `base * factor^n` capped at `max`, with jitter so a Redis restart is not
/// answered by every sidecar reconnecting in the same millisecond.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub retries: usize,
    pub base: Duration,
    pub factor: f32,
    pub max: Duration,
}

impl Backoff {
    pub fn from_config(p: &PoolConfig) -> Backoff {
        Backoff {
            retries: p.connect_retries as usize,
            base: Duration::from_millis(p.backoff_base_ms),
            factor: p.backoff_factor as f32,
            max: Duration::from_millis(p.backoff_max_ms),
        }
    }

    pub fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_factor(self.factor)
            .with_max_delay(self.max)
            .with_max_times(self.retries)
            .with_jitter()
    }
}

/// Creates upstream connections for the pool and reports reachability.
/// Clones share the health, stats and `closed` signal: the pool keeps one
/// to open its `min_idle` connections itself (see `health::refill`).
#[derive(Clone)]
pub struct UpstreamManager {
    target: Target,
    backoff: Backoff,
    health: Arc<UpstreamHealth>,
    stats: Arc<Stats>,
    /// Bumped when the pool's connections turn stale (see `Pool::mark_stale`).
    generation: Arc<AtomicU64>,
    /// Signalled when a connection is closed at check-in, so the health
    /// checker reopens up to `min_idle` at once rather than a round later.
    closed: Arc<Notify>,
    /// bb8 closes a connection this old at check-in (and signals nothing).
    max_lifetime: Option<Duration>,
    /// Signalled when the Sentinels moved the primary (`Pool::switch_primary`):
    /// a connect still waiting on the old address gives up and tries the new one.
    moved: Arc<Notify>,
}

impl UpstreamManager {
    pub fn new(
        target: Target,
        backoff: Backoff,
        health: Arc<UpstreamHealth>,
        stats: Arc<Stats>,
        max_lifetime: Option<Duration>,
    ) -> UpstreamManager {
        UpstreamManager {
            target,
            backoff,
            health,
            stats,
            generation: Arc::new(AtomicU64::new(0)),
            closed: Arc::default(),
            max_lifetime,
            moved: Arc::default(),
        }
    }

    pub(super) fn moved(&self) -> &Arc<Notify> {
        &self.moved
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    pub(super) fn generation(&self) -> &Arc<AtomicU64> {
        &self.generation
    }

    fn is_stale(&self, conn: &UpstreamConn) -> bool {
        conn.generation < self.generation.load(Ordering::Acquire)
    }

    /// Resolves after a connection was closed at check-in.
    pub fn closed(&self) -> tokio::sync::futures::Notified<'_> {
        self.closed.notified()
    }
}

impl bb8::ManageConnection for UpstreamManager {
    type Connection = UpstreamConn;
    type Error = UpstreamError;

    async fn connect(&self) -> Result<UpstreamConn, UpstreamError> {
        // Each attempt reads the generation before it reads the address: a
        // connection belongs to the generation it started in. One made while
        // the primary moved points at the old one: it is dropped and the
        // connect starts again (a few times at most) towards the new one.
        let attempt = || async {
            let generation = self.generation.load(Ordering::Acquire);
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.generation.load(Ordering::Acquire) != generation {
                return Err(UpstreamError::Moved);
            }
            tokio::select! {
                conn = UpstreamConn::connect(&self.target) => Ok((conn?, generation)),
                _ = moved => Err(UpstreamError::Moved),
            }
        };
        let mut last = UpstreamError::Moved;
        for _ in 0..3 {
            let started = self.generation.load(Ordering::Acquire);
            let result = attempt
                .retry(self.backoff.builder())
                .when(UpstreamError::is_transient)
                .notify(|e, delay| debug!(error = %e, ?delay, "upstream connect failed; retrying"))
                .await;
            let now = self.generation.load(Ordering::Acquire);
            match result {
                Ok((mut conn, generation)) if generation == now => {
                    conn.generation = generation;
                    self.stats.connection_created();
                    self.health.mark_up();
                    return Ok(conn);
                }
                // Made for where the primary was: never pooled.
                Ok(_) => {}
                Err(e) if started == now => {
                    // Counted where a client is answered, or as a failed
                    // health check. A connect to where the primary was
                    // before a switch says nothing about the new one.
                    self.health.mark_down(&e);
                    return Err(e);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn is_valid(&self, conn: &mut UpstreamConn) -> Result<(), UpstreamError> {
        conn.ping().await
    }

    /// Called by bb8 at every check-in: a stale connection is closed, not
    /// pooled. An expired one is left to bb8 (which counts it as
    /// `max_lifetime`); either is signalled, for `min_idle`.
    fn has_broken(&self, conn: &mut UpstreamConn) -> bool {
        let broken = conn.is_broken() || self.is_stale(conn);
        let expired = self
            .max_lifetime
            .is_some_and(|l| conn.created.elapsed() >= l);
        if broken || expired {
            self.closed.notify_one();
        }
        broken
    }
}
