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
