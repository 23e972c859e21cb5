//! Redis goes away and comes back on the same port: clients get errors at
//! once while it is down (never a hang) and service resumes by itself.
//! Connections Redis forgot meanwhile are replaced before a client writes.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    both_modes, client_list_on, connect, last_command, ok, query, start_poolside, wait_for,
    wait_until, RedisServer,
};
use poolside::app::Running;
use poolside::config::PoolMode;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An error while Redis is down must arrive within this.
const PROMPT: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(10);

/// Runs GET and returns the error it must fail with, promptly.
async fn expect_prompt_error(con: &mut MultiplexedConnection, what: &str) -> String {
    let asked = Instant::now();
    let reply = tokio::time::timeout(PROMPT, query::<Option<String>>(con, &["GET", "k"]))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PROMPT:?} while Redis is down"));
    match reply {
        Err(e) => e.to_string(),
        Ok(v) => panic!(
            "{what}: GET succeeded with Redis down ({v:?}) after {:?}",
            asked.elapsed()
        ),
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_while_redis_is_down_and_recovery_after_restart(mode: PoolMode) {
        let mut redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 4).await;
        let mut con = connect(poolside.client_addr).await;
        ok::<()>(&mut con, &["SET", "k", "before"]).await;
        assert_eq!(ok::<String>(&mut con, &["GET", "k"]).await, "before");

        // A client blocked in BLPOP when Redis dies gets an error, not a hang.
        let mut blocked = connect(poolside.client_addr).await;
        let blpop = tokio::spawn(async move {
            query::<Option<(String, String)>>(&mut blocked, &["BLPOP", "queue", "0"]).await
        });
        wait_until(WAIT, "Redis sees the blocked client", || async {
            redis.blocked_clients().await == 1
        })
        .await;

        redis.stop();

        let blpop = tokio::time::timeout(PROMPT, blpop)
            .await
            .expect("the blocked BLPOP answers promptly when Redis dies")
            .expect("BLPOP task");
        assert!(blpop.is_err(), "BLPOP succeeded with Redis down: {blpop:?}");

        let mut errors = Vec::new();
        for attempt in 0..5 {
            errors.push(expect_prompt_error(&mut con, &format!("attempt {attempt}")).await);
        }
        assert!(
            errors
                .last()
                .is_some_and(|e| e.contains("upstream unavailable")),
            "errors while Redis is down: {errors:#?}"
        );

        // poolside stays up: a new client connects and is answered with an error too.
        let mut newcomer = connect(poolside.client_addr).await;
        let err = expect_prompt_error(&mut newcomer, "new client").await;
        assert!(err.contains("upstream unavailable"), "{err}");

        redis.restart().await;

        // The same client connection, the same poolside: only Redis came back.
        wait_for(WAIT, "SET succeeds again after the restart", || {
            // A clone of a multiplexed connection shares its one TCP connection.
            let mut con = con.clone();
            async move { query::<()>(&mut con, &["SET", "k", "after"]).await }
        })
        .await;
        assert_eq!(ok::<String>(&mut con, &["GET", "k"]).await, "after");
        assert_eq!(ok::<String>(&mut newcomer, &["GET", "k"]).await, "after");
        let mut fresh = connect(poolside.client_addr).await;
        assert_eq!(ok::<i64>(&mut fresh, &["INCR", "n"]).await, 1);

        let snapshot = poolside.pool_snapshot();
        assert!(
            snapshot.connections <= 4,
            "{} connections",
            snapshot.connections
        );
        poolside.shutdown().await;
    }
}

both_modes! {
    /// Redis found down by a client between health checks: the checker
    /// probes at the down cadence from then on, so readiness comes back
    /// within about a second of Redis, not a 30 s health interval later,
    /// and without any client traffic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_returns_soon_after_redis_does_without_traffic(mode: PoolMode) {
        let mut redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            assert_eq!(c.pool.health_check_interval_secs, 30);
        })
        .await;
        let ready = || async { common::get(poolside.admin_addr, "/health/ready").await.code };
        wait_until(WAIT, "ready at start", || async { ready().await == 200 }).await;
        redis.stop();
        let mut con = connect(poolside.client_addr).await;
        expect_prompt_error(&mut con, "GET while Redis is down").await;
        wait_until(WAIT, "not ready while Redis is down", || async { ready().await == 503 }).await;
        drop(con);
        redis.restart().await;
        let back = Instant::now();
        wait_until(Duration::from_secs(5), "ready again without traffic", || async {
            ready().await == 200
        })
        .await;
        eprintln!("{mode:?}: ready {:?} after Redis restarted", back.elapsed());
        poolside.shutdown().await;
    }
}

