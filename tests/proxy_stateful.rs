//! Commands that hold their upstream connection: pub/sub, BLPOP, XREAD BLOCK.
//! Each runs while other clients keep working through the same pool.

mod common;

use std::time::Duration;

use common::busy::Busy;
use common::raw::{RawClient, Reply};
use common::{both_modes, connect, ok, start_poolside, wait_until, RedisServer};
use poolside::config::PoolMode;
use redis::Value;

const WAIT: Duration = Duration::from_secs(10);

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pubsub_delivers_while_others_run_commands(mode: PoolMode) {
        const MESSAGES: usize = 50;
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 3).await;

        let mut subscriber = RawClient::connect(poolside.client_addr).await;
        let confirm = subscriber.command(&["SUBSCRIBE", "chan"]).await;
        assert_eq!(
            confirm,
            Reply::Array(Some(vec![
                Reply::bulk("subscribe"),
                Reply::bulk("chan"),
                Reply::Int(1)
            ]))
        );
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        let mut publisher = connect(poolside.client_addr).await;

        for i in 0..MESSAGES {
            let receivers: i64 = ok(&mut publisher, &["PUBLISH", "chan", &format!("m{i}")]).await;
            assert_eq!(
                receivers, 1,
                "message {i} reached the subscriber's connection"
            );
            if i == MESSAGES / 2 {
                busy.wait_rounds(5).await;
            }
        }
        for i in 0..MESSAGES {
            let message = subscriber.reply().await;
            let payload = format!("m{i}");
            let want = vec![
                Reply::bulk("message"),
                Reply::bulk("chan"),
                Reply::bulk(&payload),
            ];
            assert_eq!(message, Reply::Array(Some(want)), "message {i}");
        }

        // The last UNSUBSCRIBE ends the pin; the client is an ordinary client again.
        let done = subscriber.command(&["UNSUBSCRIBE", "chan"]).await;
        assert_eq!(done.expect_array()[2], Reply::Int(0));
        assert_eq!(
            subscriber.command(&["PING"]).await,
            Reply::Simple("PONG".into())
        );
        subscriber.command(&["SET", "after", "1"]).await.expect_ok();
        assert_eq!(
            subscriber.command(&["GET", "after"]).await,
            Reply::bulk("1")
        );

        assert!(busy.finish().await > 0);
        drop(publisher);
        wait_until(
            WAIT,
            "the subscriber's connection is checked in after its last UNSUBSCRIBE",
            || async { poolside.pool_snapshot().in_use == 0 },
        )
        .await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blpop_waits_while_others_work(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 3).await;

        let mut blocked = connect(poolside.client_addr).await;
        let blpop = tokio::spawn(async move {
            ok::<(String, String)>(&mut blocked, &["BLPOP", "queue", "0"]).await
        });
        wait_until(WAIT, "Redis sees one blocked client", || async {
            redis.blocked_clients().await == 1
        })
        .await;

        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        busy.wait_rounds(50).await;
        assert!(!blpop.is_finished(), "BLPOP returned with nothing pushed");
        assert!(
            poolside.pool_snapshot().in_use >= 1,
            "a blocked BLPOP counts as in use"
        );

        let mut pusher = connect(poolside.client_addr).await;
        assert_eq!(ok::<i64>(&mut pusher, &["LPUSH", "queue", "job"]).await, 1);
        let popped = tokio::time::timeout(WAIT, blpop)
            .await
            .expect("BLPOP returns after the push")
            .expect("BLPOP task");
        assert_eq!(popped, ("queue".to_string(), "job".to_string()));

        assert!(busy.finish().await >= 50);
        wait_until(WAIT, "no connection is in use", || async {
            poolside.pool_snapshot().in_use == 0
        })
        .await;
        poolside.shutdown().await;
    }
}

/// Flattens a reply into its strings and integers, for loose matching.
fn flatten(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => out.push(s.clone()),
        Value::Int(i) => out.push(i.to_string()),
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn xread_block_waits_while_others_work(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 3).await;

        let mut reader = connect(poolside.client_addr).await;
        let xread = tokio::spawn(async move {
            ok::<Value>(
                &mut reader,
                &["XREAD", "BLOCK", "0", "STREAMS", "stream", "$"],
            )
            .await
        });
        wait_until(WAIT, "Redis sees one blocked client", || async {
            redis.blocked_clients().await == 1
        })
        .await;

        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        busy.wait_rounds(50).await;
        assert!(
            !xread.is_finished(),
            "XREAD BLOCK returned with nothing added"
        );

        let mut writer = connect(poolside.client_addr).await;
        let id: String = ok(&mut writer, &["XADD", "stream", "*", "field", "value"]).await;
        let reply = tokio::time::timeout(WAIT, xread)
            .await
            .expect("XREAD returns after XADD")
            .expect("XREAD task");
        let mut parts = Vec::new();
        flatten(&reply, &mut parts);
        assert_eq!(
            parts,
            ["stream", id.as_str(), "field", "value"],
            "{reply:?}"
        );

        assert!(busy.finish().await >= 50);
        poolside.shutdown().await;
    }
}
