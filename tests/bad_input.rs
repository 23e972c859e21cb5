//! Bad input from one client: malformed RESP, a frame over the size limit,
//! half a frame and then silence. That client gets `-ERR Protocol error`
//! (where there is something to answer) and is closed; nobody else notices.
//! Malformed input gets the very bytes Redis answers it with, after the
//! replies to the commands before it, and the close Redis makes.

mod common;

use std::time::{Duration, Instant};

use common::busy::Busy;
use common::raw::{encode, escape, RawClient, Read, Reply};
use common::{both_modes, connect, start_poolside, wait_until, RedisServer};
use poolside::app::Running;
use poolside::config::PoolMode;

/// The offender must be answered and closed within this.
const PROMPT: Duration = Duration::from_secs(3);

/// A raw client that has shown it works, so the bad bytes hit a live session.
async fn live_client(poolside: &Running) -> RawClient {
    let mut client = RawClient::connect(poolside.client_addr).await;
    assert_eq!(
        client.command(&["PING"]).await,
        Reply::Simple("PONG".into())
    );
    client
}

/// Reads `-ERR Protocol error...` and then the close.
async fn expect_protocol_error_and_close(client: &mut RawClient, what: &str) {
    match client.read_timeout(PROMPT).await {
        Some(Read::Reply(Reply::Error(e))) => {
            assert!(
                e.starts_with("ERR Protocol error"),
                "{what}: error was {e:?}"
            )
        }
        other => panic!("{what}: expected -ERR Protocol error, got {other:?}"),
    }
    expect_close(client, what).await;
}

async fn expect_close(client: &mut RawClient, what: &str) {
    match client.read_timeout(PROMPT).await {
        Some(Read::Closed) => {}
        other => panic!("{what}: expected the connection closed, got {other:?}"),
    }
}

/// A new client still gets in and is served; no connection stays checked out.
async fn expect_still_serving(poolside: &Running) {
    let mut client = live_client(poolside).await;
    client.command(&["SET", "after", "1"]).await.expect_ok();
    assert_eq!(client.command(&["GET", "after"]).await, Reply::bulk("1"));
    wait_until(PROMPT, "no connection is in use", || async {
        poolside.pool_snapshot().in_use == 0
    })
    .await;
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_frames_close_only_the_offender(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");

        let cases: [(&str, &[u8]); 5] = [
            ("array length not a number", b"*abc\r\n"),
            (
                "negative bulk length in an array",
                b"*2\r\n$3\r\nGET\r\n$-5\r\n",
            ),
            ("integer instead of a bulk string", b"*1\r\n:5\r\n"),
            ("nested array in a command", b"*1\r\n*1\r\n$4\r\nPING\r\n"),
            ("bulk length not a number", b"*1\r\n$x\r\n"),
        ];
        for (what, bytes) in cases {
            let mut offender = live_client(&poolside).await;
            offender.send(bytes).await.expect("send bad bytes");
            expect_protocol_error_and_close(&mut offender, what).await;
            busy.wait_rounds(5).await;
        }

        assert!(busy.finish().await >= 5);
        expect_still_serving(&poolside).await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_frame_closes_only_the_offender(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.limits.max_frame_bytes = 1024).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");

        // A frame well under the limit is served.
        let mut client = live_client(&poolside).await;
        let small = "s".repeat(500);
        client.command(&["SET", "small", &small]).await.expect_ok();
        assert_eq!(client.command(&["GET", "small"]).await, Reply::bulk(&small));

        // All of it is written before reading, so the reply is not lost to a reset.
        let mut offender = live_client(&poolside).await;
        let big = "b".repeat(4096);
        offender
            .send(&encode(&["SET", "big", &big]))
            .await
            .expect("send the oversized frame");
        expect_protocol_error_and_close(&mut offender, "4096-byte bulk over a 1024-byte limit")
            .await;

        busy.wait_rounds(5).await;
        assert_eq!(client.command(&["GET", "big"]).await, Reply::Bulk(None));
        assert!(busy.finish().await >= 5);
        expect_still_serving(&poolside).await;
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_half_frame_is_closed_after_the_frame_timeout(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.limits.frame_timeout_ms = 300).await;
        let busy = Busy::spawn(connect(poolside.client_addr).await, "busy");
        // Idle between complete frames is not a stall (there is no idle timeout by default).
        let mut idle = live_client(&poolside).await;

        let mut offender = live_client(&poolside).await;
        offender
            .send(b"*2\r\n$3\r\nGET\r\n$1\r\n")
            .await
            .expect("send half a frame");
        let sent = Instant::now();
        // An error reply is optional here; the close is not.
        match offender.read_timeout(PROMPT).await {
            Some(Read::Reply(Reply::Error(e))) => {
                assert!(e.starts_with("ERR"), "stalled client got {e:?}");
                expect_close(&mut offender, "stalled half frame").await;
            }
            Some(Read::Closed) => {}
            other => panic!("stalled half frame: expected a close, got {other:?}"),
        }
        let closed_after = sent.elapsed();
        assert!(
            closed_after >= Duration::from_millis(250),
            "closed after {closed_after:?}, before the 300 ms frame timeout"
        );

        busy.wait_rounds(5).await;
        assert_eq!(idle.command(&["PING"]).await, Reply::Simple("PONG".into()));
        assert!(busy.finish().await >= 5);
        expect_still_serving(&poolside).await;
        poolside.shutdown().await;
    }
}

