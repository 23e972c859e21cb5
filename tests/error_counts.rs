//! `poolside_errors_total{side}` counts each failed client batch once, the
//! same way in both pool modes: a lost upstream connection is one upstream
//! error per batch it failed (not one more for the lane), and a pool
//! exhaustion is one internal error whichever backend met it.

mod common;

use std::time::Duration;

use common::raw::{encode, RawClient};
use common::{both_modes, get, start_poolside, wait_until, RedisServer, WAIT};
use poolside::config::PoolMode;

const CLIENTS: usize = 3;

fn errors(metrics: &common::Metrics, side: &str) -> f64 {
    metrics.value(&format!("poolside_errors_total{{side=\"{side}\"}}"))
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_counts_once_per_failed_batch(mode: PoolMode) {
        let mut redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let mut client = RawClient::connect(poolside.client_addr).await;
            client.command(&["SET", &format!("k{i}"), "v"]).await.expect_ok();
            clients.push(client);
        }
        let before = get(poolside.admin_addr, "/metrics").await.metrics();

        // Frozen, then killed: each client's GET is in flight or fails to
        // get a connection; either way it is one failed batch.
        redis.signal("STOP");
        for (i, client) in clients.iter_mut().enumerate() {
            client.send(&encode(&["GET", &format!("k{i}")])).await.expect("send");
        }
        wait_until(WAIT, "every GET is planned", || async {
            poolside.stats().commands_total() >= 2 * CLIENTS as u64
        })
        .await;
        redis.stop();
        for client in &mut clients {
            let err = client.reply().await.expect_error();
            assert!(err.starts_with("ERR poolside: upstream"), "{err}");
        }

        let after = get(poolside.admin_addr, "/metrics").await.metrics();
        assert_eq!(
            errors(&after, "upstream") - errors(&before, "upstream"),
            CLIENTS as f64,
            "one upstream error per failed batch ({mode:?})"
        );
        assert_eq!(errors(&after, "internal"), errors(&before, "internal"));
        assert_eq!(errors(&after, "client"), errors(&before, "client"));
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exhausted_pool_counts_one_internal_error(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.pool.max_connections = 1;
            c.pool.checkout_timeout_ms = 100;
        })
        .await;
        // The only connection waits in BLPOP (a dedicated one in both modes).
        let mut holder = RawClient::connect(poolside.client_addr).await;
        holder.send(&encode(&["BLPOP", "release", "0"])).await.expect("send");
        wait_until(WAIT, "BLPOP holds the only connection", || async {
            redis.blocked_clients().await == 1
        })
        .await;
        let before = get(poolside.admin_addr, "/metrics").await.metrics();

        let mut client = RawClient::connect(poolside.client_addr).await;
        let err = client.command(&["GET", "k"]).await.expect_error();
        assert!(err.contains("pool exhausted"), "{err}");

        let after = get(poolside.admin_addr, "/metrics").await.metrics();
        assert_eq!(
            errors(&after, "internal") - errors(&before, "internal"),
            1.0,
            "one internal error for one exhausted checkout ({mode:?})"
        );
        assert_eq!(errors(&after, "upstream"), errors(&before, "upstream"));
        assert_eq!(
            after.value("poolside_pool_exhausted_total")
                - before.value("poolside_pool_exhausted_total"),
            1.0
        );
        let mut direct = redis.direct_raw().await;
        direct.command(&["LPUSH", "release", "x"]).await;
        assert_eq!(holder.reply().await.expect_array().len(), 2);
        tokio::time::timeout(Duration::from_secs(5), poolside.shutdown())
            .await
            .expect("shutdown");
    }
}
