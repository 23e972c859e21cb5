//! Command families through poolside with a real client: plain commands,
//! pipelines, transactions, WATCH, SELECT, client names, AUTH, QUIT, HELLO.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::raw::{encode, RawClient, Read, Reply};
use common::{both_modes, connect, ok, query, start_poolside, wait_until, RedisServer};
use poolside::config::{PoolMode, Secret};
use redis::Value;

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_commands_pass_through(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut con = connect(poolside.client_addr).await;

        ok::<()>(&mut con, &["SET", "k", "v"]).await;
        assert_eq!(ok::<String>(&mut con, &["GET", "k"]).await, "v");
        assert_eq!(
            ok::<Option<String>>(&mut con, &["GET", "missing"]).await,
            None
        );
        assert_eq!(ok::<i64>(&mut con, &["INCR", "n"]).await, 1);
        assert_eq!(ok::<i64>(&mut con, &["INCR", "n"]).await, 2);
        assert_eq!(ok::<i64>(&mut con, &["LPUSH", "l", "a", "b", "c"]).await, 3);
        let list: Vec<String> = ok(&mut con, &["LRANGE", "l", "0", "-1"]).await;
        assert_eq!(list, ["c", "b", "a"]);
        assert_eq!(
            ok::<i64>(&mut con, &["HSET", "h", "f1", "v1", "f2", "v2"]).await,
            2
        );
        let hash: HashMap<String, String> = ok(&mut con, &["HGETALL", "h"]).await;
        let want: HashMap<String, String> = [("f1", "v1"), ("f2", "v2")]
            .into_iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        assert_eq!(hash, want);

        // Redis's own error replies reach the client as they are.
        let err = query::<i64>(&mut con, &["INCR", "k"]).await.unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");

        let mut direct = redis.direct().await;
        assert_eq!(ok::<String>(&mut direct, &["GET", "k"]).await, "v");
        assert_eq!(ok::<i64>(&mut direct, &["GET", "n"]).await, 2);
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelines_of_1_10_and_1000_commands(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut con = connect(poolside.client_addr).await;

        for n in [1usize, 10, 1000] {
            let mut pipe = redis::pipe();
            let mut want = Vec::with_capacity(n);
            for i in 0..n {
                match i % 3 {
                    0 => {
                        pipe.cmd("SET")
                            .arg(format!("p{n}:{i}"))
                            .arg(format!("v{i}"));
                        want.push(Value::Okay);
                    }
                    1 => {
                        pipe.cmd("GET").arg(format!("p{n}:{}", i - 1));
                        want.push(Value::BulkString(format!("v{}", i - 1).into_bytes()));
                    }
                    _ => {
                        pipe.cmd("INCR").arg(format!("ctr{n}"));
                        want.push(Value::Int((i / 3 + 1) as i64));
                    }
                }
            }
            let got: Vec<Value> = pipe
                .query_async(&mut con)
                .await
                .unwrap_or_else(|e| panic!("pipeline of {n}: {e}"));
            assert_eq!(got.len(), n, "pipeline of {n}: reply count");
            for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(got, want, "pipeline of {n}: reply {i}");
            }
        }
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_exec_and_discard(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 2).await;
        let mut a = connect(poolside.client_addr).await;
        let mut b = connect(poolside.client_addr).await;

        let (n, v): (i64, String) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("t")
            .arg("1")
            .ignore()
            .cmd("INCR")
            .arg("t")
            .cmd("GET")
            .arg("t")
            .query_async(&mut a)
            .await
            .expect("atomic pipeline");
        assert_eq!((n, v.as_str()), (2, "2"));

        // Queued commands stay invisible to other clients until EXEC.
        ok::<()>(&mut a, &["MULTI"]).await;
        assert_eq!(ok::<String>(&mut a, &["SET", "x", "1"]).await, "QUEUED");
        assert_eq!(ok::<Option<String>>(&mut b, &["GET", "x"]).await, None);
        assert_eq!(ok::<Vec<Value>>(&mut a, &["EXEC"]).await, [Value::Okay]);
        assert_eq!(ok::<String>(&mut b, &["GET", "x"]).await, "1");

        ok::<()>(&mut a, &["MULTI"]).await;
        assert_eq!(ok::<String>(&mut a, &["SET", "x", "2"]).await, "QUEUED");
        assert_eq!(ok::<String>(&mut a, &["INCR", "y"]).await, "QUEUED");
        ok::<()>(&mut a, &["DISCARD"]).await;
        assert_eq!(ok::<String>(&mut a, &["GET", "x"]).await, "1");
        assert_eq!(ok::<Option<String>>(&mut b, &["GET", "y"]).await, None);

        // The transaction's pin ends with EXEC/DISCARD.
        wait_until(
            Duration::from_secs(5),
            "no connection is in use",
            || async { poolside.pool_snapshot().in_use == 0 },
        )
        .await;
        poolside.shutdown().await;
    }
}

