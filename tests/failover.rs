//! A failover behind a name (ElastiCache Multi-AZ, a VIP): the primary
//! becomes a replica and the address moves. A TCP forwarder in the test is
//! the moving address: connections made before the switch still reach the
//! old node, new ones the new primary, as with a DNS change.
//!
//! Under write load the test fences the primary (`CLIENT PAUSE WRITE`, so
//! nothing it acknowledges is lost to the resync), waits for the replica to
//! catch up, promotes it, switches the forwarder and demotes the old primary
//! (`REPLICAOF`). Every write must succeed on the new primary or get a clear
//! error; every acknowledged write must be on the new primary; poolside's
//! connections to the demoted node must be gone within one health interval;
//! `/pool/status` must show the move.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::raw::{RawClient, Reply};
use common::{both_modes, get, info_field, wait_for, wait_until, RedisServer, WAIT};
use poolside::config::{Config, PoolMode};
use tokio::net::{TcpListener, TcpStream};

const WRITERS: usize = 8;

/// The moving address: each new connection goes to the current target.
struct Forwarder {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let current = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *current.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { addr, target }
    }

    fn switch(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

async fn info(redis: &RedisServer, section: &str) -> String {
    redis
        .direct_raw()
        .await
        .command(&["INFO", section])
        .await
        .expect_string()
}

/// poolside's connections on `redis`, by their connection name.
async fn poolside_connections(redis: &RedisServer) -> usize {
    let list = redis
        .direct_raw()
        .await
        .command(&["CLIENT", "LIST"])
        .await
        .expect_string();
    list.lines()
        .filter(|l| l.contains(" name=poolside:"))
        .count()
}

/// What the writers saw: acknowledged values by key, and the errors.
#[derive(Default)]
struct Outcome {
    acked: HashMap<String, String>,
    errors: Vec<String>,
}

/// Writes `SET fo:<writer>:<n> <n>` in a loop through poolside until `stop`.
async fn writer(
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    outcome: Arc<Mutex<Outcome>>,
) {
    let mut client = RawClient::connect(addr).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (key, value) = (format!("fo:{id}:{n}"), n.to_string());
        let reply = client.try_command(&["SET", &key, &value]).await;
        let reconnect = {
            let mut outcome = outcome.lock().unwrap();
            match reply {
                Ok(Reply::Simple(ok)) if ok == "OK" => {
                    outcome.acked.insert(key, value);
                    acked.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Ok(Reply::Error(e)) => {
                    outcome.errors.push(e);
                    false
                }
                Ok(other) => panic!("SET answered {other:?}"),
                Err(e) => {
                    outcome.errors.push(format!("connection: {e}"));
                    true
                }
            }
        };
        if reconnect {
            client = RawClient::connect(addr).await;
        }
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failover_behind_a_name_loses_no_acknowledged_write(mode: PoolMode) {
        let old = RedisServer::start().await;
        let new = RedisServer::start().await;
        let mut to_new = new.direct_raw().await;
        to_new
            .command(&["REPLICAOF", "127.0.0.1", &old.port().to_string()])
            .await
            .expect_ok();
        wait_until(WAIT, "the replica is in sync", || async {
            info(&new, "replication").await.contains("master_link_status:up")
        })
        .await;

        let forwarder = Forwarder::start(old.addr()).await;
        let mut config = Config::for_tests(&format!("redis://{}", forwarder.addr));
        config.pool.mode = mode;
        config.pool.health_check_interval_secs = 1;
        let poolside = poolside::app::start(config).await.expect("poolside starts");

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                let (stop, acked, outcome) = (stop.clone(), acked.clone(), outcome.clone());
                tokio::spawn(writer(id, poolside.client_addr, stop, acked, outcome))
            })
            .collect();
        let count = |n: usize| {
            let acked = acked.clone();
            move || {
                let acked = acked.clone();
                async move { acked.load(Ordering::Relaxed) >= n }
            }
        };
        wait_until(WAIT, "writes flow to the old primary", count(500)).await;

        // The failover, as a managed service does it.
        let mut to_old = old.direct_raw().await;
        to_old.command(&["CLIENT", "PAUSE", "10000", "WRITE"]).await.expect_ok();
        let offset = info_field(&info(&old, "replication").await, "master_repl_offset");
        wait_until(WAIT, "the replica caught up", || async {
            info_field(&info(&new, "replication").await, "slave_repl_offset") >= offset
        })
        .await;
        to_new.command(&["REPLICAOF", "NO", "ONE"]).await.expect_ok();
        forwarder.switch(new.addr());
        to_old
            .command(&["REPLICAOF", "127.0.0.1", &new.port().to_string()])
            .await
            .expect_ok();
        to_old.command(&["CLIENT", "UNPAUSE"]).await.expect_ok();
        let at_switch = acked.load(Ordering::Relaxed);

        wait_until(WAIT, "writes flow to the new primary", count(at_switch + 500)).await;
        wait_until(WAIT, "no poolside connection is left on the demoted node", || async {
            poolside_connections(&old).await == 0
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }

        let outcome = std::mem::take(&mut *outcome.lock().unwrap());
        let mut check = new.blocking();
        let mut lost = Vec::new();
        for (key, value) in &outcome.acked {
            let stored: Option<String> = redis::cmd("GET").arg(key).query(&mut check).unwrap();
            if stored.as_deref() != Some(value.as_str()) {
                lost.push(key.clone());
            }
        }
        eprintln!(
            "{mode:?}: {} writes acknowledged, {} errors: {:?}",
            outcome.acked.len(),
            outcome.errors.len(),
            outcome.errors.iter().take(5).collect::<Vec<_>>()
        );
        assert!(lost.is_empty(), "acknowledged writes missing on the new primary: {lost:?}");
        for e in &outcome.errors {
            assert!(
                e.starts_with("READONLY ") || e.starts_with("ERR poolside: "),
                "an unclear error: {e}"
            );
        }

        let status = wait_for(WAIT, "/pool/status shows the new primary", || async {
            let s = get(poolside.admin_addr, "/pool/status").await.json();
            match s["upstream"]["role"] == "primary" {
                true => Ok(s),
                false => Err(s["upstream"].to_string()),
            }
        })
        .await;
        let upstream = &status["upstream"];
        assert!(upstream["moves"].as_u64() >= Some(1), "{upstream}");
        eprintln!("{mode:?}: /pool/status upstream after the failover: {upstream}");
        poolside.shutdown().await;
    }
}

/// With no traffic to meet a `-READONLY`, the periodic check finds the
/// replica behind the primary URL: the pool is marked stale, the control
/// plane asks again on a fresh connection, and the role changes are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_check_finds_a_replica_behind_a_primary_url() {
    let old = RedisServer::start().await;
    let new = RedisServer::start().await;
    let forwarder = Forwarder::start(old.addr()).await;
    let mut config = Config::for_tests(&format!("redis://{}", forwarder.addr));
    config.pool.health_check_interval_secs = 1;
    let poolside = poolside::app::start(config).await.expect("poolside starts");
    let status = || async { get(poolside.admin_addr, "/pool/status").await.json() };
    wait_until(WAIT, "the primary is seen", || async {
        status().await["upstream"]["role"] == "primary"
    })
    .await;
    // Five connections in use at once, then idle in the pool.
    let blocked: Vec<_> = (0..5)
        .map(|_| {
            let addr = poolside.client_addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                c.command(&["BLPOP", "fo:none", "0.3"]).await
            })
        })
        .collect();
    for b in blocked {
        assert_eq!(b.await.unwrap(), Reply::Array(None));
    }
    assert!(poolside_connections(&old).await >= 5);

    forwarder.switch(new.addr());
    old.direct_raw()
        .await
        .command(&["REPLICAOF", "127.0.0.1", &new.port().to_string()])
        .await
        .expect_ok();
    let upstream = wait_for(WAIT, "the new primary is seen", || async {
        let upstream = status().await["upstream"].clone();
        match upstream["role"] == "primary" && upstream["role_changes"] == 2 {
            true => Ok(upstream),
            false => Err(upstream.to_string()),
        }
    })
    .await;
    assert_eq!(upstream["moves"], 1, "{upstream}");
    wait_until(
        WAIT,
        "no poolside connection is left on the demoted node",
        || async { poolside_connections(&old).await == 0 },
    )
    .await;
    let mut client = RawClient::connect(poolside.client_addr).await;
    client.command(&["SET", "fo:after", "1"]).await.expect_ok();
    assert_eq!(
        new.direct_raw().await.command(&["GET", "fo:after"]).await,
        Reply::bulk("1")
    );
    poolside.shutdown().await;
}

