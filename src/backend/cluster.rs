//! The Redis Cluster backend (issue #13): one [`Pool`] per primary, the slot
//! map read from `CLUSTER SLOTS`, and a batch's commands routed by the slot
//! of their keys.
//!
//! A batch of plain commands (no transaction, no pinned state, no stream) is
//! *split*: each command goes to the primary that owns its slot, every node's
//! share is written at once, and the replies are put back in the client's
//! order. A node that refuses a command because the slot is elsewhere is
//! followed: `-MOVED` updates the map and re-sends the command to the new
//! owner (and asks the refresher for a new reading), `-ASK` sends `ASKING`
//! and the command to the named node (no refresh: the slot is migrating, not
//! moved), `-TRYAGAIN` re-sends after a short wait; at most
//! `upstream.cluster.max_redirects` times per command. These re-sends are
//! safe for writes because the node refused the command: it did not run.
//!
//! Every other batch (MULTI, WATCH, HELLO, SELECT, pub/sub, a pinned client)
//! runs whole on one node with the per-batch checkout, as against a single
//! Redis: the node pinned already, else the owner of the batch's first key.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::checkout::read_within;
use super::plan::{Part, Plan};
use super::{prepare, Backend, Failed, Out, Wants};
use crate::cluster::keys::{KeyTable, Keys};
use crate::cluster::slot::key_slot;
use crate::cluster::topology::Topology;
use crate::config::Config;
use crate::error::{Error, Refusal};
use crate::pool::{spawn_health_checker, Address, Pool, Target, UpstreamConn};
use crate::sentinel::value;

/// What a cluster node answers a command whose keys are in different slots.
pub const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n";
/// What a cluster node answers for a slot no node serves.
const CLUSTERDOWN: &[u8] = b"-CLUSTERDOWN Hash slot not served\r\n";
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// The shortest time between two slot-map readings: a burst of MOVED
/// replies (a reshard) asks for one, not one per reply.
const REFRESH_GAP: Duration = Duration::from_millis(100);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    pub moved: AtomicU64,
    pub ask: AtomicU64,
    pub tryagain: AtomicU64,
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
}

/// A node's pool and the health checker that keeps it.
struct Node {
    pool: Pool,
    checker: Option<JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(task) = self.checker.take() {
            task.abort();
        }
    }
}

/// The cluster as poolside knows it: one per poolside.
pub struct Cluster {
    config: Config,
    /// Credentials, TLS and timeouts for every node; the address is each node's.
    template: Target,
    seeds: Vec<String>,
    nodes: Mutex<HashMap<String, Node>>,
    topology: watch::Sender<Option<Arc<Topology>>>,
    keys: OnceLock<Arc<KeyTable>>,
    refresh: Notify,
    max_redirects: usize,
    health_interval: Duration,
    shutdown: watch::Receiver<bool>,
    pub counters: ClusterCounters,
}