/// The same WATCH/MULTI/EXEC sequence on two connections, reply by reply.
async fn watch_sequence(addr: std::net::SocketAddr) -> Vec<Reply> {
    let mut a = RawClient::connect(addr).await;
    let mut b = RawClient::connect(addr).await;
    let mut out = Vec::new();
    // A conflicting write by another client aborts the transaction.
    out.push(a.command(&["SET", "w", "0"]).await);
    out.push(a.command(&["WATCH", "w"]).await);
    out.push(b.command(&["SET", "w", "b"]).await);
    out.push(a.command(&["MULTI"]).await);
    out.push(a.command(&["SET", "w", "a"]).await);
    out.push(a.command(&["EXEC"]).await);
    out.push(b.command(&["GET", "w"]).await);
    // A read by another client does not.
    out.push(a.command(&["WATCH", "w"]).await);
    out.push(b.command(&["GET", "w"]).await);
    out.push(a.command(&["MULTI"]).await);
    out.push(a.command(&["SET", "w", "a"]).await);
    out.push(a.command(&["INCR", "wc"]).await);
    out.push(a.command(&["EXEC"]).await);
    out.push(b.command(&["GET", "w"]).await);
    // UNWATCH forgets the watch.
    out.push(a.command(&["WATCH", "w"]).await);
    out.push(b.command(&["SET", "w", "c"]).await);
    out.push(a.command(&["UNWATCH"]).await);
    out.push(a.command(&["MULTI"]).await);
    out.push(a.command(&["SET", "w", "a2"]).await);
    out.push(a.command(&["EXEC"]).await);
    // Misuse is answered as Redis answers it.
    out.push(a.command(&["EXEC"]).await);
    out.push(a.command(&["MULTI"]).await);
    out.push(a.command(&["WATCH", "w"]).await);
    out.push(a.command(&["DISCARD"]).await);
    out.push(b.command(&["GET", "w"]).await);
    out
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_conflict_matches_direct_redis(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 2).await;

        let via_proxy = watch_sequence(poolside.client_addr).await;
        assert_eq!(
            via_proxy[5],
            Reply::Array(None),
            "EXEC after a conflict is nil"
        );
        assert_eq!(
            via_proxy[12].expect_array().len(),
            2,
            "EXEC without conflict"
        );

        let other = RedisServer::start().await;
        let direct = watch_sequence(other.addr()).await;
        for (i, (p, d)) in via_proxy.iter().zip(&direct).enumerate() {
            assert_eq!(p, d, "reply {i} differs from direct Redis");
        }
        assert_eq!(via_proxy.len(), direct.len());
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_transaction_is_not_reused(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 1).await;

        let mut a = RawClient::connect(poolside.client_addr).await;
        a.command(&["MULTI"]).await.expect_ok();
        assert_eq!(
            a.command(&["SET", "dirty", "1"]).await,
            Reply::Simple("QUEUED".into())
        );
        drop(a);

        // With one connection, b gets the one a left: it must be clean (not in MULTI).
        let mut b = RawClient::connect(poolside.client_addr).await;
        b.command(&["SET", "clean", "1"]).await.expect_ok();
        assert_eq!(b.command(&["GET", "dirty"]).await, Reply::Bulk(None));
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn select_is_per_client_on_shared_connections(mode: PoolMode) {
        const ROUNDS: usize = 200;
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 2).await;

        let mut tasks = Vec::new();
        for db in ["1", "0", "2"] {
            let mut con = connect(poolside.client_addr).await;
            tasks.push(tokio::spawn(async move {
                if db != "0" {
                    ok::<()>(&mut con, &["SELECT", db]).await;
                }
                for i in 0..ROUNDS {
                    let value = format!("db{db}-{i}");
                    ok::<()>(&mut con, &["SET", "k", &value]).await;
                    assert_eq!(ok::<String>(&mut con, &["GET", "k"]).await, value);
                    let (got,): (String,) = redis::pipe()
                        .cmd("SET")
                        .arg("k2")
                        .arg(&value)
                        .ignore()
                        .cmd("GET")
                        .arg("k")
                        .query_async(&mut con)
                        .await
                        .expect("pipeline");
                    assert_eq!(got, value, "db {db} round {i}");
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }

        let mut direct = redis.direct().await;
        for db in ["0", "1", "2"] {
            ok::<()>(&mut direct, &["SELECT", db]).await;
            let want = format!("db{db}-{}", ROUNDS - 1);
            assert_eq!(ok::<String>(&mut direct, &["GET", "k"]).await, want);
            assert_eq!(ok::<String>(&mut direct, &["GET", "k2"]).await, want);
        }
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_name_is_per_client(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 1).await;
        let mut a = connect(poolside.client_addr).await;
        let mut b = connect(poolside.client_addr).await;
        let mut c = connect(poolside.client_addr).await;

        ok::<()>(&mut a, &["CLIENT", "SETNAME", "alpha"]).await;
        ok::<()>(&mut b, &["CLIENT", "SETNAME", "beta"]).await;
        for _ in 0..20 {
            let name = ok::<Option<String>>(&mut a, &["CLIENT", "GETNAME"]).await;
            assert_eq!(name.as_deref(), Some("alpha"));
            ok::<()>(&mut c, &["SET", "k", "v"]).await;
            let name = ok::<Option<String>>(&mut b, &["CLIENT", "GETNAME"]).await;
            assert_eq!(name.as_deref(), Some("beta"));
            assert_eq!(
                ok::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]).await,
                None
            );
        }
        poolside.shutdown().await;
    }
}

both_modes! {
    /// Client libraries (redis-rs, redis-py, go-redis) send CLIENT SETINFO on
    /// every connect: it must not tie the client to an upstream connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_setinfo_does_not_hold_a_connection(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.pool.max_connections = 1).await;
        let mut a = RawClient::connect(poolside.client_addr).await;
        // Redis before 7.2 answers an error, later ones +OK: either will do.
        a.command(&["CLIENT", "SETINFO", "LIB-NAME", "tests"]).await;
        a.command(&["CLIENT", "SETINFO", "LIB-VER", "1.0"]).await;
        wait_until(
            Duration::from_secs(5),
            "CLIENT SETINFO's connection is checked in",
            || async { poolside.pool_snapshot().in_use == 0 },
        )
        .await;
        let mut b = RawClient::connect(poolside.client_addr).await;
        b.command(&["SET", "k", "v"]).await.expect_ok();
        assert_eq!(a.command(&["GET", "k"]).await, Reply::bulk("v"));
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_without_client_password_answers_as_the_upstream_would(mode: PoolMode) {
        // No client password and a Redis without one: AUTH gets what Redis
        // answers (tests/resp3.rs compares the bytes), and commands work.
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut raw = RawClient::connect(poolside.client_addr).await;
        let err = raw.command(&["AUTH", "anything"]).await.expect_error();
        assert!(err.contains("without any password configured"), "{err}");
        raw.command(&["AUTH", "default", "anything"]).await.expect_ok();
        let err = raw.command(&["AUTH", "someone", "anything"]).await.expect_error();
        assert!(err.starts_with("WRONGPASS"), "{err}");
        let mut con = connect(poolside.client_addr).await;
        ok::<()>(&mut con, &["SET", "k", "v"]).await;
        assert_eq!(ok::<String>(&mut con, &["GET", "k"]).await, "v");
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_password_is_required_when_configured(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.client_password = Some(Secret::new("s3cret"));
        })
        .await;

        let mut raw = RawClient::connect(poolside.client_addr).await;
        raw.command(&["GET", "k"]).await.expect_error();
        raw.command(&["AUTH", "wrong"]).await.expect_error();
        raw.command(&["GET", "k"]).await.expect_error();
        raw.command(&["AUTH", "s3cret"]).await.expect_ok();
        assert_eq!(raw.command(&["GET", "k"]).await, Reply::Bulk(None));

        let mut con = common::connect_with_password(poolside.client_addr, "s3cret")
            .await
            .expect("connect with the client password");
        ok::<()>(&mut con, &["SET", "k", "v"]).await;
        assert_eq!(ok::<String>(&mut con, &["GET", "k"]).await, "v");
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_password_is_poolside_own(mode: PoolMode) {
        let redis = RedisServer::start_with_password("upstream-pw").await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.upstream.password = Some(Secret::new("upstream-pw"));
        })
        .await;
        let mut con = connect(poolside.client_addr).await;
        ok::<()>(&mut con, &["SET", "k", "v"]).await;
        assert_eq!(ok::<String>(&mut con, &["GET", "k"]).await, "v");
        let mut direct = redis.direct().await;
        assert_eq!(ok::<String>(&mut direct, &["GET", "k"]).await, "v");
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quit_closes_the_client(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut raw = RawClient::connect(poolside.client_addr).await;
        raw.command(&["SET", "k", "v"]).await.expect_ok();
        raw.command(&["QUIT"]).await.expect_ok();
        match raw.read_timeout(Duration::from_secs(3)).await {
            Some(Read::Closed) => {}
            other => panic!("expected the connection closed after QUIT, got {other:?}"),
        }
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hello_refuses_only_what_redis_refuses(mode: PoolMode) {
        // HELLO 3 itself (a RESP3 map) is tested byte for byte in tests/resp3.rs.
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut raw = RawClient::connect(poolside.client_addr).await;

        let err = raw.command(&["HELLO", "4"]).await.expect_error();
        assert!(err.starts_with("NOPROTO"), "HELLO 4: {err}");
        assert_eq!(raw.command(&["PING"]).await, Reply::Simple("PONG".into()));

        for hello in [&["HELLO"][..], &["HELLO", "2"][..]] {
            let fields = raw.command(hello).await.expect_array();
            let proto = fields
                .iter()
                .position(|f| f == &Reply::bulk("proto"))
                .unwrap_or_else(|| panic!("{hello:?} reply has no proto: {fields:?}"));
            assert_eq!(fields.get(proto + 1), Some(&Reply::Int(2)), "{hello:?}");
        }
        raw.command(&["SET", "k", "v"]).await.expect_ok();
        assert_eq!(raw.command(&["GET", "k"]).await, Reply::bulk("v"));
        poolside.shutdown().await;
    }
}

both_modes! {
    /// Redis queues CLIENT SETNAME, AUTH and the like inside MULTI and runs
    /// them at EXEC; poolside answers them itself, so it refuses them there
    /// as Redis refuses a command it will not queue: the transaction is
    /// discarded at EXEC, and nothing in it ran (RESET still runs at once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_answered_by_poolside_abort_a_transaction(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        let queued = Reply::Simple("QUEUED".into());
        client.command(&["MULTI"]).await.expect_ok();
        assert_eq!(client.command(&["SET", "k", "1"]).await, queued);
        for args in [&["CLIENT", "SETNAME", "app"][..], &["CLIENT", "REPLY", "OFF"]] {
            let refused = client.command(args).await.expect_error();
            assert!(
                refused.starts_with("ERR Command not allowed inside a transaction"),
                "{args:?}: {refused}"
            );
        }
        assert_eq!(client.command(&["INCR", "n"]).await, queued);
        let exec = client.command(&["EXEC"]).await.expect_error();
        assert!(exec.starts_with("EXECABORT"), "{exec}");
        assert_eq!(client.command(&["GET", "k"]).await, Reply::Bulk(None));
        assert_eq!(client.command(&["GET", "n"]).await, Reply::Bulk(None));
        assert_eq!(
            client.command(&["CLIENT", "GETNAME"]).await,
            Reply::Bulk(None),
            "the refused SETNAME never ran"
        );
        // RESET inside MULTI runs at once and ends the transaction.
        client.command(&["MULTI"]).await.expect_ok();
        assert_eq!(client.command(&["SET", "k", "2"]).await, queued);
        assert_eq!(
            client.command(&["RESET"]).await,
            Reply::Simple("RESET".into())
        );
        let exec = client.command(&["EXEC"]).await.expect_error();
        assert!(exec.contains("EXEC without MULTI"), "{exec}");
        assert_eq!(client.command(&["GET", "k"]).await, Reply::Bulk(None));
        poolside.shutdown().await;
    }
}

