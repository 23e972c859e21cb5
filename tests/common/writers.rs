//! Write load through poolside: writer tasks, each on its own client
//! connection, one request at a time, alternating `SET k:<writer>:<n> <n>`
//! and `INCR c:<writer>`, recording what was acknowledged, what failed and
//! when. [`Load::lost_on`] then reads everything back from a data node
//! directly: an acknowledged SET must be there with its value, and each
//! counter must count every acknowledged INCR and at most the failed ones on
//! top (a failed INCR may have run; one sent twice would show as too many).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::raw::{RawClient, Reply};
use super::{wait_until, RedisServer, WAIT};

/// Each writer sends at most one request this often: load, but room left
/// on two shared cores for the Sentinels' timers.
const PACE: Duration = Duration::from_millis(2);
/// Keys per MGET when reading the writes back.
const READ_BACK_CHUNK: usize = 500;

/// A failed request: when it was sent, when the answer came and what it
/// was (an error reply's text, or `connection: ...` when the connection
/// failed).
#[derive(Debug, Clone)]
pub struct Failure {
    pub sent: Instant,
    pub at: Instant,
    pub what: String,
}

/// What one writer saw.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// The `n` of every acknowledged `SET k:<writer>:<n> <n>`.
    pub sets: Vec<u64>,
    /// When each of `sets` was sent.
    pub sets_sent: Vec<Instant>,
    pub incrs_acked: u64,
    pub incrs_failed: u64,
    pub failures: Vec<Failure>,
    /// `(sent, acknowledged)` of every acknowledged request.
    pub acks: Vec<(Instant, Instant)>,
}

/// Running writers; [`Writers::stop`] returns what they saw.
pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<WriterLog>>,
}

impl Writers {
    /// Starts `count` writers, each with its own connection to `addr`.
    pub fn start(addr: SocketAddr, count: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let tasks = (0..count)
            .map(|id| tokio::spawn(write(id, addr, stop.clone(), acked.clone())))
            .collect();
        Writers { stop, acked, tasks }
    }

    /// Acknowledged requests so far, all writers together.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` requests were acknowledged after this call.
    pub async fn wait_for_acks(&self, more: usize, what: &str) {
        let target = self.acked() + more;
        wait_until(WAIT, what, || async { self.acked() >= target }).await;
    }

    /// Stops the writers after their current request and collects their logs.
    pub async fn stop(self) -> Load {
        self.stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for task in self.tasks {
            logs.push(task.await.expect("writer task"));
        }
        Load { logs }
    }
}

/// What all writers saw, by writer id.
pub struct Load {
    pub logs: Vec<WriterLog>,
}

impl Load {
    pub fn failures(&self) -> Vec<&Failure> {
        self.logs.iter().flat_map(|l| &l.failures).collect()
    }

    pub fn acked(&self) -> usize {
        self.logs.iter().map(|l| l.acks.len()).sum()
    }

    /// The first acknowledgement of a request sent after `t`.
    pub fn first_ack_of_request_sent_after(&self, t: Instant) -> Option<Instant> {
        self.logs
            .iter()
            .flat_map(|l| &l.acks)
            .filter(|(sent, _)| *sent > t)
            .map(|(_, acked)| *acked)
            .min()
    }

    /// Acknowledged requests sent between `from` and `to`, acknowledged at
    /// `to` or later:
    /// for `from` = an outage's start and `to` = its end, requests that
    /// waited through it and then succeeded.
    pub fn acked_across(&self, from: Instant, to: Instant) -> usize {
        self.logs
            .iter()
            .flat_map(|l| &l.acks)
            .filter(|(sent, acked)| *sent > from && *sent < to && *acked >= to)
            .count()
    }

    /// The acknowledged SETs sent after `t` that `node` (read directly) has:
    /// on a node that was demoted before `t` and has not synced from the new
    /// primary since, each was written there after the switch.
    pub async fn found_on(&self, node: &RedisServer, t: Instant) -> Vec<String> {
        let mut con = node.direct().await;
        let mut found = Vec::new();
        for (id, log) in self.logs.iter().enumerate() {
            let keys: Vec<String> = log
                .sets
                .iter()
                .zip(&log.sets_sent)
                .filter(|(_, sent)| **sent > t)
                .map(|(n, _)| format!("k:{id}:{n}"))
                .collect();
            for chunk in keys.chunks(READ_BACK_CHUNK) {
                let values: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(chunk)
                    .query_async(&mut con)
                    .await
                    .expect("MGET on the data node");
                for (key, value) in chunk.iter().zip(values) {
                    if let Some(value) = value {
                        found.push(format!("{key} = {value}"));
                    }
                }
            }
        }
        found
    }

