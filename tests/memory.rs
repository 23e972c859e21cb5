//! poolside's memory, measured on the process: replies are forwarded as they
//! arrive, so it stays bounded whatever the value sizes (five clients each
//! pipelining eight `GET`s of a 50 MB value and reading nothing keep the
//! poolside process under 128 MiB, the Kubernetes overlays' limit, in both
//! pool modes; clients that read get every byte intact), and an idle client
//! costs a few KiB.
//!
//! poolside runs as its own process here (the built binary), so its RSS is
//! read from /proc/<pid>/status without the test's own buffers in it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::metrics::Metrics;
use common::raw::encode;
use common::{free_port, get, wait_until, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const VALUE_LEN: usize = 50_000_000;
const CLIENTS: usize = 5;
const GETS: usize = 8;
const RSS_LIMIT_KIB: u64 = 128 * 1024;
const SLOW: Duration = Duration::from_secs(120);

/// Byte `i` of the big value: a pattern whose period (251) shares no factor
/// with any buffer size, so a chunk lost, repeated or reordered shows.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

struct Poolside {
    child: Child,
    client: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Poolside {
    /// For the big-value tests. Redis is slow to answer them: it copies each
    /// 50 MB value into its output buffer before it writes the first byte.
    /// Eight pipelined GETs take it about 1.2 s, forty on one connection (five
    /// clients' pipelines on one lane) about 5 s, on an idle 2-core machine;
    /// under load (two such tests at once, CI) more, and a connection opened
    /// meanwhile waits that long for its handshake. The response, connect
    /// and checkout timeouts (5 s, 1 s, 5 s by default) would rightly fail
    /// them, but what these tests measure is poolside's memory, so they are
    /// a minute here.
    async fn spawn(redis: &RedisServer, mode: &str) -> Poolside {
        let minute = [
            ("POOLSIDE_POOL__RESPONSE_TIMEOUT_MS", "60000"),
            ("POOLSIDE_POOL__CHECKOUT_TIMEOUT_MS", "60000"),
            ("POOLSIDE_UPSTREAM__CONNECT_TIMEOUT_MS", "60000"),
        ];
        Poolside::spawn_with(redis, mode, &minute).await
    }

    async fn spawn_with(redis: &RedisServer, mode: &str, env: &[(&str, &str)]) -> Poolside {
        let (port, admin_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_poolside"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDIS_URL", redis.url())
            .env("DEPLOYMENT_ENV", "development")
            .env("POOLSIDE_POOL__MODE", mode)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn poolside");
        let poolside = Poolside {
            child,
            client: format!("127.0.0.1:{port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        };
        wait_until(common::WAIT, "poolside is ready", || async {
            TcpStream::connect(poolside.admin).await.is_ok()
                && get(poolside.admin, "/health/ready").await.code == 200
        })
        .await;
        poolside
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("poolside's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = get(self.admin, "/metrics").await.body;
        Metrics::parse(&text).get(name).unwrap_or(0.0)
    }
}

impl Drop for Poolside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one `$<len>` bulk reply and checks every byte against the pattern,
/// a chunk at a time (never the whole value in memory).
async fn expect_big_value(reader: &mut BufReader<TcpStream>) {
    let mut header = Vec::new();
    while !header.ends_with(b"\r\n") {
        header.push(reader.read_u8().await.expect("reply header"));
    }
    assert_eq!(
        header,
        format!("${VALUE_LEN}\r\n").as_bytes(),
        "{:?}",
        String::from_utf8_lossy(&header)
    );
    const CHUNK: usize = 1 << 16;
    // The pattern from any offset, as one slice to compare with.
    let expected: Vec<u8> = (0..CHUNK + 251).map(pattern).collect();
    let mut chunk = vec![0u8; CHUNK];
    let mut at = 0;
    while at < VALUE_LEN {
        let want = CHUNK.min(VALUE_LEN - at);
        reader
            .read_exact(&mut chunk[..want])
            .await
            .expect("value bytes");
        let from = at % 251;
        assert!(
            chunk[..want] == expected[from..from + want],
            "bytes {at}..{} of the value are wrong",
            at + want
        );
        at += want;
    }
    let mut end = [0u8; 2];
    reader.read_exact(&mut end).await.unwrap();
    assert_eq!(&end, b"\r\n");
}

/// Clients that pipeline `GETS` big GETs and do not read.
async fn stuck_clients(poolside: &Poolside) -> Vec<TcpStream> {
    let mut pipeline = Vec::new();
    for _ in 0..GETS {
        pipeline.extend(encode(&["GET", "big"]));
    }
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = TcpStream::connect(poolside.client).await.unwrap();
        c.write_all(&pipeline).await.unwrap();
        clients.push(c);
    }
    clients
}

/// Watches poolside's RSS until `done`, returning the peak.
async fn peak_rss_until<F, Fut>(poolside: &Poolside, what: &str, mut done: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let mut peak = poolside.rss_kib();
    loop {
        peak = peak.max(poolside.rss_kib());
        if done().await {
            return peak.max(poolside.rss_kib());
        }
        assert!(started.elapsed() < SLOW, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn set_big_value(redis: &RedisServer) {
    let value: Vec<u8> = (0..VALUE_LEN).map(pattern).collect();
    let mut direct = redis.blocking();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(value)
        .query(&mut direct)
        .unwrap();
}

/// Bytes Redis holds for poolside's connections that poolside has not read.
async fn unread_in_redis(redis: &RedisServer) -> Vec<u64> {
    let mut direct = redis.direct_raw().await;
    let list = direct.command(&["CLIENT", "LIST"]).await.expect_string();
    list.lines()
        .filter(|l| l.contains("cmd=get"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("omem="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// Transaction mode: each non-reading client holds its upstream connection,
/// whose replies wait in Redis (poolside reads no further than the client
/// takes); once they read, every byte of all eight values arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_forwards_big_replies_with_backpressure() {
    let redis = RedisServer::start().await;
    set_big_value(&redis).await;
    let poolside = Poolside::spawn(&redis, "transaction").await;
    let baseline = poolside.rss_kib();
    let clients = stuck_clients(&poolside).await;
    let peak = peak_rss_until(&poolside, "Redis holds the unread replies", || async {
        let unread = unread_in_redis(&redis).await;
        unread.len() == CLIENTS && unread.iter().all(|&b| b > VALUE_LEN as u64)
    })
    .await;
    eprintln!(
        "transaction mode: {CLIENTS} clients x {GETS} GETs of {VALUE_LEN} bytes unread: \
         poolside RSS {baseline} KiB -> peak {peak} KiB"
    );
    assert!(peak < RSS_LIMIT_KIB, "RSS peaked at {peak} KiB");

    // Now they read: every reply intact, in order.
    let mut readers = Vec::new();
    for c in clients {
        readers.push(tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(1 << 16, c);
            for _ in 0..GETS {
                expect_big_value(&mut reader).await;
            }
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    let after = poolside.rss_kib();
    eprintln!("transaction mode: all replies read; RSS {after} KiB");
    assert!(after < RSS_LIMIT_KIB, "RSS {after} KiB");
}

/// Multiplexed mode: a lane holds at most `limits.max_reply_buffer_bytes`
/// (8 MiB) of a client's unread replies; clients that take nothing are cut
/// off and counted, and the lane serves the others, whose big replies
/// arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_mode_cuts_off_clients_that_do_not_read_and_serves_the_rest() {
    let redis = RedisServer::start().await;
    set_big_value(&redis).await;
    let poolside = Poolside::spawn(&redis, "multiplexed").await;
    let baseline = poolside.rss_kib();
    // Meanwhile another client's small commands share the lanes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let (stop, addr) = (stop.clone(), poolside.client);
        tokio::spawn(async move {
            let mut c = common::raw::RawClient::connect(addr).await;
            let (mut pings, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                // It may wait behind the slow clients' batches on its lane
                // (a second per slow client ahead, plus reading their
                // replies), but gets its answer.
                c.send(&encode(&["PING"])).await.unwrap();
                assert_eq!(c.try_raw_reply(SLOW).await.unwrap(), b"+PONG\r\n");
                slowest = slowest.max(sent.elapsed());
                pings += 1;
            }
            (pings, slowest)
        })
    };
    let clients = stuck_clients(&poolside).await;
    let peak = peak_rss_until(&poolside, "every non-reading client is cut off", || async {
        poolside
            .metric("poolside_reply_buffer_overflows_total")
            .await
            >= CLIENTS as f64
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (pings, slowest) = pinger.await.unwrap();
    eprintln!("multiplexed mode: meanwhile {pings} PINGs answered, the slowest in {slowest:?}");
    assert!(pings > 0);
    eprintln!(
        "multiplexed mode: {CLIENTS} clients x {GETS} GETs of {VALUE_LEN} bytes unread: \
         poolside RSS {baseline} KiB -> peak {peak} KiB"
    );
    assert!(peak < RSS_LIMIT_KIB, "RSS peaked at {peak} KiB");
    for mut c in clients {
        // Closed by poolside: reading ends (after whatever it had written).
        let mut sink = vec![0u8; 1 << 16];
        let closed = tokio::time::timeout(SLOW, async {
            while c.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
        });
        closed.await.expect("a cut-off client is closed");
    }

    // A client that reads gets three big values intact through the lanes,
    // and small commands still work.
    let mut c = TcpStream::connect(poolside.client).await.unwrap();
    let mut pipeline = Vec::new();
    for _ in 0..3 {
        pipeline.extend(encode(&["GET", "big"]));
    }
    pipeline.extend(encode(&["PING"]));
    c.write_all(&pipeline).await.unwrap();
    let mut reader = BufReader::with_capacity(1 << 16, c);
    for _ in 0..3 {
        expect_big_value(&mut reader).await;
    }
    let mut pong = [0u8; 7];
    reader.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let after = poolside.rss_kib();
    eprintln!("multiplexed mode: a reading client got 3 values intact; RSS {after} KiB");
    assert!(after < RSS_LIMIT_KIB, "RSS {after} KiB");
    assert_eq!(
        poolside
            .metric("poolside_reply_buffer_overflows_total")
            .await,
        CLIENTS as f64,
        "the reading client was not cut off"
    );
}

/// Lets this process (and the poolside it starts) open `n` descriptors, as
/// far as the hard limit allows; returns the new soft limit.
fn raise_open_files(n: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max.min(n).max(limit.rlim_cur);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// Idle clients (connected, one PING answered, then silent) cost poolside a
/// few KiB each, in either pool mode: measured with 5,000 of them on the
/// process' RSS (about 2.6 KiB each in transaction mode, 2.9 KiB in
/// multiplexed mode, debug or release build, also with
/// `loadtest/idle-memory.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_cost_a_few_kib_each() {
    const IDLE: usize = 5_000;
    let allowed = raise_open_files(3 * IDLE as u64);
    assert!(
        allowed >= 2 * IDLE as u64 + 100,
        "this machine allows {allowed} open files; the test needs {}",
        2 * IDLE + 100
    );
    let redis = RedisServer::start().await;
    // One mode after the other: 5,000 clients at a time.
    for mode in ["multiplexed", "transaction"] {
        let per_client = idle_client_bytes(&redis, mode, IDLE).await;
        assert!(
            per_client < 3.5 * 1024.0,
            "{mode} mode: {per_client:.0} bytes per idle client"
        );
    }
}

async fn idle_client_bytes(redis: &RedisServer, mode: &str, n: usize) -> f64 {
    let max_clients = (n + 100).to_string();
    let env = [("POOLSIDE_LIMITS__MAX_CLIENTS", max_clients.as_str())];
    let poolside = Poolside::spawn_with(redis, mode, &env).await;
    let ping = encode(&["PING"]);
    let (ping, addr) = (&ping, poolside.client);
    let connect = |n: usize| async move {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(ping).await.unwrap();
            let mut pong = [0u8; 7];
            c.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"+PONG\r\n");
            clients.push(c);
        }
        clients
    };
    // Warm up: the runtime's and the allocator's first arenas.
    let warm = connect(50).await;
    let before = poolside.rss_kib();
    let idle = connect(n).await;
    let connected = (n + warm.len()) as f64;
    wait_until(common::WAIT, "every client counted", || async {
        poolside.metric("poolside_clients_connected").await == connected
    })
    .await;
    let after = poolside.rss_kib();
    let per_client = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    eprintln!(
        "{mode} mode, {n} idle clients: poolside RSS {before} KiB -> {after} KiB, {per_client:.0} bytes each"
    );
    drop((warm, idle));
    per_client
}

/// Multiplexed mode: a client reading a big reply slowly (but steadily, so
/// the 1 s slow-reader grace never runs out) may hold its lane while nobody
/// else waits on it; once another batch waits behind it for a response
/// timeout, the slow client is cut off and the other batch answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_a_lane_no_longer_than_a_response_timeout_while_others_wait() {
    const LEN: usize = 30_000_000;
    let redis = RedisServer::start().await;
    let value = vec![b's'; LEN];
    let mut direct = redis.blocking();
    let _: () = redis::cmd("SET")
        .arg("slow")
        .arg(&value)
        .query(&mut direct)
        .unwrap();
    drop(value);
    let poolside = common::start_poolside(&redis, poolside::config::PoolMode::Multiplexed, |c| {
        c.pool.response_timeout_ms = 1_000;
        // One lane at most: a lane held by a slow reader takes no new batch
        // while the pool has room for another, so with room the PING would
        // find a lane of its own whenever the hold began before it came.
        c.pool.max_connections = 1;
    })
    .await;
    let mut slow = TcpStream::connect(poolside.client_addr).await.unwrap();
    slow.write_all(&encode(&["GET", "slow"])).await.unwrap();
    let mut first = [0u8; 1024];
    slow.read_exact(&mut first).await.unwrap();
    // Behind it, on the same lane (the only one).
    let mut other = common::raw::RawClient::connect(poolside.client_addr).await;
    other.send(&encode(&["PING"])).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut got = first.len();
        let mut chunk = vec![0u8; 64 * 1024];
        // The whole reply: then it was not cut off, and nothing more comes.
        let whole = format!("${LEN}\r\n").len() + LEN + 2;
        while got < whole {
            match slow.read(&mut chunk).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
            // About 3 MB/s: 10 s for the whole value.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        got
    });
    let pong = other.try_raw_reply(SLOW).await.unwrap();
    assert_eq!(pong, b"+PONG\r\n");
    let got = reader.await.unwrap();
    eprintln!("the slow reader got {got} of {LEN} bytes before it was cut off");
    assert!(got < LEN, "the slow reader was not cut off");
    let metrics = get(poolside.admin_addr, "/metrics").await.metrics();
    assert_eq!(
        metrics.get("poolside_reply_buffer_overflows_total"),
        Some(1.0)
    );
    poolside.shutdown().await;
}
