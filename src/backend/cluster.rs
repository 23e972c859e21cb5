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
//! In multiplexed mode each node has its shared lanes (a [`Multiplexer`]
//! over its pool): a node's share of a batch goes to one of them, unless it
//! holds a blocking command, which waits on a connection of its own.
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
use super::mux::{Backlog, MuxRequest};
use super::plan::{Part, Plan};
use super::shared::MAX_BOUNCES;
use super::{prepare, Backend, Failed, Multiplexer, Out, Wants};
use crate::cluster::keys::{KeyTable, Keys};
use crate::cluster::slot::key_slot;
use crate::cluster::topology::Topology;
use crate::config::{Config, PoolMode, ReadFrom};
use crate::error::{Error, Refusal};
use crate::pool::{spawn_health_checker, Address, Pool, Target, UpstreamConn};
use crate::resp::ReplyScanner;
use crate::sentinel::value;
use crate::traffic::Traffic;

/// What a cluster node answers a command whose keys are in different slots.
pub const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n";
/// What a cluster node answers for a slot no node serves.
const CLUSTERDOWN: &[u8] = b"-CLUSTERDOWN Hash slot not served\r\n";
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// What a node answers a multi-key command on a slot mid-migration.
const TRYAGAIN: &[u8] = b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n";
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

/// `upstream.cluster` in `/pool/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    /// A slot map was read from some node.
    pub slot_map_read: bool,
    pub unowned_slots: usize,
    /// `CLUSTER SLOTS` readings, and rounds in which no node answered.
    pub slot_map_reads: u64,
    pub slot_map_failures: u64,
    /// Redirects followed: `-MOVED`, `-ASK`, and re-sends after `-TRYAGAIN`.
    pub moved: u64,
    pub ask: u64,
    pub tryagain: u64,
    pub max_redirects: usize,
    pub failover_hold_ms: u64,
    /// Each node poolside keeps a pool for (the primaries, and the first seed).
    pub nodes: Vec<NodeStatus>,
}

/// One node's pool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub address: String,
    /// Slots it owns in the slot map (0: a seed that owns none, a replica).
    pub slots: usize,
    /// A replica serving reads (`read_from = "replica_preferred"`): its primary.
    pub replica_of: Option<String>,
    pub reachable: bool,
    pub in_use: u32,
    pub idle: u32,
    pub connections: u32,
    pub max_connections: u32,
}

/// A node's pool, its shared lanes (multiplexed mode) and the health
/// checker that keeps it.
struct Node {
    pool: Pool,
    lanes: Option<Arc<NodeLanes>>,
    checker: Option<JoinHandle<()>>,
}

/// A node's shared lanes, and its address (where a redirect came from).
pub struct NodeLanes {
    pub(super) addr: String,
    pub(super) mux: Multiplexer,
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
    /// `upstream.cluster.failover_hold_ms`.
    hold: Duration,
    /// `upstream.cluster.read_from = "replica_preferred"`: read-only
    /// commands go to a replica of their slot's primary while one answers.
    replica_reads: bool,
    health_interval: Duration,
    shutdown: watch::Receiver<bool>,
    /// For the nodes' lanes (multiplexed mode).
    traffic: Arc<Traffic>,
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
        traffic: Arc<Traffic>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Cluster> {
        let mut nodes = HashMap::new();
        if let Some(first) = seeds.first() {
            let node = Node {
                lanes: lanes_for(config, first, &seed_pool, &traffic),
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
            hold: Duration::from_millis(c.failover_hold_ms),
            replica_reads: c.read_from == ReadFrom::ReplicaPreferred,
            health_interval: Duration::from_secs(config.pool.health_check_interval_secs),
            shutdown,
            traffic,
            counters: ClusterCounters::default(),
        })
    }