impl Cluster {
    /// `seed_pool` is the pool of `seeds[0]` that poolside already runs (its
    /// health checker included); the other nodes' pools are made as the slot
    /// map names them.
    pub fn new(
        config: &Config,
        template: Target,
        seeds: Vec<String>,
        seed_pool: Pool,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Cluster> {
        let mut nodes = HashMap::new();
        if let Some(first) = seeds.first() {
            let node = Node {
                pool: seed_pool,
                checker: None,
            };
            nodes.insert(first.clone(), node);
        }
        let c = &config.upstream.cluster;
        Arc::new(Cluster {
            config: config.clone(),
            template,
            seeds,
            nodes: Mutex::new(nodes),
            topology: watch::Sender::new(None),
            keys: OnceLock::new(),
            refresh: Notify::new(),
            max_redirects: c.max_redirects as usize,
            health_interval: Duration::from_secs(config.pool.health_check_interval_secs),
            shutdown,
            counters: ClusterCounters::default(),
        })
    }

    /// The slot map now, if one was read.
    pub fn topology_now(&self) -> Option<Arc<Topology>> {
        self.topology.borrow().clone()
    }

    /// The slot map, waiting up to the connect timeout for the first reading.
    pub async fn topology(&self) -> Result<Arc<Topology>, Error> {
        if let Some(t) = self.topology_now() {
            return Ok(t);
        }
        self.request_refresh();
        let waited_ms = self.config.upstream.connect_timeout_ms.max(100);
        let mut rx = self.topology.subscribe();
        let wait = Duration::from_millis(waited_ms);
        let found = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(t)) => t.clone(),
            _ => None,
        };
        found.ok_or(Error::NoSlotMap { waited_ms })
    }

    /// Asks the refresher for a new reading soon (at most one in flight, and
    /// [`REFRESH_GAP`] apart).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Each node's pool, by address (the seed's first).
    pub fn node_pools(&self) -> Vec<(String, Pool)> {
        let nodes = self.nodes.lock().expect("cluster nodes");
        let mut all: Vec<_> = nodes
            .iter()
            .map(|(a, n)| (a.clone(), n.pool.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The pool of the node at `addr`, made on first use.
    pub fn pool_for(&self, addr: &str) -> Pool {
        let mut nodes = self.nodes.lock().expect("cluster nodes");
        if let Some(node) = nodes.get(addr) {
            return node.pool.clone();
        }
        let pool = Pool::new(&self.config, self.target_for(addr));
        let checker =
            spawn_health_checker(pool.clone(), self.health_interval, self.shutdown.clone());
        nodes.insert(
            addr.to_string(),
            Node {
                pool: pool.clone(),
                checker: Some(checker),
            },
        );
        pool
    }

    fn target_for(&self, addr: &str) -> Target {
        let mut target = self.template.clone();
        target.address = Address::Fixed(addr.to_string());
        // A cluster has database 0 only.
        target.db = 0;
        target
    }

    /// Reads the slot map now and then: at once, then every
    /// `refresh_interval_ms`, or sooner when asked.
    pub fn spawn_refresher(self: &Arc<Self>) -> JoinHandle<()> {
        let cluster = self.clone();
        let every =
            Duration::from_millis(self.config.upstream.cluster.refresh_interval_ms.max(100));
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                cluster.refresh_once().await;
                let wait = if cluster.topology_now().is_some() {
                    every
                } else {
                    // Nothing known yet: try again at the reconnect backoff's pace.
                    Duration::from_millis(cluster.config.pool.backoff_max_ms.max(100))
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cluster.refresh.notified() => {}
                    _ = shutdown.changed() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH_GAP) => {}
                    _ = shutdown.changed() => return,
                }
            }
        })
    }

    /// One reading: from the known primaries, then their replicas, then the
    /// seeds, the first that answers.
    async fn refresh_once(&self) {
        let mut candidates: Vec<String> = Vec::new();
        if let Some(t) = self.topology_now() {
            candidates.extend(t.primaries.iter().cloned());
            candidates.extend(t.replicas.iter().flatten().cloned());
        }
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut last = String::new();
        for addr in &candidates {
            match self.read_slots(addr).await {
                Ok(topology) => {
                    self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                    self.install(topology);
                    return;
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        self.counters
            .refresh_failures
            .fetch_add(1, Ordering::Relaxed);
        warn!(error = %last, "no cluster node answered CLUSTER SLOTS");
    }

    async fn read_slots(&self, addr: &str) -> Result<Topology, String> {
        let target = self.target_for(addr);
        let limit = target.connect_timeout + Duration::from_secs(1);
        let reading = async {
            let mut conn = UpstreamConn::connect(&target)
                .await
                .map_err(|e| e.to_string())?;
            if self.keys.get().is_none() {
                let reply = conn
                    .command(&[b"COMMAND"])
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some((v, _)) = value::parse(&reply) {
                    let table = KeyTable::from_command_reply(&v);
                    if !table.is_empty() {
                        let _ = self.keys.set(Arc::new(table));
                    }
                }
            }
            let reply = conn
                .command(&[b"CLUSTER", b"SLOTS"])
                .await
                .map_err(|e| e.to_string())?;
            let (v, _) = value::parse(&reply).ok_or("an unreadable CLUSTER SLOTS reply")?;
            Topology::from_cluster_slots(&v, addr)
        };
        tokio::time::timeout(limit, reading)
            .await
            .map_err(|_| format!("no answer within {} ms", limit.as_millis()))?
    }

    /// Makes `topology` the slot map: pools for new primaries, none kept for
    /// nodes that left (the seed's stays: poolside reports on it).
    fn install(&self, topology: Topology) {
        let changed = self.topology_now().map_or(true, |old| *old != topology);
        for addr in &topology.primaries {
            self.pool_for(addr);
        }
        {
            let mut nodes = self.nodes.lock().expect("cluster nodes");
            let seed = self.seeds.first();
            nodes.retain(|addr, _| Some(addr) == seed || topology.primaries.contains(addr));
        }
        if changed {
            info!(
                primaries = ?topology.primaries,
                unowned = topology.unowned(),
                "cluster slot map read"
            );
        }
        self.topology.send_replace(Some(Arc::new(topology)));
    }

    /// A node said `MOVED slot addr`: the slot is `addr`'s from now on.
    fn moved(&self, slot: u16, addr: &str) {
        self.counters.moved.fetch_add(1, Ordering::Relaxed);
        self.topology.send_modify(|t| {
            if let Some(t) = t {
                Arc::make_mut(t).moved(slot, addr);
            }
        });
        self.request_refresh();
    }

    /// Where the command `args` runs.
    fn route(&self, args: &[&[u8]]) -> Route {
        let Some(table) = self.keys.get() else {
            // No key table (COMMAND failed): any node, MOVED corrects it.
            return Route::Any;
        };
        match table.keys(args) {
            Keys::None => Route::Any,
            Keys::At(at) => {
                let mut slots = at.iter().filter_map(|&i| args.get(i)).map(|k| key_slot(k));
                let Some(first) = slots.next() else {
                    return Route::Any;
                };
                if slots.all(|s| s == first) {
                    Route::Slot(first)
                } else {
                    Route::CrossSlot
                }
            }
        }
    }

    /// The node a batch that runs whole goes to: the owner of its first
    /// key's slot, else the first primary.
    pub fn node_for_batch(&self, topology: &Topology, plan: &Plan) -> String {
        for frame in frames(&plan.upstream) {
            let args = frame.args(&plan.upstream);
            if let Route::Slot(slot) = self.route(&args) {
                if let Some(owner) = topology.owner(slot) {
                    return topology.primaries[owner].clone();
                }
            }
        }
        topology.primaries[0].clone()
    }
}

/// Where one command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Slot(u16),
    /// No key: any node.
    Any,
    /// Keys in more than one slot: refused as a node refuses it.
    CrossSlot,
}

/// One RESP array frame of `Plan::upstream` and its arguments' ranges.
struct Frame {
    range: Range<usize>,
    args: Vec<Range<usize>>,
}

impl Frame {
    fn args<'a>(&self, buf: &'a [u8]) -> Vec<&'a [u8]> {
        self.args.iter().map(|r| &buf[r.clone()]).collect()
    }
}

