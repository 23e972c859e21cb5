//! A Redis Sentinel topology of real processes on free loopback ports: one
//! primary, two replicas (`--replicaof`) and three Sentinels (`redis-server
//! <conf> --sentinel`, each with its own writable config file, since
//! Sentinels rewrite it), all [`RedisServer`]s, killed on drop.
//!
//! [`SentinelSet::start`] returns once every Sentinel sees the primary with
//! both replicas and both other Sentinels, so a failover can start at once.
//! The helpers trigger failovers (`SENTINEL FAILOVER`, `kill -9` of the
//! primary), stop and start Sentinels, and wait until the Sentinels agree on
//! a new primary. When a test panics, the directory with every process's
//! log and the Sentinels' rewritten configs is kept and its path printed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;

use super::raw::{RawClient, Reply};
use super::{info_field, wait_for, wait_until, RedisServer, WAIT};

pub const MASTER_NAME: &str = "mymaster";
/// `down-after-milliseconds`: a primary silent this long is subjectively down.
pub const DOWN_AFTER_MS: u64 = 1000;
/// `failover-timeout`: also how long a Sentinel waits before trying again
/// after a failed election (twice this), so small.
const FAILOVER_TIMEOUT_MS: u64 = 5000;
/// Every data node may become the primary: none waits 5 s (the default)
/// for more replicas before a full sync.
const DATA_NODE_ARGS: [&str; 2] = ["--repl-diskless-sync-delay", "0"];
/// A failover (detection, election, promotion, reconfiguration) or the
/// Sentinels' discovery of each other, on a busy machine.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// One primary, two replicas, three Sentinels monitoring [`MASTER_NAME`].
pub struct SentinelSet {
    /// The data nodes; `nodes[0]` is the first primary.
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    /// Config files and logs; the processes above are stopped before it goes.
    dir: TempDir,
}

impl SentinelSet {
    /// Starts the topology on free ports and waits until it is settled.
    pub async fn start() -> SentinelSet {
        SentinelSet::start_with([None; 3]).await
    }

    /// Same as [`SentinelSet::start`] with the Sentinels on these ports (a
    /// test that pointed poolside at them before anything listened there).
    pub async fn start_on(sentinel_ports: [u16; 3]) -> SentinelSet {
        SentinelSet::start_with(sentinel_ports.map(Some)).await
    }

    async fn start_with(sentinel_ports: [Option<u16>; 3]) -> SentinelSet {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = |name: &str| dir.path().join(format!("{name}.log"));
        let primary = RedisServer::builder()
            .args(DATA_NODE_ARGS)
            .log_file(log("node0"))
            .start()
            .await;
        let mut nodes = vec![primary];
        for i in 1..3 {
            let replica = RedisServer::builder()
                .args(DATA_NODE_ARGS)
                .args(["--replicaof", "127.0.0.1", &nodes[0].port().to_string()])
                .log_file(log(&format!("node{i}")))
                .start()
                .await;
            nodes.push(replica);
        }
        // Sentinels learn the replicas from the primary's INFO, which they
        // read at once and then only every 10 s: the replicas come first.
        wait_until(WAIT, "both replicas are in sync", || async {
            let mut synced = 0;
            for replica in &nodes[1..] {
                synced += info(replica.addr(), "replication")
                    .await
                    .is_some_and(|i| i.contains("master_link_status:up"))
                    as usize;
            }
            synced == 2
        })
        .await;

        let mut sentinels = Vec::new();
        for (i, port) in sentinel_ports.into_iter().enumerate() {
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(&conf, sentinel_conf(nodes[0].port(), &dir))
                .expect("write sentinel config");
            let mut builder = RedisServer::builder()
                .config_file(&conf)
                .persistent()
                .arg("--sentinel")
                .log_file(log(&format!("sentinel{i}")));
            if let Some(port) = port {
                builder = builder.port(port);
            }
            sentinels.push(builder.start().await);
        }
        let set = SentinelSet {
            nodes,
            sentinels,
            dir,
        };
        set.wait_settled().await;
        set
    }