    /// What `/pool/status` shows of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let topology = self.topology_now();
        let owned = topology
            .as_ref()
            .map(|t| t.slots_owned())
            .unwrap_or_default();
        let nodes = self
            .node_pools()
            .into_iter()
            .map(|(address, pool)| {
                let s = pool.snapshot();
                let slots = topology
                    .as_ref()
                    .and_then(|t| t.primaries.iter().position(|p| *p == address))
                    .and_then(|i| owned.get(i).copied())
                    .unwrap_or(0);
                let replica_of = topology.as_ref().and_then(|t| {
                    let i = t.replicas.iter().position(|r| r.contains(&address))?;
                    Some(t.primaries[i].clone())
                });
                NodeStatus {
                    reachable: !pool.health.is_down(),
                    address,
                    slots,
                    replica_of,
                    in_use: s.in_use,
                    idle: s.idle,
                    connections: s.connections,
                    max_connections: s.max_connections,
                }
            })
            .collect();
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStatus {
            slot_map_read: topology.is_some(),
            unowned_slots: topology.as_ref().map_or(0, |t| t.unowned()),
            slot_map_reads: n(&c.refreshes),
            slot_map_failures: n(&c.refresh_failures),
            moved: n(&c.moved),
            ask: n(&c.ask),
            tryagain: n(&c.tryagain),
            max_redirects: self.max_redirects,
            failover_hold_ms: self.hold.as_millis() as u64,
            nodes,
        }
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
    /// 100 ms apart).
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
        self.node(addr).0
    }

    /// The pool of the node at `addr` and its lanes (multiplexed mode),
    /// made on first use.
    fn node(&self, addr: &str) -> (Pool, Option<Arc<NodeLanes>>) {
        let mut nodes = self.nodes.lock().expect("cluster nodes");
        if let Some(node) = nodes.get(addr) {
            return (node.pool.clone(), node.lanes.clone());
        }
        let pool = Pool::new(&self.config, self.target_for(addr));
        let checker =
            spawn_health_checker(pool.clone(), self.health_interval, self.shutdown.clone());
        let lanes = lanes_for(&self.config, addr, &pool, &self.traffic);
        nodes.insert(
            addr.to_string(),
            Node {
                pool: pool.clone(),
                lanes: lanes.clone(),
                checker: Some(checker),
            },
        );
        (pool, lanes)
    }

    fn target_for(&self, addr: &str) -> Target {
        let mut target = self.template.clone();
        target.address = Address::Fixed(addr.to_string());
        // A cluster has database 0 only.
        target.db = 0;
        // Each node is verified by the name the slot map gives it (a host
        // name, or an IP), as a cluster client does, unless
        // `tls.server_name` fixes one name for all.
        if let Some(tls) = &self.template.tls {
            if let Ok(own) = tls.for_host(crate::pool::host_of(addr)) {
                target.tls = Some(own);
            }
        }
        // A replica serves reads of its primary's slots after READONLY.
        target.readonly = self.replica_reads
            && self
                .topology_now()
                .is_some_and(|t| t.replicas.iter().flatten().any(|r| r == addr));
        target
    }

    /// Where a read-only command for the slots of `primaries[owner]` goes:
    /// a replica whose pool is not known to be down (the first), else the
    /// primary.
    fn reader(&self, topology: &Topology, owner: usize) -> String {
        if self.replica_reads {
            for replica in topology.replicas.get(owner).into_iter().flatten() {
                if !self.pool_for(replica).health.is_down() {
                    return replica.clone();
                }
            }
        }
        topology.primaries[owner].clone()
    }

    /// The command (one RESP frame) only reads.
    fn is_read(&self, frame: &[u8]) -> bool {
        let Some(table) = self.keys.get() else {
            return false;
        };
        frames(frame)
            .first()
            .is_some_and(|f| table.is_readonly(&f.args(frame)))
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
            let replica = |addr: &String| {
                self.replica_reads && topology.replicas.iter().flatten().any(|r| r == addr)
            };
            nodes.retain(|addr, _| {
                Some(addr) == seed || topology.primaries.contains(addr) || replica(addr)
            });
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
    /// key's slot (an SSUBSCRIBE's channel counts as a key), else the first
    /// primary.
    pub fn node_for_batch(&self, topology: &Topology, plan: &Plan) -> String {
        let keyed = frames(&plan.upstream).into_iter().find_map(|frame| {
            match self.route(&frame.args(&plan.upstream)) {
                Route::Slot(slot) => Some(slot),
                _ => None,
            }
        });
        keyed
            .or(plan.stream_slot)
            .and_then(|slot| topology.owner(slot))
            .map_or_else(
                || topology.primaries[0].clone(),
                |owner| topology.primaries[owner].clone(),
            )
    }
}

/// Multiplexed mode: the shared lanes over a node's pool, as
/// [`Backend::multiplexed`] makes them for a single Redis.
fn lanes_for(
    config: &Config,
    addr: &str,
    pool: &Pool,
    traffic: &Arc<Traffic>,
) -> Option<Arc<NodeLanes>> {
    let p = &config.pool;
    if p.mode != PoolMode::Multiplexed {
        return None;
    }
    let mut mux = Multiplexer::new(
        pool.clone(),
        traffic.clone(),
        p.multiplex_saturation,
        Duration::from_millis(p.multiplex_idle_ms),
    );
    mux.set_response_timeout(
        Some(Duration::from_millis(p.response_timeout_ms)).filter(|t| !t.is_zero()),
    );
    Some(Arc::new(NodeLanes {
        addr: addr.to_string(),
        mux,
    }))
}

impl Cluster {
    /// Multiplexed mode: the lanes of the one node every command of the
    /// batch goes to, when there is one (no command to split, broadcast or
    /// refuse; the first primary for keyless ones). Such a batch is handed
    /// to the node's lanes whole, as to a single Redis's, and its replies
    /// may go to the client from the lane; a redirect among them is followed
    /// first ([`fix_redirects`]).
    pub(super) fn single_node(&self, topology: &Topology, plan: &Plan) -> Option<Arc<NodeLanes>> {
        let buf = &plan.upstream[..];
        let mut owner = None;
        // read_from = "replica_preferred": a batch of reads only goes to a replica.
        let mut reads = self.replica_reads;
        for frame in frames(buf) {
            let args = frame.args(buf);
            let at = match self.route(&args) {
                Route::Slot(slot) => topology.owner(slot)?,
                Route::Any if broadcast(&args).is_none() && !is_scan(&args) => {
                    reads = false;
                    continue;
                }
                _ => return None,
            };
            if *owner.get_or_insert(at) != at {
                return None;
            }
            reads = reads && self.keys.get().is_some_and(|t| t.is_readonly(&args));
        }
        let addr = match owner {
            Some(owner) if reads => self.reader(topology, owner),
            owner => topology.primaries[owner.unwrap_or(0)].clone(),
        };
        self.node(&addr).1
    }
}

/// A MULTI poolside is about to hold (answered before its node is known):
/// tried on the first primary, with DISCARD after it, so that a MULTI the
/// servers refuse (an ACL without it) is refused to the client now, not
/// found out once the transaction's commands ran one by one. `Some`: the
/// refusal to answer instead of `+OK`.
pub(super) async fn multi_refused(
    backend: &Backend,
    cluster: &Cluster,
    topology: &Topology,
    wants: Wants,
) -> Result<Option<BytesMut>, Error> {
    const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
    const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
    let how = Sending {
        wants,
        limit: backend.reply_limit(super::plan::Wait::None),
        lanes: false,
    };
    let node = &topology.primaries[0];
    // One entry per command: each reply is read before the connection goes back.
    let (mut replies, ranges) =
        run_on_node(backend, cluster, node, vec![MULTI, DISCARD], how).await?;
    let first = ranges.first().cloned().unwrap_or(0..0);
    if replies[first.clone()].starts_with(b"+") {
        return Ok(None);
    }
    replies.truncate(first.end);
    Ok(Some(replies.split_off(first.start)))
}

