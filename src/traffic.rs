//! Proxy-level counters: clients, commands, authentication, policy, and
//! failed batches by side. They are kept apart from the pool's counters
//! (`pool::Stats`) so that a second pool (a Cluster node, a new
//! Sentinel primary) counts its connections without counting clients twice.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::command::{counted_index, COUNTED};
use crate::error::{Refusal, Side};
use crate::histogram::{Counts, Histogram};

/// Updated by the listener and the sessions without locks; read by the admin server.
#[derive(Debug)]
pub struct Traffic {
    clients_connected: AtomicU64,
    by_command: [AtomicU64; COUNTED.len() + 1],
    auth_failures: AtomicU64,
    denied_commands: AtomicU64,
    reply_overflows: AtomicU64,
    /// Replies refusing commands because of where Redis is, by [`Refusal`].
    refusals: [AtomicU64; Refusal::ALL.len()],
    /// Batches refused as a whole and sent again on a fresh connection.
    resent: AtomicU64,
    /// Client batches answered with a poolside error, by [`Side`].
    failed: [AtomicU64; Side::ALL.len()],
    round_trips: Histogram,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            clients_connected: AtomicU64::new(0),
            by_command: std::array::from_fn(|_| AtomicU64::new(0)),
            auth_failures: AtomicU64::new(0),
            denied_commands: AtomicU64::new(0),
            reply_overflows: AtomicU64::new(0),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            resent: AtomicU64::new(0),
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
            round_trips: Histogram::default(),
        }
    }
}

impl Traffic {
    /// A client was admitted.
    pub fn client_connected(&self) {
        self.clients_connected.fetch_add(1, Relaxed);
    }

    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Relaxed);
    }

    /// A client was turned away at `max_clients`: a failure on poolside's side.
    pub fn client_rejected(&self) {
        self.failed(Side::Internal);
    }

    pub fn clients_connected(&self) -> u64 {
        self.clients_connected.load(Relaxed)
    }

    /// One command seen from a client, counted under its (bounded) name.
    pub fn count_command(&self, name: &[u8]) {
        self.by_command[counted_index(name)].fetch_add(1, Relaxed);
    }

    /// Commands per name of [`COUNTED`], then `("other", n)`.
    pub fn command_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        COUNTED
            .iter()
            .copied()
            .chain(std::iter::once("other"))
            .zip(self.by_command.iter().map(|n| n.load(Relaxed)))
    }

    /// Every command is counted once, by name (or as "other").
    pub fn commands_total(&self) -> u64 {
        self.by_command.iter().map(|n| n.load(Relaxed)).sum()
    }

    /// A client sent a wrong password.
    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    /// For `poolside_client_auth_failures_total`.
    pub fn auth_failures_total(&self) -> u64 {
        self.auth_failures.load(Relaxed)
    }

    /// A command was refused by the deny-list.
    pub fn command_denied(&self) {
        self.denied_commands.fetch_add(1, Relaxed);
    }

    /// For `poolside_commands_denied_total`.
    pub fn denied_commands_total(&self) -> u64 {
        self.denied_commands.load(Relaxed)
    }

    /// A client was disconnected for leaving more than
    /// `limits.max_reply_buffer_bytes` of replies unread.
    pub fn reply_overflowed(&self) {
        self.reply_overflows.fetch_add(1, Relaxed);
    }

    /// For `poolside_reply_buffer_overflows_total`.
    pub fn reply_overflows_total(&self) -> u64 {
        self.reply_overflows.load(Relaxed)
    }

    /// `n` replies of one batch refused its commands (see [`Refusal`]).
    pub fn refused(&self, kind: Refusal, n: usize) {
        self.refusals[kind as usize].fetch_add(n as u64, Relaxed);
    }

    pub fn refusals_total(&self, kind: Refusal) -> u64 {
        self.refusals[kind as usize].load(Relaxed)
    }

    /// A batch refused as a whole went to a fresh connection once more.
    pub fn resent(&self) {
        self.resent.fetch_add(1, Relaxed);
    }

    pub fn resent_total(&self) -> u64 {
        self.resent.load(Relaxed)
    }

    /// A client batch (or a client, for `Side::Client` protocol errors and
    /// rejections) got a poolside error. Called once per failure, at the
    /// edge that writes the error, the same way in every pool mode.
    pub fn failed(&self, side: Side) {
        self.failed[side as usize].fetch_add(1, Relaxed);
    }

    pub fn failed_total(&self, side: Side) -> u64 {
        self.failed[side as usize].load(Relaxed)
    }

    /// One batch's upstream round trip completed: write, then every reply read.
    pub fn round_trip_done(&self, took: Duration) {
        self.round_trips.record(took);
    }

    pub fn round_trips(&self) -> Counts {
        self.round_trips.counts()
    }
}
