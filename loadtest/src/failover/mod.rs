//! `poolside-loadtest failover`: users writing and reading through a
//! target while a Sentinel failover is forced, then every acknowledged
//! write read back from the new primary.

mod load;
mod report;
mod timeline;
mod upstream;
mod writes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::cli::{parse_duration, MAX_DURATION, MAX_USERS};
use load::{run_user, Shared, Totals, UserResult};
use report::FailoverReport;
use timeline::Timeline;
use upstream::{
    connect_primary, kill_hard, redis_pid, Route, SentinelSpec, Sentinels, SENTINEL_SCHEME,
};

/// How often the Sentinels are asked for the primary while waiting for the switch.
const SWITCH_POLL: Duration = Duration::from_millis(20);
/// How long after the load the switch is still waited for.
const SWITCH_GRACE: Duration = Duration::from_secs(15);
/// Limit on the users' return after the stop (they stop between requests).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Limit on finding the new primary answering as one, for the write check.
const CHECK_LIMIT: Duration = Duration::from_secs(15);

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SENTINEL FAILOVER: the primary is alive and is demoted later
    Manual,
    /// kill -9 of the primary's redis-server: Sentinel must notice it is down
    Kill,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Manual => "manual (SENTINEL FAILOVER)",
            Kind::Kill => "kill -9 of the primary",
        }
    }
}

/// Flags of `poolside-loadtest failover`.
#[derive(Args, Clone, Debug)]
pub struct FailoverArgs {
    /// Where users connect: redis://HOST:PORT (poolside, which follows the
    /// failover itself) or redis+sentinel://HOST:PORT,.../SERVICE (straight to
    /// the primary, found with the redis crate's Sentinel client)
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// The Sentinels watching the primary (redis+sentinel://...), used to force
    /// the failover, time the switch and find the new primary [default: --target
    /// when it is a redis+sentinel:// URL]
    #[arg(long, value_name = "URL")]
    pub sentinel: Option<String>,
    /// How the failover is forced
    #[arg(long, value_enum, default_value_t = Kind::Manual)]
    pub failover: Kind,
    /// When, from the start of the load
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "3s")]
    pub failover_at: Duration,
    /// Length of the load
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Concurrent users, all started at once
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub users: usize,
    /// Limit on one request, reconnect included, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,
    /// Pause after a failed request, as an application's retry delay
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub retry_delay_ms: u64,
    /// Name of the target in the report [default: its host:port, or "sentinel"]
    #[arg(long)]
    pub name: Option<String>,
    /// Also write the report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Runtime worker threads (1 = single-threaded)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
}

impl FailoverArgs {
    /// Checks every bound; returns the Sentinels to control.
    pub fn check(&self) -> anyhow::Result<SentinelSpec> {
        if self.users == 0 || self.users > MAX_USERS {
            bail!("--users must be between 1 and {MAX_USERS}");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!(
                "--duration must be more than 0 and at most {}s",
                MAX_DURATION.as_secs()
            );
        }
        if self.failover_at >= self.duration {
            bail!("--failover-at must be before the end of --duration");
        }
        if self.threads == 0 || self.threads > 64 {
            bail!("--threads must be between 1 and 64");
        }
        let sentinel = match &self.sentinel {
            Some(url) => url,
            None if self.target.starts_with(SENTINEL_SCHEME) => &self.target,
            None => bail!("--sentinel {SENTINEL_SCHEME}://HOST:PORT,.../SERVICE is needed with a redis:// target"),
        };
        let spec = SentinelSpec::parse(sentinel).context("--sentinel")?;
        Route::new(&self.target, self.limit()).context("--target")?;
        Ok(spec)
    }

    fn limit(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// One run, in order:
/// 1. ask the Sentinels for the primary (and, for `kill`, its pid);
/// 2. start every user at once;
/// 3. at --failover-at, force the failover and watch the Sentinels for the switch;
/// 4. at --duration, stop the users and collect what they saw;
/// 5. wait for the switch, find the new primary, read every write back;
/// 6. print (and write) the report.
pub async fn run(args: FailoverArgs, spec: SentinelSpec) -> anyhow::Result<ExitCode> {
    let limit = args.limit();
    let mut sentinels = Sentinels::new(spec.clone(), limit)?;
    let old_primary = sentinels.primary().await?;
    let pid = match args.failover {
        Kind::Kill => Some(redis_pid(&old_primary, limit).await?),
        Kind::Manual => None,
    };

    let start = Instant::now();
    let shared = Arc::new(Shared {
        route: Route::new(&args.target, limit)?,
        timeline: Timeline::new(args.duration),
        start,
        limit,
        retry_delay: Duration::from_millis(args.retry_delay_ms),
        run: rand::random(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut users = JoinSet::new();
    for id in 0..args.users {
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        users.spawn(async move { (id, run_user(id, shared, stop).await) });
    }

    sleep_until(start + args.failover_at).await;
    let forced = start.elapsed();
    match pid {
        Some(pid) => kill_hard(pid)?,
        None => sentinels.force_failover().await?,
    }
    let watcher = tokio::spawn(watch_switch(
        Sentinels::new(spec, limit)?,
        old_primary.clone(),
        start,
        start + args.duration + SWITCH_GRACE,
    ));

    sleep_until(start + args.duration).await;
    let span = start.elapsed();
    let _ = stop_tx.send(true);
    let mut results = collect(users).await?;

    let switch = watcher.await.context("the switch watcher failed")?;
    let new_primary = match &switch {
        Some((_, primary)) => primary.clone(),
        None => sentinels.primary().await?,
    };
    let ledgers: Vec<_> = results
        .iter_mut()
        .map(|r| std::mem::take(&mut r.ledger))
        .collect();
    let mut conn = connect_primary(&new_primary, CHECK_LIMIT).await?;
    let writes = writes::check(&mut conn, shared.run, &ledgers, forced)
        .await
        .context("reading the writes back")?;

    let facts = Facts {
        old_primary,
        new_primary,
        forced,
        span,
        switch: switch.map(|(at, _)| at),
        writes,
    };
    let totals = Totals::merge(results.into_iter());
    let report = FailoverReport::new(
        &args,
        facts,
        totals,
        shared.timeline.snapshot(args.duration),
    );
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a run established besides what the users saw; times are from the
/// start of the load.
pub struct Facts {
    pub old_primary: String,
    pub new_primary: String,
    pub forced: Duration,
    pub span: Duration,
    pub switch: Option<Duration>,
    pub writes: writes::WriteCheck,
}

/// The users' results in user order, once they have stopped (they stop
/// between requests, so this is quick).
async fn collect(mut users: JoinSet<(usize, UserResult)>) -> anyhow::Result<Vec<UserResult>> {
    let mut results = Vec::with_capacity(users.len());
    timeout(DRAIN_LIMIT, async {
        while let Some(joined) = users.join_next().await {
            results.push(joined.context("a user task failed")?);
        }
        anyhow::Ok(())
    })
    .await
    .context("users did not stop")??;
    results.sort_by_key(|(id, _)| *id);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// When (time since the start of the load) a Sentinel first names a
/// primary other than `old`, and that primary; polled until `deadline`.
async fn watch_switch(
    mut sentinels: Sentinels,
    old: String,
    start: Instant,
    deadline: Instant,
) -> Option<(Duration, String)> {
    loop {
        if let Some(new) = sentinels.primaries().await.into_iter().find(|p| *p != old) {
            return Some((start.elapsed(), new));
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(SWITCH_POLL).await;
    }
}
