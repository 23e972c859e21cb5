//! A real Redis Cluster on loopback: `redis-server --cluster-enabled yes`
//! nodes joined by `redis-cli --cluster create`, waited on until every
//! node sees every slot served.

use std::process::Command;
use std::time::Duration;

use super::raw::{RawClient, Reply};
use super::{wait_for, wait_until, RedisServer};

/// How long forming the cluster (gossip, replicas attached) may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RedisCluster {
    /// The primaries first, then their replicas (as `redis-cli` assigns them).
    pub nodes: Vec<RedisServer>,
    pub primaries: usize,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each.
    pub async fn start(primaries: usize, replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let total = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for i in 0..total {
            let conf = dir.path().join(format!("nodes-{i}.conf"));
            let node = RedisServer::builder()
                // 3 s: two clusters of tests share two cores, and a shorter
                // timeout fails nodes that were only slow.
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "3000"])
                // Replicas in sync at once (the default waits 5 s for more
                // replicas), so a primary may fail over from the start.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--cluster-config-file")
                .arg(conf.display().to_string())
                .start()
                .await;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let created = run_redis_cli(
            [vec!["--cluster".to_string(), "create".to_string()], addrs]
                .concat()
                .into_iter()
                .chain(["--cluster-replicas".into(), replicas.to_string()])
                .chain(["--cluster-yes".into()])
                .collect(),
        )
        .await;
        assert!(
            created.0,
            "redis-cli --cluster create failed:\n{}",
            created.1
        );
        let cluster = RedisCluster {
            nodes,
            primaries,
            _dir: dir,
        };
        cluster.wait_formed().await;
        cluster
    }

    /// Every node reports `cluster_state:ok` and knows every other node,
    /// and every replica is in sync with its primary.
    pub async fn wait_formed(&self) {
        let total = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            wait_until(FORM_TIMEOUT, "every cluster node is ok", || async {
                let info = node_text(node, &["CLUSTER", "INFO"]).await;
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{total}\r"))
            })
            .await;
            if i >= self.primaries {
                wait_until(FORM_TIMEOUT, "every replica is in sync", || async {
                    let info = node_text(node, &["INFO", "replication"]).await;
                    info.contains("master_link_status:up")
                })
                .await;
            }
        }
    }

    pub fn primary_nodes(&self) -> &[RedisServer] {
        &self.nodes[..self.primaries]
    }

    /// `redis+cluster://` with every primary as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .primary_nodes()
            .iter()
            .map(|n| n.addr().to_string())
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Keys on each primary, read directly.
    pub async fn dbsizes(&self) -> Vec<i64> {
        let mut sizes = Vec::new();
        for node in self.primary_nodes() {
            let mut c = RawClient::connect(node.addr()).await;
            match c.command(&["DBSIZE"]).await {
                Reply::Int(n) => sizes.push(n),
                other => panic!("DBSIZE: {other:?}"),
            }
        }
        sizes
    }

    /// The index of the node replicating primary `primary`, once the
    /// primary lists one.
    pub async fn replica_of(&self, primary: usize) -> usize {
        let id = self.id_of(primary).await;
        let id = id.as_str();
        wait_for(
            FORM_TIMEOUT,
            "the primary lists its replica",
            || async move {
                let mut c = RawClient::connect(self.nodes[primary].addr()).await;
                let line = match c.command(&["CLUSTER", "REPLICAS", id]).await {
                    Reply::Array(Some(lines)) => lines.into_iter().next(),
                    other => return Err(format!("{other:?}")),
                };
                let Some(Reply::Bulk(Some(b))) = line else {
                    return Err("no replica yet".into());
                };
                let text = String::from_utf8_lossy(&b).into_owned();
                let addr = text.split(' ').nth(1).and_then(|a| a.split('@').next());
                let addr = addr.unwrap_or_default().to_string();
                self.nodes
                    .iter()
                    .position(|n| n.addr().to_string() == addr)
                    .ok_or(text)
            },
        )
        .await
    }

    /// Waits until `node` is a primary that owns slots, as every other
    /// reachable node sees it.
    pub async fn wait_primary(&self, node: usize, others: &[usize]) {
        let addr = self.nodes[node].addr().to_string();
        for &o in others {
            wait_until(
                FORM_TIMEOUT,
                "the cluster names the new primary",
                || async {
                    let nodes = node_text(&self.nodes[o], &["CLUSTER", "NODES"]).await;
                    let info = node_text(&self.nodes[o], &["CLUSTER", "INFO"]).await;
                    info.contains("cluster_state:ok")
                        && nodes.lines().any(|l| {
                            l.contains(&format!(" {addr}@")) && l.contains("master") && {
                                // A primary line with slots has a ninth field.
                                l.split(' ').count() > 8
                            }
                        })
                },
            )
            .await;
        }
    }

    /// `CLUSTER FAILOVER` on `replica` until the others name it primary.
    /// Redis gives a manual failover 5 s for the replica to catch up and
    /// drops it quietly when that passes (a loaded machine): then it is
    /// asked again, within [`FORM_TIMEOUT`] in all.
    pub async fn manual_failover(&self, replica: usize, others: &[usize]) {
        let addr = self.nodes[replica].addr().to_string();
        wait_for(FORM_TIMEOUT, "a manual failover completes", || async {
            let role = node_text(&self.nodes[replica], &["INFO", "replication"]).await;
            if role.contains("role:master") {
                return Ok(());
            }
            let mut c = RawClient::connect(self.nodes[replica].addr()).await;
            let asked = c.command(&["CLUSTER", "FAILOVER"]).await;
            // Redis' manual failover timeout is 5 s: wait that long for it.
            let deadline = std::time::Instant::now() + Duration::from_secs(6);
            while std::time::Instant::now() < deadline {
                let role = node_text(&self.nodes[replica], &["INFO", "replication"]).await;
                if role.contains("role:master") {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(format!(
                "{addr} still a replica after CLUSTER FAILOVER ({asked:?})"
            ))
        })
        .await;
        self.wait_primary(replica, others).await;
    }

    /// `CLUSTER MYID` of `node`.
    pub async fn id_of(&self, node: usize) -> String {
        node_text(&self.nodes[node], &["CLUSTER", "MYID"]).await
    }
}

/// One command to `node`, its reply as text.
pub async fn node_text(node: &RedisServer, args: &[&str]) -> String {
    let mut c = RawClient::connect(node.addr()).await;
    match c.command(args).await {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Reply::Simple(s) | Reply::Error(s) => s,
        other => format!("{other:?}"),
    }
}

/// Runs `redis-cli` with `args` off the runtime; (succeeded, output).
pub async fn run_redis_cli(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("run redis-cli (is redis-tools installed?)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .expect("redis-cli task")
}
