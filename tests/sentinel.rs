//! Sentinel support (issue #12): poolside finds the primary through three
//! Sentinels (`redis+sentinel://S1,S2,S3/mymaster`) and follows failovers.
//!
//! Under write load from many clients ([`Writers`]), a forced failover
//! (`SENTINEL FAILOVER`) and a `kill -9` of the primary must lose no
//! acknowledged write (read back from the new primary directly), fail only
//! requests in flight at the switch, leave no poolside connection on the
//! demoted node, and show in `/pool/status` and `/metrics`. Pinned sessions
//! on the old primary are closed. A Sentinel down changes nothing for
//! clients; with no Sentinel at all poolside starts, not ready, and clients
//! get `-ERR poolside: no primary` once the hold expires. With
//! `rediss+sentinel://` and everything TLS-only, poolside follows a failover
//! the same way. A frozen primary (`kill -STOP`) is replaced as a killed one
//! is, and once it thaws, still a master, poolside leaves it alone.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::admin::{status, wait_for_status};
use common::raw::{RawClient, Reply};
use common::sentinel::{role, sentinel_url, SentinelSet};
use common::tls::Certs;
use common::writers::{Load, Writers};
use common::{both_modes, get, query, wait_for, wait_until, RedisServer, WAIT};
use poolside::app::Running;
use poolside::config::{Config, PoolMode};
use serde_json::Value;

/// Client connections writing through poolside at once.
const WRITERS: usize = 24;
/// The failover hold in the load tests: longer than a failover takes here
/// (1–3 s), shorter than the raw client's 10 s read timeout.
const HOLD_MS: u64 = 8_000;
/// How long poolside may take to drop its connections to a demoted node or
/// close a pinned session once it shows the new primary.
const CLEAN_UP: Duration = Duration::from_secs(5);
/// `pool.response_timeout_ms` in the frozen-primary test: well under the
/// Sentinels' `down-after-milliseconds`.
const FROZEN_TIMEOUT_MS: u64 = 500;

/// poolside in `mode` for the Sentinels in `url`, with a pool as large as
/// the writers and `hold_ms` of failover hold.
async fn start(url: &str, mode: PoolMode, hold_ms: u64) -> Running {
    start_with(url, mode, hold_ms, |_| {}).await
}

/// [`start`], after `tweak` adjusts the config.
async fn start_with(
    url: &str,
    mode: PoolMode,
    hold_ms: u64,
    tweak: impl FnOnce(&mut Config),
) -> Running {
    let mut config = Config::for_tests(url);
    config.pool.mode = mode;
    config.pool.max_connections = WRITERS as u32;
    config.upstream.sentinel.failover_hold_ms = hold_ms;
    tweak(&mut config);
    poolside::app::start(config).await.expect("poolside starts")
}

/// `upstream.sentinel` of `/pool/status`.
async fn sentinel_status(poolside: &Running) -> Value {
    status(poolside).await["upstream"]["sentinel"].clone()
}

/// Waits until `/pool/status` shows `primary` in state `ok`; returns `upstream.sentinel`.
async fn wait_for_primary(poolside: &Running, primary: SocketAddr) -> Value {
    let what = format!("/pool/status shows the primary {primary}");
    let s = wait_for_status(poolside, &what, |s| {
        let sentinel = &s["upstream"]["sentinel"];
        sentinel["primary"] == primary.to_string() && sentinel["state"] == "ok"
    })
    .await;
    s["upstream"]["sentinel"].clone()
}

/// Whether `upstream.sentinel.sentinels` in `/pool/status` lists each of
/// `addrs` as reachable or not, as `expected`.
fn shows_reachable(status: &Value, addrs: &[SocketAddr], expected: &[bool]) -> bool {
    let listed = status["upstream"]["sentinel"]["sentinels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    addrs.iter().zip(expected).all(|(addr, &up)| {
        listed
            .iter()
            .any(|e| e["address"] == addr.to_string() && e["reachable"] == up)
    })
}

