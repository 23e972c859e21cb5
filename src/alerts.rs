//! Utilization alerts: ok / warning / critical over a short window, with
//! hysteresis. Every level change is logged once, shown by the
//! `poolside_alert_level` gauge and POSTed to an optional webhook.

mod webhook;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use serde_json::json;
use tracing::{error, info, warn};

use crate::clock;
use crate::config::AlertsConfig;
use crate::usage::Window;
pub use webhook::Webhook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    fn from_u8(n: u8) -> Level {
        match n {
            0 => Level::Ok,
            1 => Level::Warning,
            _ => Level::Critical,
        }
    }
}

/// Percent of max_connections in use, from `[alerts]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub warning: f64,
    pub critical: f64,
    pub hysteresis: f64,
}

impl Thresholds {
    pub fn from_config(c: &AlertsConfig) -> Thresholds {
        Thresholds {
            warning: c.warning_percent.into(),
            critical: c.critical_percent.into(),
            hysteresis: c.hysteresis_percent.into(),
        }
    }

    /// Utilization the sizing recommendations aim for at p99: the critical
    /// threshold less the hysteresis margin (75 % with the defaults).
    pub fn target_percent(&self) -> f64 {
        (self.critical - self.hysteresis).max(1.0)
    }
}

/// The level after one window. Enter a level when utilization stayed above
/// its threshold for the whole window (critical also on any exhaustion); leave
/// it only when utilization stayed `hysteresis` points below for the window.
pub fn next_level(current: Level, w: &Window, max: u32, t: &Thresholds) -> Level {
    let percent = |n: u32| percent_of(n, max);
    let (low, high) = (percent(w.min_in_use), percent(w.max_in_use));
    let raised = if w.exhausted > 0 || (w.full && low > t.critical) {
        Level::Critical
    } else if w.full && low > t.warning {
        Level::Warning
    } else {
        Level::Ok
    };
    if raised >= current {
        return raised;
    }
    let held = if high > t.critical - t.hysteresis {
        Level::Critical
    } else if high > t.warning - t.hysteresis {
        Level::Warning
    } else {
        Level::Ok
    };
    raised.max(held.min(current))
}

pub fn percent_of(n: u32, max: u32) -> f64 {
    if max == 0 {
        0.0
    } else {
        f64::from(n) * 100.0 / f64::from(max)
    }
}

/// The alert state of one poolside. Only the usage sampler calls [`Alerts::observe`],
/// through the callback `AdminState::spawn_background` gives it.
pub struct Alerts {
    thresholds: Thresholds,
    window: Duration,
    environment: &'static str,
    level: AtomicU8,
    changes: AtomicU64,
    changed_at_unix_ms: AtomicU64,
    webhook: Option<Webhook>,
}

impl Alerts {
    /// Starts the webhook sender when a URL is configured: needs a tokio runtime.
    pub fn new(c: &AlertsConfig, environment: &'static str) -> Alerts {
        let webhook = c.webhook_url.as_ref().and_then(|url| {
            let timeout = Duration::from_millis(c.webhook_timeout_ms);
            Webhook::spawn(url.expose(), timeout)
                .inspect_err(|why| warn!(reason = %why, "alert webhook disabled"))
                .ok()
        });
        Alerts {
            thresholds: Thresholds::from_config(c),
            window: Duration::from_secs(c.window_secs),
            environment,
            level: AtomicU8::new(Level::Ok as u8),
            changes: AtomicU64::new(0),
            changed_at_unix_ms: AtomicU64::new(clock::now_unix_ms()),
            webhook,
        }
    }

    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Relaxed))
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Level changes since start.
    pub fn changes(&self) -> u64 {
        self.changes.load(Relaxed)
    }

    pub fn changed_at_unix_ms(&self) -> u64 {
        self.changed_at_unix_ms.load(Relaxed)
    }

    /// Applies one window (of `self.window()`); on a level change: log once,
    /// count, and queue the webhook POST.
    pub fn observe(&self, w: &Window, in_use: u32, max: u32) {
        let previous = self.level();
        let level = next_level(previous, w, max, &self.thresholds);
        if level == previous {
            return;
        }
        let now = clock::now_unix_ms();
        self.level.store(level as u8, Relaxed);
        self.changed_at_unix_ms.store(now, Relaxed);
        self.changes.fetch_add(1, Relaxed);
        let utilization = (percent_of(in_use, max) * 10.0).round() / 10.0;
        macro_rules! changed {
            ($event:ident) => {
                $event!(
                    level = level.as_str(),
                    previous = previous.as_str(),
                    utilization_percent = utilization,
                    in_use,
                    max_connections = max,
                    exhausted_in_window = w.exhausted,
                    "pool alert level changed"
                )
            };
        }
        match level {
            Level::Critical => changed!(error),
            Level::Warning => changed!(warn),
            Level::Ok => changed!(info),
        }
        let Some(webhook) = &self.webhook else {
            return;
        };
        let text = format!(
            "poolside [{}]: pool utilization {} (was {}): {utilization:.1} % of {max} \
             connections in use; {} pool exhaustion events in the last {} s",
            self.environment,
            level.as_str().to_uppercase(),
            previous.as_str(),
            w.exhausted,
            self.window.as_secs(),
        );
        webhook.notify(json!({
            "text": text,
            "level": level.as_str(),
            "previous": previous.as_str(),
            "environment": self.environment,
            "utilization_percent": utilization,
            "in_use_connections": in_use,
            "max_connections": max,
            "exhausted_in_window": w.exhausted,
            "window_secs": self.window.as_secs(),
            "warning_percent": self.thresholds.warning,
            "critical_percent": self.thresholds.critical,
            "at": clock::rfc3339(now),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        warning: 60.0,
        critical: 80.0,
        hysteresis: 5.0,
    };

    fn window(min: u32, max: u32, exhausted: u64) -> Window {
        Window {
            full: true,
            min_in_use: min,
            max_in_use: max,
            exhausted,
            ..Window::default()
        }
    }

    #[test]
    fn enters_a_level_only_when_held_for_the_whole_window() {
        assert_eq!(
            next_level(Level::Ok, &window(7, 7, 0), 10, &T),
            Level::Warning
        );
        assert_eq!(next_level(Level::Ok, &window(5, 10, 0), 10, &T), Level::Ok);
        assert_eq!(
            next_level(Level::Ok, &window(9, 9, 0), 10, &T),
            Level::Critical
        );
        let partial = Window {
            full: false,
            ..window(9, 9, 0)
        };
        assert_eq!(next_level(Level::Ok, &partial, 10, &T), Level::Ok);
    }

    #[test]
    fn any_exhaustion_is_critical_at_once() {
        let partial = Window {
            full: false,
            ..window(0, 10, 1)
        };
        assert_eq!(next_level(Level::Ok, &partial, 10, &T), Level::Critical);
    }

    #[test]
    fn leaves_a_level_only_below_the_hysteresis_band() {
        // 78 % is below critical but within 5 points of it: stay critical.
        assert_eq!(
            next_level(Level::Critical, &window(78, 78, 0), 100, &T),
            Level::Critical
        );
        assert_eq!(
            next_level(Level::Critical, &window(70, 74, 0), 100, &T),
            Level::Warning
        );
        assert_eq!(
            next_level(Level::Warning, &window(50, 58, 0), 100, &T),
            Level::Warning
        );
        assert_eq!(
            next_level(Level::Warning, &window(0, 54, 0), 100, &T),
            Level::Ok
        );
        assert_eq!(
            next_level(Level::Critical, &window(0, 0, 0), 100, &T),
            Level::Ok
        );
    }
}
