//! Redis Cluster: the sizing recommendations and the fleet view of each
//! node. Every node's pool is sampled like the single pool of a standalone
//! Redis ([`Usage`]), and each node's own `INFO` and `CLIENT LIST` are read
//! ([`ControlPlane`]), so `/pool/status` says for every node whether its
//! `max_connections` fits what it saw, and how many more instances of the
//! fleet fit under that node's `maxclients`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::control::{self, ControlPlane};
use super::fleet::{fleet_status, FleetStatus, Sizes};
use super::recommend::{recommend, Inputs, OPTIMAL};
use crate::alerts::Thresholds;
use crate::backend::cluster::Cluster;
use crate::pool::Pool;
use crate::usage::{self, Usage};

/// What poolside watches of one node.
struct Watch {
    pool: Pool,
    usage: Arc<Usage>,
    control: Arc<ControlPlane>,
    refresher: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// The watched nodes, by address: the cluster's node pools, followed as
/// nodes come and go.
pub struct ClusterNodes {
    cluster: Arc<Cluster>,
    watches: Mutex<HashMap<String, Watch>>,
    /// Samples kept: the longest window summarized.
    keep: Duration,
    /// How often each node's `INFO` and `CLIENT LIST` are read.
    every: Duration,
}

/// One node in `/pool/status`' `upstream.cluster_sizing`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSizing {
    pub address: String,
    pub max_connections: u32,
    pub p99_in_use: u32,
    pub peak_in_use: u32,
    pub littles_law_connections: f64,
    pub recommended_max_connections: u32,
    pub recommendations: Vec<String>,
    /// The fleet as this node's `CLIENT LIST` shows it.
    pub fleet: FleetStatus,
}

/// What sizing a node needs besides its own numbers.
pub struct Context<'a> {
    pub thresholds: Thresholds,
    pub window: Duration,
    pub min_idle: u32,
    pub target_percent: f64,
    pub connection_name: Option<&'a str>,
}

impl ClusterNodes {
    pub fn new(cluster: Arc<Cluster>, keep: Duration, every: Duration) -> ClusterNodes {
        ClusterNodes {
            cluster,
            watches: Mutex::new(HashMap::new()),
            keep,
            every,
        }
    }

    /// Watches the nodes the cluster has pools for now, and no others;
    /// takes one usage sample of each.
    fn sample(&self, shutdown: &watch::Receiver<bool>) {
        let pools = self.cluster.node_pools();
        let Ok(mut watches) = self.watches.lock() else {
            return;
        };
        watches.retain(|addr, _| pools.iter().any(|(a, _)| a == addr));
        for (addr, pool) in pools {
            let watch = watches.entry(addr).or_insert_with(|| {
                let control = Arc::new(ControlPlane::new(pool.clone()));
                let refresher =
                    control::spawn_refresher(control.clone(), self.every, shutdown.clone());
                Watch {
                    pool,
                    usage: Arc::new(Usage::new(self.keep)),
                    control,
                    refresher,
                }
            });
            // Client commands are counted for the whole cluster, not per node.
            watch.usage.record(&watch.pool, 0);
        }
    }

    /// Each node's sizing, by address.
    pub fn sizing(&self, cx: &Context<'_>) -> Vec<NodeSizing> {
        let Ok(watches) = self.watches.lock() else {
            return Vec::new();
        };
        let mut all: Vec<NodeSizing> = watches
            .iter()
            .map(|(address, w)| {
                let s = w.pool.snapshot();
                let window = w.usage.summarize(cx.window);
                let server = w.control.info();
                let sizes = Sizes {
                    max_connections: s.max_connections,
                    min_idle: cx.min_idle,
                    target_percent: cx.target_percent,
                };
                let fleet = fleet_status(&server, cx.connection_name, sizes);
                let (recommendations, sizing) = recommend(&Inputs {
                    max: s.max_connections,
                    min_idle: cx.min_idle,
                    in_use: s.in_use,
                    thresholds: cx.thresholds,
                    window: &window,
                    upstream_address: address,
                    reachable: !w.pool.health.is_down(),
                    server: &server,
                    fleet: &fleet,
                });
                NodeSizing {
                    address: address.clone(),
                    max_connections: s.max_connections,
                    p99_in_use: window.p99_in_use,
                    peak_in_use: window.peak_in_use,
                    littles_law_connections: sizing.littles_law_connections,
                    recommended_max_connections: sizing.recommended_max_connections,
                    recommendations,
                    fleet,
                }
            })
            .collect();
        all.sort_by(|a, b| a.address.cmp(&b.address));
        all
    }
}

/// The nodes' recommendations that ask for something, each naming its node.
pub fn node_lines(sizing: &[NodeSizing]) -> Vec<String> {
    sizing
        .iter()
        .flat_map(|n| {
            n.recommendations
                .iter()
                .filter(|r| r.as_str() != OPTIMAL)
                .map(move |r| format!("Cluster node {}: {r}", n.address))
        })
        .collect()
}

/// Samples every node's pool each `tick`, following the nodes the cluster has.
pub fn spawn_sampler(
    nodes: Arc<ClusterNodes>,
    tick: Duration,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // The node watches it starts stop with the same signal.
    let theirs = shutdown.clone();
    usage::spawn_every(tick, shutdown, move || nodes.sample(&theirs))
}
