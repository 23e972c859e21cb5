//! Simulated users: ramp-up, the request loop, and a clean stop at the
//! deadline, at the request budget or on Ctrl-C.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisResult};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::cli::{ConnectionMode, Plan};
use crate::stats::{FailureKind, Stats};
use crate::workload::{self, Scripts};

/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Extra time users get to notice the stop signal before they are aborted.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Opens connections to one target the way an application would.
#[derive(Clone)]
pub struct Connector {
    client: Client,
    config: AsyncConnectionConfig,
}

impl Connector {
    /// A client for `url` that sends nothing at connect (no CLIENT SETINFO),
    /// so a connect is one TCP handshake, as with most application clients.
    pub fn new(url: &str, timeout: Duration) -> RedisResult<Connector> {
        let info = url.into_connection_info()?;
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let client = Client::open(info.set_redis_settings(settings))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(Connector { client, config })
    }

    pub async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }
}

/// What every user of one segment shares.
struct Shared {
    plan: Arc<Plan>,
    connector: Connector,
    scripts: Arc<Scripts>,
    stats: Arc<Stats>,
    /// Signalled when a user finds the request budget spent.
    budget_spent: Notify,
}

/// How a segment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Deadline or request budget reached.
    Completed,
    /// Ctrl-C.
    Interrupted,
}

/// Runs `plan.users` users against one target for `duration` and returns
/// the time spent under load.
///
/// Order of the stop:
/// 1. the deadline, the budget or `interrupt` ends the control loop;
/// 2. `stop` tells every user to leave after (or instead of) its request;
/// 3. users get the request timeout plus a grace to return, then are aborted.
pub async fn run_segment(
    plan: Arc<Plan>,
    connector: Connector,
    scripts: Arc<Scripts>,
    stats: Arc<Stats>,
    duration: Duration,
    interrupt: &mut watch::Receiver<bool>,
    bar: &ProgressBar,
) -> (Duration, Ending) {
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        connector,
        scripts,
        stats,
        budget_spent: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let spawned = Arc::new(AtomicUsize::new(0));
    let mut users = JoinSet::new();
    let start = Instant::now();
    let deadline = start + duration;
    let (done_before, _) = shared.stats.progress();
    bar.reset();
    bar.set_length(duration.as_millis() as u64);
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);

    let ending = loop {
        if *interrupt.borrow() {
            break Ending::Interrupted;
        }
        let next_user = spawned.load(Ordering::Relaxed);
        let next_spawn =
            (next_user < plan.users).then(|| start + spawn_offset(next_user, plan.spawn_rate));
        tokio::select! {
            _ = sleep_until(deadline) => break Ending::Completed,
            _ = interrupt.changed() => break Ending::Interrupted,
            _ = shared.budget_spent.notified() => break Ending::Completed,
            _ = sleep_until(next_spawn.unwrap_or(deadline)), if next_spawn.is_some() => {
                // Start everyone who is due, so a high spawn rate is not
                // limited by timer resolution.
                let now = Instant::now();
                let mut id = next_user;
                while id < plan.users && start + spawn_offset(id, plan.spawn_rate) <= now {
                    users.spawn(run_user(id, shared.clone(), stop_rx.clone()));
                    id += 1;
                }
                spawned.store(id, Ordering::Relaxed);
            }
            _ = ticker.tick() => {
                let (done, failed) = shared.stats.progress();
                let elapsed = start.elapsed();
                let rate = (done - done_before) as f64 / elapsed.as_secs_f64().max(1e-3);
                bar.set_position(elapsed.as_millis() as u64);
                bar.set_message(format!(
                    "users {}/{} | {} requests | {rate:.0}/s | {failed} failed",
                    spawned.load(Ordering::Relaxed), plan.users, done - done_before,
                ));
            }
        }
    };
    let elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    let drained = timeout(plan.timeout + DRAIN_GRACE, async {
        while users.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        users.abort_all();
    }
    (elapsed, ending)
}

/// When user `id` starts, relative to the segment start.
pub fn spawn_offset(id: usize, rate: f64) -> Duration {
    if rate <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(id as f64 / rate)
    }
}

/// One simulated user: pick a request, run it within the timeout, record
/// the outcome, pause, until told to stop.
async fn run_user(id: usize, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let plan = &shared.plan;
    let mut rng = StdRng::from_entropy();
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        if !shared.stats.try_start(plan.max_requests) {
            shared.budget_spent.notify_one();
            break;
        }
        let op = plan.workload.pick(&mut rng);
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            biased;
            _ = stop.changed() => break,
            outcome = timeout(plan.timeout, request(&shared, id, op, &mut conn)) => outcome,
        };
        let pause = match outcome {
            Ok(Ok(())) => {
                shared.stats.record_success(id, started.elapsed());
                plan.think
            }
            Ok(Err(e)) => {
                let kind = FailureKind::classify(&e);
                if kind.is_connection_level() {
                    conn = None;
                }
                shared.stats.record_failure(kind, || e.to_string());
                plan.retry_delay
            }
            Err(_) => {
                // The reply may still arrive; never reuse that connection.
                conn = None;
                shared.stats.record_failure(FailureKind::Timeout, || {
                    format!("no reply within {:?}", plan.timeout)
                });
                plan.retry_delay
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.changed() => break,
                _ = sleep(pause) => {}
            }
        }
    }
}

async fn request(
    shared: &Shared,
    id: usize,
    op: workload::Op,
    slot: &mut Option<MultiplexedConnection>,
) -> RedisResult<()> {
    match shared.plan.connection {
        ConnectionMode::Persistent => {
            let conn = match slot {
                Some(conn) => conn,
                None => slot.insert(connect(shared).await?),
            };
            workload::execute(op, id, &shared.scripts, conn).await
        }
        ConnectionMode::PerRequest => {
            let mut conn = connect(shared).await?;
            workload::execute(op, id, &shared.scripts, &mut conn).await
            // `conn` is dropped here: the socket closes after every request.
        }
    }
}

async fn connect(shared: &Shared) -> RedisResult<MultiplexedConnection> {
    let conn = shared.connector.connect().await?;
    shared.stats.record_connect();
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_up_spreads_users_at_the_spawn_rate() {
        assert_eq!(spawn_offset(0, 100.0), Duration::ZERO);
        assert_eq!(spawn_offset(250, 100.0), Duration::from_millis(2500));
        assert_eq!(spawn_offset(1999, 0.0), Duration::ZERO);
    }
}
