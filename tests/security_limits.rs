//! Each hard limit: the offending client is closed (or, for the batch limit,
//! served in rounds), and a busy well-behaved client never notices.

mod common;

use std::time::{Duration, Instant};

use common::busy::Busy;
use common::raw::{encode, RawClient, Read, Reply};
use common::{both_modes, connect, start_poolside, RedisServer};
use poolside::config::PoolMode;

/// Reads until the connection closes; returns the replies seen before.
async fn replies_until_closed(client: &mut RawClient, within: Duration) -> Vec<Reply> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.read_timeout(left).await {
            Some(Read::Reply(r)) => seen.push(r),
            Some(Read::Closed) => return seen,
            None => panic!("not closed within {within:?}; replies so far: {seen:?}"),
        }
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_beyond_max_clients_get_an_error_and_are_closed(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.limits.max_clients = 2).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        let mut second = RawClient::connect(poolside.client_addr).await;
        second.command(&["PING"]).await;
        let mut third = RawClient::connect(poolside.client_addr).await;
        let seen = replies_until_closed(&mut third, Duration::from_secs(5)).await;
        assert_eq!(
            seen,
            vec![Reply::Error("ERR max number of clients reached".into())]
        );
        busy.wait_rounds(10).await;
        assert_eq!(
            second.command(&["PING"]).await,
            Reply::Simple("PONG".into())
        );
        busy.finish().await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_over_max_frame_bytes_closes_only_its_client(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.limits.max_frame_bytes = 4096).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        let mut big = RawClient::connect(poolside.client_addr).await;
        big.send(&encode(&["SET", "k", &"x".repeat(10_000)]))
            .await
            .unwrap();
        let seen = replies_until_closed(&mut big, Duration::from_secs(5)).await;
        let err = seen
            .last()
            .expect("an error before the close")
            .expect_error();
        assert!(err.contains("max_frame_bytes"), "{err}");
        busy.wait_rounds(10).await;
        busy.finish().await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_incomplete_frame_times_out_slow_loris(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.limits.frame_timeout_ms = 300).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        let mut slow = RawClient::connect(poolside.client_addr).await;
        slow.send(b"*2\r\n$3\r\nGET\r\n$1").await.unwrap();
        let seen = replies_until_closed(&mut slow, Duration::from_secs(5)).await;
        let err = seen
            .last()
            .expect("an error before the close")
            .expect_error();
        assert!(err.contains("incomplete command timed out"), "{err}");
        busy.wait_rounds(10).await;
        busy.finish().await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_clients_are_closed_after_the_idle_timeout(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside =
            start_poolside(&redis, mode, |c| c.limits.client_idle_timeout_secs = 1).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        let mut idle = RawClient::connect(poolside.client_addr).await;
        idle.command(&["SET", "idle", "1"]).await.expect_ok();
        let seen = replies_until_closed(&mut idle, Duration::from_secs(5)).await;
        assert!(seen.is_empty(), "{seen:?}");
        busy.wait_rounds(10).await;
        busy.finish().await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelines_beyond_max_pipeline_bytes_are_served_in_rounds(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.limits.max_pipeline_bytes = 1024).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        let mut client = RawClient::connect(poolside.client_addr).await;
        // ~90 KiB in one write: about 90 batches, answered in order.
        let mut pipeline = Vec::new();
        for i in 0..3000 {
            pipeline.extend(encode(&["INCR", "counter"]));
            if i % 1000 == 999 {
                pipeline.extend(encode(&["GET", "counter"]));
            }
        }
        client.send(&pipeline).await.unwrap();
        for i in 0..3000 {
            assert_eq!(client.reply().await, Reply::Int(i + 1));
            if i % 1000 == 999 {
                assert_eq!(client.reply().await, Reply::bulk(&(i + 1).to_string()));
            }
        }
        // A single frame larger than the batch limit is still served.
        let value = "v".repeat(4000);
        client.command(&["SET", "big", &value]).await.expect_ok();
        assert_eq!(client.command(&["GET", "big"]).await, Reply::bulk(&value));
        busy.wait_rounds(10).await;
        busy.finish().await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_pubsub_reader_is_disconnected(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside =
            start_poolside(&redis, mode, |c| c.limits.max_output_bytes = 256 * 1024).await;
        let mut fast = RawClient::connect(poolside.client_addr).await;
        fast.command(&["SUBSCRIBE", "ch"]).await.expect_array();
        let mut slow = RawClient::connect(poolside.client_addr).await;
        slow.command(&["SUBSCRIBE", "ch"]).await.expect_array();
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");

        // `slow` reads nothing more. Publish until poolside gives up on it:
        // Redis then counts one subscriber fewer.
        let mut publisher = redis.direct_raw().await;
        let payload = "m".repeat(16 * 1024);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sent = 0u64;
        loop {
            let receivers = publisher.command(&["PUBLISH", "ch", &payload]).await;
            sent += 1;
            // `fast` keeps up: it reads every message.
            let message = fast.reply().await.expect_array();
            assert_eq!(message[2], Reply::bulk(&payload));
            if receivers == Reply::Int(1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slow reader still subscribed after {sent} messages"
            );
        }
        // Beyond the bound plus what the kernel's socket buffers hold.
        assert!(sent > 16, "disconnected after only {sent} messages");
        busy.wait_rounds(10).await;
        busy.finish().await;
        poolside.shutdown().await;
    }
}
