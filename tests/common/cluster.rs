//! A real Redis Cluster on loopback: `redis-server --cluster-enabled yes`
//! nodes joined by `redis-cli --cluster create`, waited on until every
//! node sees every slot served.

use std::process::Command;
use std::time::Duration;

use super::raw::{RawClient, Reply};
use super::{wait_until, RedisServer};

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
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
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

    /// Every node reports `cluster_state:ok` and knows every other node.
    pub async fn wait_formed(&self) {
        let total = self.nodes.len();
        for node in &self.nodes {
            wait_until(FORM_TIMEOUT, "every cluster node is ok", || async {
                let info = node_text(node, &["CLUSTER", "INFO"]).await;
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{total}\r"))
            })
            .await;
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
