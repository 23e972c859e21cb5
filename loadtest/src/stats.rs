//! Counters and latency histograms shared by all users of one target, and
//! the arithmetic that turns them into a summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use redis::RedisError;
use serde::Serialize;

/// Histogram shards: users record into `user % SHARDS`, so a lock is
/// almost never contended and memory stays small with thousands of users.
const SHARDS: usize = 16;
/// Latencies are recorded in microseconds up to one minute.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Why a request failed, as an operator would group it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// TCP connect refused: nothing listens, or the listen backlog is full.
    ConnectRefused,
    /// The server (or proxy) answered "max number of clients reached".
    MaxClients,
    /// The request did not finish within --timeout-ms.
    Timeout,
    /// poolside could not check out an upstream connection in time.
    PoolExhausted,
    /// The connection was reset or closed under the request.
    ConnectionClosed,
    /// Anything else: a command error, a protocol error.
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::ConnectRefused,
        FailureKind::MaxClients,
        FailureKind::Timeout,
        FailureKind::PoolExhausted,
        FailureKind::ConnectionClosed,
        FailureKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect refused",
            FailureKind::MaxClients => "max clients reached",
            FailureKind::Timeout => "timeout",
            FailureKind::PoolExhausted => "pool exhausted",
            FailureKind::ConnectionClosed => "connection closed",
            FailureKind::Other => "other",
        }
    }

    /// Failures about getting or keeping a connection, as opposed to a
    /// command the server rejected. `--max-failure-rate` counts these.
    pub fn is_connection_level(self) -> bool {
        self != FailureKind::Other
    }

    /// Sorts a Redis client error into a kind. Server messages are matched
    /// by text because Redis and proxies send them as plain `-ERR`.
    pub fn classify(err: &RedisError) -> FailureKind {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("max number of clients") || text.contains("max clients") {
            FailureKind::MaxClients
        } else if text.contains("pool exhausted") {
            FailureKind::PoolExhausted
        } else if err.is_connection_refusal() {
            FailureKind::ConnectRefused
        } else if err.is_timeout() {
            FailureKind::Timeout
        } else if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
            FailureKind::ConnectionClosed
        } else {
            FailureKind::Other
        }
    }
}

/// Live counters for one target.
pub struct Stats {
    successes: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    connects: AtomicU64,
    /// Requests started, for the --max-requests bound.
    started: AtomicU64,
    shards: Vec<Mutex<Histogram<u64>>>,
    /// First error text seen per kind, so an operator can see what "other" was.
    samples: Mutex<BTreeMap<FailureKind, String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let shards = (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect();
        Stats {
            successes: AtomicU64::new(0),
            failures: Default::default(),
            connects: AtomicU64::new(0),
            started: AtomicU64::new(0),
            shards,
            samples: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reserves one request; false once `max` have been started.
    pub fn try_start(&self, max: u64) -> bool {
        self.started.fetch_add(1, Ordering::Relaxed) < max
    }

    pub fn record_success(&self, user: usize, latency: Duration) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut shard = self.shards[user % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.saturating_record(micros);
    }

    pub fn record_failure(&self, kind: FailureKind, detail: impl FnOnce() -> String) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.entry(kind).or_insert_with(detail);
    }

    pub fn record_connect(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// (completed requests, failed requests) for the progress line.
    pub fn progress(&self) -> (u64, u64) {
        let failed: u64 = self
            .failures
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .sum();
        (self.successes.load(Ordering::Relaxed) + failed, failed)
    }

    /// Summary of everything recorded; `elapsed` is the time under load.
    pub fn summarize(&self, elapsed: Duration) -> Summary {
        let mut merged = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            merged.add(&*shard).expect("histograms share bounds");
        }
        let failures = FailureKind::ALL
            .iter()
            .map(|&k| (k, self.failures[k as usize].load(Ordering::Relaxed)))
            .collect();
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Summary::new(
            self.successes.load(Ordering::Relaxed),
            failures,
            self.connects.load(Ordering::Relaxed),
            &merged,
            elapsed,
            samples,
        )
    }
}

/// Microseconds from 1 to one minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Latency figures in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub min_ms: f64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            min_ms: ms(h.min()),
            avg_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// What one target did, as printed and written to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub total: u64,
    pub successes: u64,
    pub failed: u64,
    pub failures: BTreeMap<FailureKind, u64>,
    /// First error message seen per failure kind.
    pub failure_samples: BTreeMap<FailureKind, String>,
    pub connections_opened: u64,
    pub success_rate_percent: f64,
    /// Connection-level failures / total, the figure --max-failure-rate checks.
    pub connection_failure_rate: f64,
    pub elapsed_secs: f64,
    /// Successful requests per second of elapsed time.
    pub throughput_rps: f64,
    pub latency: Latency,
}

