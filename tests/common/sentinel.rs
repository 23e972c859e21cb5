//! A Redis Sentinel topology of real processes on free loopback ports: one
//! primary, two replicas (`--replicaof`) and three Sentinels (`redis-server
//! <conf> --sentinel`, each with its own writable config file, since
//! Sentinels rewrite it), all [`RedisServer`]s, killed on drop.
//!
//! [`SentinelSet::start`] returns once every Sentinel sees the primary with
//! both replicas and both other Sentinels, so a failover can start at once.
//! [`SentinelSet::start_tls`] starts a smaller one (one replica, two
//! Sentinels) where every process accepts TLS only and Sentinels and
//! replicas speak TLS to the data nodes (`tls-replication yes`); the
//! helpers then connect with TLS too.
//!
//! The helpers trigger failovers (`SENTINEL FAILOVER`, `kill -9` of the
//! primary), stop and start Sentinels, and wait until the Sentinels agree on
//! a new primary. When a test panics, the directory with every process's
//! log and the Sentinels' rewritten configs is kept and its path printed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::raw::{RawClient, Reply};
use super::server::RedisBuilder;
use super::tls::Certs;
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

/// One primary, its replicas and the Sentinels monitoring [`MASTER_NAME`]:
/// two replicas and three Sentinels, or with TLS one and two.
pub struct SentinelSet {
    /// The data nodes; `nodes[0]` is the first primary.
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    /// TLS only: the CA file the processes' certificate verifies with.
    tls_ca: Option<PathBuf>,
    /// Config files and logs; the processes above are stopped before it goes.
    dir: TempDir,
}

/// What [`SentinelSet::start_with`] starts.
struct Shape<'a> {
    replicas: usize,
    /// One entry per Sentinel: its port, or any free one.
    sentinel_ports: Vec<Option<u16>>,
    tls: Option<&'a Certs>,
}

impl SentinelSet {
    /// Starts the topology on free ports and waits until it is settled.
    pub async fn start() -> SentinelSet {
        SentinelSet::start_on_ports([None; 3]).await
    }

    /// Same as [`SentinelSet::start`] with the Sentinels on these ports (a
    /// test that pointed poolside at them before anything listened there).
    pub async fn start_on(sentinel_ports: [u16; 3]) -> SentinelSet {
        SentinelSet::start_on_ports(sentinel_ports.map(Some)).await
    }

    async fn start_on_ports(sentinel_ports: [Option<u16>; 3]) -> SentinelSet {
        SentinelSet::start_with(Shape {
            replicas: 2,
            sentinel_ports: sentinel_ports.to_vec(),
            tls: None,
        })
        .await
    }

    /// Everything TLS-only, with `certs`' server certificate (for
    /// `127.0.0.1`) and no client certificates: a primary, one replica and
    /// two Sentinels (quorum 2), all speaking TLS to each other.
    pub async fn start_tls(certs: &Certs) -> SentinelSet {
        SentinelSet::start_with(Shape {
            replicas: 1,
            sentinel_ports: vec![None; 2],
            tls: Some(certs),
        })
        .await
    }