/// poolside's connections on `node` (`CLIENT LIST` lines), by their
/// connection name.
async fn poolside_client_list(node: &RedisServer) -> Vec<String> {
    let mut client = node.direct_raw().await;
    common::client_list_on(&mut client)
        .await
        .into_iter()
        .filter(|l| l.contains(" name=poolside:"))
        .collect()
}

/// How many connections poolside has on `node`.
async fn poolside_connections(node: &RedisServer) -> usize {
    poolside_client_list(node).await.len()
}

/// Waits, at most [`CLEAN_UP`], until poolside has no connection on `node`.
async fn wait_until_gone_from(node: &RedisServer) {
    let what = format!("no poolside connection is left on {}", node.addr());
    wait_for(CLEAN_UP, &what, || async {
        match poolside_client_list(node).await {
            left if left.is_empty() => Ok(()),
            left => Err(left),
        }
    })
    .await;
}

/// Every acknowledged write is on `primary`; prints the outcome. A lost SET
/// found on `demoted` (still up) was written there, not lost in replication.
async fn assert_nothing_lost(
    load: &Load,
    primary: &RedisServer,
    demoted: Option<&RedisServer>,
    what: &str,
) {
    let failures = load.failures();
    eprintln!(
        "{what}: {} requests acknowledged, {} failed: {:?}",
        load.acked(),
        failures.len(),
        failures.iter().take(5).map(|f| &f.what).collect::<Vec<_>>()
    );
    let mut lost = load.lost_on(primary).await;
    if let Some(demoted) = demoted {
        let mut direct = demoted.direct_raw().await;
        for entry in lost.iter_mut().filter(|e| e.starts_with("k:")) {
            let key = entry.split(' ').next().unwrap_or_default().to_string();
            let there = match direct.command(&["GET", &key]).await {
                Reply::Bulk(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
                _ => None,
            };
            entry.push_str(&format!(" (on the demoted node: {there:?})"));
        }
    }
    assert!(
        lost.is_empty(),
        "{what}: {} acknowledged writes missing on the new primary {}: {:?}",
        lost.len(),
        primary.addr(),
        &lost[..lost.len().min(20)]
    );
    for failure in failures {
        let clear = ["ERR poolside: ", "READONLY ", "connection: "]
            .iter()
            .any(|p| failure.what.starts_with(p));
        assert!(clear, "{what}: an unclear error: {}", failure.what);
    }
}

/// The failover counters and the primary in `/metrics`.
async fn assert_failover_metrics(poolside: &Running, new: SocketAddr, old: SocketAddr) {
    let m = get(poolside.admin_addr, "/metrics").await.metrics();
    assert_eq!(m.value("poolside_sentinel_failovers_total"), 1.0);
    assert_eq!(m.value("poolside_sentinel_holding"), 0.0);
    assert_eq!(m.value("poolside_sentinel_hold_expired_total"), 0.0);
    let primary = |a: SocketAddr| format!("poolside_sentinel_primary{{address=\"{a}\"}}");
    assert_eq!(m.value(&primary(new)), 1.0);
    assert!(
        m.get(&primary(old)).unwrap_or(0.0) == 0.0,
        "{:?}",
        m.samples
    );
    assert!(m.value("poolside_sentinel_last_failover_timestamp_seconds") > 1.6e9);
}

both_modes! {
    /// At start poolside asks the Sentinels, confirms the primary and is
    /// ready; nothing was held, nothing failed over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poolside_finds_the_primary_and_is_ready(mode: PoolMode) {
        let set = SentinelSet::start().await;
        let primary = set.primary().await;
        let poolside = start(&set.url(), mode, HOLD_MS).await;
        let s = wait_for_primary(&poolside, primary).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.command(&["SET", "r:k", "1"]).await.expect_ok();
        let stored = set.node(primary).direct_raw().await.command(&["GET", "r:k"]).await;
        assert_eq!(stored, Reply::bulk("1"));

        assert_eq!(s["master_name"], "mymaster", "{s}");
        assert_eq!(s["reason"], Value::Null, "{s}");
        assert_eq!(s["last_failover_unix_ms"], Value::Null, "{s}");
        let listed = s["sentinels"].as_array().expect("sentinels is a list");
        for addr in set.sentinel_addrs() {
            let entry = listed.iter().find(|e| e["address"] == addr.to_string());
            assert_eq!(entry.map(|e| &e["reachable"]), Some(&Value::Bool(true)), "{addr}: {s}");
        }
        let s = sentinel_status(&poolside).await;
        for counter in ["failovers", "held_batches", "hold_expired"] {
            assert_eq!(s[counter], 0, "{counter}: {s}");
        }
        let m = get(poolside.admin_addr, "/metrics").await.metrics();
        let series = format!("poolside_sentinel_primary{{address=\"{primary}\"}}");
        assert_eq!(m.value(&series), 1.0);
        assert_eq!(m.value("poolside_sentinel_holding"), 0.0);
        assert_eq!(m.value("poolside_sentinel_failovers_total"), 0.0);
        assert_eq!(m.value("poolside_sentinel_held_batches_total"), 0.0);
        // The health interval is 30 s: ready must not wait for it.
        wait_until(Duration::from_secs(5), "ready once the primary is known", || async {
            get(poolside.admin_addr, "/health/ready").await.code == 200
        })
        .await;
        poolside.shutdown().await;
    }

    /// `SENTINEL FAILOVER` under load: the old primary stays up, so every
    /// request written to it before poolside holds is answered by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forced_failover_loses_no_acknowledged_write(mode: PoolMode) {
        let set = SentinelSet::start().await;
        let old = set.primary().await;
        let poolside = start(&set.url(), mode, HOLD_MS).await;
        wait_for_primary(&poolside, old).await;

        let writers = Writers::start(poolside.client_addr, WRITERS);
        writers.wait_for_acks(500, "writes flow to the first primary").await;
        set.failover().await;
        let new = set.wait_for_new_primary(old).await;
        let shown = wait_for_primary(&poolside, new).await;
        writers.wait_for_acks(500, "writes flow to the new primary").await;
        wait_until_gone_from(set.node(old)).await;
        let load = writers.stop().await;

        assert_eq!(role(new).await.as_deref(), Some("master"));
        let demoted = Some(set.node(old));
        assert_nothing_lost(&load, set.node(new), demoted, &format!("{mode:?}")).await;
        // Each writer has one request outstanding; only one outstanding at
        // the switch may fail (held ones have not been written yet).
        assert!(load.failures().len() <= WRITERS, "{:?}", load.failures());

        let s = sentinel_status(&poolside).await;
        eprintln!("{mode:?}: upstream.sentinel after the failover: {s}");
        assert_eq!(s["master_name"], "mymaster", "{s}");
        assert_eq!(s["failovers"], 1, "{s} (when first shown: {shown})");
        assert!(s["last_failover_unix_ms"].is_u64(), "{s}");
        assert_eq!(s["reason"], Value::Null, "{s}");
        assert_eq!(s["hold_expired"], 0, "{s}");
        assert!(s["held_batches"].is_u64(), "{s}");
        assert_failover_metrics(&poolside, new, old).await;
        assert_eq!(get(poolside.admin_addr, "/health/ready").await.code, 200);
        poolside.shutdown().await;
    }

    /// `kill -9` of the primary under load: requests sent during the
    /// outage wait and then succeed on the new primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_primary_is_replaced_and_held_requests_succeed(mode: PoolMode) {
        let mut set = SentinelSet::start().await;
        let poolside = start(&set.url(), mode, HOLD_MS).await;
        wait_for_primary(&poolside, set.primary().await).await;

        let writers = Writers::start(poolside.client_addr, WRITERS);
        writers.wait_for_acks(500, "writes flow to the first primary").await;
        let old = set.primary().await;
        // Requests sent from here on wait on the paused primary and are
        // still in flight at the kill.
        set.pause_writes_until_replicated(old, 600_000).await;
        let killed_at = Instant::now();
        set.kill_node(old);
        let new = set.wait_for_new_primary(old).await;
        wait_for_primary(&poolside, new).await;
        let switch_seen = Instant::now();
        writers.wait_for_acks(500, "writes flow to the new primary").await;
        let load = writers.stop().await;

        let first = load
            .first_ack_of_request_sent_after(killed_at)
            .expect("a request sent after the kill succeeded");
        eprintln!(
            "{mode:?}: kill -9 of {old}: first write acknowledged by the new primary {new} \
             {:?} after the kill; poolside showed it after {:?}",
            first - killed_at,
            switch_seen - killed_at
        );
        assert_nothing_lost(&load, set.node(new), None, &format!("{mode:?}")).await;
        // Requests in flight at the kill fail (one per writer), and so may
        // one batch on each pooled connection written before poolside knew
        // its peer was gone (the pool is as large as the writers).
        assert!(load.failures().len() <= 2 * WRITERS, "{:?}", load.failures());
        assert!(
            load.acked_across(killed_at, first) > 0,
            "no request sent during the outage waited and succeeded"
        );

        let s = sentinel_status(&poolside).await;
        eprintln!("{mode:?}: upstream.sentinel after the failover: {s}");
        assert_eq!(s["failovers"], 1, "{s}");
        assert!(s["held_batches"].as_u64() > Some(0), "{s}");
        assert_eq!(s["hold_expired"], 0, "{s}");
        assert_failover_metrics(&poolside, new, old).await;
        poolside.shutdown().await;
    }

    /// Sessions pinned to the old primary (MULTI, SUBSCRIBE, a blocking
    /// BLPOP, WATCH) are closed after a switch; new ones reach the new primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pinned_sessions_are_closed_by_a_switch(mode: PoolMode) {
        let set = SentinelSet::start().await;
        let old = set.primary().await;
        let poolside = start(&set.url(), mode, HOLD_MS).await;
        wait_for_primary(&poolside, old).await;

        let mut pinned = Vec::new();
        let mut multi = RawClient::connect(poolside.client_addr).await;
        multi.command(&["MULTI"]).await.expect_ok();
        assert_eq!(multi.command(&["SET", "p:multi", "1"]).await, Reply::Simple("QUEUED".into()));
        pinned.push(("MULTI", multi));
        let mut subscriber = RawClient::connect(poolside.client_addr).await;
        subscriber.command(&["SUBSCRIBE", "p:channel"]).await.expect_array();
        pinned.push(("SUBSCRIBE", subscriber));
        let mut blocked = RawClient::connect(poolside.client_addr).await;
        blocked.send(&common::raw::encode(&["BLPOP", "p:list", "0"])).await.unwrap();
        pinned.push(("BLPOP", blocked));
        let client = redis::Client::open(format!("redis://{}", poolside.client_addr)).unwrap();
        let mut watching = client.get_multiplexed_async_connection().await.unwrap();
        common::ok::<()>(&mut watching, &["WATCH", "p:watched"]).await;
        wait_until(WAIT, "the sessions are pinned to the old primary", || async {
            poolside_connections(set.node(old)).await >= 4
        })
        .await;

        set.failover().await;
        let new = set.wait_for_new_primary(old).await;
        wait_for_primary(&poolside, new).await;
        for (what, client) in &mut pinned {
            let (bytes, closed) = client.read_to_close(CLEAN_UP).await;
            let bytes = String::from_utf8_lossy(&bytes);
            assert!(closed, "{mode:?}: the {what} session is still open ({bytes:?})");
            assert!(bytes.is_empty() || bytes.starts_with('-'), "{what}: {bytes:?}");
        }
        wait_until(CLEAN_UP, "the WATCH session is closed", || {
            let mut watching = watching.clone();
            async move {
                query::<Option<String>>(&mut watching, &["GET", "p:watched"])
                    .await
                    .is_err()
            }
        })
        .await;
        wait_until_gone_from(set.node(old)).await;

        // The redis-rs client connects again and lands on the new primary.
        let mut again = client.get_multiplexed_async_connection().await.unwrap();
        common::ok::<()>(&mut again, &["SET", "p:after", "1"]).await;
        let mut multi = RawClient::connect(poolside.client_addr).await;
        multi.command(&["MULTI"]).await.expect_ok();
        let queued = multi.command(&["SET", "p:multi", "2"]).await;
        assert_eq!(queued, Reply::Simple("QUEUED".into()));
        let executed = multi.command(&["EXEC"]).await;
        assert_eq!(executed, Reply::Array(Some(vec![Reply::Simple("OK".into())])));
        let mut direct = set.node(new).direct_raw().await;
        assert_eq!(direct.command(&["GET", "p:after"]).await, Reply::bulk("1"));
        assert_eq!(direct.command(&["GET", "p:multi"]).await, Reply::bulk("2"));
        poolside.shutdown().await;
    }

    /// Sentinels going down (one before poolside starts, one while it runs)
    /// and coming back: no client sees an error; `/pool/status` shows which
    /// Sentinels answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sentinels_down_do_not_disturb_clients(mode: PoolMode) {
        let mut set = SentinelSet::start().await;
        let addrs = set.sentinel_addrs();
        set.stop_sentinel(0);
        let poolside = start(&set.url(), mode, HOLD_MS).await;
        wait_for_primary(&poolside, set.primary().await).await;
        let shows = |expected: [bool; 3]| {
            let addrs = addrs.clone();
            move |s: &Value| shows_reachable(s, &addrs, &expected)
        };

        let writers = Writers::start(poolside.client_addr, WRITERS);
        writers.wait_for_acks(300, "writes flow").await;
        wait_for_status(&poolside, "Sentinel 0 shows down", shows([false, true, true])).await;
        set.stop_sentinel(1);
        wait_for_status(&poolside, "Sentinel 1 shows down", shows([false, false, true])).await;
        writers.wait_for_acks(300, "writes flow with one Sentinel left").await;
        set.start_sentinel(0).await;
        wait_for_status(&poolside, "Sentinel 0 shows up again", shows([true, false, true])).await;
        writers.wait_for_acks(300, "writes flow with Sentinel 0 back").await;
        let load = writers.stop().await;

        let failures = load.failures();
        let some = &failures[..failures.len().min(5)];
        assert!(failures.is_empty(), "{mode:?}: {} failed: {some:?}", failures.len());
        let s = sentinel_status(&poolside).await;
        assert_eq!(s["state"], "ok", "{s}");
        assert_eq!(s["failovers"], 0, "{s}");
        assert_eq!(get(poolside.admin_addr, "/health/ready").await.code, 200);
        poolside.shutdown().await;
    }

    /// No Sentinel answers: poolside starts anyway, says why it has no
    /// primary and is not ready; a client's request waits out the hold and
    /// gets `-ERR poolside: no primary`. Once Sentinels and Redis come up on
    /// those ports, poolside finds the primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_sentinel_poolside_starts_without_a_primary(mode: PoolMode) {
        const SHORT_HOLD_MS: u64 = 500;
        // Held until the Sentinels start on them, so no other test's server
        // takes one meanwhile: they accept (into the backlog) and never answer.
        let reserved: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let port = |i: usize| reserved[i].local_addr().expect("bound").port();
        let ports = [port(0), port(1), port(2)];
        let addrs = ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        let poolside = start(&sentinel_url(&addrs), mode, SHORT_HOLD_MS).await;
        let s = wait_for_status(&poolside, "state no_primary", |s| {
            s["upstream"]["sentinel"]["state"] == "no_primary"
        })
        .await;
        let s = &s["upstream"]["sentinel"];
        assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
        assert_eq!(s["primary"], Value::Null, "{s}");
        let listed = s["sentinels"].as_array().expect("sentinels is a list");
        assert_eq!(listed.len(), 3, "{s}");
        assert!(listed.iter().all(|e| e["reachable"] == false), "{s}");
        assert_eq!(get(poolside.admin_addr, "/health/ready").await.code, 503);

        let mut client = RawClient::connect(poolside.client_addr).await;
        let started = Instant::now();
        let err = client.command(&["SET", "n:k", "1"]).await.expect_error();
        let took = started.elapsed();
        assert!(err.starts_with("ERR poolside: no primary"), "{err}");
        // The hold, plus a margin for a busy machine.
        assert!(took < Duration::from_millis(SHORT_HOLD_MS + 2_000), "answered after {took:?}");
        let m = get(poolside.admin_addr, "/metrics").await.metrics();
        assert!(m.value("poolside_sentinel_hold_expired_total") >= 1.0);

        drop(reserved);
        let set = SentinelSet::start_on(ports).await;
        let primary = set.primary().await;
        wait_for_primary(&poolside, primary).await;
        client.command(&["SET", "n:k", "2"]).await.expect_ok();
        let stored = set.node(primary).direct_raw().await.command(&["GET", "n:k"]).await;
        assert_eq!(stored, Reply::bulk("2"));
        wait_until(WAIT, "ready once a primary is known", || async {
            get(poolside.admin_addr, "/health/ready").await.code == 200
        })
        .await;
        poolside.shutdown().await;
    }
}

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