impl Summary {
    pub fn new(
        successes: u64,
        failures: BTreeMap<FailureKind, u64>,
        connections_opened: u64,
        histogram: &Histogram<u64>,
        elapsed: Duration,
        failure_samples: BTreeMap<FailureKind, String>,
    ) -> Summary {
        let failed: u64 = failures.values().sum();
        let connection_failed: u64 = failures
            .iter()
            .filter(|(k, _)| k.is_connection_level())
            .map(|(_, n)| n)
            .sum();
        let total = successes + failed;
        let fraction = |n: u64| {
            if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            }
        };
        let secs = elapsed.as_secs_f64();
        Summary {
            total,
            successes,
            failed,
            failures,
            failure_samples,
            connections_opened,
            success_rate_percent: if total == 0 {
                0.0
            } else {
                100.0 * fraction(successes)
            },
            connection_failure_rate: fraction(connection_failed),
            elapsed_secs: secs,
            throughput_rps: if secs > 0.0 {
                successes as f64 / secs
            } else {
                0.0
            },
            latency: Latency::from_histogram(histogram),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_math() {
        let stats = Stats::new();
        for ms in 1..=100u64 {
            stats.record_success(ms as usize, Duration::from_millis(ms));
        }
        stats.record_failure(FailureKind::MaxClients, || {
            "ERR max number of clients reached".into()
        });
        stats.record_failure(FailureKind::MaxClients, || "unused".into());
        stats.record_failure(FailureKind::Other, || "WRONGTYPE".into());
        let s = stats.summarize(Duration::from_secs(2));
        assert_eq!((s.total, s.successes, s.failed), (103, 100, 3));
        assert_eq!(s.failures[&FailureKind::MaxClients], 2);
        assert_eq!(s.failures[&FailureKind::Timeout], 0);
        assert_eq!(
            s.failure_samples[&FailureKind::MaxClients],
            "ERR max number of clients reached"
        );
        assert!((s.throughput_rps - 50.0).abs() < 1e-9);
        assert!((s.success_rate_percent - 100.0 * 100.0 / 103.0).abs() < 1e-9);
        assert!((s.connection_failure_rate - 2.0 / 103.0).abs() < 1e-9);
        let l = &s.latency;
        assert!(
            (l.min_ms - 1.0).abs() < 0.01 && (l.max_ms - 100.0).abs() < 0.1,
            "{l:?}"
        );
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!(
            (l.p95_ms - 95.0).abs() < 0.1 && (l.p99_ms - 99.0).abs() < 0.1,
            "{l:?}"
        );
        assert!((l.avg_ms - 50.5).abs() < 0.1, "{l:?}");
    }

    #[test]
    fn empty_run_has_zero_rates() {
        let s = Stats::new().summarize(Duration::ZERO);
        assert_eq!(s.total, 0);
        assert_eq!(s.success_rate_percent, 0.0);
        assert_eq!(s.throughput_rps, 0.0);
        assert_eq!(s.latency, Latency::default());
    }

    #[test]
    fn request_budget_is_enforced() {
        let stats = Stats::new();
        assert!(stats.try_start(2) && stats.try_start(2));
        assert!(!stats.try_start(2));
    }

    #[test]
    fn errors_are_classified_by_kind() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "x"));
        assert_eq!(
            FailureKind::classify(&io(std::io::ErrorKind::ConnectionRefused)),
            FailureKind::ConnectRefused
        );
        assert_eq!(
            FailureKind::classify(&io(std::io::ErrorKind::TimedOut)),
            FailureKind::Timeout
        );
        assert_eq!(
            FailureKind::classify(&io(std::io::ErrorKind::ConnectionReset)),
            FailureKind::ConnectionClosed
        );
        let server = |reply: &str| {
            let value = redis::parse_redis_value(reply.as_bytes()).expect("a RESP error reply");
            value.extract_error().expect_err("an error reply")
        };
        let kind = |reply: &str| FailureKind::classify(&server(reply));
        assert_eq!(
            kind("-ERR max number of clients reached\r\n"),
            FailureKind::MaxClients
        );
        assert_eq!(
            kind("-ERR poolside: pool exhausted: no upstream connection free\r\n"),
            FailureKind::PoolExhausted
        );
        assert_eq!(
            kind("-WRONGTYPE Operation against a key\r\n"),
            FailureKind::Other
        );
    }
}
