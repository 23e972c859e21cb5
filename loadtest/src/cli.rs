//! Command-line flags, presets and the checks that keep every run bounded
//! and on this machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::failover::FailoverArgs;
use crate::url::{check_loopback_url, host_port};
use crate::workload::Workload;

/// Longest run accepted: a load test here must stop by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most simulated users accepted.
pub const MAX_USERS: usize = 10_000;

const AFTER_HELP: &str = "\
Presets (--users, --duration and --spawn-rate override them):
  baseline   500 users, 100 users/s ramp-up, 60 s
  stress    1000 users, 200 users/s ramp-up, 60 s
  ultimate  2000 users, 400 users/s ramp-up, 60 s

Exit status: 0 ok; 1 error; 2 bad flags; 3 connection-level failure rate above
--max-failure-rate; 130 interrupted (Ctrl-C; the partial report is printed).

Targets must be loopback addresses (127.0.0.0/8, ::1, localhost).";

#[derive(Parser, Debug)]
#[command(name = "poolside-loadtest", version, about, after_help = AFTER_HELP,
          args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Redis endpoint to load: direct Redis, poolside or another proxy
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    pub target: String,
    /// Run the same workload against several targets, interleaved, and print
    /// them side by side with ratios to the first. Each is NAME=URL or
    /// NAME=URL,ADMIN_URL (ADMIN_URL: poolside's admin base or /pool/status URL)
    #[arg(long, value_name = "NAME=URL", num_args = 1.., conflicts_with = "target")]
    pub compare: Vec<String>,
    /// With --compare: rounds; each target runs --duration / rounds per round
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Scenario preset
    #[arg(long, value_enum, default_value_t = Preset::Baseline)]
    pub preset: Preset,
    /// Simulated users [default: the preset's]
    #[arg(long, value_name = "N")]
    pub users: Option<usize>,
    /// Run time including ramp-up, e.g. 30s, 2m, 500ms [default: 60s]
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Users started per second; 0 starts them all at once [default: the preset's]
    #[arg(long, value_name = "N")]
    pub spawn_rate: Option<f64>,
    /// Start all users evenly over this time instead of --spawn-rate, e.g. 5s
    #[arg(long, value_name = "TIME", value_parser = parse_duration, conflicts_with = "spawn_rate")]
    pub ramp_up: Option<Duration>,
    /// What the users do
    #[arg(long, value_enum, default_value_t = Workload::Mixed)]
    pub workload: Workload,
    /// persistent: each user keeps one connection; per-request: connect,
    /// run the request, disconnect (the PHP/CGI pattern)
    #[arg(long, value_enum, default_value_t = ConnectionMode::Persistent)]
    pub connection: ConnectionMode,
    /// Limit on the whole request (connect included), in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,
    /// Pause between one user's requests, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub think_ms: u64,
    /// Pause after a failed request before the user tries again, like an
    /// application's retry delay (keeps a failing target from becoming a busy loop)
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub retry_delay_ms: u64,
    /// Stop after this many requests (per target) even if time remains
    #[arg(long, value_name = "N", default_value_t = 50_000_000)]
    pub max_requests: u64,
    /// poolside's /pool/status URL, fetched at the end of the run
    #[arg(long, value_name = "URL")]
    pub status_url: Option<String>,
    /// poolside's admin base URL (e.g. http://127.0.0.1:9180); implies
    /// --status-url ADMIN/pool/status
    #[arg(long, value_name = "URL", conflicts_with = "status_url")]
    pub admin: Option<String>,
    /// Also write the report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Exit with status 3 when connection-level failures / requests exceeds
    /// this fraction (1.0 never fails the run)
    #[arg(long, value_name = "FRACTION", default_value_t = 1.0)]
    pub max_failure_rate: f64,
    /// Runtime worker threads (1 = single-threaded, which disturbs a
    /// co-located Redis and proxy least)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Force a Sentinel failover during a SET/GET run and report failed
    /// requests, latency, time to recover and lost acknowledged writes
    Failover(FailoverArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    Baseline,
    Stress,
    Ultimate,
}

impl Preset {
    /// (users, spawn rate in users/s)
    pub fn shape(self) -> (usize, f64) {
        match self {
            Preset::Baseline => (500, 100.0),
            Preset::Stress => (1000, 200.0),
            Preset::Ultimate => (2000, 400.0),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionMode {
    Persistent,
    PerRequest,
}

/// One endpoint under load.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub status_url: Option<String>,
}

/// Everything a run needs, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub rounds: u32,
    pub preset: Preset,
    pub users: usize,
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    pub spawn_rate: f64,
    pub workload: Workload,
    pub connection: ConnectionMode,
    #[serde(serialize_with = "as_secs")]
    pub timeout: Duration,
    #[serde(serialize_with = "as_secs")]
    pub think: Duration,
    #[serde(serialize_with = "as_secs")]
    pub retry_delay: Duration,
    pub max_requests: u64,
    pub max_failure_rate: f64,
}

impl Cli {
    /// Applies the preset and checks every bound.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let (preset_users, preset_rate) = self.preset.shape();
        let users = self.users.unwrap_or(preset_users);
        if users == 0 || users > MAX_USERS {
            bail!("--users must be between 1 and {MAX_USERS}, got {users}");
        }
        let duration = self.duration.unwrap_or(Duration::from_secs(60));
        if duration.is_zero() || duration > MAX_DURATION {
            bail!(
                "--duration must be more than 0 and at most {}s",
                MAX_DURATION.as_secs()
            );
        }
        let spawn_rate = match (self.spawn_rate, self.ramp_up) {
            (Some(rate), _) => rate,
            (None, Some(ramp)) if ramp.is_zero() => 0.0,
            (None, Some(ramp)) => users as f64 / ramp.as_secs_f64(),
            (None, None) => preset_rate,
        };
        if !(spawn_rate.is_finite() && spawn_rate >= 0.0) {
            bail!("--spawn-rate must be 0 or more, got {spawn_rate}");
        }
        if !(0.0..=1.0).contains(&self.max_failure_rate) {
            bail!(
                "--max-failure-rate is a fraction between 0 and 1, got {}",
                self.max_failure_rate
            );
        }
        if self.max_requests == 0 {
            bail!("--max-requests must be at least 1");
        }
        if self.threads == 0 || self.threads > 64 {
            bail!("--threads must be between 1 and 64");
        }
        let targets = if self.compare.is_empty() {
            let status_url = match (&self.status_url, &self.admin) {
                (Some(url), _) => Some(url.clone()),
                (None, Some(admin)) => Some(status_url_from_admin(admin)),
                (None, None) => None,
            };
            let name = match host_port(&self.target, "redis") {
                Ok((host, port)) => format!("{host}:{}", port.unwrap_or(6379)),
                Err(_) => "target".to_string(),
            };
            vec![Target {
                name,
                url: self.target.clone(),
                status_url,
            }]
        } else {
            self.compare
                .iter()
                .map(|spec| parse_compare(spec))
                .collect::<anyhow::Result<_>>()?
        };
        for target in &targets {
            check_loopback_url(&target.url, "redis")
                .with_context(|| format!("target {}", target.name))?;
            if let Some(status) = &target.status_url {
                check_loopback_url(status, "http")
                    .with_context(|| format!("status URL of {}", target.name))?;
            }
        }
        Ok(Plan {
            targets,
            rounds: if self.compare.is_empty() {
                1
            } else {
                self.rounds
            },
            preset: self.preset,
            users,
            duration,
            spawn_rate,
            workload: self.workload,
            connection: self.connection,
            timeout: Duration::from_millis(self.timeout_ms),
            think: Duration::from_millis(self.think_ms),
            retry_delay: Duration::from_millis(self.retry_delay_ms),
            max_requests: self.max_requests,
            max_failure_rate: self.max_failure_rate,
        })
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `30s`, `2m`, `500ms`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn status_url_from_admin(admin: &str) -> String {
    let base = admin.trim_end_matches('/');
    if base.ends_with("/pool/status") {
        base.to_string()
    } else {
        format!("{base}/pool/status")
    }
}

/// `NAME=URL` or `NAME=URL,ADMIN_URL`.
fn parse_compare(spec: &str) -> anyhow::Result<Target> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("--compare expects NAME=URL, got {spec:?}");
    };
    if name.is_empty() {
        bail!("--compare {spec:?}: empty name");
    }
    let (url, status_url) = match rest.split_once(',') {
        Some((url, admin)) => (url, Some(status_url_from_admin(admin))),
        None => (rest, None),
    };
    Ok(Target {
        name: name.to_string(),
        url: url.to_string(),
        status_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let cli =
            Cli::try_parse_from(std::iter::once("poolside-loadtest").chain(args.iter().copied()))?;
        cli.plan()
    }

    #[test]
    fn presets_apply_and_flags_override_them() {
        let p = plan(&["--preset", "stress"]).unwrap();
        assert_eq!(
            (p.users, p.spawn_rate, p.duration),
            (1000, 200.0, Duration::from_secs(60))
        );
        let p = plan(&[
            "--preset",
            "ultimate",
            "--users",
            "100",
            "--ramp-up",
            "2s",
            "--duration",
            "5s",
        ])
        .unwrap();
        assert_eq!(
            (p.users, p.spawn_rate, p.duration),
            (100, 50.0, Duration::from_secs(5))
        );
        assert!(plan(&["--spawn-rate", "1", "--ramp-up", "1s"]).is_err());
        assert!(plan(&["--users", "0"]).is_err());
        assert!(plan(&["--duration", "2h"]).is_err());
        assert!(plan(&["--max-failure-rate", "1.5"]).is_err());
        assert!(plan(&["--target", "redis://192.168.1.10:6379"]).is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn compare_specs_split_name_url_and_admin() {
        let t = parse_compare("poolside=redis://127.0.0.1:6380,http://127.0.0.1:9180").unwrap();
        assert_eq!(t.name, "poolside");
        assert_eq!(t.url, "redis://127.0.0.1:6380");
        assert_eq!(
            t.status_url.as_deref(),
            Some("http://127.0.0.1:9180/pool/status")
        );
        assert!(parse_compare("redis://x").is_err());
    }
}
