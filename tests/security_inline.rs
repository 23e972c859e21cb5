//! Inline commands (telnet-style lines) are split as Redis splits them
//! (`sdssplitargs`: quotes, escapes), and those arguments are what poolside
//! checks and forwards, re-encoded as RESP: Redis' own parser never sees the
//! line. Found by fuzzing, when poolside split at whitespace and forwarded
//! the line: a quoted `"FLUSHALL"` slipped past the deny-list, and a `\v`
//! line, which Redis reads as no command, left its client waiting forever
//! on a reply.

mod common;

use std::time::Duration;

use common::raw::{encode, RawClient, Read, Reply};
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
        for name in ["FLUSHALL", "FLUSHDB", "KEYS", "FLUSHALL"] {
            let err = client.reply().await.expect_error();
            assert_eq!(err, format!("ERR command '{name}' is disabled by poolside policy"));
        }
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
        // Nothing but a `\v`: no argument, no command, no reply (as Redis).
        client.send(b"\x0b\nPING\r\n").await.unwrap();
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

/// Inline lines whose splitting Redis defines (quotes, escapes, which
/// bytes separate arguments), each on a new connection and followed by a
/// `PING`: the replies through poolside are Redis' own, byte for byte, up to
/// the `PONG` or the close (an unbalanced quote is a protocol error).
const INLINE_LINES: &[&[u8]] = &[
    b"ECHO \"\\x41\\n\\t\\\\\\\"\"",
    b"ECHO 'it\\'s'",
    b"ECHO \"a b\" ",
    b"ECHO a\"b c\"",
    b"ECHO \"\"",
    b"ECHO x\x0by",
    b"\x0c ECHO \t z",
    b"\"ECHO\" \"\\x7a\"",
    b"ECHO \"a\"b",
    b"ECHO 'a",
    b"ECHO a b",
    b"\x0b",
    b"   ",
    b"SET inline-k 'v w'",
    b"GET \"inline-k\"",
];

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_lines_get_the_replies_redis_gives(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        for line in INLINE_LINES {
            let mut bytes = line.to_vec();
            bytes.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
            let direct = replies_until_pong(redis.direct_raw().await, &bytes).await;
            let client = RawClient::connect(poolside.client_addr).await;
            let through = replies_until_pong(client, &bytes).await;
            assert_eq!(through, direct, "line {}", line.escape_ascii());
        }
        poolside.shutdown().await;
    }
}

/// The replies to `bytes`, up to the `+PONG` or the close.
async fn replies_until_pong(mut client: RawClient, bytes: &[u8]) -> Vec<String> {
    client.send(bytes).await.unwrap();
    let mut replies = Vec::new();
    loop {
        match client.try_raw_reply(Duration::from_secs(5)).await {
            Ok(reply) if reply == b"+PONG\r\n" => return replies,
            Ok(reply) => replies.push(reply.escape_ascii().to_string()),
            Err(e) if e.starts_with("the connection closed") => {
                replies.push("closed".into());
                return replies;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Random inline lines over the bytes that matter to Redis' splitting
/// (quotes, backslashes, escape letters, hex digits, the separators and
/// `\v`, `\f`), as the values of an `RPUSH` read back with `LRANGE`: the
/// replies through poolside are Redis' own for every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_inline_lines_are_split_as_redis_splits_them() {
    const ALPHABET: &[u8] = b"ab \"'\\x41nt\t\x0b\x0c";
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Multiplexed, |_| {}).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: the same lines on every run.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize
    };
    let mut refused = 0;
    for i in 0..300 {
        let tail: Vec<u8> = (0..next() % 12)
            .map(|_| ALPHABET[next() % ALPHABET.len()])
            .collect();
        let mut replies = Vec::new();
        for (side, key) in [("direct", format!("d{i}")), ("poolside", format!("p{i}"))] {
            let mut bytes = format!("RPUSH {key} ").into_bytes();
            bytes.extend_from_slice(&tail);
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&encode(&["LRANGE", &key, "0", "-1"]));
            bytes.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            let client = match side {
                "direct" => redis.direct_raw().await,
                _ => RawClient::connect(poolside.client_addr).await,
            };
            replies.push(replies_until_pong(client, &bytes).await);
        }
        if replies[0].last().is_some_and(|r| r == "closed") {
            refused += 1;
        }
        assert_eq!(replies[1], replies[0], "values {}", tail.escape_ascii());
    }
    // Both kinds of line were met: split ones and refused ones.
    assert!(
        refused > 10 && refused < 290,
        "{refused} of 300 lines refused"
    );
    poolside.shutdown().await;
}
