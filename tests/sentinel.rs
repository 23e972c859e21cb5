//! Sentinel support (issue #12): poolside finds the primary through
//! Sentinels and follows failovers under write load.

mod common;

use std::time::Instant;

use common::sentinel::{role, SentinelSet};

/// The harness itself: a forced failover promotes a replica, and every
/// Sentinel names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_fails_over_by_itself() {
    let set = SentinelSet::start().await;
    let old = set.primary().await;
    assert_eq!(old, set.node_addrs()[0]);
    let started = Instant::now();
    set.failover().await;
    let new = set.wait_for_new_primary(old).await;
    eprintln!("forced failover {old} -> {new} in {:?}", started.elapsed());
    assert_eq!(role(new).await.as_deref(), Some("master"));
}

/// The harness itself: after a `kill -9` of the primary the Sentinels
/// agree on a replica they promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_survives_a_killed_primary() {
    let mut set = SentinelSet::start().await;
    let started = Instant::now();
    let old = set.kill_primary().await;
    let new = set.wait_for_new_primary(old).await;
    eprintln!(
        "automatic failover {old} -> {new} in {:?}",
        started.elapsed()
    );
    assert_eq!(role(old).await, None);
}
