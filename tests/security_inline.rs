//! Inline commands (telnet-style lines) reach Redis as the arguments poolside
//! read, re-encoded as RESP: Redis' own inline parser (quotes, escapes, `\v`
//! as a separator) must not get a say. Found by fuzzing: a quoted
//! `"FLUSHALL"` slipped past the deny-list, and a `\v` line, which Redis
//! reads as no command, left its client waiting forever on a reply.

mod common;

use std::time::Duration;

use common::raw::{RawClient, Read, Reply};
use common::{both_modes, start_poolside, RedisServer};
use poolside::config::{PolicyConfig, PoolMode, Profile};

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quoting_a_denied_command_does_not_get_it_past_the_policy(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.policy = PolicyConfig::for_profile(Profile::Production)
        })
        .await;
        let mut direct = redis.direct_raw().await;
        direct.command(&["SET", "keep", "me"]).await.expect_ok();
        let mut client = RawClient::connect(poolside.client_addr).await;
        client
            .send(b"\"FLUSHALL\"\r\n\"\\x46LUSHDB\"\r\n'KEYS' *\r\nflushall\r\n")
            .await
            .unwrap();
        for _ in 0..3 {
            let err = client.reply().await.expect_error();
            assert!(err.starts_with("ERR unknown command"), "{err}");
        }
        let err = client.reply().await.expect_error();
        assert_eq!(err, "ERR command 'FLUSHALL' is disabled by poolside policy");
        assert_eq!(direct.command(&["GET", "keep"]).await, Reply::bulk("me"));
        // Plain inline commands work as before.
        client.send(b"SET k  v\r\nGET k\n").await.unwrap();
        client.reply().await.expect_ok();
        assert_eq!(client.reply().await, Reply::bulk("v"));
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_line_redis_would_ignore_still_gets_its_one_reply(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 1).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.send(b"\x0b\nPING\r\n").await.unwrap();
        let err = client.reply().await.expect_error();
        assert!(err.starts_with("ERR unknown command"), "{err}");
        assert_eq!(client.reply().await, Reply::Simple("PONG".into()));
        // The one pooled connection is free again for everyone else.
        let mut other = RawClient::connect(poolside.client_addr).await;
        assert_eq!(other.command(&["PING"]).await, Reply::Simple("PONG".into()));
        client.send(b"QUIT\r\n").await.unwrap();
        client.reply().await.expect_ok();
        assert!(matches!(
            client.read_timeout(Duration::from_secs(5)).await,
            Some(Read::Closed)
        ));
        poolside.shutdown().await;
    }
}