/// Follows the redirects among the replies of `batch`, which ran on
/// `node`'s lanes, in `out[mark..]`: each is replaced by the reply of its
/// command where the redirect pointed (or by the error that met it there).
pub(super) async fn fix_redirects(
    backend: &Backend,
    cluster: &Cluster,
    node: &NodeLanes,
    batch: &[u8],
    wants: Wants,
    out: &mut BytesMut,
    mark: usize,
) {
    let frames = frames(batch);
    // Not the batch's replies whole (never expected): as they are.
    let Some(ranges) = reply_ranges(out, mark, Some(frames.len())) else {
        return;
    };
    let how = Sending {
        wants,
        limit: backend.reply_limit(super::plan::Wait::None),
        lanes: true,
    };
    let mut fixed: Vec<(usize, BytesMut)> = Vec::new();
    for (i, (frame, range)) in frames.iter().zip(&ranges).enumerate() {
        let reply = &out[range.clone()];
        if !is_redirect(reply) {
            continue;
        }
        let current = reply.to_vec();
        let asked = node.addr.clone();
        let frame = &batch[frame.range.clone()];
        match follow(backend, cluster, frame, current, asked, how).await {
            Some(Answer::Own(bytes)) => fixed.push((i, bytes)),
            Some(Answer::Failed(error)) => {
                backend.traffic.failed(error.side());
                let mut bytes = BytesMut::new();
                error.write_reply(&mut bytes);
                fixed.push((i, bytes));
            }
            _ => {}
        }
    }
    if fixed.is_empty() {
        return;
    }
    let tail = out.split_off(mark);
    let mut next = fixed.into_iter().peekable();
    for (i, range) in ranges.iter().enumerate() {
        match next.next_if(|(at, _)| *at == i) {
            Some((_, bytes)) => out.extend_from_slice(&bytes),
            None => out.extend_from_slice(&tail[range.start - mark..range.end - mark]),
        }
    }
}

/// Replaces each `-MOVED` among the replies in `out[mark..]` with
/// CROSSSLOT, as a transaction's keys in more than one slot get it, and
/// each `-ASK` (its slot mid-migration) with the `-TRYAGAIN` a node gives
/// keys of a migrating slot it cannot serve together.
pub(super) fn redirects_to_crossslot(out: &mut BytesMut, mark: usize) {
    let Some(tail) = out.get(mark..) else {
        return;
    };
    let redirect = |r: &[u8]| r.starts_with(b"-MOVED ") || r.starts_with(b"-ASK ");
    if memchr::memmem::find(tail, b"\r\n-MOVED ").is_none()
        && memchr::memmem::find(tail, b"\r\n-ASK ").is_none()
        && !redirect(tail)
    {
        return;
    }
    let Some(ranges) = reply_ranges(out, mark, None) else {
        return;
    };
    let tail = out.split_off(mark);
    for range in ranges {
        let reply = &tail[range.start - mark..range.end - mark];
        out.extend_from_slice(match reply {
            r if r.starts_with(b"-MOVED ") => CROSSSLOT,
            r if r.starts_with(b"-ASK ") => TRYAGAIN,
            r => r,
        });
    }
}

/// The ranges of the whole replies in `buf` from `from` on: `count` of
/// them, or every one to the end (`None`); `None` when they are not whole.
fn reply_ranges(buf: &[u8], from: usize, count: Option<usize>) -> Option<Vec<Range<usize>>> {
    let mut scanner = ReplyScanner::default();
    let mut ranges = Vec::with_capacity(count.unwrap_or(4));
    let mut at = from;
    while count.map_or(at < buf.len(), |n| ranges.len() < n) {
        let end = scanner.scan(buf, at).ok()??;
        ranges.push(at..end);
        at = end;
    }
    Some(ranges)
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

/// A command's reply: in a node's buffer, or of its own (a redirect's).
enum Answer {
    Pending,
    In(usize, Range<usize>),
    Own(BytesMut),
    Failed(Error),
}

/// How the replies of a multi-key command split by slot are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// MGET: the arrays' elements, back in the keys' order.
    Values,
    /// DEL, UNLINK, EXISTS, TOUCH: the counts added.
    Sum,
    /// MSET: `+OK`, or the first error.
    Ok,
    /// A command sent to every primary (SCRIPT LOAD, FLUSHALL...): the
    /// first node's reply, or the first error.
    First,
    /// KEYS: every primary's array, one after the other.
    Concat,
    /// SCRIPT EXISTS: per script, 1 only where every primary has it.
    Every,
}

/// Commands without keys that act on every primary's data or scripts, and
/// how their replies merge: DBSIZE is summed, the others must succeed on
/// every primary (a script loaded on one node only is `NOSCRIPT` on the
/// others).
fn broadcast(args: &[&[u8]]) -> Option<Merge> {
    let is = |i: usize, n: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(n.as_bytes()))
    };
    if is(0, "DBSIZE") && args.len() == 1 {
        Some(Merge::Sum)
    } else if is(0, "KEYS") && args.len() == 2 {
        Some(Merge::Concat)
    } else if is(0, "SCRIPT") && is(1, "EXISTS") && args.len() > 2 {
        Some(Merge::Every)
    } else if (is(0, "SCRIPT") && (is(1, "LOAD") || is(1, "FLUSH")))
        || (is(0, "FUNCTION") && (is(1, "LOAD") || is(1, "FLUSH") || is(1, "DELETE")))
        || is(0, "FLUSHALL")
        || is(0, "FLUSHDB")
    {
        Some(Merge::First)
    } else {
        None
    }
}