/// How long Redis and poolside may take to answer bad input and close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// `prefix` padded with `fill` to `len` bytes.
fn padded(prefix: &[u8], fill: u8, len: usize) -> Vec<u8> {
    let mut bytes = prefix.to_vec();
    bytes.resize(len, fill);
    bytes
}

/// Inputs Redis 7 refuses with a protocol error (or, for the last ones,
/// reads in its own way), each ending in a close. Those 64 KiB + 1 bytes
/// long are exactly as long as needed: no byte is left unread at the close,
/// so no reset can lose the reply.
fn malformed_inputs() -> Vec<(&'static str, Vec<u8>)> {
    const BIG: usize = 64 * 1024 + 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("array length not a number", b"*x\r\n".to_vec()),
        ("array length empty", b"*\r\n".to_vec()),
        (
            "array length with a leading zero",
            b"*01\r\n$4\r\nPING\r\n".to_vec(),
        ),
        (
            "array length with a plus sign",
            b"*+1\r\n$4\r\nPING\r\n".to_vec(),
        ),
        ("array length -0", b"*-0\r\n".to_vec()),
        ("array length over INT_MAX", b"*2147483648\r\n".to_vec()),
        (
            "array length over i64",
            b"*99999999999999999999\r\n".to_vec(),
        ),
        ("bulk length not a number", b"*1\r\n$x\r\n".to_vec()),
        ("bulk length -1 in a command", b"*1\r\n$-1\r\n".to_vec()),
        (
            "negative bulk length in an array",
            b"*2\r\n$3\r\nGET\r\n$-5\r\n".to_vec(),
        ),
        (
            "bulk length with a leading zero",
            b"*1\r\n$04\r\nPING\r\n".to_vec(),
        ),
        ("bulk length over 512 MiB", b"*1\r\n$536870913\r\n".to_vec()),
        ("a word instead of a bulk string", b"*1\r\nfoo\r\n".to_vec()),
        ("integer instead of a bulk string", b"*1\r\n:5\r\n".to_vec()),
        (
            "nested array in a command",
            b"*1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
        ),
        (
            "a line feed instead of a bulk string",
            b"*1\r\n\n$4\r\n".to_vec(),
        ),
        (
            "an empty line instead of a bulk string",
            b"*1\r\n\r\n".to_vec(),
        ),
        ("a tab instead of a bulk string", b"*1\r\n\t\r\n".to_vec()),
        ("unclosed double quote inline", b"SET \"a b\r\n".to_vec()),
        ("unclosed single quote inline", b"SET 'a b\r\n".to_vec()),
        (
            "closing quote not followed by a space",
            b"SET 'a'b c\r\n".to_vec(),
        ),
        ("escaped closing quote", b"SET \"a\\\" b\r\n".to_vec()),
        ("inline line over 64 KiB", padded(b"", b'P', BIG)),
        ("array length line over 64 KiB", padded(b"*", b'1', BIG)),
        (
            "bulk length line over 64 KiB",
            padded(b"*1\r\n$", b'1', 4 + BIG),
        ),
        (
            "a NUL hiding a bulk length's end, then 64 KiB",
            padded(b"*1\r\n$4\x00\r\n", b'x', 4 + BIG),
        ),
        (
            "a NUL hiding an inline line's end, then 64 KiB",
            padded(b"PI\x00NG\r\n", b'x', BIG),
        ),
        // Commands before the malformed one are answered first.
        (
            "a PING, then a bad array length",
            b"PING\r\n*x\r\n".to_vec(),
        ),
        (
            "two inline commands, then unbalanced quotes",
            b"ECHO hi\r\nPING\r\nSET \"a\r\n".to_vec(),
        ),
        (
            "a PING, an unknown command, then a bad bulk",
            b"*1\r\n$4\r\nPING\r\n*1\r\n$11\r\nNO-SUCH-CMD\r\n*1\r\nx\r\n".to_vec(),
        ),
        // Read by Redis in its own way, then QUIT: poolside must agree.
        (
            "a length line ended by \\r and any byte",
            b"*1\rx$4\r\nPING\r\nQUIT\r\n".to_vec(),
        ),
        (
            "a bulk ended by any two bytes",
            b"*1\r\n$4\r\nPINGxxQUIT\r\n".to_vec(),
        ),
        (
            "empty and negative arrays, then PING",
            b"*0\r\n*-5\r\nPING\r\nQUIT\r\n".to_vec(),
        ),
    ];
    cases
}