/// Relays poolside's connections to Redis and can make Redis "forget"
/// chosen ones, as after a failover to a new host or a dropped NAT entry:
/// nothing arrives on them, so they look open, and the next bytes poolside
/// writes are answered with a TCP reset.
struct ForgetfulRelay {
    addr: SocketAddr,
    /// By the relay's port towards Redis (Redis' `addr=` in CLIENT LIST).
    forgotten: Arc<Mutex<HashMap<u16, Arc<AtomicBool>>>>,
    accept: JoinHandle<()>,
}

impl ForgetfulRelay {
    async fn start(redis: SocketAddr) -> ForgetfulRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let forgotten = Arc::new(Mutex::new(HashMap::new()));
        let links = forgotten.clone();
        let accept = tokio::spawn(async move {
            while let Ok((poolside, _)) = listener.accept().await {
                let redis = TcpStream::connect(redis)
                    .await
                    .expect("relay connects to Redis");
                let port = redis.local_addr().expect("relay port").port();
                let flag = Arc::new(AtomicBool::new(false));
                links.lock().unwrap().insert(port, flag.clone());
                tokio::spawn(relay(poolside, redis, flag));
            }
        });
        ForgetfulRelay {
            addr,
            forgotten,
            accept,
        }
    }

    /// Forgets the connections Redis sees coming from `ports`.
    fn forget(&self, ports: &[u16]) {
        let links = self.forgotten.lock().unwrap();
        for port in ports {
            links[port].store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for ForgetfulRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(mut poolside: TcpStream, mut redis: TcpStream, forgotten: Arc<AtomicBool>) {
    let (mut up, mut down) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    loop {
        tokio::select! {
            read = poolside.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                if forgotten.load(Ordering::Relaxed) {
                    // Closed with a zero linger: a reset, no FIN first.
                    let _ = socket2::SockRef::from(&poolside).set_linger(Some(Duration::ZERO));
                    return;
                }
                if redis.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            read = redis.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if poolside.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `count` clients each hold a pooled connection in BLPOP at the same time,
/// then are released; every one must be answered.
async fn blpop_burst(poolside: &Running, redis: &RedisServer, count: usize) {
    let mut blockers = Vec::new();
    for id in 0..count {
        let mut con = connect(poolside.client_addr).await;
        blockers.push(tokio::spawn(async move {
            let key = format!("burst:{id}");
            ok::<(String, String)>(&mut con, &["BLPOP", &key, "0"]).await
        }));
    }
    wait_until(WAIT, "every BLPOP holds a connection", || async {
        redis.blocked_clients().await == count as u64
    })
    .await;
    let mut direct = redis.direct().await;
    for id in 0..count {
        ok::<i64>(&mut direct, &["RPUSH", &format!("burst:{id}"), "x"]).await;
    }
    for blocker in blockers {
        blocker.await.expect("BLPOP answered");
    }
}

/// A connection Redis forgot is not met by a client: one that has been idle
/// for a health interval is PINGed at checkout (the health round PINGs only
/// `min_idle` of them, so that the others can reach their idle timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_redis_forgot_are_replaced_before_a_client_writes() {
    const BURST: usize = 4;
    let redis = RedisServer::start().await;
    let relay = ForgetfulRelay::start(redis.addr()).await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.upstream.url = format!("redis://{}", relay.addr);
        c.pool.health_check_interval_secs = 1;
    })
    .await;
    blpop_burst(&poolside, &redis, BURST).await;

    // Once idle for over an interval, forget the burst's connections that
    // nothing used since (the control plane reuses the one on top).
    let rounds = poolside.pool_snapshot().health_check_runs_total;
    wait_until(WAIT, "two health rounds ran", || async {
        poolside.pool_snapshot().health_check_runs_total >= rounds + 2
    })
    .await;
    let mut sampler = redis.direct_raw().await;
    let ports: Vec<u16> = client_list_on(&mut sampler)
        .await
        .iter()
        .filter(|l| l.contains(" name=poolside:") && last_command(l) == "blpop")
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .filter_map(|addr| addr.rsplit(':').next()?.parse().ok())
        .collect();
    assert!(
        ports.len() >= BURST - 1,
        "idle burst connections: {ports:?}"
    );
    relay.forget(&ports);

    let created = poolside.pool_snapshot().created_total;
    blpop_burst(&poolside, &redis, BURST).await;
    let snapshot = poolside.pool_snapshot();
    assert!(
        snapshot.created_total >= created + ports.len() as u64 - 1,
        "the forgotten connections were replaced: {snapshot:?}"
    );
    poolside.shutdown().await;
}