impl Merge {
    /// The multi-key commands split by slot; `step`: arguments per key.
    fn of(name: &[u8]) -> Option<(Merge, usize)> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("MGET") {
            Some((Merge::Values, 1))
        } else if is("DEL") || is("UNLINK") || is("EXISTS") || is("TOUCH") {
            Some((Merge::Sum, 1))
        } else if is("MSET") {
            Some((Merge::Ok, 2))
        } else {
            None
        }
    }
}

/// What answers one step of the client's batch.
enum StepAnswer {
    /// The reply of one command sent.
    Sent(usize),
    Text(&'static [u8]),
    /// A multi-key command sent as one command per slot: the sends, and
    /// for [`Merge::Values`] the key index each sent key's value goes to.
    Split {
        merge: Merge,
        sends: Vec<usize>,
        order: Vec<usize>,
    },
    /// SCAN on one primary (the `index`th of `of`): its cursor rewritten.
    Scan {
        send: usize,
        index: u64,
        of: u64,
    },
}

/// Where a command sent is: a frame of the plan, or one made here.
#[derive(Debug, Clone)]
enum Source {
    Plan(Range<usize>),
    Made(Range<usize>),
}

/// What a node said about where a command belongs.
enum Redirect {
    Moved(u16, String),
    Ask(String),
    TryAgain,
}

/// The reply is a redirect [`redirect_of`] reads (checked on every shared
/// lane's replies, so it looks at the first bytes only).
pub(super) fn is_redirect(reply: &[u8]) -> bool {
    reply.first() == Some(&b'-')
        && [&b"-MOVED "[..], b"-ASK ", b"-TRYAGAIN", b"-CLUSTERDOWN"]
            .iter()
            .any(|code| reply.starts_with(code))
}

/// Reads `-MOVED slot host:port`, `-ASK slot host:port` and `-TRYAGAIN`; an
/// empty host is the node that answered (`asked`).
fn redirect_of(reply: &[u8], asked: &str) -> Option<Redirect> {
    // TRYAGAIN (keys mid-migration) and CLUSTERDOWN (the node sees the
    // cluster failed) are both answered before the command runs.
    if reply.starts_with(b"-TRYAGAIN") || reply.starts_with(b"-CLUSTERDOWN") {
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
    // Commands made here: the per-slot parts of split multi-key commands.
    let mut made = BytesMut::new();
    // Each command to send: where its bytes are and its slot (None: any node).
    let mut sends: Vec<(Source, Option<u16>)> = Vec::with_capacity(frames.len());
    let mut steps: Vec<StepAnswer> = Vec::with_capacity(frames.len());
    for frame in &frames {
        let args = frame.args(buf);
        let step = match cluster.route(&args) {
            Route::Slot(slot) => {
                sends.push((Source::Plan(frame.range.clone()), Some(slot)));
                StepAnswer::Sent(sends.len() - 1)
            }
            Route::Any if is_scan(&args) => scan_step(&args, topology, &mut made, &mut sends),
            Route::Any => match broadcast(&args) {
                Some(merge) => {
                    // One send per primary, each routed by a slot it owns.
                    let mut step_sends = Vec::with_capacity(topology.primaries.len());
                    for slot in topology.a_slot_of_each() {
                        sends.push((Source::Plan(frame.range.clone()), Some(slot)));
                        step_sends.push(sends.len() - 1);
                    }
                    StepAnswer::Split {
                        merge,
                        sends: step_sends,
                        order: Vec::new(),
                    }
                }
                None => {
                    sends.push((Source::Plan(frame.range.clone()), None));
                    StepAnswer::Sent(sends.len() - 1)
                }
            },
            Route::CrossSlot => match Merge::of(args[0]) {
                // A wrong number of arguments is the node's to answer.
                Some((_, per_key)) if (args.len() - 1) % per_key != 0 => {
                    sends.push((Source::Plan(frame.range.clone()), None));
                    StepAnswer::Sent(sends.len() - 1)
                }
                Some((merge, per_key)) => {
                    split_by_slot(&args, merge, per_key, &mut made, &mut sends)
                }
                None => StepAnswer::Text(CROSSSLOT),
            },
        };
        steps.push(step);
    }
    let bytes = |src: &Source| -> &[u8] {
        match src {
            Source::Plan(r) => &buf[r.clone()],
            Source::Made(r) => &made[r.clone()],
        }
    };
    // Group the sends by node: keyless ones go with the first node.
    let mut answers: Vec<Answer> = (0..sends.len()).map(|_| Answer::Pending).collect();
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut keyless = Vec::new();
    // read_from = "replica_preferred": which sends only read.
    let reads: Vec<bool> = match cluster.replica_reads {
        true => sends
            .iter()
            .map(|(src, _)| cluster.is_read(bytes(src)))
            .collect(),
        false => Vec::new(),
    };
    for (i, (_, slot)) in sends.iter().enumerate() {
        let Some(slot) = slot else {
            keyless.push(i);
            continue;
        };
        let Some(owner) = topology.owner(*slot) else {
            cluster.request_refresh();
            let mut text = BytesMut::new();
            text.extend_from_slice(CLUSTERDOWN);
            answers[i] = Answer::Own(text);
            continue;
        };
        let node = match reads.get(i) {
            Some(true) => cluster.reader(topology, owner),
            _ => topology.primaries[owner].clone(),
        };
        match groups.iter_mut().find(|(n, _)| *n == node) {
            Some((_, group)) => group.push(i),
            None => groups.push((node, vec![i])),
        }
    }
    if !keyless.is_empty() {
        // With the first primary's share (a keyless write is no replica's).
        match groups
            .iter_mut()
            .find(|(n, _)| topology.primaries.contains(n))
        {
            Some((_, group)) => {
                group.extend(keyless);
                group.sort_unstable();
            }
            None => groups.push((topology.primaries[0].clone(), keyless)),
        }
    }
    let how = Sending {
        wants,
        limit: backend.reply_limit(plan.wait),
        // A blocking command holds its connection: never a shared lane.
        lanes: !plan.may_block,
    };
    let mut replies = Vec::with_capacity(groups.len());
    let run = Run {
        backend,
        cluster,
        sends: &sends,
        bytes: &bytes,
        how,
    };
    run.groups(&groups, &mut answers, &mut replies).await;
    if cluster.replica_reads {
        primaries_for_unsent_reads(&run, topology, &mut groups, &mut answers, &mut replies).await;
    }
    hold_for_failover(&run, &mut groups, &mut answers, &mut replies).await;
    // Redirects, in the client's order: each re-send waits for the one before.
    for i in 0..answers.len() {
        let Answer::In(g, range) = &answers[i] else {
            continue;
        };
        let first = &replies[*g][range.clone()];
        if redirect_of(first, &groups[*g].0).is_none() {
            continue;
        }
        let asked = groups[*g].0.clone();
        let current = first.to_vec();
        let frame = bytes(&sends[i].0);
        if let Some(answer) = follow(backend, cluster, frame, current, asked, how).await {
            answers[i] = answer;
        }
    }
    let reply_of = |i: usize| -> Result<&[u8], Error> {
        match &answers[i] {
            Answer::In(g, range) => Ok(&replies[*g][range.clone()]),
            Answer::Own(bytes) => Ok(bytes),
            Answer::Failed(error) => Err(*error),
            Answer::Pending => Err(Error::Internal),
        }
    };
    let mut step = 0;
    for part in plan.parts(0) {
        let answer = match part {
            Part::Local(answer) => {
                out.buf.extend_from_slice(answer);
                continue;
            }
            Part::Remote(_) | Part::Silent(_) => &steps[step],
        };
        step += 1;
        let merged = match answer {
            StepAnswer::Sent(i) => reply_of(*i).map(|r| out.buf.extend_from_slice(r)),
            StepAnswer::Text(text) => {
                out.buf.extend_from_slice(text);
                Ok(())
            }
            StepAnswer::Split {
                merge,
                sends,
                order,
            } => sends
                .iter()
                .map(|&i| reply_of(i))
                .collect::<Result<Vec<_>, _>>()
                .map(|parts| merge_replies(*merge, &parts, order, out.buf)),
            StepAnswer::Scan { send, index, of } => {
                reply_of(*send).map(|reply| scan_reply(reply, *index, *of, out.buf))
            }
        };
        if let Err(error) = merged {
            backend.traffic.failed(error.side());
            error.write_reply(out.buf);
        }
    }
    Ok(())
}

/// What running a batch's sends on their nodes needs.
struct Run<'a, B> {
    backend: &'a Backend,
    cluster: &'a Cluster,
    sends: &'a [(Source, Option<u16>)],
    bytes: &'a B,
    how: Sending,
}

/// How a batch's commands are sent to their nodes.
#[derive(Debug, Clone, Copy)]
struct Sending {
    /// The client's connection state (protocol, database).
    wants: Wants,
    /// How long the replies may take (the response timeout, plus any
    /// blocking command's wait).
    limit: Option<Duration>,
    /// Multiplexed mode: the node's shared lanes may carry them.
    lanes: bool,
}

impl<'a, B: Fn(&Source) -> &'a [u8]> Run<'a, B> {
    /// Runs each of `groups` (a node and the sends for it) at once, all
    /// nodes in parallel; each send's answer is its reply's range in the
    /// group's buffer (pushed to `replies`, one per group) or the error.
    async fn groups(
        &self,
        groups: &[(String, Vec<usize>)],
        answers: &mut [Answer],
        replies: &mut Vec<BytesMut>,
    ) {
        let runs = groups.iter().map(|(node, members)| {
            let batch: Vec<&[u8]> = members
                .iter()
                .map(|&i| (self.bytes)(&self.sends[i].0))
                .collect();
            run_on_node(self.backend, self.cluster, node, batch, self.how)
        });
        let ran = futures_util::future::join_all(runs).await;
        for ((_, members), result) in groups.iter().zip(ran) {
            let g = replies.len();
            match result {
                Ok((reply, ranges)) => {
                    for (&i, range) in members.iter().zip(ranges) {
                        answers[i] = Answer::In(g, range);
                    }
                    replies.push(reply);
                }
                Err(error) => {
                    for &i in members {
                        answers[i] = Answer::Failed(error);
                    }
                    replies.push(BytesMut::new());
                }
            }
        }
    }
}