both_modes! {
    /// The primary freezes (`kill -STOP`: a partition, a stuck fork) under
    /// load, with a short response timeout. Requests written to it before
    /// poolside can know (sent before the first response timeout) fail with
    /// `upstream timed out`, at most one per client; later ones wait and
    /// succeed once the Sentinels promote a replica. Soon after the switch
    /// (within a connect timeout) the old primary thaws (`kill -CONT`) and
    /// is a master again until the Sentinels demote it (8 s later at the
    /// earliest): none of the writes sent after the switch lands there, none
    /// acknowledged is missing on the new primary, and poolside's
    /// connections to the old node go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_primary_is_replaced_and_left_alone_when_it_thaws(mode: PoolMode) {
        let set = SentinelSet::start().await;
        let old = set.primary().await;
        let poolside = start_with(&set.url(), mode, HOLD_MS, |c| {
            c.pool.response_timeout_ms = FROZEN_TIMEOUT_MS;
        })
        .await;
        wait_for_primary(&poolside, old).await;

        let writers = Writers::start(poolside.client_addr, WRITERS);
        writers.wait_for_acks(500, "writes flow to the first primary").await;
        // As before a kill: nothing acknowledged is missing on the replicas
        // when the primary freezes. The pause (2 s of wall-clock time)
        // has run out when the node thaws, after a failover (about 3 s), so
        // the old primary thaws writable, as a frozen one would.
        set.pause_writes_until_replicated(old, 2_000).await;
        set.node(old).signal("STOP");
        // `kill` has returned: the signal was delivered.
        let frozen_at = Instant::now();
        let new = set.wait_for_new_primary(old).await;
        wait_for_primary(&poolside, new).await;
        let switch_seen = Instant::now();
        writers.wait_for_acks(500, "writes flow to the new primary").await;
        set.node(old).signal("CONT");
        let back_as = role(old).await;
        writers.wait_for_acks(500, "writes flow with the old primary back as a master").await;
        let load = writers.stop().await;
        // Before the Sentinels demote it and it syncs from the new primary.
        let on_old = load.found_on(set.node(old), switch_seen).await;
        let still = role(old).await;

        let first = load
            .first_ack_of_request_sent_after(frozen_at)
            .expect("a request sent after the freeze succeeded");
        let failures = load.failures();
        let last_failed_sent = failures.iter().map(|f| f.sent).max();
        eprintln!(
            "{mode:?}: kill -STOP of {old}: recovered in {:?} (the first write acknowledged \
             by the new primary {new}); poolside showed it after {:?}; {} requests failed, \
             the last one sent {:?} after the freeze; after CONT the old node was {back_as:?}",
            first - frozen_at,
            switch_seen - frozen_at,
            failures.len(),
            last_failed_sent.map(|t| t.saturating_duration_since(frozen_at)),
        );
        assert_eq!(back_as.as_deref(), Some("master"), "the old node thawed as a master");
        assert_eq!(still.as_deref(), Some("master"), "demoted before it was read");
        assert!(
            on_old.is_empty(),
            "{mode:?}: {} writes sent after the switch landed on the old primary: {:?}",
            on_old.len(),
            &on_old[..on_old.len().min(20)]
        );
        assert_nothing_lost(&load, set.node(new), Some(set.node(old)), &format!("{mode:?}")).await;
        let timed_out = format!("ERR poolside: upstream timed out after {FROZEN_TIMEOUT_MS} ms");
        let knows = frozen_at + Duration::from_millis(FROZEN_TIMEOUT_MS);
        assert!(!failures.is_empty(), "nothing was in flight at the freeze");
        assert!(failures.len() <= WRITERS, "{failures:?}");
        for failure in &failures {
            assert_eq!(failure.what, timed_out, "{failure:?}");
            assert!(
                failure.sent < knows,
                "sent {:?} after the freeze, not held: {failure:?}",
                failure.sent - frozen_at
            );
        }
        assert!(
            load.acked_across(frozen_at, first) > 0,
            "no request sent during the freeze waited and succeeded"
        );

        let s = sentinel_status(&poolside).await;
        eprintln!("{mode:?}: upstream.sentinel after the failover: {s}");
        assert_eq!(s["failovers"], 1, "{s}");
        // Not `held_batches > 0`: a request sent before poolside knew the
        // primary frozen waits in its connect instead (given up at the
        // switch, then made to the new primary), which is no hold.
        assert_eq!(s["hold_expired"], 0, "{s}");
        assert_failover_metrics(&poolside, new, old).await;
        wait_until_gone_from(set.node(old)).await;
        poolside.shutdown().await;
    }
}