    async fn start_with(shape: Shape<'_>) -> SentinelSet {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().to_path_buf();
        let log = |name: &str| logs.join(format!("{name}.log"));
        // TLS only; replicas (a demoted primary too) and Sentinels connect
        // to the data nodes with TLS.
        let builder = || match shape.tls {
            None => RedisServer::builder(),
            Some(certs) => certs.redis_server(false).args(["--tls-replication", "yes"]),
        };
        let primary = builder()
            .args(DATA_NODE_ARGS)
            .log_file(log("node0"))
            .start()
            .await;
        let mut set = SentinelSet {
            nodes: vec![primary],
            sentinels: Vec::new(),
            tls_ca: shape.tls.map(|c| c.ca.clone()),
            dir,
        };
        let primary_port = set.nodes[0].port().to_string();
        for i in 1..=shape.replicas {
            let replica = builder()
                .args(DATA_NODE_ARGS)
                .args(["--replicaof", "127.0.0.1", &primary_port])
                .log_file(log(&format!("node{i}")))
                .start()
                .await;
            set.nodes.push(replica);
        }
        // Sentinels learn the replicas from the primary's INFO, which they
        // read at once and then only every 10 s: the replicas come first.
        wait_until(WAIT, "the replicas are in sync", || async {
            let mut synced = 0;
            for replica in &set.nodes[1..] {
                synced += set
                    .info(replica.addr(), "replication")
                    .await
                    .is_some_and(|i| i.contains("master_link_status:up"))
                    as usize;
            }
            synced == shape.replicas
        })
        .await;

        let quorum = shape.sentinel_ports.len() / 2 + 1;
        for (i, port) in shape.sentinel_ports.into_iter().enumerate() {
            let conf = set.dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(&conf, sentinel_conf(set.nodes[0].port(), quorum, &set.dir))
                .expect("write sentinel config");
            let mut sentinel: RedisBuilder = builder()
                .config_file(&conf)
                .persistent()
                .arg("--sentinel")
                .log_file(log(&format!("sentinel{i}")));
            if let Some(port) = port {
                sentinel = sentinel.port(port);
            }
            set.sentinels.push(sentinel.start().await);
        }
        set.wait_settled().await;
        set
    }