/// Reads sent to a replica that could not be reached (nothing was sent)
/// go to their slot's primary at once.
async fn primaries_for_unsent_reads<'a, B: Fn(&Source) -> &'a [u8]>(
    run: &Run<'a, B>,
    topology: &Topology,
    groups: &mut Vec<(String, Vec<usize>)>,
    answers: &mut [Answer],
    replies: &mut Vec<BytesMut>,
) {
    let first = groups.len();
    for g in 0..first {
        if topology.primaries.contains(&groups[g].0) {
            continue;
        }
        let unsent: Vec<usize> = groups[g]
            .1
            .iter()
            .copied()
            .filter(|&i| matches!(answers[i], Answer::Failed(Error::UpstreamDown(_))))
            .collect();
        for i in unsent {
            let owner = run.sends[i].1.and_then(|slot| topology.owner(slot));
            let node = &topology.primaries[owner.unwrap_or(0)];
            match groups[first..].iter_mut().find(|(n, _)| n == node) {
                Some((_, group)) => group.push(i),
                None => groups.push((node.clone(), vec![i])),
            }
        }
    }
    if groups.len() > first {
        run.groups(&groups[first..], answers, replies).await;
    }
}

/// Commands whose node could not be reached (nothing was sent: the pool
/// knows it is down) wait for the slot map to change, up to
/// `failover_hold_ms`, and go to their slot's owner then: a replica
/// promoted takes them without an error. What is still down at the end
/// keeps its error.
async fn hold_for_failover<'a, B: Fn(&Source) -> &'a [u8]>(
    run: &Run<'a, B>,
    groups: &mut Vec<(String, Vec<usize>)>,
    answers: &mut [Answer],
    replies: &mut Vec<BytesMut>,
) {
    let (cluster, sends) = (run.cluster, run.sends);
    let unsent = |a: &Answer| matches!(a, Answer::Failed(Error::UpstreamDown(_)));
    let mut waiting: Vec<usize> = (0..answers.len())
        .filter(|&i| unsent(&answers[i]))
        .collect();
    if waiting.is_empty() || cluster.hold.is_zero() {
        return;
    }
    let deadline = Instant::now() + cluster.hold;
    let mut rx = cluster.topology.subscribe();
    rx.borrow_and_update();
    while !waiting.is_empty() {
        cluster.request_refresh();
        if !matches!(
            tokio::time::timeout_at(deadline, rx.changed()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let Some(topology) = rx.borrow_and_update().clone() else {
            continue;
        };
        let first = groups.len();
        for &i in &waiting {
            let owner = sends[i]
                .1
                .and_then(|slot| topology.owner(slot))
                .unwrap_or(0);
            let node = &topology.primaries[owner];
            match groups[first..].iter_mut().find(|(n, _)| n == node) {
                Some((_, group)) => group.push(i),
                None => groups.push((node.clone(), vec![i])),
            }
        }
        run.groups(&groups[first..], answers, replies).await;
        waiting.retain(|&i| unsent(&answers[i]));
    }
}

/// Splits the multi-key command `args` into one command per slot (keys in
/// their order within each), appended to `made` and `sends`.
fn split_by_slot(
    args: &[&[u8]],
    merge: Merge,
    per_key: usize,
    made: &mut BytesMut,
    sends: &mut Vec<(Source, Option<u16>)>,
) -> StepAnswer {
    // (slot, the key indices in it)
    let mut slots: Vec<(u16, Vec<usize>)> = Vec::new();
    let keys = (args.len() - 1) / per_key;
    for k in 0..keys {
        let slot = key_slot(args[1 + k * per_key]);
        match slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, ks)) => ks.push(k),
            None => slots.push((slot, vec![k])),
        }
    }
    let mut step_sends = Vec::with_capacity(slots.len());
    let mut order = Vec::new();
    for (slot, ks) in &slots {
        let start = made.len();
        let parts = std::iter::once(args[0]).chain(
            ks.iter()
                .flat_map(|&k| args[1 + k * per_key..1 + (k + 1) * per_key].iter().copied()),
        );
        let parts: Vec<&[u8]> = parts.collect();
        crate::resp::write_command(made, parts.into_iter());
        sends.push((Source::Made(start..made.len()), Some(*slot)));
        step_sends.push(sends.len() - 1);
        order.extend(ks.iter().copied());
    }
    StepAnswer::Split {
        merge,
        sends: step_sends,
        order,
    }
}

