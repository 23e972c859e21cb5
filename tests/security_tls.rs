//! TLS to Redis: a redis-server listening with TLS only, certificates made
//! by the test; verified connections, a wrong CA refused with a clear error,
//! mutual TLS, and the multiplexed and pub/sub paths over TLS.

mod common;

use std::time::Duration;

use common::raw::{RawClient, Read, Reply};
use common::tls::Certs;
use common::{both_modes, start_poolside, RedisServer};
use poolside::app::Running;
use poolside::config::{Config, PoolMode};

/// poolside for `redis` (its `rediss://` URL) with no connect retries.
async fn start(redis: &RedisServer, mode: PoolMode, tweak: impl FnOnce(&mut Config)) -> Running {
    start_poolside(redis, mode, |c| {
        c.pool.connect_retries = 0;
        tweak(c);
    })
    .await
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verified_tls_connection_serves_clients(mode: PoolMode) {
        let certs = Certs::generate();
        let redis = certs.redis_server(false).start().await;
        // An IP in the URL is checked against the certificate's IP SAN.
        let poolside = start(&redis, mode, |c| c.tls.ca_file = Some(certs.ca.clone())).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.command(&["SET", "k", "over tls"]).await.expect_ok();
        assert_eq!(client.command(&["GET", "k"]).await, Reply::bulk("over tls"));
        // The pooled TLS connection is reused, not found "closed" at each
        // checkout (21 SETs, at most 3 connections: at start-up the health
        // probe and the control plane's first refresh each take a pooled one,
        // and may overlap).
        for i in 0..20 {
            let value = i.to_string();
            client.command(&["SET", "k", &value]).await.expect_ok();
        }
        let created = poolside.pool_snapshot().created_total;
        assert!(created <= 3, "{created} connections for 21 commands");
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_enabled_with_a_redis_url_and_server_name_override(mode: PoolMode) {
        let certs = Certs::generate();
        let redis = certs.redis_server(false).start().await;
        let url = format!("redis://127.0.0.1:{}", redis.port());
        let poolside = start(&redis, mode, |c| {
            c.upstream.url = url;
            c.tls.enabled = true;
            c.tls.ca_file = Some(certs.ca.clone());
            c.tls.server_name = Some("localhost".into());
            c.tls.min_version = "1.3".into();
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        assert_eq!(
            client.command(&["PING"]).await,
            Reply::Simple("PONG".into())
        );
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_ca_is_refused_with_a_clear_error(mode: PoolMode) {
        let certs = Certs::generate();
        let redis = certs.redis_server(false).start().await;
        let poolside = start(&redis, mode, |c| {
            c.tls.ca_file = Some(certs.other_ca.clone())
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        let err = client.command(&["GET", "k"]).await.expect_error();
        assert!(err.contains("TLS handshake failed"), "{err}");
        assert!(
            err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
            "{err}"
        );
        assert!(
            err.contains("tls.ca_file"),
            "the error says what to check: {err}"
        );
        // A name the certificate does not carry is refused the same way.
        let poolside2 = start(&redis, mode, |c| {
            c.tls.ca_file = Some(certs.ca.clone());
            c.tls.server_name = Some("redis.example.com".into());
        })
        .await;
        let mut client2 = RawClient::connect(poolside2.client_addr).await;
        let err = client2.command(&["GET", "k"]).await.expect_error();
        assert!(
            err.contains("TLS handshake failed") && err.contains("not valid for name"),
            "{err}"
        );
        poolside.shutdown().await;
        poolside2.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutual_tls_needs_the_client_certificate(mode: PoolMode) {
        let certs = Certs::generate();
        let redis = certs.redis_server(true).start().await;
        let without = start(&redis, mode, |c| c.tls.ca_file = Some(certs.ca.clone())).await;
        let mut client = RawClient::connect(without.client_addr).await;
        let err = client.command(&["GET", "k"]).await.expect_error();
        assert!(
            err.starts_with("ERR poolside: upstream unavailable"),
            "{err}"
        );
        without.shutdown().await;

        let with = start(&redis, mode, |c| {
            c.tls.ca_file = Some(certs.ca.clone());
            c.tls.cert_file = Some(certs.client_cert.clone());
            c.tls.key_file = Some(certs.client_key.clone());
        })
        .await;
        let mut client = RawClient::connect(with.client_addr).await;
        client.command(&["SET", "mtls", "yes"]).await.expect_ok();
        assert_eq!(client.command(&["GET", "mtls"]).await, Reply::bulk("yes"));
        with.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_mode_and_big_pipelines_over_tls() {
    let certs = Certs::generate();
    let redis = certs.redis_server(false).start().await;
    let poolside = start(&redis, PoolMode::Multiplexed, |c| {
        c.tls.ca_file = Some(certs.ca.clone());
    })
    .await;
    let value = "v".repeat(100_000);
    let mut tasks = Vec::new();
    for client_no in 0..4 {
        let addr = poolside.client_addr;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = RawClient::connect(addr).await;
            // One write of 50 large SETs then 50 GETs: megabytes each way,
            // more than a socket buffer holds, so TLS writes must be flushed.
            let mut pipeline = Vec::new();
            for i in 0..50 {
                let key = format!("c{client_no}-{i}");
                pipeline.extend(common::raw::encode(&["SET", &key, &value]));
            }
            for i in 0..50 {
                pipeline.extend(common::raw::encode(&["GET", &format!("c{client_no}-{i}")]));
            }
            client.send(&pipeline).await.expect("send pipeline");
            for _ in 0..50 {
                client.reply().await.expect_ok();
            }
            for _ in 0..50 {
                assert_eq!(client.reply().await, Reply::bulk(&value));
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    poolside.shutdown().await;
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pubsub_streams_over_tls(mode: PoolMode) {
        let certs = Certs::generate();
        let redis = certs.redis_server(false).start().await;
        let poolside = start(&redis, mode, |c| c.tls.ca_file = Some(certs.ca.clone())).await;
        let mut subscriber = RawClient::connect(poolside.client_addr).await;
        let confirm = subscriber
            .command(&["SUBSCRIBE", "news"])
            .await
            .expect_array();
        assert_eq!(confirm[0], Reply::bulk("subscribe"));
        let mut publisher = RawClient::connect(poolside.client_addr).await;
        assert_eq!(
            publisher.command(&["PUBLISH", "news", "hello"]).await,
            Reply::Int(1)
        );
        let message = subscriber.reply().await.expect_array();
        assert_eq!(message[2], Reply::bulk("hello"));
        subscriber
            .send(&common::raw::encode(&["QUIT"]))
            .await
            .unwrap();
        assert_eq!(subscriber.reply().await, Reply::Simple("OK".into()));
        match subscriber.read_timeout(Duration::from_secs(5)).await {
            Some(Read::Closed) => {}
            other => panic!("expected close after QUIT, got {other:?}"),
        }
        poolside.shutdown().await;
    }
}
