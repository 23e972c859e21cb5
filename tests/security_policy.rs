//! The command policy: every command production denies is refused (and
//! allowed in development), in pipelines, inside MULTI (the transaction then
//! aborts like Redis' EXECABORT) and in subscribed mode; refusals are counted.

mod common;

use std::time::Duration;

use common::raw::{encode, RawClient, Read, Reply};
use common::{both_modes, get, start_poolside, RedisServer};
use poolside::config::{PolicyConfig, PoolMode, Profile};

/// A harmless use of each production-denied command.
const DENIED: [(&str, &[&str]); 11] = [
    ("FLUSHALL", &["FLUSHALL"]),
    ("FLUSHDB", &["flushdb"]),
    ("KEYS", &["KEYS", "*"]),
    ("CONFIG", &["CONFIG", "GET", "maxmemory"]),
    ("DEBUG", &["DEBUG", "SLEEP", "0"]),
    ("SHUTDOWN", &["SHUTDOWN", "ABORT"]),
    ("SLAVEOF", &["SLAVEOF", "NO", "ONE"]),
    ("REPLICAOF", &["REPLICAOF", "NO", "ONE"]),
    ("MIGRATE", &["MIGRATE", "127.0.0.1", "1", "k", "0", "10"]),
    ("MODULE", &["MODULE", "LIST"]),
    ("SCRIPT KILL", &["script", "kill"]),
];

fn refusal(shown: &str) -> String {
    format!("ERR command '{shown}' is disabled by poolside policy")
}

fn production(c: &mut poolside::config::Config) {
    c.policy = PolicyConfig::for_profile(Profile::Production);
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn production_refuses_every_denied_command(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, production).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.command(&["SET", "keep", "me"]).await.expect_ok();
        for (shown, args) in DENIED {
            let err = client.command(args).await.expect_error();
            assert_eq!(err, refusal(shown), "{args:?}");
        }
        assert_eq!(
            poolside.stats().denied_commands_total(),
            DENIED.len() as u64
        );
        let metrics = get(poolside.admin_addr, "/metrics").await.body;
        let line = format!("poolside_commands_denied_total {}", DENIED.len());
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in /metrics"
        );
        // Nothing ran: the key is still there. Subcommands not listed still run.
        assert_eq!(client.command(&["GET", "keep"]).await, Reply::bulk("me"));
        let sha = client
            .command(&["SCRIPT", "LOAD", "return 1"])
            .await
            .expect_string();
        assert_eq!(client.command(&["EVALSHA", &sha, "0"]).await, Reply::Int(1));
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn development_allows_them_all(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        for (shown, args) in DENIED {
            // Redis answers, sometimes with its own error (DEBUG and MODULE are
            // disabled in Redis' default config, SHUTDOWN ABORT has nothing to
            // abort): never with poolside's refusal.
            let reply = client.command(args).await;
            if let Reply::Error(e) = &reply {
                assert!(!e.contains("poolside policy"), "{shown}: {e}");
            }
        }
        assert_eq!(poolside.stats().denied_commands_total(), 0);
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_keep_their_place_in_a_pipeline(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, production).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        let mut pipeline = encode(&["SET", "a", "1"]);
        pipeline.extend(encode(&["FLUSHALL"]));
        pipeline.extend(encode(&["INCR", "a"]));
        pipeline.extend(encode(&["KEYS", "*"]));
        pipeline.extend(encode(&["GET", "a"]));
        client.send(&pipeline).await.unwrap();
        client.reply().await.expect_ok();
        assert_eq!(
            client.reply().await.expect_error(),
            refusal("FLUSHALL"),
            "{mode:?}"
        );
        assert_eq!(client.reply().await, Reply::Int(2));
        assert_eq!(client.reply().await.expect_error(), refusal("KEYS"));
        assert_eq!(client.reply().await, Reply::bulk("2"));
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_inside_multi_aborts_the_transaction(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, production).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        // Command by command, each its own batch.
        client.command(&["MULTI"]).await.expect_ok();
        assert_eq!(
            client.command(&["SET", "a", "1"]).await,
            Reply::Simple("QUEUED".into())
        );
        assert_eq!(
            client.command(&["FLUSHDB"]).await.expect_error(),
            refusal("FLUSHDB")
        );
        assert_eq!(
            client.command(&["SET", "b", "2"]).await,
            Reply::Simple("QUEUED".into())
        );
        let err = client.command(&["EXEC"]).await.expect_error();
        assert_eq!(
            err,
            "EXECABORT Transaction discarded because of previous errors."
        );
        // Nothing ran, and the client is out of MULTI.
        assert_eq!(client.command(&["GET", "a"]).await, Reply::Bulk(None));
        client.command(&["SET", "c", "3"]).await.expect_ok();

        // The same as one pipelined batch, then a clean transaction after it.
        let mut pipeline = Vec::new();
        for args in [
            &["MULTI"][..],
            &["INCR", "n"],
            &["CONFIG", "SET", "x", "y"],
            &["EXEC"],
        ] {
            pipeline.extend(encode(args));
        }
        pipeline.extend(encode(&["MULTI"]));
        pipeline.extend(encode(&["INCR", "n"]));
        pipeline.extend(encode(&["EXEC"]));
        client.send(&pipeline).await.unwrap();
        client.reply().await.expect_ok();
        assert_eq!(client.reply().await, Reply::Simple("QUEUED".into()));
        assert_eq!(client.reply().await.expect_error(), refusal("CONFIG"));
        assert!(client.reply().await.expect_error().starts_with("EXECABORT"));
        client.reply().await.expect_ok();
        assert_eq!(client.reply().await, Reply::Simple("QUEUED".into()));
        assert_eq!(
            client.reply().await,
            Reply::Array(Some(vec![Reply::Int(1)]))
        );

        // DISCARD after a refusal ends the transaction normally.
        client.command(&["MULTI"]).await.expect_ok();
        client.command(&["KEYS", "*"]).await.expect_error();
        client.command(&["DISCARD"]).await.expect_ok();
        let exec = client.command(&["EXEC"]).await.expect_error();
        assert!(exec.contains("EXEC without MULTI"), "{exec}");
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribed_clients_cannot_escape_the_policy(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, production).await;
        let mut direct = redis.direct_raw().await;
        direct.command(&["SET", "keep", "me"]).await.expect_ok();
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.command(&["SUBSCRIBE", "ch"]).await.expect_array();
        // RESET leaves subscribed mode on the dedicated connection ...
        assert_eq!(
            client.command(&["RESET"]).await,
            Reply::Simple("RESET".into())
        );
        // ... so a denied command there is refused and the client closed.
        client.send(&encode(&["FLUSHALL"])).await.unwrap();
        assert_eq!(client.reply().await.expect_error(), refusal("FLUSHALL"));
        match client.read_timeout(Duration::from_secs(5)).await {
            Some(Read::Closed) => {}
            other => panic!("expected the client closed, got {other:?}"),
        }
        assert_eq!(direct.command(&["GET", "keep"]).await, Reply::bulk("me"));
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deny_lists_are_configurable_per_deployment(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.policy.deny_commands = vec!["get".into(), "client kill".into()];
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.command(&["SET", "k", "v"]).await.expect_ok();
        assert_eq!(
            client.command(&["GET", "k"]).await.expect_error(),
            refusal("GET")
        );
        let err = client
            .command(&["CLIENT", "KILL", "ID", "999999"])
            .await
            .expect_error();
        assert_eq!(err, refusal("CLIENT KILL"));
        assert!(matches!(
            client.command(&["CLIENT", "ID"]).await,
            Reply::Int(_)
        ));
        poolside.shutdown().await;
    }
}
