//! RESP3 and the per-client commands through poolside, byte for byte against
//! Redis itself where Redis defines the bytes: HELLO, protocol switches on
//! pooled connections, tracking invalidations as pushes, pub/sub with
//! ordinary commands on the same connection, CLIENT REPLY, AUTH without
//! client credentials. Every test runs in both pool modes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw::{encode, RawClient};
use common::{both_modes, start_poolside, RedisServer};
use poolside::config::PoolMode;

/// Sends each command and collects one reply (or push) per command, as bytes.
async fn run(client: &mut RawClient, commands: &[&[&str]]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for args in commands {
        client.send(&encode(args)).await.expect("send");
        frames.push(client.raw_reply().await);
    }
    frames
}

/// HELLO's `id` and CLIENT INFO fields that name a connection differ by
/// design (poolside gives the client's own id): mask them.
fn mask(frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame).into_owned();
    match text.find("$2\r\nid\r\n:") {
        Some(at) => {
            let start = at + "$2\r\nid\r\n:".len();
            let end = start + text[start..].find("\r\n").unwrap_or(0);
            format!("{}<id>{}", &text[..start], &text[end..])
        }
        None => text,
    }
}

fn masked(frames: &[Vec<u8>]) -> Vec<String> {
    frames.iter().map(|f| mask(f)).collect()
}