both_modes! {
    /// A client whose replies are off still gets its subscription's pushes
    /// (Redis sends those whatever the reply mode) and nothing else: not a
    /// PING's reply while subscribed. Back to request/reply, replies stay
    /// off until CLIENT REPLY ON.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscriber_with_replies_off_gets_only_its_pushes(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        let mut publisher = RawClient::connect(poolside.client_addr).await;
        let push = |kind: &str, second: &str, third: Reply| {
            Reply::Array(Some(vec![Reply::bulk(kind), Reply::bulk(second), third]))
        };
        client.send(&encode(&["CLIENT", "REPLY", "OFF"])).await.unwrap();
        client.send(&encode(&["SUBSCRIBE", "news"])).await.unwrap();
        assert_eq!(client.reply().await, push("subscribe", "news", Reply::Int(1)));
        assert_eq!(publisher.command(&["PUBLISH", "news", "m"]).await, Reply::Int(1));
        assert_eq!(client.reply().await, push("message", "news", Reply::bulk("m")));
        client.send(&encode(&["PING"])).await.unwrap();
        client.send(&encode(&["UNSUBSCRIBE"])).await.unwrap();
        assert_eq!(
            client.reply().await,
            push("unsubscribe", "news", Reply::Int(0)),
            "the PING's reply is silenced, as Redis silences it"
        );
        client.send(&encode(&["GET", "k"])).await.unwrap();
        client.command(&["CLIENT", "REPLY", "ON"]).await.expect_ok();
        assert_eq!(
            client.command(&["PING"]).await,
            Reply::Simple("PONG".into())
        );
        poolside.shutdown().await;
    }
}
