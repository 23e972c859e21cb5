//! Pool counters the data path updates without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters shared by the pool, the sessions and the admin server.
#[derive(Debug, Default)]
pub struct Stats {
    max_connections: u32,
    in_use: AtomicU64,
    peak_in_use: AtomicU64,
    checkouts: AtomicU64,
    checkout_wait_us: AtomicU64,
    exhausted: AtomicU64,
    created: AtomicU64,
    upstream_errors: AtomicU64,
    health_check_runs: AtomicU64,
    health_check_failures: AtomicU64,
    pub clients_connected: AtomicU64,
    pub clients_total: AtomicU64,
    pub clients_rejected: AtomicU64,
    pub commands: AtomicU64,
    pub protocol_errors: AtomicU64,
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
    pub upstream_errors_total: u64,
    pub health_check_runs_total: u64,
    pub health_check_failures_total: u64,
    pub clients_connected: u64,
    pub clients_rejected_total: u64,
    pub commands_total: u64,
    pub protocol_errors_total: u64,
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
    }

    pub(crate) fn checked_in(&self) {
        self.in_use.fetch_sub(1, Relaxed);
    }

    pub(crate) fn exhausted(&self) {
        self.exhausted.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_created(&self) {
        self.created.fetch_add(1, Relaxed);
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
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
            upstream_errors_total: self.upstream_errors.load(Relaxed),
            health_check_runs_total: self.health_check_runs.load(Relaxed),
            health_check_failures_total: self.health_check_failures.load(Relaxed),
            clients_connected: self.clients_connected.load(Relaxed),
            clients_rejected_total: self.clients_rejected.load(Relaxed),
            commands_total: self.commands.load(Relaxed),
            protocol_errors_total: self.protocol_errors.load(Relaxed),
        }
    }
}
