//! A failover run's report: text for a person, JSON for compare scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::load::Totals;
use super::timeline::Series;
use super::upstream::SENTINEL_SCHEME;
use super::writes::WriteCheck;
use super::{Facts, FailoverArgs, Kind};
use crate::stats::{FailureKind, Latency};

#[derive(Clone, Debug, Serialize)]
pub struct FailoverReport {
    pub name: String,
    pub target: String,
    pub failover: Kind,
    pub users: usize,
    pub duration_secs: f64,
    pub failover_at_secs: f64,
    pub timeout_ms: u64,
    pub retry_delay_ms: u64,
    pub old_primary: String,
    pub new_primary: String,
    /// When a Sentinel first named another primary, in ms after the
    /// failover was forced (polled every 20 ms); None: no switch seen.
    pub switch_after_ms: Option<f64>,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<FailureKind, u64>,
    pub failure_samples: BTreeMap<FailureKind, String>,
    pub connections_opened: u64,
    /// Every request, ok or failed.
    pub latency: Latency,
    /// End of the last 50 ms bin with a failure or without a success, in
    /// ms after the failover was forced (see timeline.rs); None: less than
    /// a steady second followed it before the end of the load.
    pub recovered_after_ms: Option<f64>,
    /// Time in such bins after the failover was forced.
    pub disrupted_ms: f64,
    /// End of the first and of the last 50 ms bin with a failure, in ms
    /// after the failover was forced.
    pub first_failure_after_ms: Option<f64>,
    pub last_failure_after_ms: Option<f64>,
    pub writes: WriteCheck,
    pub timeline: Series,
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or_else(|| "never".to_string(), |ms| format!("{:.2} s", ms / 1000.0))
}

impl FailoverReport {
    pub fn new(
        args: &FailoverArgs,
        facts: Facts,
        totals: Totals,
        series: Series,
    ) -> FailoverReport {
        let after = |at: Duration| at.saturating_sub(facts.forced).as_secs_f64() * 1000.0;
        let failures = series.failures_after_ms(facts.forced);
        FailoverReport {
            name: args
                .name
                .clone()
                .unwrap_or_else(|| default_name(&args.target)),
            target: args.target.clone(),
            failover: args.failover,
            users: args.users,
            duration_secs: facts.span.as_secs_f64(),
            failover_at_secs: facts.forced.as_secs_f64(),
            timeout_ms: args.timeout_ms,
            retry_delay_ms: args.retry_delay_ms,
            old_primary: facts.old_primary,
            new_primary: facts.new_primary,
            switch_after_ms: facts.switch.map(after),
            requests: totals.ok + totals.failed,
            ok: totals.ok,
            failed: totals.failed,
            failures: totals.failures,
            failure_samples: totals.samples,
            connections_opened: totals.connects,
            latency: Latency::from_histogram(&totals.latency),
            recovered_after_ms: series.recovered_after_ms(facts.forced),
            disrupted_ms: series.disrupted_ms(facts.forced),
            first_failure_after_ms: failures.map(|f| f.0),
            last_failure_after_ms: failures.map(|f| f.1),
            writes: facts.writes,
            timeline: series,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\npoolside-loadtest failover: {} failover at {:.1} s of {:.1} s, {} users (SET/GET), timeout {} ms, retry delay {} ms",
            self.failover.label(),
            self.failover_at_secs,
            self.duration_secs,
            self.users,
            self.timeout_ms,
            self.retry_delay_ms,
        );
        let _ = writeln!(out, "  target      {} {}", self.name, self.target);
        let _ = writeln!(
            out,
            "  primary     {} -> {} (a Sentinel named it {} after the failover was forced)",
            self.old_primary,
            self.new_primary,
            secs(self.switch_after_ms),
        );
        let kinds: Vec<String> = self
            .failures
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{} {n}", k.label()))
            .collect();
        let _ = writeln!(
            out,
            "  requests    {} ok, {} failed{}; {} connections opened",
            self.ok,
            self.failed,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            self.connections_opened,
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "  latency     p50 {:.3} / p99 {:.3} / max {:.3} ms (every request, ok or failed)",
            l.p50_ms, l.p99_ms, l.max_ms
        );
        match self.recovered_after_ms {
            Some(ms) => {
                let _ = write!(
                    out,
                    "  recovered   {:.2} s after the failover was forced",
                    ms / 1000.0
                );
            }
            None => {
                out.push_str("  recovered   not within the load (less than 1 s steady at its end)")
            }
        }
        let _ = write!(out, ", {:.2} s of it disrupted", self.disrupted_ms / 1000.0);
        if let (Some(first), Some(last)) = (self.first_failure_after_ms, self.last_failure_after_ms)
        {
            let _ = write!(
                out,
                " (failures from +{:.2} s to +{:.2} s)",
                first / 1000.0,
                last / 1000.0
            );
        }
        out.push('\n');
        let w = &self.writes;
        let _ = write!(
            out,
            "  writes      {} acknowledged, {} lost",
            w.acknowledged, w.lost
        );
        if let Some(last) = w.last_lost_after_ms {
            let _ = write!(out, " (the last acknowledged at {:+.3} s)", last / 1000.0);
        }
        let _ = writeln!(
            out,
            "; {} failed, {} of them applied anyway",
            w.failed, w.failed_but_applied
        );
        for (kind, sample) in &self.failure_samples {
            let _ = writeln!(out, "  first {} error: {sample}", kind.label());
        }
        out
    }
}

fn default_name(target: &str) -> String {
    if target.starts_with(SENTINEL_SCHEME) {
        return "sentinel".to_string();
    }
    match crate::url::host_port(target, "redis") {
        Ok((host, port)) => format!("{host}:{}", port.unwrap_or(6379)),
        Err(_) => "target".to_string(),
    }
}
