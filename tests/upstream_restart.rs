//! Redis goes away and comes back on the same port: clients get errors at
//! once while it is down (never a hang) and service resumes by itself.

mod common;

use std::time::{Duration, Instant};

use common::{both_modes, connect, ok, query, start_poolside, wait_for, wait_until, RedisServer};
use poolside::config::PoolMode;
use redis::aio::MultiplexedConnection;

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
