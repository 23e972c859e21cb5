//! Arbitrary client bytes through a real in-process poolside (the whole
//! session: scanner, router, policy, local answers, pub/sub pump) against a
//! real redis-server: no panic in any task, and poolside keeps serving.
//! One test in this file: the panic hook below is process-wide. It runs the
//! cases in each pool mode in turn.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{start_poolside, RedisServer};
use poolside::config::{PolicyConfig, PoolMode, Profile, Secret};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Pieces that make RESP-shaped input likely, so cases get past the scanner.
const TOKENS: &[&str] = &[
    "*",
    "$",
    "1",
    "2",
    "3",
    "0",
    "-1",
    "\r\n",
    "\n",
    " ",
    "GET",
    "SET",
    "k",
    "v",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "SELECT",
    "AUTH",
    "pw",
    "HELLO",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PING",
    "QUIT",
    "RESET",
    "CLIENT",
    "SETNAME",
    "FLUSHALL",
    "SCRIPT",
    "KILL",
    "KEYS",
    "BLPOP",
    "INCR",
    "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
    "*1\r\n$4\r\nPING\r\n",
    "\"",
    "'",
    "\x0b",
];

fn client_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..64).prop_map(|pieces| pieces.concat())
}

#[test]
fn arbitrary_client_bytes_never_panic_poolside() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Both pool modes, one after the other: one test, one panic hook.
    for mode in [PoolMode::Transaction, PoolMode::Multiplexed] {
        arbitrary_bytes_in_mode(&runtime, mode);
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

/// Runs the cases against a poolside in `mode`, then checks it still serves.
fn arbitrary_bytes_in_mode(runtime: &tokio::runtime::Runtime, mode: PoolMode) {
    let redis = runtime.block_on(RedisServer::start());
    let poolside = runtime.block_on(start_poolside(&redis, mode, |c| {
        c.client_users.insert("app".into(), Secret::new("pw"));
        c.client_password = Some(Secret::new("pw"));
        c.policy = PolicyConfig::for_profile(Profile::Production);
        c.policy.deny_commands.push("CLIENT PAUSE".into());
        c.limits.frame_timeout_ms = 200;
    }));
    let addr = poolside.client_addr;
    let mut runner = TestRunner::new(RunnerConfig::with_cases(96));
    runner
        .run(&client_bytes(), |bytes| {
            let closed = runtime.block_on(async {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                // Authenticate half the cases, so commands reach Redis too.
                if bytes.first().is_some_and(|b| b % 2 == 0) {
                    stream.write_all(b"AUTH pw\r\n").await.unwrap();
                }
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                // The client has closed: whatever it sent (a blocking
                // command, a subscription, a line Redis would read as no
                // command at all), poolside must answer and close promptly.
                let mut sink = vec![0u8; 64 * 1024];
                let read_all =
                    async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
                tokio::time::timeout(Duration::from_secs(3), read_all)
                    .await
                    .is_ok()
            });
            prop_assert!(
                closed,
                "poolside kept the session open after the client closed ({:?})",
                mode
            );
            prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "{:?}", mode);
            Ok(())
        })
        .unwrap();
    runtime.block_on(async {
        let mut client = RawClient::connect(addr).await;
        client.command(&["AUTH", "pw"]).await.expect_ok();
        assert_eq!(
            client.command(&["PING"]).await,
            Reply::Simple("PONG".into())
        );
        poolside.shutdown().await;
    });
}
