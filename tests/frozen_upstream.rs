//! A Redis that freezes (`kill -STOP`: a partition, a stuck fork) must not
//! hang clients: requests in flight and new ones get an error within the
//! response timeout plus a margin, readiness turns 503, and after `kill -CONT`
//! service resumes without a restart. Blocking commands keep their own
//! timeout: `BLPOP key 0` is never cut off.

mod common;

use std::time::{Duration, Instant};

use common::raw::{encode, RawClient, Reply};
use common::{both_modes, get, start_poolside, wait_until, RedisServer, WAIT};
use poolside::config::PoolMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT_MS: u64 = 400;

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_redis_fails_requests_in_time_and_service_resumes(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.pool.response_timeout_ms = TIMEOUT_MS;
            c.upstream.connect_timeout_ms = 300;
            // The control plane borrows an idle connection every second: with
            // a spare one open, the request below never has to connect to the
            // frozen Redis (which fails as "unavailable", not "timed out").
            c.pool.min_idle = 2;
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.command(&["SET", "frozen:k", "v"]).await.expect_ok();
        wait_until(WAIT, "two idle connections", || async {
            poolside.pool_snapshot().idle >= 2
        })
        .await;

        redis.signal("STOP");
        let started = Instant::now();
        let err = client.command(&["GET", "frozen:k"]).await.expect_error();
        let in_flight = started.elapsed();
        assert_eq!(err, format!("ERR poolside: upstream timed out after {TIMEOUT_MS} ms"));
        assert!(
            in_flight >= Duration::from_millis(TIMEOUT_MS) && in_flight < Duration::from_millis(TIMEOUT_MS + 1_500),
            "the in-flight request failed after {in_flight:?}"
        );

        // A new client meets the frozen Redis too: an error, not a hang,
        // within the probe (connect timeout + response timeout) and a margin.
        let started = Instant::now();
        let mut late = RawClient::connect(poolside.client_addr).await;
        let err = late.command(&["GET", "frozen:k"]).await.expect_error();
        assert!(err.starts_with("ERR poolside: upstream"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        wait_until(WAIT, "readiness reports the frozen Redis", || async {
            get(poolside.admin_addr, "/health/ready").await.code == 503
        })
        .await;

        redis.signal("CONT");
        wait_until(WAIT, "requests succeed again after CONT", || async {
            let mut c = RawClient::connect(poolside.client_addr).await;
            c.command(&["GET", "frozen:k"]).await == Reply::bulk("v")
        })
        .await;
        assert_eq!(client.command(&["GET", "frozen:k"]).await, Reply::bulk("v"));
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_commands_wait_their_own_timeout(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.response_timeout_ms = 300).await;

        // BLPOP with 1 s waits its second (beyond the 300 ms response timeout).
        let mut timed = RawClient::connect(poolside.client_addr).await;
        let started = Instant::now();
        assert_eq!(timed.command(&["BLPOP", "frozen:empty", "1"]).await, Reply::Array(None));
        assert!(started.elapsed() >= Duration::from_secs(1));

        // BLPOP 0 is never cut off: it is still waiting well past the
        // timeout, and gets the value pushed then.
        let mut forever = RawClient::connect(poolside.client_addr).await;
        forever.send(&encode(&["BLPOP", "frozen:q", "0"])).await.expect("send");
        let blocked_at = Instant::now();
        wait_until(WAIT, "BLPOP is blocked in Redis", || async {
            redis.blocked_clients().await == 1
        })
        .await;
        wait_until(WAIT, "three response timeouts have passed", || async {
            blocked_at.elapsed() > Duration::from_millis(900)
        })
        .await;
        assert_eq!(redis.blocked_clients().await, 1, "still blocked, not cut off");
        redis.direct_raw().await.command(&["LPUSH", "frozen:q", "late"]).await;
        assert_eq!(
            forever.reply().await,
            Reply::Array(Some(vec![Reply::bulk("frozen:q"), Reply::bulk("late")]))
        );
        poolside.shutdown().await;
    }
}

both_modes! {
    /// Redis freezes in the middle of a big reply the client is reading:
    /// part of the value has reached the client, so an error reply can no
    /// longer be framed. The client is closed once the response timeout
    /// passes; the bytes it got are all the value's, nothing else appended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_cut_by_a_frozen_redis_closes_the_client(mode: PoolMode) {
        const LEN: usize = 30_000_000;
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.pool.response_timeout_ms = TIMEOUT_MS;
        })
        .await;
        let value = vec![b'v'; LEN];
        let mut direct = redis.blocking();
        let _: () = redis::cmd("SET").arg("frozen:big").arg(&value).query(&mut direct).unwrap();

        let mut client = tokio::net::TcpStream::connect(poolside.client_addr).await.unwrap();
        client.write_all(&encode(&["GET", "frozen:big"])).await.unwrap();
        let mut got = vec![0u8; 1 << 20];
        client.read_exact(&mut got).await.unwrap();
        redis.signal("STOP");
        let started = Instant::now();
        let rest = tokio::time::timeout(Duration::from_secs(30), async {
            let mut rest = Vec::new();
            let _ = client.read_to_end(&mut rest).await;
            rest
        })
        .await
        .expect("the client is closed");
        got.extend(rest);
        redis.signal("CONT");
        let header = format!("${LEN}\r\n");
        assert!(got.starts_with(header.as_bytes()));
        let body = &got[header.len()..];
        assert!(body.len() < LEN, "the whole value arrived ({} bytes)", body.len());
        assert!(
            body.iter().all(|&b| b == b'v'),
            "something other than the value's bytes reached the client"
        );
        eprintln!(
            "{mode:?}: {} of {LEN} bytes reached the client, closed {:?} after the freeze",
            body.len(),
            started.elapsed()
        );
        let mut next = RawClient::connect(poolside.client_addr).await;
        assert_eq!(next.command(&["PING"]).await, Reply::Simple("PONG".into()));
        poolside.shutdown().await;
    }
}
