//! The users of a failover run: SET a fresh key, GET it back, over and
//! over, each request timed and counted once and never re-sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::RedisResult;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

use super::timeline::Timeline;
use super::upstream::{Dialer, Route};
use super::writes::{self, Ledger};
use crate::stats::{self, FailureKind};

/// What every user of a run shares.
pub struct Shared {
    pub route: Route,
    pub timeline: Timeline,
    /// Start of the load: the origin of every time in the report.
    pub start: Instant,
    pub limit: Duration,
    pub retry_delay: Duration,
    pub run: u32,
}

/// What one user saw.
pub struct UserResult {
    pub ledger: Ledger,
    /// Every request, ok or failed, in microseconds.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub failures: BTreeMap<FailureKind, u64>,
    pub samples: BTreeMap<FailureKind, String>,
    pub connects: u64,
}

impl UserResult {
    fn new() -> UserResult {
        UserResult {
            ledger: Ledger::default(),
            latency: stats::new_histogram(),
            ok: 0,
            failures: BTreeMap::new(),
            samples: BTreeMap::new(),
            connects: 0,
        }
    }

    fn fail(&mut self, kind: FailureKind, detail: impl FnOnce() -> String) {
        *self.failures.entry(kind).or_default() += 1;
        self.samples.entry(kind).or_insert_with(detail);
    }
}

/// Everything the users saw, merged.
pub struct Totals {
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<FailureKind, u64>,
    pub samples: BTreeMap<FailureKind, String>,
    pub connects: u64,
    pub latency: Histogram<u64>,
}

impl Totals {
    /// Ledgers are left out: take them first.
    pub fn merge(results: impl Iterator<Item = UserResult>) -> Totals {
        let mut t = Totals {
            ok: 0,
            failed: 0,
            failures: BTreeMap::new(),
            samples: BTreeMap::new(),
            connects: 0,
            latency: stats::new_histogram(),
        };
        for r in results {
            t.latency.add(&r.latency).expect("histograms share bounds");
            t.ok += r.ok;
            t.connects += r.connects;
            for (kind, n) in r.failures {
                t.failed += n;
                *t.failures.entry(kind).or_default() += n;
            }
            for (kind, sample) in r.samples {
                t.samples.entry(kind).or_insert(sample);
            }
        }
        t
    }
}

/// Replies that say this connection reaches the wrong server now: a
/// Sentinel-aware client drops the connection and asks Sentinel again.
fn refuses_role(err: &redis::RedisError) -> bool {
    matches!(err.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
}

/// One user: request `seq` is a SET of a fresh key when `seq` is even, a
/// GET of the key just written when odd. After a failure the user waits
/// the retry delay and goes on with the next request; after a
/// connection-level failure, a timeout or a refusal by role it drops its
/// connection, so the next request reconnects (through Sentinel for the
/// direct route).
pub async fn run_user(
    id: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> UserResult {
    let mut out = UserResult::new();
    let mut dialer = match shared.route.dialer(shared.limit) {
        Ok(d) => d,
        Err(e) => {
            out.fail(FailureKind::Other, || {
                format!("cannot build the client: {e}")
            });
            return out;
        }
    };
    let mut conn: Option<MultiplexedConnection> = None;
    let mut seq: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let write = seq.is_multiple_of(2);
        let key = writes::key(shared.run, id, seq & !1);
        let started = std::time::Instant::now();
        let attempt = request(&mut dialer, &mut conn, &mut out.connects, write, &key, seq);
        let result = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = timeout(shared.limit, attempt) => r,
        };
        let done = shared.start.elapsed();
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        out.latency.saturating_record(micros.max(1));
        let failed = match result {
            Ok(Ok(())) => {
                out.ok += 1;
                if write {
                    out.ledger.acked.push((seq, done));
                }
                false
            }
            Ok(Err(e)) => {
                let kind = FailureKind::classify(&e);
                if kind.is_connection_level() || refuses_role(&e) {
                    conn = None;
                }
                out.fail(kind, || e.to_string());
                true
            }
            Err(_) => {
                // The reply may still arrive: never reuse that connection.
                conn = None;
                out.fail(FailureKind::Timeout, || {
                    format!("no reply within {:?}", shared.limit)
                });
                true
            }
        };
        shared.timeline.record(done, !failed);
        if failed && write {
            out.ledger.failed.push(seq);
        }
        seq = seq.wrapping_add(1);
        if failed {
            tokio::select! {
                _ = stop.changed() => break,
                _ = sleep(shared.retry_delay) => {}
            }
        }
    }
    out
}

async fn request(
    dialer: &mut Dialer,
    slot: &mut Option<MultiplexedConnection>,
    connects: &mut u64,
    write: bool,
    key: &str,
    seq: u32,
) -> RedisResult<()> {
    let conn = match slot {
        Some(conn) => conn,
        None => {
            let conn = dialer.connect().await?;
            *connects += 1;
            slot.insert(conn)
        }
    };
    if write {
        redis::cmd("SET")
            .arg(key)
            .arg(seq)
            .arg("EX")
            .arg(writes::TTL_SECS)
            .query_async::<()>(conn)
            .await
    } else {
        redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(conn)
            .await
            .map(drop)
    }
}
