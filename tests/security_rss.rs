//! poolside's memory stays bounded against clients that do not read: its
//! RSS (this process's, read from /proc/self/status; poolside runs
//! in-process) is measured while a subscriber ignores 64 MiB of messages and
//! while a client pipelines without ever reading a reply. One test in this
//! file, so no other test's memory is counted.

mod common;

use std::time::{Duration, Instant};

use common::raw::{encode, RawClient, Reply};
use common::{rss_kib, start_poolside, RedisServer};
use poolside::config::PoolMode;
use tokio::io::AsyncWriteExt;

/// Allowed RSS growth. Unbounded buffering would show the 64 MiB sent.
const BOUND_KIB: u64 = 24 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_bounded_with_clients_that_do_not_read() {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.limits.max_output_bytes = 1 << 20
    })
    .await;
    let mut warm = RawClient::connect(poolside.client_addr).await;
    warm.command(&["SET", "warm", "up"]).await.expect_ok();
    let baseline = rss_kib();

    // 1. A subscriber that stops reading: 4096 messages of 16 KiB.
    let mut slow = RawClient::connect(poolside.client_addr).await;
    slow.command(&["SUBSCRIBE", "ch"]).await.expect_array();
    let mut publisher = redis.direct_raw().await;
    let payload = "m".repeat(16 * 1024);
    let mut peak = baseline;
    let mut disconnected_after = None;
    for i in 0..4096u32 {
        let receivers = publisher.command(&["PUBLISH", "ch", &payload]).await;
        if i % 64 == 0 {
            peak = peak.max(rss_kib());
        }
        if receivers == Reply::Int(0) && disconnected_after.is_none() {
            disconnected_after = Some(i);
        }
    }
    peak = peak.max(rss_kib());
    let after = disconnected_after.expect("the slow subscriber was disconnected");
    eprintln!(
        "slow subscriber: cut off after {after} messages ({} KiB); RSS {baseline} -> peak {peak} KiB",
        u64::from(after) * 16
    );
    assert!(
        peak - baseline < BOUND_KIB,
        "RSS grew {} KiB",
        peak - baseline
    );

    // 2. A client pipelining SETs without reading: poolside stops reading
    //    once its replies back up, so the client's writes stall.
    let mut writer = tokio::net::TcpStream::connect(poolside.client_addr)
        .await
        .unwrap();
    let mut chunk = Vec::new();
    while chunk.len() < 1 << 20 {
        chunk.extend(encode(&["SET", "k", "some value"]));
    }
    let mut written_mib = 0;
    while written_mib < 256 {
        let write = tokio::time::timeout(Duration::from_secs(1), writer.write_all(&chunk));
        if write.await.is_err() {
            break;
        }
        written_mib += 1;
        peak = peak.max(rss_kib());
    }
    peak = peak.max(rss_kib());
    eprintln!("non-reading pipeliner: writes stalled after {written_mib} MiB; RSS peak {peak} KiB");
    assert!(
        written_mib < 256,
        "poolside kept reading from a client that reads nothing"
    );
    assert!(
        peak - baseline < BOUND_KIB,
        "RSS grew {} KiB",
        peak - baseline
    );

    // Others are still served.
    let started = Instant::now();
    assert_eq!(warm.command(&["GET", "warm"]).await, Reply::bulk("up"));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(writer);
    poolside.shutdown().await;
}
