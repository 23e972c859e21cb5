//! The upstream target when Sentinel names the primary: its address,
//! swapped at a failover, and the *hold* — while the primary is unreachable
//! or a Sentinel reports it down or failing over, batches not yet written
//! wait here (bounded by `upstream.sentinel.failover_hold_ms`) instead of
//! going to a node that may be demoted under them.
//!
//! The Sentinel watcher (`crate::sentinel`) writes this state; the pool
//! reads it before every checkout and lane submit ([`super::Pool::ready`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// At most this many Sentinels are tracked (one bit each in the hold).
pub const MAX_SENTINELS: usize = 63;

/// The hold's last bit: the primary refused a write as a replica
/// (`-READONLY`), so it may have been demoted behind the Sentinels' back.
const SUSPECT: usize = 63;

/// Where a Sentinel-managed pool connects, and whether it may.
#[derive(Debug)]
pub struct Primary {
    pub master_name: String,
    address: RwLock<Option<Arc<str>>>,
    hold: Mutex<Hold>,
    /// Signalled when the address changes or a hold ends.
    changed: Notify,
    /// Signalled when the Sentinels should be asked now.
    poke: Notify,
    hold_limit: Duration,
    failovers: AtomicU64,
    last_failover_unix_ms: AtomicU64,
    held: AtomicU64,
    expired: AtomicU64,
}

#[derive(Debug, Default)]
struct Hold {
    /// Bit `i`: Sentinel `i` reports the primary down or a failover running.
    reports: u64,
    /// Why, in words, for `/pool/status` (the latest report).
    reason: Option<String>,
    /// Why no primary is known (before discovery succeeded).
    unknown: Option<String>,
    since: Option<Instant>,
}

/// What `/pool/status` shows of the primary.
#[derive(Debug, Clone, Default)]
pub struct PrimaryView {
    pub address: Option<Arc<str>>,
    pub reason: Option<String>,
    pub holding_for: Option<Duration>,
    pub failovers: u64,
    pub last_failover_unix_ms: Option<u64>,
    pub held_batches: u64,
    pub hold_expired: u64,
}

impl Primary {
    pub fn new(master_name: String, hold_limit: Duration) -> Primary {
        Primary {
            master_name,
            address: RwLock::new(None),
            hold: Mutex::new(Hold {
                unknown: Some("no Sentinel asked yet".into()),
                ..Hold::default()
            }),
            changed: Notify::new(),
            poke: Notify::new(),
            hold_limit,
            failovers: AtomicU64::new(0),
            last_failover_unix_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    /// The primary's `host:port`, `None` until one is known.
    pub fn address(&self) -> Option<Arc<str>> {
        self.address
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn hold_limit(&self) -> Duration {
        self.hold_limit
    }

    /// Makes `address` the primary. `true` when it replaced another one (a
    /// failover: counted). The caller bumps the pool generation after this,
    /// so a connection of the new generation always reads the new address,
    /// and only then [`release`](Self::release)s the batches held: woken
    /// earlier, one could still take a connection to the old primary.
    pub(super) fn set(&self, address: &str) -> bool {
        let previous = {
            let mut current = self.address.write().unwrap_or_else(|e| e.into_inner());
            if current.as_deref() == Some(address) {
                return false;
            }
            current.replace(address.into())
        };
        let failover = previous.is_some();
        if failover {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.last_failover_unix_ms.store(now, Ordering::Relaxed);
        }
        failover
    }

    /// After a switch: every report about the old primary is dropped, and
    /// the batches waiting go.
    pub(super) fn release(&self) {
        *self.hold.lock().unwrap_or_else(|e| e.into_inner()) = Hold::default();
        self.changed.notify_waiters();
    }

    /// Sentinel `index` reports the primary down or failing over (`Some`,
    /// with the event), or no longer does (`None`).
    pub fn report(&self, index: usize, down: Option<String>) {
        let bit = 1u64 << index.min(SUSPECT);
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        let before = hold.reports;
        match down {
            Some(reason) => {
                hold.reports |= bit;
                hold.since.get_or_insert_with(Instant::now);
                hold.reason = Some(reason);
            }
            None => hold.reports &= !bit,
        }
        if hold.reports == 0 && before != 0 {
            hold.reason = None;
            hold.since = None;
            drop(hold);
            self.changed.notify_waiters();
        }
    }

    /// The primary answered `-READONLY`, or a batch timed out on it: hold
    /// until the Sentinels are asked (now) and either name another primary
    /// or `ROLE` confirms this one.
    pub fn suspect(&self, why: String) {
        self.report(SUSPECT, Some(why));
        self.poke.notify_one();
    }

    pub fn is_suspect(&self) -> bool {
        self.hold.lock().unwrap_or_else(|e| e.into_inner()).reports & (1 << SUSPECT) != 0
    }

    /// `ROLE` says the primary is one after all.
    pub fn cleared(&self) {
        self.report(SUSPECT, None);
    }

    /// Resolves when the Sentinels should be asked at once.
    pub fn poked(&self) -> tokio::sync::futures::Notified<'_> {
        self.poke.notified()
    }

    /// No primary could be found, and why (shown until one is). `true`
    /// when the reason is new (worth a log line).
    pub fn unknown(&self, why: String) -> bool {
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        let new = hold.unknown.as_deref() != Some(why.as_str());
        hold.unknown = Some(why);
        new
    }

    /// Whether a batch must wait now: no primary known, a Sentinel reports
    /// it down or failing over, or poolside cannot reach it (`unreachable`:
    /// the pool's health).
    pub fn holds(&self, unreachable: bool) -> bool {
        if unreachable {
            return true;
        }
        if self
            .address
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return true;
        }
        self.hold.lock().unwrap_or_else(|e| e.into_inner()).reports != 0
    }

    /// Resolves at the next address change or end of a hold; `enable` it
    /// before checking the state, so a change in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// A batch started waiting.
    pub(super) fn held(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch waited `hold_limit` in vain.
    pub(super) fn expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    pub fn view(&self) -> PrimaryView {
        let hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        let address = self.address();
        let last = self.last_failover_unix_ms.load(Ordering::Relaxed);
        PrimaryView {
            reason: match &address {
                None => hold.unknown.clone(),
                Some(_) => hold.reason.clone(),
            },
            address,
            holding_for: hold.since.map(|s| s.elapsed()),
            failovers: self.failovers.load(Ordering::Relaxed),
            last_failover_unix_ms: (last > 0).then_some(last),
            held_batches: self.held.load(Ordering::Relaxed),
            hold_expired: self.expired.load(Ordering::Relaxed),
        }
    }
}