    /// What `node` (read directly) does not have of the acknowledged writes:
    /// missing or wrong SETs, and counters outside `[acked, acked + failed]`.
    pub async fn lost_on(&self, node: &RedisServer) -> Vec<String> {
        let mut con = node.direct().await;
        let mut values = HashMap::new();
        for chunk in self.keys().chunks(READ_BACK_CHUNK) {
            let got: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut con)
                .await
                .expect("MGET on the data node");
            values.extend(chunk.iter().cloned().zip(got));
        }
        self.lost_given(&values)
    }

    /// Same as [`Load::lost_on`], read through `addr` (a poolside in front
    /// of a cluster): pipelined GETs, as the keys span slots.
    pub async fn lost_through(&self, addr: SocketAddr) -> Vec<String> {
        let mut con = super::connect(addr).await;
        let mut values = HashMap::new();
        for chunk in self.keys().chunks(READ_BACK_CHUNK) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("GET").arg(key);
            }
            let got: Vec<Option<String>> = pipe
                .query_async(&mut con)
                .await
                .expect("GETs through poolside");
            values.extend(chunk.iter().cloned().zip(got));
        }
        self.lost_given(&values)
    }

    /// Every key the writers wrote: the acknowledged SETs' and the counters.
    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (id, log) in self.logs.iter().enumerate() {
            keys.extend(log.sets.iter().map(|n| format!("k:{id}:{n}")));
            keys.push(format!("c:{id}"));
        }
        keys
    }

    /// The acknowledged writes that `values` (read back) does not hold.
    fn lost_given(&self, values: &HashMap<String, Option<String>>) -> Vec<String> {
        let mut lost = Vec::new();
        for (id, log) in self.logs.iter().enumerate() {
            for n in &log.sets {
                let key = format!("k:{id}:{n}");
                let value = values.get(&key).cloned().flatten();
                if value != Some(n.to_string()) {
                    lost.push(format!("{key} = {value:?}"));
                }
            }
            let counter = values.get(&format!("c:{id}")).cloned().flatten();
            let counted = counter
                .map_or(Some(0), |c| c.parse().ok())
                .unwrap_or(u64::MAX);
            let (acked, failed) = (log.incrs_acked, log.incrs_failed);
            if counted < acked || counted > acked + failed {
                lost.push(format!(
                    "c:{id} = {counted}, {acked} INCRs acknowledged, {failed} failed"
                ));
            }
        }
        lost
    }
}

/// One writer: alternates SET and INCR until `stop`; reconnects when its
/// connection fails.
async fn write(
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> WriterLog {
    let mut log = WriterLog::default();
    let mut client = RawClient::connect(addr).await;
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let counter = format!("c:{id}");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        n += 1;
        let is_set = n % 2 == 0;
        let (key, value) = (format!("k:{id}:{n}"), n.to_string());
        let sent = Instant::now();
        let reply = match is_set {
            true => client.try_command(&["SET", &key, &value]).await,
            false => client.try_command(&["INCR", &counter]).await,
        };
        let at = Instant::now();
        let failure = match reply {
            Ok(Reply::Simple(ok)) if is_set && ok == "OK" => {
                log.sets.push(n);
                log.sets_sent.push(sent);
                None
            }
            Ok(Reply::Int(_)) if !is_set => {
                log.incrs_acked += 1;
                None
            }
            Ok(Reply::Error(e)) => Some(e),
            Ok(other) => panic!("writer {id}: unexpected reply {other:?}"),
            Err(e) => {
                client = RawClient::connect(addr).await;
                Some(format!("connection: {e}"))
            }
        };
        match failure {
            None => {
                log.acks.push((sent, at));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Some(what) => {
                log.incrs_failed += u64::from(!is_set);
                log.failures.push(Failure { sent, at, what });
            }
        }
    }
    log
}
