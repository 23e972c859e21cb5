//! The final report: a text table (one column per target, ratios to the
//! first when there are several) and the same data as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use clap::ValueEnum;
use serde::Serialize;

use crate::cli::{Plan, Target};
use crate::stats::{FailureKind, Summary};
use crate::status::PoolStatus;

/// One target's results.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    #[serde(flatten)]
    pub target: Target,
    #[serde(flatten)]
    pub summary: Summary,
    pub pool_status: Option<PoolStatus>,
    pub pool_status_error: Option<String>,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    /// True when Ctrl-C ended the run early: the figures are partial.
    pub interrupted: bool,
    pub targets: Vec<TargetReport>,
}

impl Report {
    /// Targets whose connection-level failure rate is above the limit.
    pub fn over_failure_limit(&self) -> Vec<&TargetReport> {
        self.targets
            .iter()
            .filter(|t| t.summary.connection_failure_rate > self.plan.max_failure_rate)
            .collect()
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let plan = &self.plan;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\npoolside-loadtest: {} workload, {} connections, {} users ({} preset), {:.1} s{}{}",
            value_name(plan.workload),
            value_name(plan.connection),
            plan.users,
            value_name(plan.preset),
            plan.duration.as_secs_f64(),
            if plan.rounds > 1 {
                format!(" per target in {} interleaved rounds", plan.rounds)
            } else {
                String::new()
            },
            if self.interrupted {
                "  [INTERRUPTED: partial results]"
            } else {
                ""
            },
        );
        if let [single] = self.targets.as_slice() {
            let _ = writeln!(out, "  target       {}", single.target.url);
        } else {
            for t in &self.targets {
                let _ = writeln!(out, "  {:<12} {}", t.target.name, t.target.url);
            }
        }
        out.push('\n');
        out.push_str(&render_table(&self.targets));
        for t in &self.targets {
            for (kind, sample) in &t.summary.failure_samples {
                let _ = writeln!(
                    out,
                    "  first {} error from {}: {sample}",
                    kind.label(),
                    t.target.name
                );
            }
        }
        for t in &self.targets {
            if let Some(status) = &t.pool_status {
                let _ = writeln!(out, "\n/pool/status of {}:", t.target.name);
                for line in status.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            } else if let Some(err) = &t.pool_status_error {
                let _ = writeln!(
                    out,
                    "\n/pool/status of {}: not available ({err})",
                    t.target.name
                );
            }
        }
        out
    }
}

/// The name a flag value is spelled with on the command line.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// `value (ratio x)` against the first target, or just the value.
fn with_ratio(value: f64, first: f64, decimals: usize, show_ratio: bool) -> String {
    let text = format!("{value:.decimals$}");
    if !show_ratio {
        return text;
    }
    match ratio(value, first) {
        Some(r) => format!("{text} ({r:.2}x)"),
        None => format!("{text} (-)"),
    }
}

/// value / baseline; None when the baseline is zero.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| value / baseline)
}

fn render_table(targets: &[TargetReport]) -> String {
    let compare = targets.len() > 1;
    let first = &targets[0].summary;
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, cell: &dyn Fn(&Summary) -> String| {
        rows.push((
            label.to_string(),
            targets.iter().map(|t| cell(&t.summary)).collect(),
        ));
    };
    row("requests", &|s| s.total.to_string());
    row("successes", &|s| s.successes.to_string());
    row("failures", &|s| s.failed.to_string());
    for kind in FailureKind::ALL {
        if targets
            .iter()
            .any(|t| t.summary.failures.get(&kind).copied().unwrap_or(0) > 0)
        {
            let label = format!("  {}", kind.label());
            row(&label, &|s| {
                s.failures.get(&kind).copied().unwrap_or(0).to_string()
            });
        }
    }
    row("success rate %", &|s| {
        format!("{:.2}", s.success_rate_percent)
    });
    row("throughput req/s", &|s| {
        with_ratio(s.throughput_rps, first.throughput_rps, 1, compare)
    });
    row("connections opened", &|s| s.connections_opened.to_string());
    type Pick = fn(&Summary) -> f64;
    let latencies: [(&str, Pick); 6] = [
        ("latency min ms", |s| s.latency.min_ms),
        ("latency avg ms", |s| s.latency.avg_ms),
        ("latency p50 ms", |s| s.latency.p50_ms),
        ("latency p95 ms", |s| s.latency.p95_ms),
        ("latency p99 ms", |s| s.latency.p99_ms),
        ("latency max ms", |s| s.latency.max_ms),
    ];
    for (label, pick) in latencies {
        row(label, &|s| with_ratio(pick(s), pick(first), 3, compare));
    }

    let headers: Vec<String> = if compare {
        targets.iter().map(|t| t.target.name.clone()).collect()
    } else {
        vec!["value".to_string()]
    };
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|(_, cells)| cells[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "  {:<label_width$}", "");
    for (h, w) in headers.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    out.push('\n');
    for (label, cells) in &rows {
        let _ = write!(out, "  {label:<label_width$}");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {c:>w$}");
        }
        out.push('\n');
    }
    if compare {
        let _ = writeln!(out, "  (ratios are to {})", targets[0].target.name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn target_report(name: &str, successes: u64, max_clients: u64, secs: u64) -> TargetReport {
        let mut histogram =
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        histogram.record(1000).unwrap();
        let failures = FailureKind::ALL
            .iter()
            .map(|&k| {
                (
                    k,
                    if k == FailureKind::MaxClients {
                        max_clients
                    } else {
                        0
                    },
                )
            })
            .collect();
        TargetReport {
            target: Target {
                name: name.into(),
                url: "redis://127.0.0.1:1".into(),
                status_url: None,
            },
            summary: Summary::new(
                successes,
                failures,
                10,
                &histogram,
                Duration::from_secs(secs),
                BTreeMap::new(),
            ),
            pool_status: None,
            pool_status_error: None,
        }
    }

    #[test]
    fn ratios_guard_against_zero() {
        assert_eq!(ratio(50.0, 100.0), Some(0.5));
        assert_eq!(ratio(5.0, 0.0), None);
        assert_eq!(with_ratio(50.0, 100.0, 1, true), "50.0 (0.50x)");
        assert_eq!(with_ratio(50.0, 0.0, 1, true), "50.0 (-)");
        assert_eq!(with_ratio(50.0, 100.0, 1, false), "50.0");
    }

    #[test]
    fn compare_table_has_one_column_per_target_and_only_seen_failures() {
        let table = render_table(&[
            target_report("direct", 1000, 500, 10),
            target_report("poolside", 2000, 0, 10),
        ]);
        let header = table.lines().next().unwrap();
        assert!(
            header.contains("direct") && header.contains("poolside"),
            "{table}"
        );
        let throughput = table.lines().find(|l| l.contains("throughput")).unwrap();
        assert!(
            throughput.contains("100.0 (1.00x)") && throughput.contains("200.0 (2.00x)"),
            "{table}"
        );
        assert!(table.contains("max clients reached"), "{table}");
        assert!(!table.contains("pool exhausted"), "{table}");
    }
}