/// The frames of `buf`, which the planner wrote as RESP arrays of bulk
/// strings. A frame that does not read as one (never expected) ends the list.
fn frames(buf: &[u8]) -> Vec<Frame> {
    fn number(buf: &[u8], at: usize, lead: u8) -> Option<(usize, usize)> {
        if buf.get(at) != Some(&lead) {
            return None;
        }
        let end = at + 1 + memchr::memchr(b'\r', buf.get(at + 1..)?)?;
        let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let Some((argc, mut pos)) = number(buf, at, b'*') else {
            break;
        };
        let mut args = Vec::with_capacity(argc);
        for _ in 0..argc {
            let Some((len, data)) = number(buf, pos, b'$') else {
                return out;
            };
            args.push(data..data + len);
            pos = data + len + 2;
        }
        if pos > buf.len() {
            break;
        }
        at = pos;
        out.push(Frame {
            range: start..pos,
            args,
        });
    }
    out
}

/// The batch may be split over nodes: plain commands and local answers only,
/// no stream.
pub fn splittable(plan: &Plan) -> bool {
    plan.stream_from.is_none()
        && plan
            .parts(0)
            .all(|p| matches!(p, Part::Local(_) | Part::Remote(super::Remote::Plain)))
}

/// A step's reply: in a group's buffer, or of its own (a redirect's).
enum Answer {
    Pending,
    In(usize, Range<usize>),
    Own(BytesMut),
    Text(&'static [u8]),
    Failed(Error),
}

/// What a node said about where a command belongs.
enum Redirect {
    Moved(u16, String),
    Ask(String),
    TryAgain,
}

/// Reads `-MOVED slot host:port`, `-ASK slot host:port` and `-TRYAGAIN`; an
/// empty host is the node that answered (`asked`).
fn redirect_of(reply: &[u8], asked: &str) -> Option<Redirect> {
    if reply.starts_with(b"-TRYAGAIN") {
        return Some(Redirect::TryAgain);
    }
    let (moved, rest) = if let Some(rest) = reply.strip_prefix(b"-MOVED ") {
        (true, rest)
    } else {
        (false, reply.strip_prefix(b"-ASK ")?)
    };
    let line = std::str::from_utf8(rest).ok()?.trim_end();
    let (slot, addr) = line.split_once(' ')?;
    let slot: u16 = slot.parse().ok()?;
    let addr = match addr.strip_prefix(':') {
        Some(port) => {
            crate::config::url::join_host_port(crate::pool::host_of(asked), port.parse().ok()?)
        }
        None => addr.to_string(),
    };
    Some(if moved {
        Redirect::Moved(slot, addr)
    } else {
        Redirect::Ask(addr)
    })
}

/// Runs a splittable `plan` over the cluster's nodes; every step is
/// answered in `out` (a node that failed answers its steps with the error).
pub async fn execute_split(
    backend: &Backend,
    cluster: &Cluster,
    topology: &Topology,
    plan: &Plan,
    wants: Wants,
    out: &mut Out<'_>,
) -> Result<(), Failed> {
    let buf = &plan.upstream[..];
    let frames = frames(buf);
    let mut answers: Vec<Answer> = Vec::with_capacity(frames.len());
    // (node, the steps it runs)
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut fallback: Option<usize> = None;
    let mut keyless = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        answers.push(Answer::Pending);
        let owner = match cluster.route(&frame.args(buf)) {
            Route::CrossSlot => {
                answers[i] = Answer::Text(CROSSSLOT);
                continue;
            }
            Route::Any => {
                keyless.push(i);
                continue;
            }
            Route::Slot(slot) => match topology.owner(slot) {
                Some(owner) => owner,
                None => {
                    cluster.request_refresh();
                    answers[i] = Answer::Text(CLUSTERDOWN);
                    continue;
                }
            },
        };
        let node = &topology.primaries[owner];
        let g = match groups.iter().position(|(n, _)| n == node) {
            Some(g) => g,
            None => {
                groups.push((node.clone(), Vec::new()));
                groups.len() - 1
            }
        };
        fallback.get_or_insert(g);
        groups[g].1.push(i);
    }
    if !keyless.is_empty() {
        // Keyless commands go with the batch's first node (one round trip).
        let g = match fallback {
            Some(g) => g,
            None => {
                groups.push((topology.primaries[0].clone(), Vec::new()));
                groups.len() - 1
            }
        };
        groups[g].1.extend(keyless);
        groups[g].1.sort_unstable();
    }
    let limit = backend.reply_limit(plan.wait);
    let runs = groups.iter().map(|(node, steps)| {
        let batch: Vec<&[u8]> = steps
            .iter()
            .map(|&i| &buf[frames[i].range.clone()])
            .collect();
        run_on_node(backend, cluster, node, batch, wants, limit)
    });
    let ran = futures_util::future::join_all(runs).await;
    let mut replies = Vec::with_capacity(ran.len());
    for (g, result) in ran.into_iter().enumerate() {
        match result {
            Ok((reply, ranges)) => {
                for (&i, range) in groups[g].1.iter().zip(ranges) {
                    answers[i] = Answer::In(g, range);
                }
                replies.push(reply);
            }
            Err(error) => {
                for &i in &groups[g].1 {
                    answers[i] = Answer::Failed(error);
                }
                replies.push(BytesMut::new());
            }
        }
    }
    // Redirects, in the client's order: each re-send waits for the one before.
    for i in 0..answers.len() {
        let Answer::In(g, range) = &answers[i] else {
            continue;
        };
        let mut asked = groups[*g].0.clone();
        let mut reply: Option<BytesMut> = None;
        let first = &replies[*g][range.clone()];
        if !first.starts_with(b"-MOVED ")
            && !first.starts_with(b"-ASK ")
            && !first.starts_with(b"-TRYAGAIN")
        {
            continue;
        }
        let mut current = first.to_vec();
        for hop in 0..cluster.max_redirects {
            let Some(redirect) = redirect_of(&current, &asked) else {
                break;
            };
            let frame = &buf[frames[i].range.clone()];
            let batch: Vec<&[u8]> = match &redirect {
                Redirect::Moved(slot, addr) => {
                    cluster.moved(*slot, addr);
                    asked = addr.clone();
                    vec![frame]
                }
                Redirect::Ask(addr) => {
                    cluster.counters.ask.fetch_add(1, Ordering::Relaxed);
                    asked = addr.clone();
                    vec![ASKING, frame]
                }
                Redirect::TryAgain => {
                    cluster.counters.tryagain.fetch_add(1, Ordering::Relaxed);
                    let wait = 8u64 << (2 * hop.min(3));
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    vec![frame]
                }
            };
            let asking = batch.len() == 2;
            match run_on_node(backend, cluster, &asked, batch, wants, limit).await {
                Ok((mut bytes, ranges)) => {
                    let last = ranges.last().cloned().unwrap_or(0..0);
                    if asking {
                        let _ = bytes.split_to(last.start);
                    }
                    current = bytes.to_vec();
                    reply = Some(bytes);
                }
                Err(error) => {
                    answers[i] = Answer::Failed(error);
                    reply = None;
                    break;
                }
            }
        }
        if let Some(reply) = reply {
            answers[i] = Answer::Own(reply);
        }
    }
    let mut failed_text = BytesMut::new();
    let mut remote = 0;
    for part in plan.parts(0) {
        match part {
            Part::Local(answer) => out.buf.extend_from_slice(answer),
            Part::Remote(_) | Part::Silent(_) => {
                match &answers[remote] {
                    Answer::In(g, range) => out.buf.extend_from_slice(&replies[*g][range.clone()]),
                    Answer::Own(bytes) => out.buf.extend_from_slice(bytes),
                    Answer::Text(text) => out.buf.extend_from_slice(text),
                    Answer::Failed(error) => {
                        backend.traffic.failed(error.side());
                        failed_text.clear();
                        error.write_reply(&mut failed_text);
                        out.buf.extend_from_slice(&failed_text);
                    }
                    Answer::Pending => Error::Internal.write_reply(out.buf),
                }
                remote += 1;
            }
        }
    }
    Ok(())
}

