//! State changes take effect in pipeline order, as in Redis, and never leak
//! to the next client of a pooled connection: a transaction left behind by
//! a stream that never started, a HELLO queued in MULTI, RESET in the
//! middle of a pipeline, commands after a stream that could not start,
//! RESET under CLIENT REPLY OFF. Each test uses a pool of one connection, so
//! the next client gets exactly the connection the first one used.

mod common;

use common::raw::{encode, escape, RawClient, Reply};
use common::{both_modes, start_poolside, RedisServer};
use poolside::config::PoolMode;

fn pipeline(commands: &[&[&str]]) -> Vec<u8> {
    commands.iter().flat_map(|c| encode(c)).collect()
}

async fn one_connection(redis: &RedisServer, mode: PoolMode) -> poolside::app::Running {
    start_poolside(redis, mode, |c| {
        c.pool.max_connections = 1;
        c.pool.min_idle = 0;
    })
    .await
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_that_never_started_leaves_no_transaction_behind(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = one_connection(&redis, mode).await;
        let mut first = RawClient::connect(poolside.client_addr).await;
        // MULTI runs, SUBSCRIBE would start a stream, the malformed frame
        // closes the client before it does.
        let mut bytes = pipeline(&[&["MULTI"], &["SUBSCRIBE", "ch"]]);
        bytes.extend_from_slice(b"*x\r\n");
        first.send(&bytes).await.expect("send");
        let (_, closed) = first.read_to_close(std::time::Duration::from_secs(10)).await;
        assert!(closed);

        let mut next = RawClient::connect(poolside.client_addr).await;
        next.command(&["SET", "order:k", "v"]).await.expect_ok();
        assert_eq!(next.command(&["GET", "order:k"]).await, Reply::bulk("v"));
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hello_queued_in_multi_is_followed_at_exec(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = one_connection(&redis, mode).await;
        redis.direct_raw().await.command(&["HSET", "order:h", "f", "v"]).await;
        let mut first = RawClient::connect(poolside.client_addr).await;
        first.command(&["MULTI"]).await.expect_ok();
        first.command(&["HELLO", "3"]).await.expect_string();
        // EXEC's reply holds a RESP3 map: read it as bytes.
        first.send(&encode(&["EXEC"])).await.expect("send");
        let exec = first.raw_reply().await;
        assert!(exec.starts_with(b"*1\r\n%7\r\n"), "{}", escape(&exec));
        first.send(&encode(&["HGETALL", "order:h"])).await.expect("send");
        assert_eq!(first.raw_reply().await, b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n".to_vec());
        drop(first);

        // The next client speaks RESP2 and must get RESP2 on that connection.
        let mut next = RawClient::connect(poolside.client_addr).await;
        next.send(&encode(&["HGETALL", "order:h"])).await.expect("send");
        assert_eq!(next.raw_reply().await, b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n".to_vec());
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_takes_effect_where_it_stands_in_the_pipeline(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = one_connection(&redis, mode).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        let bytes = pipeline(&[
            &["SELECT", "5"],
            &["SET", "order:db5", "before-reset"],
            &["RESET"],
            &["SET", "order:db0", "after-reset"],
        ]);
        client.send(&bytes).await.expect("send");
        client.reply().await.expect_ok();
        client.reply().await.expect_ok();
        assert_eq!(client.reply().await, Reply::Simple("RESET".into()));
        client.reply().await.expect_ok();

        let mut direct = redis.direct_raw().await;
        direct.command(&["SELECT", "5"]).await.expect_ok();
        assert_eq!(direct.command(&["GET", "order:db5"]).await, Reply::bulk("before-reset"));
        direct.command(&["SELECT", "0"]).await.expect_ok();
        assert_eq!(direct.command(&["GET", "order:db0"]).await, Reply::bulk("after-reset"));
        assert_eq!(direct.command(&["GET", "order:db5"]).await, Reply::Bulk(None));

        // A transaction queued before RESET in the same pipeline is discarded
        // with its connection, and what follows RESET runs outside it.
        let bytes = pipeline(&[&["MULTI"], &["SET", "order:tx", "1"], &["RESET"], &["GET", "order:tx"]]);
        client.send(&bytes).await.expect("send");
        client.reply().await.expect_ok();
        assert_eq!(client.reply().await, Reply::Simple("QUEUED".into()));
        assert_eq!(client.reply().await, Reply::Simple("RESET".into()));
        assert_eq!(client.reply().await, Reply::Bulk(None));
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_after_a_stream_that_cannot_start_are_answered(mode: PoolMode) {
        let mut redis = RedisServer::start().await;
        let poolside = one_connection(&redis, mode).await;
        redis.stop();
        let mut client = RawClient::connect(poolside.client_addr).await;
        client
            .send(&pipeline(&[&["SUBSCRIBE", "ch"], &["PING"], &["GET", "k"]]))
            .await
            .expect("send");
        for what in ["SUBSCRIBE", "PING", "GET"] {
            let err = client.reply().await.expect_error();
            assert!(err.starts_with("ERR poolside: upstream"), "{what}: {err}");
        }
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_is_answered_under_client_reply_off(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = one_connection(&redis, mode).await;
        let script = pipeline(&[
            &["CLIENT", "REPLY", "OFF"],
            &["CLIENT", "REPLY", "MAYBE"],
            &["SET", "order:quiet", "1"],
            &["RESET"],
            &["GET", "order:quiet"],
        ]);
        let mut direct = redis.direct_raw().await;
        direct.send(&script).await.expect("send");
        let want = [direct.raw_reply().await, direct.raw_reply().await];
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.send(&script).await.expect("send");
        let got = [client.raw_reply().await, client.raw_reply().await];
        assert_eq!(got, want);
        assert_eq!(want[0], b"+RESET\r\n".to_vec());
        poolside.shutdown().await;
    }
}

both_modes! {
    /// Replies too big to hold whole are forwarded in parts: a pipeline
    /// mixing megabyte values with small replies, a transaction whose EXEC
    /// carries a big value and a RESP3 map gets the bytes Redis sends, in
    /// order, in both protocols.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_replies_mixed_with_small_ones_arrive_as_redis_sends_them(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut direct = redis.direct_raw().await;
        let big1: String = (0..1_000_003).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let big2: String = (0..3_000_017).map(|i| char::from(b'0' + (i % 10) as u8)).collect();
        direct.command(&["SET", "order:big1", &big1]).await.expect_ok();
        direct.command(&["SET", "order:big2", &big2]).await.expect_ok();
        direct.command(&["HSET", "order:h", "f", &big1, "g", "1"]).await;
        let commands: &[&[&str]] = &[
            &["GET", "order:missing"],
            &["GET", "order:big1"],
            &["MULTI"],
            &["GET", "order:big2"],
            &["INCRBY", "order:n", "0"],
            &["EXEC"],
            &["HGETALL", "order:h"],
            &["MGET", "order:big1", "order:big2", "order:missing"],
            &["PING"],
        ];
        for protocol in ["2", "3"] {
            let mut via = RawClient::connect(poolside.client_addr).await;
            let mut straight = redis.direct_raw().await;
            for c in [&mut via, &mut straight] {
                c.send(&encode(&["HELLO", protocol])).await.expect("send");
                c.raw_reply().await; // Connection ids differ by design.
                c.send(&pipeline(commands)).await.expect("send");
            }
            for command in commands {
                let (got, want) = (via.raw_reply().await, straight.raw_reply().await);
                assert!(
                    got == want,
                    "RESP{protocol} {command:?}: {} bytes through poolside, {} from Redis; \
                     first {}",
                    got.len(),
                    want.len(),
                    escape(&got[..got.len().min(64)])
                );
            }
        }
        poolside.shutdown().await;
    }
}