/// A replica that lost its primary refuses reads with `-MASTERDOWN`
/// (`replica-serve-stale-data no`): the batch goes once more, after the
/// reconnect backoff's longest step, on a fresh connection; refused again,
/// the client gets Redis' own error. Both refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masterdown_is_sent_again_once_after_a_backoff_then_answered() {
    let mut primary = RedisServer::start().await;
    let replica = RedisServer::builder()
        .args(["--replica-serve-stale-data", "no"])
        .start()
        .await;
    let mut to_replica = replica.direct_raw().await;
    to_replica
        .command(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
        .await
        .expect_ok();
    wait_until(WAIT, "the replica is in sync", || async {
        info(&replica, "replication")
            .await
            .contains("master_link_status:up")
    })
    .await;
    primary.stop();
    wait_until(WAIT, "the replica lost its primary", || async {
        info(&replica, "replication")
            .await
            .contains("master_link_status:down")
    })
    .await;

    let mut config = Config::for_tests(&replica.url());
    config.pool.backoff_max_ms = 300;
    let poolside = poolside::app::start(config).await.expect("poolside starts");
    let mut client = RawClient::connect(poolside.client_addr).await;
    let started = std::time::Instant::now();
    let err = client.command(&["GET", "fo:k"]).await.expect_error();
    let took = started.elapsed();
    assert!(err.starts_with("MASTERDOWN "), "{err}");
    assert!(
        took >= std::time::Duration::from_millis(300),
        "answered after {took:?}"
    );
    let upstream = get(poolside.admin_addr, "/pool/status").await.json()["upstream"].clone();
    assert_eq!(upstream["refusals"]["masterdown"], 2, "{upstream}");
    assert_eq!(upstream["resent_batches"], 1, "{upstream}");
    poolside.shutdown().await;
}
