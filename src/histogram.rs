//! A fixed-bucket latency histogram the data path records into without locks
//! or allocation; the admin server reads it for percentiles and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds in microseconds, 10 µs to 10 s; one more bucket above
/// the last bound collects everything slower (`+Inf`).
pub const BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const SLOTS: usize = BOUNDS_US.len() + 1;

/// Counts per bucket (not cumulative) and the sum of every recorded value.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; SLOTS],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let slot = BOUNDS_US.partition_point(|bound| *bound < us);
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// A copy of the counts right now.
    pub fn counts(&self) -> Counts {
        Counts {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A point-in-time copy of a [`Histogram`]; two of them give a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Per bucket, matching [`BOUNDS_US`] plus the `+Inf` bucket last.
    pub buckets: [u64; SLOTS],
    pub sum_us: u64,
}

impl Counts {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was recorded after `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The `q` quantile (0..=1) in milliseconds, interpolated linearly inside
    /// its bucket as Prometheus' `histogram_quantile` does; 0 when empty. A
    /// quantile in the `+Inf` bucket is reported as the largest bound.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BOUNDS_US.get(i) else {
                    break;
                };
                let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
                let fraction = (rank - below as f64) / n as f64;
                return (lower as f64 + (upper - lower) as f64 * fraction) / 1_000.0;
            }
            below += n;
        }
        BOUNDS_US[BOUNDS_US.len() - 1] as f64 / 1_000.0
    }

    /// Cumulative counts per finite bound, in seconds, as Prometheus buckets.
    pub fn cumulative_seconds(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BOUNDS_US
            .iter()
            .zip(self.buckets.iter())
            .scan(0u64, |running, (&bound, &n)| {
                *running += n;
                Some((bound as f64 / 1e6, *running))
            })
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_the_bucket_whose_bound_is_not_below() {
        let h = Histogram::default();
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(11));
        h.record(Duration::from_secs(60));
        let c = h.counts();
        assert_eq!(c.buckets[0], 1);
        assert_eq!(c.buckets[1], 1);
        assert_eq!(c.buckets[SLOTS - 1], 1);
        assert_eq!(c.count(), 3);
    }

    #[test]
    fn quantiles_interpolate_and_windows_subtract() {
        let h = Histogram::default();
        let before = h.counts();
        for _ in 0..99 {
            h.record(Duration::from_micros(80)); // bucket 50..100 µs
        }
        h.record(Duration::from_millis(20)); // bucket 10..25 ms
        let window = h.counts().since(&before);
        assert_eq!(window.count(), 100);
        let p50 = window.quantile_ms(0.5);
        assert!((0.05..=0.1).contains(&p50), "{p50}");
        let p99 = window.quantile_ms(0.99);
        assert!(p99 <= 0.1, "{p99}");
        let max = window.quantile_ms(1.0);
        assert!((10.0..=25.0).contains(&max), "{max}");
        assert_eq!(Counts::default().quantile_ms(0.99), 0.0);
    }

    #[test]
    fn cumulative_buckets_end_at_the_finite_count() {
        let h = Histogram::default();
        h.record(Duration::from_micros(5));
        h.record(Duration::from_secs(100));
        let c = h.counts();
        let last = c.cumulative_seconds().last().expect("buckets");
        assert_eq!(last, (10.0, 1));
    }
}
