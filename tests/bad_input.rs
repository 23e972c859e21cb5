//! Bad input from one client: malformed RESP, a frame over the size limit,
//! half a frame and then silence. That client gets `-ERR Protocol error`
//! (where there is something to answer) and is closed; nobody else notices.

mod common;

use std::time::{Duration, Instant};

use common::busy::Busy;
use common::raw::{encode, RawClient, Read, Reply};
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