/// Sends `batch` (whole frames) to the node at `addr` on a connection of its
/// pool and returns the replies, one range each. A failure refreshes the
/// slot map: the node may have failed over.
async fn run_on_node(
    backend: &Backend,
    cluster: &Cluster,
    addr: &str,
    batch: Vec<&[u8]>,
    wants: Wants,
    limit: Option<Duration>,
) -> Result<(BytesMut, Vec<Range<usize>>), Error> {
    let pool = cluster.pool_for(addr);
    let ran = round_trip(backend, &pool, &batch, wants, limit).await;
    if let Err(error) = &ran {
        if matches!(error, Error::TimedOut { .. }) {
            pool.probe_now();
        }
        cluster.request_refresh();
    }
    ran
}

async fn round_trip(
    backend: &Backend,
    pool: &Pool,
    batch: &[&[u8]],
    wants: Wants,
    limit: Option<Duration>,
) -> Result<(BytesMut, Vec<Range<usize>>), Error> {
    let mut conn = pool.check_out().await?;
    let started = Instant::now();
    let mut prefix = BytesMut::new();
    let preparing = prepare::write(Wants::of(&conn), wants, &mut prefix);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
    parts.push(&prefix);
    parts.extend_from_slice(batch);
    let lost = |e: crate::pool::UpstreamError| Error::ConnectionLost(e.cause());
    conn.write_batch(&parts).await.map_err(lost)?;
    let deadline = limit.map(|l| (Instant::now() + l, l.as_millis() as u64));
    let mut out = BytesMut::new();
    let read = async {
        for _ in 0..preparing {
            match read_within(&mut conn, &mut out, deadline).await? {
                Ok(start) => prepare::check(&out[start..])?,
                Err(_) => return Err(Error::PrepareFailed),
            }
            out.clear();
        }
        wants.apply_to(&mut conn);
        let mut ranges = Vec::with_capacity(batch.len());
        for _ in batch {
            let start = read_within(&mut conn, &mut out, deadline)
                .await?
                .map_err(lost)?;
            if Refusal::of(&out[start..]) == Some(Refusal::ReadOnly) {
                // A demoted node: its connections are not used again.
                backend.traffic.refused(Refusal::ReadOnly, 1);
                pool.mark_stale(conn.generation);
            }
            ranges.push(start..out.len());
        }
        Ok(ranges)
    };
    match read.await {
        Ok(ranges) => {
            conn.finish_batch();
            backend.traffic.round_trip_done(started.elapsed());
            Ok((out, ranges))
        }
        Err(error) => {
            conn.mark_broken();
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_back_with_their_arguments() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n";
        let f = frames(buf);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].args(buf), [&b"GET"[..], b"a"]);
        assert_eq!(f[1].range, 20..34);
        assert_eq!(f[1].args(buf), [&b"PING"[..]]);
        // Cut short: only the whole frames.
        assert_eq!(frames(&buf[..30]).len(), 1);
    }

    #[test]
    fn redirects_are_read_with_and_without_a_host() {
        let Some(Redirect::Moved(slot, addr)) =
            redirect_of(b"-MOVED 3999 127.0.0.1:6381\r\n", "x:1")
        else {
            panic!("not MOVED")
        };
        assert_eq!((slot, addr.as_str()), (3999, "127.0.0.1:6381"));
        let Some(Redirect::Ask(addr)) = redirect_of(b"-ASK 1 :7002\r\n", "10.0.0.1:7000") else {
            panic!("not ASK")
        };
        assert_eq!(addr, "10.0.0.1:7002");
        assert!(matches!(
            redirect_of(
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                "a:1"
            ),
            Some(Redirect::TryAgain)
        ));
        assert!(redirect_of(b"-ERR MOVED\r\n", "a:1").is_none());
        assert!(redirect_of(b"+OK\r\n", "a:1").is_none());
    }
}