/// Sends `bytes` on a new connection to `addr`: what came back, and whether
/// the connection was closed within [`CLOSE_WAIT`].
async fn answer_to(addr: std::net::SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut client = RawClient::connect(addr).await;
    client.send(bytes).await.expect("send the input");
    client.read_to_close(CLOSE_WAIT).await
}

both_modes! {
    /// Redis' own error reply, byte for byte, and its close, for each
    /// malformed input; the replies to the commands before it, too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_input_is_answered_as_redis_answers_it(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        for (what, bytes) in malformed_inputs() {
            let (want, redis_closed) = answer_to(redis.addr(), &bytes).await;
            assert!(redis_closed, "{what}: Redis did not close; it sent {}", escape(&want));
            let (got, closed) = answer_to(poolside.client_addr, &bytes).await;
            assert!(
                got == want,
                "{what}: input {}\n  redis:    {}\n  poolside: {}",
                escape(&bytes[..bytes.len().min(64)]),
                escape(&want),
                escape(&got),
            );
            assert!(closed, "{what}: poolside did not close after {}", escape(&got));
        }
        expect_still_serving(&poolside).await;
        poolside.shutdown().await;
    }
}

both_modes! {
    /// Where the error names a byte over 0x7f, Redis writes that byte raw,
    /// and so does poolside.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_non_ascii_byte_in_the_error_is_written_raw(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |_| {}).await;
        let bytes = b"*1\r\n\xff\r\n";
        let (want, redis_closed) = answer_to(redis.addr(), bytes).await;
        assert_eq!(escape(&want), escape(b"-ERR Protocol error: expected '$', got '\xff'\r\n"));
        assert!(redis_closed);
        let (got, closed) = answer_to(poolside.client_addr, bytes).await;
        assert_eq!(escape(&got), escape(&want));
        assert!(closed);
        poolside.shutdown().await;
    }
}

both_modes! {
    /// Poolside's own limits, which Redis does not have, are named in
    /// poolside's words: Redis takes a million and one arguments (it then
    /// wants the first `$`), and a 100 MB bulk string.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poolside_limits_have_their_own_message(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| c.limits.max_frame_bytes = 1024).await;

        let bytes = b"*1048577\r\nPING\r\n";
        let (want, _) = answer_to(redis.addr(), bytes).await;
        assert_eq!(escape(&want), escape(b"-ERR Protocol error: expected '$', got 'P'\r\n"));
        let (got, closed) = answer_to(poolside.client_addr, bytes).await;
        let limit = b"-ERR Protocol error: too many arguments in a command \
                      (poolside accepts at most 1048576)\r\n";
        assert_eq!(escape(&got), escape(limit));
        assert!(closed);

        let (got, closed) = answer_to(poolside.client_addr, b"*1\r\n$100000000\r\n").await;
        let limit = b"-ERR Protocol error: frame exceeds limits.max_frame_bytes\r\n";
        assert_eq!(escape(&got), escape(limit));
        assert!(closed);
        expect_still_serving(&poolside).await;
        poolside.shutdown().await;
    }
}
