//! Utilization alerts and data-driven recommendations, driven with real
//! blocked clients: BLPOP holds one pooled connection until its key is pushed.

mod common;

use common::admin::{recommendations, wait_for_status, Blocked, Receiver};
use common::raw::RawClient;
use common::{get, query, start_poolside, RedisServer};
use poolside::config::PoolMode;
use serde_json::Value;

fn has(recs: &[String], needle: &str) -> bool {
    recs.iter().any(|r| r.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_raise_warning_then_critical_then_ok() {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.max_connections = 10;
        c.pool.checkout_timeout_ms = 300;
        c.alerts.window_secs = 1;
        c.alerts.recommendation_window_secs = 2;
    })
    .await;
    let mut blocked = Blocked::new();

    // 7 of 10 (70 %) held for a window: warning, and only warning.
    blocked.hold(&poolside, 7).await;
    let s = wait_for_status(&poolside, "warning at 7 of 10", |s| {
        s["alert_level"] != "ok"
    })
    .await;
    assert_eq!(s["alert_level"], "warning", "{s}");
    assert_eq!(s["status"], "degraded");
    assert_eq!(s["utilization_percent"], 70.0);
    let recs = recommendations(&s);
    assert!(
        has(
            &recs,
            "Utilization 70.0 % is above the warning threshold (60 %)"
        ),
        "{recs:?}"
    );
    assert!(
        !has(&recs, "raise max_connections"),
        "70 % is within the 75 % target: {recs:?}"
    );

    // 9 of 10 (90 %): critical, and a size from the observed p99.
    blocked.hold(&poolside, 9).await;
    let s = wait_for_status(&poolside, "critical at 9 of 10", |s| {
        s["alert_level"] == "critical"
    })
    .await;
    let recs = recommendations(&s);
    assert!(
        has(
            &recs,
            "Utilization 90.0 % is above the critical threshold (80 %)"
        ),
        "{recs:?}"
    );
    assert!(
        has(&recs, "p99 concurrent checkouts 9 of 10 (90 %)")
            && has(&recs, "raise max_connections to 12"),
        "{recs:?}"
    );
    assert_eq!(s["sizing"]["p99_in_use"], 9);
    assert_eq!(s["sizing"]["recommended_max_connections"], 12);
    let metrics = get(poolside.admin_addr, "/metrics").await.body;
    assert!(metrics.contains("\npoolside_alert_level 2\n"), "{metrics}");

    // 10 of 10, and one more client: its checkout times out (exhaustion).
    blocked.hold(&poolside, 10).await;
    let mut late = RawClient::connect(poolside.client_addr).await;
    let err = late.command(&["GET", "k"]).await.expect_error();
    assert!(err.contains("pool exhausted"), "{err}");
    let s = wait_for_status(&poolside, "the exhaustion is counted", |s| {
        s["metrics"]["pool_exhausted_count"] == 1 && s["sizing"]["exhausted"] == 1
    })
    .await;
    assert_eq!(s["alert_level"], "critical");
    assert_eq!(s["available_connections"], 0);
    let waited = s["sizing"]["checkout_wait_ms_p99"].as_f64().unwrap();
    assert!(waited >= 250.0, "the timed-out wait counts: {waited} ms");
    let recs = recommendations(&s);
    assert!(
        has(&recs, "Pool exhausted 1 time(s) in the last 2 s"),
        "{recs:?}"
    );
    assert!(
        has(&recs, "p99 concurrent checkouts 10 of 10 (100 %)"),
        "{recs:?}"
    );
    assert!(has(&recs, "raise max_connections to 14"), "{recs:?}");

    // Released: once a whole window is calm, back to ok and optimal.
    blocked.release(&redis).await;
    let s = wait_for_status(&poolside, "ok once released", |s| {
        s["alert_level"] == "ok" && s["sizing"]["exhausted"] == 0 && s["sizing"]["peak_in_use"] == 0
    })
    .await;
    assert_eq!(s["status"], "healthy");
    assert_eq!(s["in_use_connections"], 0);
    assert_eq!(s["metrics"]["peak_in_use"], 10);
    assert_eq!(recommendations(&s), vec!["Pool operating optimally"]);
    let metrics = get(poolside.admin_addr, "/metrics").await.body;
    assert!(metrics.contains("\npoolside_alert_level 0\n"), "{metrics}");
    assert!(
        metrics.contains("\npoolside_pool_exhausted_total 1\n"),
        "{metrics}"
    );
    poolside.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_one_post_per_level_change() {
    let mut receiver = Receiver::start().await;
    let redis = RedisServer::start().await;
    let url = receiver.url.clone();
    let poolside = start_poolside(&redis, PoolMode::Transaction, move |c| {
        c.pool.max_connections = 2;
        c.alerts.window_secs = 1;
        c.alerts.recommendation_window_secs = 1;
        c.alerts.webhook_url = Some(poolside::config::Secret::new(url));
    })
    .await;

    let mut blocked = Blocked::new();
    blocked.hold(&poolside, 2).await;
    let raised = receiver.next().await;
    assert_eq!(
        (raised["previous"].as_str(), raised["level"].as_str()),
        (Some("ok"), Some("critical"))
    );
    let text = raised["text"]
        .as_str()
        .expect("a Slack-compatible text field");
    assert!(
        text.contains("CRITICAL") && text.contains("100.0 % of 2 connections"),
        "{text}"
    );
    assert_eq!(raised["environment"], "development");
    assert_eq!(raised["max_connections"], 2);

    blocked.release(&redis).await;
    let cleared = receiver.next().await;
    assert_eq!(
        (cleared["previous"].as_str(), cleared["level"].as_str()),
        (Some("critical"), Some("ok"))
    );

    let s = wait_for_status(&poolside, "ok", |s| s["alert_level"] == "ok").await;
    let changes = s["alert"]["changes"].as_u64().expect("alert.changes");
    let posts: Vec<Value> = receiver.all().to_vec();
    assert_eq!(changes, 2, "ok -> critical -> ok");
    assert_eq!(
        posts.len() as u64,
        changes,
        "one POST per change: {posts:?}"
    );
    poolside.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_near_maxclients_is_reported() {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.health_check_interval_secs = 1
    })
    .await;
    let mut blocked = Blocked::new();
    blocked.hold(&poolside, 3).await;
    // Three pooled connections, the control plane's and this one: 5 of 6 is
    // 83 %, and the health check's extra connection still fits.
    let mut direct = redis.direct().await;
    query::<()>(&mut direct, &["CONFIG", "SET", "maxclients", "6"])
        .await
        .expect("CONFIG SET");
    let s = wait_for_status(&poolside, "maxclients is seen", |s| {
        s["upstream"]["maxclients"] == 6
    })
    .await;
    let recs = recommendations(&s);
    // The fleet's line (CLIENT LIST is allowed) says what fits and what to change.
    assert!(
        has(&recs, "of maxclients 6") && has(&recs, "raise maxclients"),
        "{recs:?}"
    );
    query::<()>(&mut direct, &["CONFIG", "SET", "maxclients", "10000"])
        .await
        .expect("CONFIG SET");
    blocked.release(&redis).await;
    poolside.shutdown().await;
}