/// The same commands straight to Redis and through poolside.
async fn same_bytes(redis: &RedisServer, poolside: SocketAddr, commands: &[&[&str]]) {
    let direct = run(&mut RawClient::connect(redis.addr()).await, commands).await;
    let through = run(&mut RawClient::connect(poolside).await, commands).await;
    assert_eq!(masked(&through), masked(&direct), "for {commands:?}");
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hello_and_protocol_switches_give_redis_own_replies(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut setup = RawClient::connect(redis.addr()).await;
        run(&mut setup, &[&["HSET", "resp3:h", "f", "v"], &["SADD", "resp3:s", "m"]]).await;
        let commands: &[&[&str]] = &[
            &["HELLO"],
            &["HELLO", "3"],
            &["HGETALL", "resp3:h"],
            &["SMEMBERS", "resp3:s"],
            &["GET", "resp3:missing"],
            &["CLIENT", "GETNAME"],
            &["ZSCORE", "resp3:none", "m"],
            &["HELLO", "2", "SETNAME", "app"],
            &["HGETALL", "resp3:h"],
            &["CLIENT", "GETNAME"],
            &["HELLO", "4"],
            &["HELLO", "x"],
            &["HELLO", "3", "BOGUS"],
        ];
        same_bytes(&redis, poolside.client_addr, commands).await;

        // Pooled connections carry the protocol: clients of both protocols
        // interleaved each get their own.
        let mut resp3 = RawClient::connect(poolside.client_addr).await;
        let mut resp2 = RawClient::connect(poolside.client_addr).await;
        run(&mut resp3, &[&["HELLO", "3"]]).await;
        for _ in 0..20 {
            assert!(run(&mut resp3, &[&["HGETALL", "resp3:h"]]).await[0].starts_with(b"%1\r\n"));
            assert!(run(&mut resp2, &[&["HGETALL", "resp3:h"]]).await[0].starts_with(b"*2\r\n"));
        }
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resp3_tracking_pushes_invalidations_at_once(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut tracked = RawClient::connect(poolside.client_addr).await;
        // What a caching client sends on connect, in one pipeline.
        let mut hello_and_tracking = encode(&["HELLO", "3"]);
        hello_and_tracking.extend_from_slice(&encode(&["CLIENT", "TRACKING", "ON"]));
        tracked.send(&hello_and_tracking).await.expect("send");
        assert!(tracked.raw_reply().await.starts_with(b"%7\r\n"));
        assert_eq!(tracked.raw_reply().await, b"+OK\r\n");
        tracked.send(&encode(&["GET", "resp3:cached"])).await.expect("send");
        assert_eq!(tracked.raw_reply().await, b"_\r\n");

        let mut writer = RawClient::connect(poolside.client_addr).await;
        run(&mut writer, &[&["SET", "resp3:cached", "new"]]).await;
        // No request from the tracked client: the push must come by itself.
        let push = tracked.raw_reply().await;
        assert_eq!(
            push,
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$12\r\nresp3:cached\r\n".to_vec(),
            "{:?}",
            String::from_utf8_lossy(&push)
        );
        // Ordinary commands still work on the tracking connection.
        assert_eq!(run(&mut tracked, &[&["GET", "resp3:cached"]]).await[0], b"$3\r\nnew\r\n");
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resp2_tracking_redirects_to_a_connection_pinned_by_client_id(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let mut listener = RawClient::connect(poolside.client_addr).await;
        let id = run(&mut listener, &[&["CLIENT", "ID"]]).await.remove(0);
        let id = String::from_utf8_lossy(&id[1..id.len() - 2]).into_owned();
        run(&mut listener, &[&["SUBSCRIBE", "__redis__:invalidate"]]).await;

        let mut tracked = RawClient::connect(poolside.client_addr).await;
        let replies = run(
            &mut tracked,
            &[
                &["CLIENT", "TRACKING", "ON", "REDIRECT", &id],
                &["GET", "resp3:redirected"],
            ],
        )
        .await;
        assert_eq!(replies[0], b"+OK\r\n");
        let mut writer = RawClient::connect(poolside.client_addr).await;
        run(&mut writer, &[&["SET", "resp3:redirected", "x"]]).await;
        let message = listener.raw_reply().await;
        assert!(
            String::from_utf8_lossy(&message).contains("resp3:redirected"),
            "{:?}",
            String::from_utf8_lossy(&message)
        );
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resp3_pubsub_runs_commands_on_the_same_connection(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let commands: &[&[&str]] = &[
            &["HELLO", "3"],
            &["SUBSCRIBE", "resp3:ch"],
            &["SET", "resp3:k", "1"],
            &["GET", "resp3:k"],
            &["PING"],
            &["UNSUBSCRIBE"],
            &["GET", "resp3:k"],
            &["HELLO", "2"],
            &["SUBSCRIBE", "resp3:ch"],
            &["UNSUBSCRIBE", "resp3:ch"],
            &["GET", "resp3:k"],
        ];
        same_bytes(&redis, poolside.client_addr, commands).await;

        // A message published meanwhile arrives as a push between replies.
        let mut sub = RawClient::connect(poolside.client_addr).await;
        run(&mut sub, &[&["HELLO", "3"], &["SUBSCRIBE", "resp3:news"]]).await;
        let mut publisher = RawClient::connect(poolside.client_addr).await;
        run(&mut publisher, &[&["PUBLISH", "resp3:news", "hi"]]).await;
        assert_eq!(
            sub.raw_reply().await,
            b">3\r\n$7\r\nmessage\r\n$10\r\nresp3:news\r\n$2\r\nhi\r\n".to_vec()
        );
        assert_eq!(run(&mut sub, &[&["PING"]]).await[0], b"+PONG\r\n");
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_reply_off_and_skip_match_redis(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        // Silenced commands produce no frame: each line below expects one.
        let script = |addr| async move {
            let mut w = RawClient::connect(addr).await;
            for args in [
                &["CLIENT", "REPLY", "OFF"][..],
                &["SET", "resp3:quiet", "1"],
                &["INCR", "resp3:quiet"],
            ] {
                w.send(&encode(args)).await.expect("send");
            }
            let mut frames = run(&mut w, &[&["CLIENT", "REPLY", "ON"], &["GET", "resp3:quiet"]]).await;
            w.send(&encode(&["CLIENT", "REPLY", "SKIP"])).await.expect("send");
            w.send(&encode(&["INCR", "resp3:quiet"])).await.expect("send");
            frames.extend(run(&mut w, &[&["GET", "resp3:quiet"], &["CLIENT", "REPLY", "MAYBE"]]).await);
            assert!(
                w.try_raw_reply(Duration::from_millis(200)).await.is_err(),
                "nothing more"
            );
            frames
        };
        let direct = script(redis.addr()).await;
        let through = script(poolside.client_addr).await;
        assert_eq!(masked(&through), masked(&direct));
        poolside.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_without_client_credentials_answers_as_redis(mode: PoolMode) {
        let open = RedisServer::start().await;
        let poolside = start_poolside(&open, mode, |_| {}).await;
        let commands: &[&[&str]] = &[
            &["AUTH", "anything"],
            &["AUTH", "default", "anything"],
            &["AUTH", "nobody", "anything"],
            &["AUTH"],
            &["AUTH", "a", "b", "c"],
            &["PING"],
        ];
        same_bytes(&open, poolside.client_addr, commands).await;
        poolside.shutdown().await;

        // The application keeps its REDIS_PASSWORD behind poolside.
        let locked = RedisServer::start_with_password("s3cret").await;
        let poolside = start_poolside(&locked, mode, |c| {
            c.upstream.password = Some(poolside::config::Secret::new("s3cret"));
        })
        .await;
        let commands: &[&[&str]] = &[
            &["AUTH", "wrong"],
            &["AUTH", "s3cret"],
            &["AUTH", "default", "s3cret"],
            &["AUTH", "default", "wrong"],
            &["HELLO", "3", "AUTH", "default", "s3cret"],
            &["HELLO", "2", "AUTH", "default", "wrong"],
        ];
        same_bytes(&locked, poolside.client_addr, commands).await;
        poolside.shutdown().await;
    }
}