/// The low bits of a SCAN cursor poolside hands out: which primary (of
/// those owning slots, in the slot map's order) the walk is on; the node's
/// own cursor is in the bits above (a node's cursor stays far below 2^54).
const SCAN_NODE_BITS: u32 = 10;

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`.
fn is_scan(args: &[&[u8]]) -> bool {
    args.len() >= 2 && args[0].eq_ignore_ascii_case(b"SCAN")
}

/// SCAN walks the primaries one after the other: the cursor names the
/// primary and its own cursor there.
fn scan_step(
    args: &[&[u8]],
    topology: &Topology,
    made: &mut BytesMut,
    sends: &mut Vec<(Source, Option<u16>)>,
) -> StepAnswer {
    const INVALID: &[u8] = b"-ERR invalid cursor\r\n";
    let owners = topology.a_slot_of_each();
    let Some(cursor) = std::str::from_utf8(args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return StepAnswer::Text(INVALID);
    };
    let index = cursor & ((1 << SCAN_NODE_BITS) - 1);
    let Some(&slot) = owners.get(index as usize) else {
        // A cursor of a walk over more primaries than the map has now.
        return StepAnswer::Text(INVALID);
    };
    let node_cursor = (cursor >> SCAN_NODE_BITS).to_string();
    let start = made.len();
    let parts = std::iter::once(args[0])
        .chain(std::iter::once(node_cursor.as_bytes()))
        .chain(args[2..].iter().copied());
    let parts: Vec<&[u8]> = parts.collect();
    crate::resp::write_command(made, parts.into_iter());
    sends.push((Source::Made(start..made.len()), Some(slot)));
    StepAnswer::Scan {
        send: sends.len() - 1,
        index,
        of: owners.len() as u64,
    }
}

/// A node's SCAN reply with poolside's cursor: the same primary's next
/// cursor, or the next primary's start when this one is done (0 after the
/// last).
fn scan_reply(reply: &[u8], index: u64, of: u64, out: &mut BytesMut) {
    let parsed = (|| {
        let rest = reply.strip_prefix(b"*2\r\n$")?;
        let eol = memchr::memchr(b'\r', rest)?;
        let len: usize = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
        let body = rest.get(eol + 2..eol + 2 + len)?;
        let next: u64 = std::str::from_utf8(body).ok()?.parse().ok()?;
        Some((next, rest.get(eol + 2 + len + 2..)?))
    })();
    let Some((next, elements)) = parsed.filter(|(n, _)| n >> (64 - SCAN_NODE_BITS) == 0) else {
        // An error, or a cursor too big to carry the node: as it is.
        out.extend_from_slice(reply);
        return;
    };
    let cursor = match next {
        0 if index + 1 < of => index + 1,
        0 => 0,
        n => (n << SCAN_NODE_BITS) | index,
    }
    .to_string();
    out.extend_from_slice(format!("*2\r\n${}\r\n{cursor}\r\n", cursor.len()).as_bytes());
    out.extend_from_slice(elements);
}

/// Writes the reply of a split command from its parts' replies: the first
/// error if any part failed, else the merge.
fn merge_replies(merge: Merge, parts: &[&[u8]], order: &[usize], out: &mut BytesMut) {
    if let Some(error) = parts.iter().find(|p| p.starts_with(b"-")) {
        out.extend_from_slice(error);
        return;
    }
    match merge {
        Merge::Ok => out.extend_from_slice(b"+OK\r\n"),
        Merge::First => out.extend_from_slice(parts.first().copied().unwrap_or(b"+OK\r\n")),
        Merge::Sum => {
            let mut sum = 0i64;
            for part in parts {
                let n = std::str::from_utf8(&part[1..])
                    .ok()
                    .and_then(|t| t.trim_end().parse::<i64>().ok());
                match (part.first(), n) {
                    (Some(b':'), Some(n)) => sum += n,
                    _ => {
                        out.extend_from_slice(part);
                        return;
                    }
                }
            }
            out.extend_from_slice(format!(":{sum}\r\n").as_bytes());
        }
        Merge::Concat => {
            let mut all: Vec<&[u8]> = Vec::new();
            for part in parts {
                match array_elements(part) {
                    Some(elements) => all.extend(elements),
                    None => {
                        out.extend_from_slice(part);
                        return;
                    }
                }
            }
            out.extend_from_slice(format!("*{}\r\n", all.len()).as_bytes());
            for element in all {
                out.extend_from_slice(element);
            }
        }
        Merge::Every => {
            let mut every: Option<Vec<bool>> = None;
            for part in parts {
                let Some(elements) = array_elements(part) else {
                    out.extend_from_slice(part);
                    return;
                };
                let has: Vec<bool> = elements.iter().map(|e| *e == b":1\r\n").collect();
                every = Some(match every {
                    Some(prev) if prev.len() == has.len() => {
                        prev.iter().zip(&has).map(|(a, b)| *a && *b).collect()
                    }
                    Some(prev) => prev,
                    None => has,
                });
            }
            let every = every.unwrap_or_default();
            out.extend_from_slice(format!("*{}\r\n", every.len()).as_bytes());
            for has in every {
                out.extend_from_slice(if has { b":1\r\n" } else { b":0\r\n" });
            }
        }
        Merge::Values => {
            let mut values: Vec<&[u8]> = Vec::with_capacity(order.len());
            for part in parts {
                match array_elements(part) {
                    Some(elements) => values.extend(elements),
                    None => {
                        out.extend_from_slice(part);
                        return;
                    }
                }
            }
            let mut placed: Vec<&[u8]> = vec![&[]; order.len()];
            for (&k, value) in order.iter().zip(values) {
                placed[k] = value;
            }
            out.extend_from_slice(format!("*{}\r\n", placed.len()).as_bytes());
            for value in placed {
                out.extend_from_slice(value);
            }
        }
    }
}

/// The elements of an array of bulk strings, nils and integers (an MGET,
/// KEYS or SCRIPT EXISTS reply, RESP2 or RESP3), each as its bytes; `None`
/// for anything else.
fn array_elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    let line = |at: usize| -> Option<(i64, usize)> {
        let end = at + memchr::memchr(b'\r', reply.get(at..)?)?;
        let n = std::str::from_utf8(reply.get(at + 1..end)?)
            .ok()?
            .parse()
            .ok()?;
        Some((n, end + 2))
    };
    if reply.first() != Some(&b'*') {
        return None;
    }
    let (n, mut at) = line(0)?;
    let mut elements = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let start = at;
        at = match reply.get(at)? {
            b'_' => at + 3,
            // One-line elements (SCRIPT EXISTS' integers).
            b':' | b'+' => at + memchr::memchr(b'\n', reply.get(at..)?)? + 1,
            b'$' => match line(at)? {
                (-1, next) => next,
                (len, next) => next + usize::try_from(len).ok()? + 2,
            },
            _ => return None,
        };
        elements.push(reply.get(start..at)?);
    }
    Some(elements)
}

/// Follows the redirect in `current` (the node `asked` refused `frame`): at
/// most `max_redirects` re-sends. `None`: the first reply stands.
async fn follow(
    backend: &Backend,
    cluster: &Cluster,
    frame: &[u8],
    mut current: Vec<u8>,
    mut asked: String,
    how: Sending,
) -> Option<Answer> {
    let mut reply = None;
    for hop in 0..cluster.max_redirects {
        let Some(redirect) = redirect_of(&current, &asked) else {
            break;
        };
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
                if current.starts_with(b"-CLUSTERDOWN") {
                    cluster.request_refresh();
                }
                let wait = 8u64 << (2 * hop.min(3));
                tokio::time::sleep(Duration::from_millis(wait)).await;
                vec![frame]
            }
        };
        let asking = batch.len() == 2;
        match run_on_node(backend, cluster, &asked, batch, how).await {
            Ok((mut bytes, ranges)) => {
                if asking {
                    let last = ranges.last().cloned().unwrap_or(0..0);
                    let _ = bytes.split_to(last.start);
                }
                current = bytes.to_vec();
                reply = Some(Answer::Own(bytes));
            }
            Err(error) => return Some(Answer::Failed(error)),
        }
    }
    reply
}

/// Sends `batch` (whole frames) to the node at `addr` on a connection of its
/// pool and returns the replies, one range each. A failure refreshes the
/// slot map: the node may have failed over.
async fn run_on_node(
    backend: &Backend,
    cluster: &Cluster,
    addr: &str,
    batch: Vec<&[u8]>,
    how: Sending,
) -> Result<(BytesMut, Vec<Range<usize>>), Error> {
    let (pool, lanes) = cluster.node(addr);
    let ran = match lanes.filter(|_| how.lanes) {
        Some(lanes) => on_lane(backend, &lanes.mux, &batch, how.wants).await,
        None => round_trip(backend, &pool, &batch, how.wants, how.limit).await,
    };
    if let Err(error) = &ran {
        if matches!(error, Error::TimedOut { .. }) {
            pool.probe_now();
        }
        cluster.request_refresh();
    }
    ran
}

/// Multiplexed mode: `batch` goes to one of the node's shared lanes; its
/// replies come back whole (a split batch's are merged before the client
/// gets any). A lane that closed before writing it bounces it: it goes
/// again, a few times.
async fn on_lane(
    backend: &Backend,
    mux: &Multiplexer,
    batch: &[&[u8]],
    wants: Wants,
) -> Result<(BytesMut, Vec<Range<usize>>), Error> {
    /// Lanes drop replies for a batch whose client went away meanwhile.
    struct Closing(Arc<Backlog>);
    impl Drop for Closing {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let mut bytes = BytesMut::with_capacity(batch.iter().map(|b| b.len()).sum());
    for frame in batch {
        bytes.extend_from_slice(frame);
    }
    let bytes = bytes.freeze();
    let backlog = Closing(Arc::new(Backlog::new(backend.reply_buffer)));
    let mut out = BytesMut::new();
    let mut bounced = 0;
    let mut started;
    'submit: loop {
        started = std::time::Instant::now();
        let req = MuxRequest {
            bytes: bytes.clone(),
            replies: batch.len(),
            wants,
            backlog: backlog.0.clone(),
            direct: None,
            started,
        };
        if let Err(req) = mux.try_submit(req) {
            // Boxed, as a session's submit is: the waits are rare.
            Box::pin(mux.submit(req)).await?;
        }
        loop {
            let piece = match backlog.0.recv().await {
                Ok(piece) => piece,
                Err(Error::NotSent) if bounced < MAX_BOUNCES => {
                    bounced += 1;
                    out.clear();
                    continue 'submit;
                }
                Err(error) => return Err(error),
            };
            backlog.0.taken(piece.bytes.len());
            out.extend_from_slice(&piece.bytes);
            if piece.last {
                if let Some(kind) = piece.refused.kind {
                    // The lane marked the node's pool stale (READONLY) or
                    // closed; the replies stand as Redis gave them.
                    backend.traffic.refused(kind, piece.refused.count);
                }
                break 'submit;
            }
        }
    }
    let ranges = reply_ranges(&out, 0, Some(batch.len())).ok_or(Error::Internal)?;
    backend.traffic.round_trip_done(started.elapsed());
    Ok((out, ranges))
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
    fn split_replies_merge_as_one_command_would_answer() {
        let mut out = BytesMut::new();
        // MGET a b c d: a and c in one slot, b and d in another.
        let parts: [&[u8]; 2] = [b"*2\r\n$1\r\nA\r\n$-1\r\n", b"*2\r\n_\r\n$2\r\nDD\r\n"];
        merge_replies(Merge::Values, &parts, &[0, 2, 1, 3], &mut out);
        assert_eq!(&out[..], b"*4\r\n$1\r\nA\r\n_\r\n$-1\r\n$2\r\nDD\r\n");
        out.clear();
        merge_replies(
            Merge::Sum,
            &[b":2\r\n", b":0\r\n", b":1\r\n"],
            &[],
            &mut out,
        );
        assert_eq!(&out[..], b":3\r\n");
        out.clear();
        let error: &[u8] = b"-OOM command not allowed\r\n";
        merge_replies(Merge::Ok, &[b"+OK\r\n", error], &[], &mut out);
        assert_eq!(&out[..], error);
        assert!(array_elements(b"*1\r\n*0\r\n").is_none());
        assert_eq!(
            array_elements(b"*2\r\n:1\r\n:0\r\n").map(|e| e.len()),
            Some(2)
        );
    }

    #[test]
    fn scan_cursors_carry_the_primary() {
        let mut out = BytesMut::new();
        // Primary 1 of 3 goes on at its cursor 17.
        scan_reply(b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n", 1, 3, &mut out);
        assert_eq!(&out[..], b"*2\r\n$5\r\n17409\r\n*1\r\n$1\r\nk\r\n");
        out.clear();
        // Done there: the next primary from its start; after the last, 0.
        scan_reply(b"*2\r\n$1\r\n0\r\n*0\r\n", 1, 3, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\n2\r\n*0\r\n");
        out.clear();
        scan_reply(b"*2\r\n$1\r\n0\r\n*0\r\n", 2, 3, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\n0\r\n*0\r\n");
        out.clear();
        scan_reply(b"-ERR x\r\n", 0, 3, &mut out);
        assert_eq!(&out[..], b"-ERR x\r\n");
        out.clear();
        merge_replies(
            Merge::Every,
            &[b"*2\r\n:1\r\n:1\r\n", b"*2\r\n:1\r\n:0\r\n"],
            &[],
            &mut out,
        );
        assert_eq!(&out[..], b"*2\r\n:1\r\n:0\r\n");
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
        assert!(matches!(
            redirect_of(b"-CLUSTERDOWN The cluster is down\r\n", "a:1"),
            Some(Redirect::TryAgain)
        ));
        assert!(redirect_of(b"-ERR MOVED\r\n", "a:1").is_none());
        assert!(redirect_of(b"+OK\r\n", "a:1").is_none());
    }
}
