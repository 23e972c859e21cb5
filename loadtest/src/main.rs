//! `poolside-loadtest`: simulated application users against Redis, poolside
//! or another proxy, with a report of what the target did under that load.

mod cli;
mod failover;
mod report;
mod runner;
mod stats;
mod status;
mod url;
mod workload;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::cli::{Cli, Command, Plan};
use crate::report::{Report, TargetReport};
use crate::runner::{run_segment, Connector, Ending};
use crate::stats::Stats;
use crate::workload::Scripts;

/// Limit on fetching /pool/status at the end.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_FAILURE_RATE: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Failover(args)) = cli.command {
        let spec = match args.check() {
            Ok(spec) => spec,
            Err(e) => {
                eprintln!("poolside-loadtest failover: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        return block_on(args.threads, failover::run(args, spec));
    }
    let plan = match cli.plan() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("poolside-loadtest: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    block_on(cli.threads, run(plan, cli.json))
}

/// Runs `task` on a runtime with `threads` workers (1: single-threaded);
/// an error is printed and exits 1.
fn block_on(
    threads: usize,
    task: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolside-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("poolside-loadtest: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(plan: Plan, json: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let plan = Arc::new(plan);
    let mut interrupt = watch_ctrl_c();
    let scripts = Arc::new(Scripts::new());
    let connectors = plan
        .targets
        .iter()
        .map(|t| Connector::new(&t.url, plan.timeout))
        .collect::<Result<Vec<_>, _>>()?;
    for (target, connector) in plan.targets.iter().zip(&connectors) {
        if let Err(e) = load_script(connector, &scripts, plan.timeout).await {
            eprintln!(
                "note: SCRIPT LOAD on {} failed ({e}); EVALSHA will fall back to EVAL",
                target.name
            );
        }
    }

    let stats: Vec<Arc<Stats>> = plan
        .targets
        .iter()
        .map(|_| Arc::new(Stats::new()))
        .collect();
    let mut elapsed = vec![Duration::ZERO; plan.targets.len()];
    let bar = progress_bar();
    let segment = plan.duration / plan.rounds;
    let count = plan.targets.len();
    let mut interrupted = false;
    // Interleave: every round runs each target once, starting one further
    // along, so drift on a shared machine spreads over all targets.
    'rounds: for round in 0..plan.rounds as usize {
        for i in 0..count {
            let t = (i + round) % count;
            if plan.rounds > 1 || count > 1 {
                bar.set_prefix(format!(
                    "{} {}/{}",
                    plan.targets[t].name,
                    round + 1,
                    plan.rounds
                ));
            }
            let (spent, ending) = run_segment(
                plan.clone(),
                connectors[t].clone(),
                scripts.clone(),
                stats[t].clone(),
                segment,
                &mut interrupt,
                &bar,
            )
            .await;
            elapsed[t] += spent;
            if ending == Ending::Interrupted {
                interrupted = true;
                break 'rounds;
            }
        }
    }
    bar.finish_and_clear();

    let mut targets = Vec::with_capacity(count);
    for (i, target) in plan.targets.iter().enumerate() {
        let (pool_status, pool_status_error) = match &target.status_url {
            Some(url) => match status::fetch(url, STATUS_TIMEOUT).await {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            },
            None => (None, None),
        };
        targets.push(TargetReport {
            target: target.clone(),
            summary: stats[i].summarize(elapsed[i]),
            pool_status,
            pool_status_error,
        });
    }
    let report = Report {
        plan: (*plan).clone(),
        interrupted,
        targets,
    };
    print!("{}", report.render());
    if let Some(path) = json {
        report.write_json(&path)?;
    }
    if interrupted {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    let over = report.over_failure_limit();
    if !over.is_empty() {
        for t in over {
            eprintln!(
                "poolside-loadtest: {}: connection-level failure rate {:.4} is above --max-failure-rate {}",
                t.target.name, t.summary.connection_failure_rate, plan.max_failure_rate
            );
        }
        return Ok(ExitCode::from(EXIT_FAILURE_RATE));
    }
    Ok(ExitCode::SUCCESS)
}

/// The first Ctrl-C asks the run to stop and report; a second one exits at once.
fn watch_ctrl_c() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler: keep `tx` alive so the run is never
            // mistaken for interrupted.
            std::future::pending::<()>().await;
        }
        let _ = tx.send(true);
        eprintln!("\ninterrupted: stopping users, then printing the partial report (Ctrl-C again to quit now)");
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        std::future::pending::<()>().await;
    });
    rx
}

/// SCRIPT LOAD once per target, within the request timeout.
async fn load_script(
    connector: &Connector,
    scripts: &Scripts,
    limit: Duration,
) -> anyhow::Result<()> {
    timeout(limit, async {
        let mut conn = connector.connect().await?;
        scripts.load(&mut conn).await
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))??;
    Ok(())
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {msg}")
        .expect("static progress template is valid");
    let bar = ProgressBar::new(1).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
