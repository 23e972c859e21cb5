//! A sliding window of pool usage. A background task samples the pool's
//! counters every tick; alerts and sizing recommendations are computed from
//! the samples, never from the data path. This module knows nothing of the
//! alerts: the sampler hands each window to a callback the admin wires up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::histogram::Counts;
use crate::pool::Pool;
use crate::traffic::Traffic;

/// Samples kept at most, whatever the windows: bounds memory with short ticks.
const MAX_SAMPLES: usize = 4_096;

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    in_use: u32,
    /// Highest `in_use` since the previous sample.
    peak: u32,
    checkouts: u64,
    checkins: u64,
    hold_us: u64,
    commands: u64,
    exhausted: u64,
    wait: Counts,
}

/// What the pool did over a window, with the numbers recommendations quote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    pub window_secs: u64,
    /// How much of the window the samples cover; less just after start.
    pub covered_secs: f64,
    /// The samples cover the whole window.
    pub full: bool,
    pub samples: usize,
    /// Lowest and highest `in_use` seen at a sample.
    pub min_in_use: u32,
    pub max_in_use: u32,
    pub mean_in_use: f64,
    /// Highest concurrent checkouts, including between samples.
    pub peak_in_use: u32,
    /// 99th percentile of the per-tick peaks of concurrent checkouts.
    pub p99_in_use: u32,
    pub checkouts_per_sec: f64,
    pub commands_per_sec: f64,
    /// Mean time a connection stayed checked out, over check-ins in the window.
    pub mean_hold_ms: f64,
    pub checkout_wait_ms_p99: f64,
    /// Checkouts that timed out on a full pool.
    pub exhausted: u64,
}

/// The samples; written by the sampler task only.
pub struct Usage {
    samples: Mutex<VecDeque<Sample>>,
    keep: Duration,
}

impl Usage {
    /// Keeps enough samples to summarize windows up to `keep` long.
    pub fn new(keep: Duration) -> Usage {
        Usage {
            samples: Mutex::new(VecDeque::new()),
            keep,
        }
    }

    /// Takes one sample of `pool` now.
    /// `commands_total` is the client-side command counter now.
    pub fn record(&self, pool: &Pool, commands_total: u64) {
        let s = pool.snapshot();
        let sample = Sample {
            at: Instant::now(),
            in_use: s.in_use,
            peak: pool.stats.take_interval_peak(),
            checkouts: s.checkouts_total,
            checkins: s.checkins_total,
            hold_us: s.hold_total_us,
            commands: commands_total,
            exhausted: s.exhausted_total,
            wait: pool.stats.checkout_wait(),
        };
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        // Keep one sample older than `keep`: it is the baseline of the longest window.
        while samples.len() >= MAX_SAMPLES
            || samples.len() > 1 && sample.at.duration_since(samples[1].at) > self.keep
        {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The last `window` of samples. Deltas are taken against the newest
    /// sample at least `window` old (the baseline); without one, against the
    /// oldest sample, and the summary is not `full`.
    pub fn summarize(&self, window: Duration) -> Window {
        let Ok(samples) = self.samples.lock() else {
            return Window::default();
        };
        let Some(newest) = samples.back() else {
            return Window::default();
        };
        let start = newest.at.checked_sub(window);
        let base_index = start
            .and_then(|start| samples.iter().rposition(|s| s.at <= start))
            .unwrap_or(0);
        let base = &samples[base_index];
        let full = start.is_some_and(|start| base.at <= start);
        let inside: Vec<&Sample> = samples.iter().skip(base_index + 1).collect();
        summarize(window, full, base, newest, &inside)
    }
}

fn summarize(
    window: Duration,
    full: bool,
    base: &Sample,
    newest: &Sample,
    inside: &[&Sample],
) -> Window {
    let span = newest.at.duration_since(base.at).as_secs_f64();
    let per_sec = |n: u64| if span > 0.0 { n as f64 / span } else { 0.0 };
    let checkins = newest.checkins.saturating_sub(base.checkins);
    let mut peaks: Vec<u32> = inside.iter().map(|s| s.peak).collect();
    peaks.sort_unstable();
    let p99 = match peaks.len() {
        0 => newest.peak,
        n => peaks[(n * 99).div_ceil(100).max(1) - 1],
    };
    let (mut low, mut high, mut sum) = (u32::MAX, 0, 0u64);
    for s in inside
        .iter()
        .copied()
        .chain(inside.is_empty().then_some(newest))
    {
        low = low.min(s.in_use);
        high = high.max(s.in_use);
        sum += u64::from(s.in_use);
    }
    Window {
        window_secs: window.as_secs(),
        covered_secs: (span * 10.0).round() / 10.0,
        full,
        samples: inside.len(),
        min_in_use: low,
        max_in_use: high,
        mean_in_use: sum as f64 / inside.len().max(1) as f64,
        peak_in_use: peaks.last().copied().unwrap_or(newest.peak),
        p99_in_use: p99,
        checkouts_per_sec: per_sec(newest.checkouts.saturating_sub(base.checkouts)),
        commands_per_sec: per_sec(newest.commands.saturating_sub(base.commands)),
        mean_hold_ms: match checkins {
            0 => 0.0,
            n => newest.hold_us.saturating_sub(base.hold_us) as f64 / n as f64 / 1_000.0,
        },
        checkout_wait_ms_p99: newest.wait.since(&base.wait).quantile_ms(0.99),
        exhausted: newest.exhausted.saturating_sub(base.exhausted),
    }
}

/// A sampling interval that gives about ten samples per alert window, within 100 ms..1 s.
pub fn tick_for(alert_window: Duration) -> Duration {
    (alert_window / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Samples the pool every `tick`; after each sample calls
/// `observe(&last_window, in_use, max_connections)` with the summary of the
/// last `window` (the alert window: `Alerts::observe` is the callback).
pub fn spawn_sampler<F>(
    pool: Pool,
    traffic: Arc<Traffic>,
    usage: Arc<Usage>,
    window: Duration,
    tick: Duration,
    mut observe: F,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    F: FnMut(&Window, u32, u32) + Send + 'static,
{
    let max = pool.snapshot().max_connections;
    spawn_every(tick, shutdown, move || {
        usage.record(&pool, traffic.commands_total());
        let summary = usage.summarize(window);
        observe(&summary, pool.snapshot().in_use, max);
    })
}

/// Calls `f` every `tick` (a late tick delays the next) until shutdown.
pub fn spawn_every<F>(
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut f: F,
) -> JoinHandle<()>
where
    F: FnMut() + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            f();
        }
    })
}
