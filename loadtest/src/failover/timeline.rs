//! Completions per 50 ms bin, and the time to recover read from them.
//!
//! A bin is *good* when at least one request succeeded in it and none
//! failed, *bad* otherwise (a failure, or a stall with no success). The time
//! to recover is measured from the moment the failover was forced to the
//! end of the last bad bin at or after it: from then on every bin until the
//! end of the load is good. Zero when there is no bad bin; not recovered
//! when fewer than [`STEADY_BINS`] good bins (one second) follow the last
//! bad one before the end of the load.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Width of one bin.
pub const BIN: Duration = Duration::from_millis(50);
/// Good bins that must end the load for it to count as recovered: 1 s.
pub const STEADY_BINS: usize = 20;

/// Live counters, shared by all users; a request lands in the bin of the
/// moment it completed.
pub struct Timeline {
    ok: Vec<AtomicU32>,
    failed: Vec<AtomicU32>,
}

impl Timeline {
    /// Bins for `span`, plus one that collects anything later (the drain).
    pub fn new(span: Duration) -> Timeline {
        let bins = bin_of(span) + 2;
        Timeline {
            ok: (0..bins).map(|_| AtomicU32::new(0)).collect(),
            failed: (0..bins).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// `at`: time since the start of the load.
    pub fn record(&self, at: Duration, ok: bool) {
        let i = bin_of(at).min(self.ok.len() - 1);
        let counts = if ok { &self.ok } else { &self.failed };
        counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts of the bins that end by `span`, the time under load.
    pub fn snapshot(&self, span: Duration) -> Series {
        let full = (bin_of(span)).min(self.ok.len());
        let read = |v: &[AtomicU32]| {
            v[..full]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect()
        };
        Series {
            bin_ms: BIN.as_millis() as u64,
            ok: read(&self.ok),
            failed: read(&self.failed),
        }
    }
}

fn bin_of(at: Duration) -> usize {
    (at.as_micros() / BIN.as_micros()) as usize
}

/// Completed requests per bin from the start of the load, as in the JSON report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    pub bin_ms: u64,
    pub ok: Vec<u32>,
    pub failed: Vec<u32>,
}

impl Series {
    fn good(&self, i: usize) -> bool {
        self.ok[i] > 0 && self.failed[i] == 0
    }

    /// Milliseconds from `forced` (time since the start of the load) to
    /// the end of the last bad bin, or None when the load ended too soon
    /// after it.
    pub fn recovered_after_ms(&self, forced: Duration) -> Option<f64> {
        let first = bin_of(forced);
        let n = self.ok.len();
        let last_bad = (first..n).rev().find(|&i| !self.good(i));
        let steady_from = last_bad.map_or(first, |i| i + 1);
        if n.saturating_sub(steady_from) < STEADY_BINS {
            return None;
        }
        Some(last_bad.map_or(0.0, |i| self.end_after_ms(i, forced)))
    }

    /// Milliseconds in bad bins at or after `forced`.
    pub fn disrupted_ms(&self, forced: Duration) -> f64 {
        let bad = (bin_of(forced)..self.ok.len())
            .filter(|&i| !self.good(i))
            .count();
        (bad as u64 * self.bin_ms) as f64
    }

    /// From `forced` to the end of bin `i`, in ms.
    fn end_after_ms(&self, i: usize, forced: Duration) -> f64 {
        let edge = Duration::from_millis(self.bin_ms * (i + 1) as u64);
        edge.saturating_sub(forced).as_secs_f64() * 1000.0
    }

    /// (first, last) bin with a failure at or after `forced`, as ms from
    /// `forced` to the end of that bin.
    pub fn failures_after_ms(&self, forced: Duration) -> Option<(f64, f64)> {
        let first = bin_of(forced);
        let mut bins = (first..self.failed.len()).filter(|&i| self.failed[i] > 0);
        let begin = bins.next()?;
        let end = bins.next_back().unwrap_or(begin);
        Some((
            self.end_after_ms(begin, forced),
            self.end_after_ms(end, forced),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 s of load with one success per bin, `bad` bins failing.
    fn series(bad: &[usize], empty: &[usize]) -> Series {
        let n = 200;
        let mut s = Series {
            bin_ms: 50,
            ok: vec![5; n],
            failed: vec![0; n],
        };
        for &i in bad {
            s.failed[i] = 1;
        }
        for &i in empty {
            s.ok[i] = 0;
        }
        s
    }

    #[test]
    fn an_undisturbed_run_recovers_at_once() {
        let s = series(&[], &[]);
        assert_eq!(s.recovered_after_ms(Duration::from_millis(3020)), Some(0.0));
        assert_eq!(s.failures_after_ms(Duration::from_millis(3020)), None);
        assert_eq!(s.disrupted_ms(Duration::from_millis(3020)), 0.0);
    }

    #[test]
    fn recovery_ends_with_the_last_bad_bin() {
        // Failover forced at 3.0 s (bin 60); failures in bins 62..=70, a
        // stall (no completions) in 75, a late failure at bin 150.
        let bad: Vec<usize> = (62..=70).chain([150]).collect();
        let s = series(&bad, &[75]);
        let forced = Duration::from_millis(3000);
        assert_eq!(s.recovered_after_ms(forced), Some(151.0 * 50.0 - 3000.0));
        assert_eq!(s.failures_after_ms(forced), Some((150.0, 4550.0)));
        assert_eq!(s.disrupted_ms(forced), 11.0 * 50.0);
        // Failures before the failover do not count.
        let s = series(&[10], &[]);
        assert_eq!(s.recovered_after_ms(forced), Some(0.0));
    }

    #[test]
    fn less_than_a_steady_second_before_the_end_is_not_recovered() {
        // 200 bins, forced at 8 s (bin 160): a last bad bin at 185 leaves
        // 14 good ones, at 179 exactly 20.
        let forced = Duration::from_millis(8000);
        assert_eq!(series(&[185], &[]).recovered_after_ms(forced), None);
        assert_eq!(series(&[179], &[]).recovered_after_ms(forced), Some(1000.0));
    }

    #[test]
    fn late_completions_land_in_the_last_bin_and_are_left_out() {
        let t = Timeline::new(Duration::from_secs(1));
        t.record(Duration::from_millis(10), true);
        t.record(Duration::from_millis(60), false);
        t.record(Duration::from_secs(30), false);
        let s = t.snapshot(Duration::from_secs(1));
        assert_eq!(s.ok.len(), 20);
        assert_eq!((s.ok[0], s.failed[1]), (1, 1));
        assert_eq!(s.failed.iter().sum::<u32>(), 1);
    }
}
