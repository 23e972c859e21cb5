//! Redis dies while many clients have batches in flight: every in-flight
//! request gets an error or its own correct reply, never another client's
//! reply, and nobody hangs. Runs in both pool modes (`both_modes!`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::raw::{encode, RawClient, Read, Reply};
use common::{both_modes, start_poolside, wait_until, RedisServer};
use poolside::config::PoolMode;

const CLIENTS: usize = 100;
const PIPELINE: usize = 8;

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_requests_get_errors_not_foreign_replies(mode: PoolMode) {
        let mut redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.pool.max_connections = 10;
            c.pool.checkout_timeout_ms = 1_000;
        })
        .await;
        let addr = poolside.client_addr;
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for id in 0..CLIENTS {
            let (stop, rounds, errors) = (stop.clone(), rounds.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = RawClient::connect(addr).await;
                let key = format!("owner:{id}");
                let mut round = 0usize;
                while !stop.load(Ordering::Acquire) {
                    round += 1;
                    let value = format!("{id}:{round}");
                    let mut batch = encode(&["SET", &key, &value]);
                    for _ in 1..PIPELINE {
                        batch.extend_from_slice(&encode(&["GET", &key]));
                    }
                    if client.send(&batch).await.is_err() {
                        return;
                    }
                    for i in 0..PIPELINE {
                        let reply = tokio::time::timeout(Duration::from_secs(5), client.read())
                            .await
                            .unwrap_or_else(|_| panic!("client {id} hung waiting for a reply"));
                        match reply {
                            Ok(Read::Reply(Reply::Error(_))) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Read::Reply(Reply::Simple(s))) if i == 0 => assert_eq!(s, "OK"),
                            Ok(Read::Reply(Reply::Bulk(Some(v)))) if i > 0 => {
                                assert_eq!(
                                    String::from_utf8_lossy(&v),
                                    value,
                                    "client {id} got a foreign reply"
                                );
                            }
                            Ok(Read::Reply(other)) => {
                                panic!("client {id} reply {i}: unexpected {other:?}")
                            }
                            Ok(Read::Closed) | Err(_) => return,
                        }
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        wait_until(Duration::from_secs(10), "clients are busy", || {
            let r = rounds.load(Ordering::Relaxed);
            async move { r > CLIENTS * 3 }
        })
        .await;
        redis.stop();
        wait_until(Duration::from_secs(10), "clients see errors", || {
            let e = errors.load(Ordering::Relaxed);
            async move { e > CLIENTS }
        })
        .await;
        stop.store(true, Ordering::Release);
        for t in tasks {
            t.await.expect("no client saw a foreign reply or hung");
        }
        poolside.shutdown().await;
    }
}

/// A relay in front of Redis that cuts every connection as soon as Redis'
/// bytes contain `marker`, forwarding only what came before it: a reply cut
/// mid-value, as a connection lost at the wrong moment does.
async fn cutting_relay(redis: std::net::SocketAddr, marker: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(redis).await else {
                    return;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                });
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = server_rx.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    let from = seen.len();
                    seen.extend_from_slice(&chunk[..n]);
                    if let Some(at) = seen.windows(marker.len()).position(|w| w == marker) {
                        let _ = client_tx.write_all(&seen[from..at.max(from)]).await;
                        break;
                    }
                    if client_tx.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    addr
}

both_modes! {
    /// A small reply cut by a lost connection, with nothing of it sent to
    /// the client yet: the client gets a framed error for it, not the
    /// value's first bytes with an error glued on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_cut_before_the_client_saw_it_is_answered_with_a_framed_error(mode: PoolMode) {
        let redis = RedisServer::start().await;
        redis
            .direct_raw()
            .await
            .command(&["SET", "cut:k", "abcCUTdefghij"])
            .await
            .expect_ok();
        let relay = cutting_relay(redis.addr(), b"CUT").await;
        let config = poolside::config::Config::for_tests(&format!("redis://{relay}"));
        let config = poolside::config::Config {
            pool: poolside::config::PoolConfig { mode, ..config.pool.clone() },
            ..config
        };
        let poolside = poolside::app::start(config).await.expect("poolside starts");
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.send(&encode(&["GET", "cut:k"])).await.unwrap();
        let reply = client.try_raw_reply(Duration::from_secs(10)).await.expect("a reply");
        assert!(
            reply.starts_with(b"-ERR poolside: upstream connection lost"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        poolside.shutdown().await;
    }
}