    /// Waits until every running Sentinel sees the primary up, with every
    /// replica up and every other Sentinel.
    pub async fn wait_settled(&self) {
        let replicas = (self.nodes.len() - 1).to_string();
        let others = (self.sentinels.len() - 1).to_string();
        wait_for(
            FAILOVER_WAIT,
            "every Sentinel sees the whole topology",
            || async {
                for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                    let master = self
                        .sentinel_map(sentinel.addr(), &["SENTINEL", "MASTER", MASTER_NAME])
                        .await
                        .ok_or("no answer")?;
                    let settled = master.get("flags").map(String::as_str) == Some("master")
                        && master.get("num-slaves") == Some(&replicas)
                        && master.get("num-other-sentinels") == Some(&others);
                    if !settled {
                        return Err(format!("{}: {master:?}", sentinel.addr()));
                    }
                    let replicas = self
                        .sentinel_list(sentinel.addr(), &["SENTINEL", "REPLICAS", MASTER_NAME])
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

    /// `redis+sentinel://S1,S2,S3/mymaster` (`rediss+sentinel://` with
    /// TLS), for `upstream.url`.
    pub fn url(&self) -> String {
        let url = sentinel_url(&self.sentinel_addrs());
        match self.tls_ca {
            None => url,
            Some(_) => url.replacen("redis+", "rediss+", 1),
        }
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
            answers.push(self.primary_by(sentinel.addr()).await);
        }
        answers
    }

    /// The primary every running Sentinel names, when they agree.
    pub async fn agreed_primary(&self) -> Option<SocketAddr> {
        let mut agreed = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let named = self.primary_by(sentinel.addr()).await?;
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
        let mut client = self
            .client(sentinel.addr())
            .await
            .unwrap_or_else(|e| panic!("connect to the Sentinel {}: {e}", sentinel.addr()));
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

    /// Redis replicates asynchronously: a write the primary acknowledged a
    /// moment before a `kill -9` or a `kill -STOP` may never reach a
    /// replica, lost by Redis whoever sent it. So before such a signal,
    /// writes pause on the primary for `pause_ms` (`CLIENT PAUSE WRITE`:
    /// those in flight wait there, unacknowledged) until every replica has
    /// what it acknowledged. Plain TCP topologies only.
    pub async fn pause_writes_until_replicated(&self, primary: SocketAddr, pause_ms: u64) {
        let mut c = self.client(primary).await.expect("connect to the primary");
        let pause_ms = pause_ms.to_string();
        c.command(&["CLIENT", "PAUSE", &pause_ms, "WRITE"])
            .await
            .expect_ok();
        let offset = repl_offset(primary).await.expect("the primary's offset");
        let replicas: Vec<SocketAddr> = self
            .node_addrs()
            .into_iter()
            .filter(|&a| a != primary)
            .collect();
        wait_until(WAIT, "the replicas have every acknowledged write", || {
            let replicas = replicas.clone();
            async move {
                for r in replicas {
                    if !repl_offset(r).await.is_some_and(|o| o >= offset) {
                        return false;
                    }
                }
                true
            }
        })
        .await;
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
                    Some(new)
                        if new != old && self.role(new).await.as_deref() == Some("master") =>
                    {
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

    /// [`role`], over TLS when the topology is TLS-only.
    pub async fn role(&self, addr: SocketAddr) -> Option<String> {
        role_of(self.command(addr, &["ROLE"]).await?)
    }

    /// [`info`], over TLS when the topology is TLS-only.
    pub async fn info(&self, addr: SocketAddr, section: &str) -> Option<String> {
        bulk_text(self.command(addr, &["INFO", section]).await?)
    }

    /// [`primary_by`], over TLS when the topology is TLS-only.
    pub async fn primary_by(&self, sentinel: SocketAddr) -> Option<SocketAddr> {
        let ask = ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME];
        primary_named(self.command(sentinel, &ask).await?)
    }

    /// A new connection to any process here, over TLS when the topology is
    /// TLS-only.
    pub async fn client(&self, addr: SocketAddr) -> std::io::Result<RawClient> {
        match &self.tls_ca {
            None => RawClient::try_connect(addr).await,
            Some(ca) => RawClient::try_connect_tls(addr, ca).await,
        }
    }

    /// One command on a fresh connection; `None` when the connection fails.
    async fn command(&self, addr: SocketAddr, args: &[&str]) -> Option<Reply> {
        command_via(addr, self.tls_ca.as_deref(), args).await
    }

    async fn sentinel_map(
        &self,
        addr: SocketAddr,
        args: &[&str],
    ) -> Option<HashMap<String, String>> {
        match self.command(addr, args).await? {
            reply @ Reply::Array(Some(_)) => Some(to_map(&reply)),
            _ => None,
        }
    }

    async fn sentinel_list(
        &self,
        addr: SocketAddr,
        args: &[&str],
    ) -> Option<Vec<HashMap<String, String>>> {
        match self.command(addr, args).await? {
            Reply::Array(Some(items)) => Some(items.iter().map(to_map).collect()),
            _ => None,
        }
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

fn sentinel_conf(primary_port: u16, quorum: usize, dir: &TempDir) -> String {
    // Port, bind address, TLS and `daemonize no` come from RedisServer's
    // command line.
    format!(
        "sentinel resolve-hostnames no\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n\
         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
         sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
         sentinel parallel-syncs {MASTER_NAME} 2\n\
         dir {}\n",
        dir.path().display()
    )
}

/// The first element of `ROLE` (`master`, `slave`, `sentinel`); `None`
/// when nothing answers at `addr` (plain TCP).
pub async fn role(addr: SocketAddr) -> Option<String> {
    role_of(command_via(addr, None, &["ROLE"]).await?)
}

fn role_of(reply: Reply) -> Option<String> {
    match reply {
        Reply::Array(Some(items)) => items.first().map(Reply::expect_string),
        _ => None,
    }
}

/// `INFO section` of the node at `addr` (plain TCP); `None` when it does
/// not answer.
pub async fn info(addr: SocketAddr, section: &str) -> Option<String> {
    bulk_text(command_via(addr, None, &["INFO", section]).await?)
}

fn bulk_text(reply: Reply) -> Option<String> {
    match reply {
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

/// The primary the Sentinel at `addr` (plain TCP) names; `None` when it is
/// down or does not know.
pub async fn primary_by(sentinel: SocketAddr) -> Option<SocketAddr> {
    let ask = ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME];
    primary_named(command_via(sentinel, None, &ask).await?)
}

fn primary_named(reply: Reply) -> Option<SocketAddr> {
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

/// One command on a fresh connection, over TLS verified with `tls_ca` when
/// given; `None` when the connection fails.
async fn command_via(addr: SocketAddr, tls_ca: Option<&Path>, args: &[&str]) -> Option<Reply> {
    let mut client = match tls_ca {
        None => RawClient::try_connect(addr).await.ok()?,
        Some(ca) => RawClient::try_connect_tls(addr, ca).await.ok()?,
    };
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