/// `rediss+sentinel://` with only TLS anywhere: a TLS-only primary, replica
/// and two Sentinels (talking TLS to the data nodes and each other), and
/// poolside given one Sentinel and the CA. It finds the primary, learns the
/// other Sentinel, and follows a `SENTINEL FAILOVER` in both pool modes
/// (two poolsides on one topology).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_sentinel_follows_a_failover_over_tls() {
    let certs = Certs::generate();
    let set = SentinelSet::start_tls(&certs).await;
    let [first, learned] = set.sentinel_addrs()[..] else {
        panic!("two Sentinels");
    };
    let old = set.primary().await;
    let url = format!(
        "rediss+sentinel://{first}/{}",
        common::sentinel::MASTER_NAME
    );
    let mut poolsides = Vec::new();
    for mode in [PoolMode::Transaction, PoolMode::Multiplexed] {
        let poolside = start_with(&url, mode, HOLD_MS, |c| {
            c.tls.ca_file = Some(certs.ca.clone());
        })
        .await;
        wait_for_primary(&poolside, old).await;
        let what = format!("{mode:?}: the learned Sentinel {learned} answers over TLS");
        wait_for_status(&poolside, &what, |s| {
            shows_reachable(s, &[first, learned], &[true, true])
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        let key = format!("tls:{mode:?}");
        client.command(&["SET", &key, "before"]).await.expect_ok();
        let mut direct = set.node(old).direct_raw().await;
        assert_eq!(
            direct.command(&["GET", &key]).await,
            Reply::bulk("before"),
            "{mode:?}"
        );
        poolsides.push((mode, poolside, client, key));
    }

    set.failover().await;
    let new = set.wait_for_new_primary(old).await;
    assert_eq!(set.role(new).await.as_deref(), Some("master"));
    for (mode, poolside, client, key) in &mut poolsides {
        let s = wait_for_primary(poolside, new).await;
        assert_eq!(s["failovers"], 1, "{mode:?}: {s}");
        client.command(&["SET", key, "after"]).await.expect_ok();
        let mut direct = set.node(new).direct_raw().await;
        assert_eq!(
            direct.command(&["GET", key]).await,
            Reply::bulk("after"),
            "{mode:?}"
        );
    }
    wait_until_gone_from(set.node(old)).await;
    for (_, poolside, _, _) in poolsides {
        poolside.shutdown().await;
    }
}
