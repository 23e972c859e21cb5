//! Pool counters the data path updates without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::histogram::{Counts, Histogram};

/// Counters of one pool: occupancy, checkouts, connections, health checks.
/// Client-level counters live in `traffic::Traffic`, a layer above.
#[derive(Debug, Default)]
pub struct Stats {
    max_connections: u32,
    in_use: AtomicU64,
    peak_in_use: AtomicU64,
    checkouts: AtomicU64,
    checkout_wait_us: AtomicU64,
    exhausted: AtomicU64,
    created: AtomicU64,
    health_check_runs: AtomicU64,
    health_check_failures: AtomicU64,
    checkout_timeouts: AtomicU64,
    /// Highest `in_use` since the usage sampler last looked.
    interval_peak: AtomicU64,
    /// Time connections spent checked out, summed over check-ins.
    hold_us: AtomicU64,
    checkins: AtomicU64,
    checkout_wait: Histogram,
}

/// A point-in-time copy of the pool's state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub max_connections: u32,
    /// Connections checked out by clients (health checks excluded).
    pub in_use: u32,
    pub idle: u32,
    /// Open upstream connections, in use or idle.
    pub connections: u32,
    pub peak_in_use: u32,
    pub exhausted_total: u64,
    pub created_total: u64,
    pub closed_total: u64,
    pub checkouts_total: u64,
    pub checkout_wait_total_us: u64,
    pub health_check_runs_total: u64,
    pub health_check_failures_total: u64,
    /// Checkouts that waited `checkout_timeout` in vain, whatever the cause;
    /// `exhausted_total` counts those where the pool was full.
    pub checkout_timeouts_total: u64,
    pub checkins_total: u64,
    pub hold_total_us: u64,
}

impl Stats {
    pub fn new(max_connections: u32) -> Stats {
        Stats {
            max_connections,
            ..Stats::default()
        }
    }

    pub(crate) fn checked_out(&self, waited: Duration) {
        let now = self.in_use.fetch_add(1, Relaxed) + 1;
        self.peak_in_use.fetch_max(now, Relaxed);
        self.checkouts.fetch_add(1, Relaxed);
        self.checkout_wait_us
            .fetch_add(waited.as_micros() as u64, Relaxed);
        self.interval_peak.fetch_max(now, Relaxed);
        self.checkout_wait.record(waited);
    }

    pub(crate) fn checked_in(&self) {
        self.in_use.fetch_sub(1, Relaxed);
    }

    /// A connection held for `held` came back (or was closed).
    pub(crate) fn checked_in_after(&self, held: Duration) {
        self.checked_in();
        self.checkins.fetch_add(1, Relaxed);
        self.hold_us.fetch_add(held.as_micros() as u64, Relaxed);
    }

    /// A checkout gave up after `waited`; the wait still counts in the histogram.
    pub(crate) fn checkout_timed_out(&self, waited: Duration) {
        self.checkout_timeouts.fetch_add(1, Relaxed);
        self.checkout_wait.record(waited);
    }

    pub fn checkout_wait(&self) -> Counts {
        self.checkout_wait.counts()
    }

    /// The highest number of connections in use since the last call (at least
    /// the number in use now). For the usage sampler only: it resets the mark.
    pub fn take_interval_peak(&self) -> u32 {
        let now = self.in_use.load(Relaxed);
        self.interval_peak.swap(now, Relaxed).max(now) as u32
    }

    pub(crate) fn exhausted(&self) {
        self.exhausted.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_created(&self) {
        self.created.fetch_add(1, Relaxed);
    }

    pub(crate) fn health_check_ran(&self) {
        self.health_check_runs.fetch_add(1, Relaxed);
    }

    pub(crate) fn health_check_failed(&self) {
        self.health_check_failures.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self, state: &bb8::State) -> Snapshot {
        let s = &state.statistics;
        Snapshot {
            max_connections: self.max_connections,
            in_use: self.in_use.load(Relaxed) as u32,
            idle: state.idle_connections,
            connections: state.connections,
            peak_in_use: self.peak_in_use.load(Relaxed) as u32,
            exhausted_total: self.exhausted.load(Relaxed),
            created_total: self.created.load(Relaxed),
            closed_total: s.connections_closed_broken
                + s.connections_closed_invalid
                + s.connections_closed_max_lifetime
                + s.connections_closed_idle_timeout,
            checkouts_total: self.checkouts.load(Relaxed),
            checkout_wait_total_us: self.checkout_wait_us.load(Relaxed),
            health_check_runs_total: self.health_check_runs.load(Relaxed),
            health_check_failures_total: self.health_check_failures.load(Relaxed),
            checkout_timeouts_total: self.checkout_timeouts.load(Relaxed),
            checkins_total: self.checkins.load(Relaxed),
            hold_total_us: self.hold_us.load(Relaxed),
        }
    }
}