    /// Waits until every running Sentinel sees the primary up, with both
    /// replicas up and two other Sentinels.
    pub async fn wait_settled(&self) {
        wait_for(
            FAILOVER_WAIT,
            "every Sentinel sees the whole topology",
            || async {
                for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                    let master =
                        sentinel_map(sentinel.addr(), &["SENTINEL", "MASTER", MASTER_NAME])
                            .await
                            .ok_or("no answer")?;
                    let settled = master.get("flags").map(String::as_str) == Some("master")
                        && master.get("num-slaves").map(String::as_str) == Some("2")
                        && master.get("num-other-sentinels").map(String::as_str) == Some("2");
                    if !settled {
                        return Err(format!("{}: {master:?}", sentinel.addr()));
                    }
                    let replicas =
                        sentinel_list(sentinel.addr(), &["SENTINEL", "REPLICAS", MASTER_NAME])
                            .await
                            .ok_or("no answer")?;
                    if replicas
                        .iter()
                        .any(|r| r.get("flags").map(String::as_str) != Some("slave"))
                    {
                        return Err(format!("{}: replicas {replicas:?}", sentinel.addr()));
                    }
                }
                Ok(())
            },
        )
        .await
    }

    /// `redis+sentinel://S1,S2,S3/mymaster`, for `upstream.url`.
    pub fn url(&self) -> String {
        sentinel_url(&self.sentinel_addrs())
    }

    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(RedisServer::addr).collect()
    }

    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// The data node at `addr`; panics when there is none.
    pub fn node(&self, addr: SocketAddr) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("no data node at {addr}"))
    }

    /// What each Sentinel answers to `SENTINEL get-master-addr-by-name`, in
    /// order; `None` for a Sentinel that is down or does not know.
    pub async fn primaries(&self) -> Vec<Option<SocketAddr>> {
        let mut answers = Vec::new();
        for sentinel in &self.sentinels {
            answers.push(primary_by(sentinel.addr()).await);
        }
        answers
    }

    /// The primary every running Sentinel names, when they agree.
    pub async fn agreed_primary(&self) -> Option<SocketAddr> {
        let mut agreed = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let named = primary_by(sentinel.addr()).await?;
            if agreed.is_some_and(|a| a != named) {
                return None;
            }
            agreed = Some(named);
        }
        agreed
    }

    /// The primary the Sentinels agree on now; panics when they do not.
    pub async fn primary(&self) -> SocketAddr {
        match self.agreed_primary().await {
            Some(primary) => primary,
            None => panic!("the Sentinels disagree: {:?}", self.primaries().await),
        }
    }

    /// `SENTINEL FAILOVER mymaster` on the first running Sentinel (no
    /// agreement needed); returns the primary it starts from.
    pub async fn failover(&self) -> SocketAddr {
        let old = self.primary().await;
        let sentinel = self.running_sentinel();
        let mut client = RawClient::connect(sentinel.addr()).await;
        client
            .command(&["SENTINEL", "FAILOVER", MASTER_NAME])
            .await
            .expect_ok();
        old
    }

    /// `kill -9` of the primary (SIGKILL, reaped); returns its address.
    pub async fn kill_primary(&mut self) -> SocketAddr {
        let old = self.primary().await;
        self.kill_node(old);
        old
    }

    /// `kill -9` of the data node at `addr` (SIGKILL, reaped).
    pub fn kill_node(&mut self, addr: SocketAddr) {
        self.nodes
            .iter_mut()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("no data node at {addr}"))
            .stop();
    }

    /// `kill -9` of Sentinel `i`.
    pub fn stop_sentinel(&mut self, i: usize) {
        self.sentinels[i].stop();
    }

    /// Starts Sentinel `i` again on its port, with the config it rewrote.
    pub async fn start_sentinel(&mut self, i: usize) {
        self.sentinels[i].restart().await;
    }

    /// Waits until every running Sentinel names the same primary, other than
    /// `old`, and that node says it is a master; returns it.
    pub async fn wait_for_new_primary(&self, old: SocketAddr) -> SocketAddr {
        wait_for(
            FAILOVER_WAIT,
            "the Sentinels agree on a new primary",
            || async {
                let primaries = self.primaries().await;
                match self.agreed_primary().await {
                    Some(new) if new != old && role(new).await.as_deref() == Some("master") => {
                        Ok(new)
                    }
                    _ => Err(primaries),
                }
            },
        )
        .await
    }

    fn running_sentinel(&self) -> &RedisServer {
        self.sentinels
            .iter()
            .find(|s| s.is_running())
            .expect("a Sentinel is running")
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        // 1. Sentinels first, so that none reacts to the data nodes going.
        // 2. Then the data nodes; the directory goes last (field order).
        for sentinel in &mut self.sentinels {
            sentinel.stop();
        }
        for node in &mut self.nodes {
            node.stop();
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "Sentinel topology logs and configs kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// `redis+sentinel://` with these Sentinel addresses and [`MASTER_NAME`].
pub fn sentinel_url(sentinels: &[SocketAddr]) -> String {
    let hosts: Vec<String> = sentinels.iter().map(SocketAddr::to_string).collect();
    format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
}

fn sentinel_conf(primary_port: u16, dir: &TempDir) -> String {
    // Port, bind address and `daemonize no` come from RedisServer's command line.
    format!(
        "sentinel resolve-hostnames no\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
         sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
         sentinel parallel-syncs {MASTER_NAME} 2\n\
         dir {}\n",
        dir.path().display()
    )
}

/// The first element of `ROLE` (`master`, `slave`, `sentinel`); `None`
/// when nothing answers at `addr`.
pub async fn role(addr: SocketAddr) -> Option<String> {
    match command(addr, &["ROLE"]).await? {
        Reply::Array(Some(items)) => items.first().map(Reply::expect_string),
        _ => None,
    }
}

/// `INFO section` of the node at `addr`; `None` when it does not answer.
pub async fn info(addr: SocketAddr, section: &str) -> Option<String> {
    match command(addr, &["INFO", section]).await? {
        Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    }
}

/// `master_repl_offset` (a primary) or `slave_repl_offset` (a replica).
pub async fn repl_offset(addr: SocketAddr) -> Option<u64> {
    let info = info(addr, "replication").await?;
    let field = match info.contains("role:master") {
        true => "master_repl_offset",
        false => "slave_repl_offset",
    };
    Some(info_field(&info, field))
}

/// The primary the Sentinel at `addr` names; `None` when it is down or does
/// not know.
pub async fn primary_by(sentinel: SocketAddr) -> Option<SocketAddr> {
    let reply = command(
        sentinel,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
    )
    .await?;
    let Reply::Array(Some(items)) = reply else {
        return None;
    };
    let [host, port] = items.as_slice() else {
        return None;
    };
    format!("{}:{}", host.expect_string(), port.expect_string())
        .parse()
        .ok()
}

/// One command on a fresh connection; `None` when the connection fails.
async fn command(addr: SocketAddr, args: &[&str]) -> Option<Reply> {
    let mut client = RawClient::try_connect(addr).await.ok()?;
    client.try_command(args).await.ok()
}

/// A flat `[field, value, ...]` reply as a map.
fn to_map(reply: &Reply) -> HashMap<String, String> {
    reply
        .expect_array()
        .chunks(2)
        .map(|kv| (kv[0].expect_string(), kv[1].expect_string()))
        .collect()
}

async fn sentinel_map(addr: SocketAddr, args: &[&str]) -> Option<HashMap<String, String>> {
    match command(addr, args).await? {
        reply @ Reply::Array(Some(_)) => Some(to_map(&reply)),
        _ => None,
    }
}

async fn sentinel_list(addr: SocketAddr, args: &[&str]) -> Option<Vec<HashMap<String, String>>> {
    match command(addr, args).await? {
        Reply::Array(Some(items)) => Some(items.iter().map(to_map).collect()),
        _ => None,
    }
}
