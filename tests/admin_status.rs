//! The admin server's JSON: `/pool/status` and `/health/redis` carry every
//! field applications parse, probes follow Redis, and no secret leaks.

mod common;

use common::admin::{capture_logs, recommendations, status, wait_for_status, Blocked};
use common::{get, start_poolside, RedisServer};
use poolside::config::PoolMode;
use serde_json::Value;

const METRICS_FIELDS: [&str; 10] = [
    "pool_exhausted_count",
    "health_check_failures",
    "connections_created",
    "connections_closed",
    "checkout_wait_ms_p50",
    "checkout_wait_ms_p99",
    "peak_in_use",
    "clients_connected",
    "commands_total",
    "upstream_errors",
];

/// Every field of the `/pool/status` contract, with its JSON type.
fn assert_status_schema(s: &Value) {
    let status = s["status"].as_str().expect("status is a string");
    assert!(
        ["healthy", "degraded", "unhealthy"].contains(&status),
        "{status}"
    );
    assert!(s["environment"].is_string(), "{s}");
    assert!(
        ["transaction", "multiplexed"].contains(&s["pool_mode"].as_str().unwrap_or("")),
        "{s}"
    );
    assert!(s["in_use_counts"].is_string(), "{s}");
    for key in [
        "max_connections",
        "in_use_connections",
        "idle_connections",
        "available_connections",
    ] {
        assert!(s[key].is_u64(), "{key} in {s}");
    }
    assert_eq!(
        s["available_connections"].as_u64().unwrap(),
        s["max_connections"].as_u64().unwrap() - s["in_use_connections"].as_u64().unwrap()
    );
    let utilization = s["utilization_percent"]
        .as_f64()
        .expect("utilization_percent");
    assert!((0.0..=100.0).contains(&utilization));
    assert_eq!(
        (utilization * 10.0).round() / 10.0,
        utilization,
        "one decimal"
    );
    let level = s["alert_level"].as_str().expect("alert_level");
    assert!(["ok", "warning", "critical"].contains(&level), "{level}");
    for key in METRICS_FIELDS {
        assert!(s["metrics"][key].is_number(), "metrics.{key} in {s}");
    }
    let u = &s["upstream"];
    assert!(
        u["address"].is_string() && u["reachable"].is_boolean(),
        "{u}"
    );
    for key in ["last_health_check", "redis_version"] {
        assert!(
            u[key].is_string() || u[key].is_null(),
            "upstream.{key} in {u}"
        );
    }
    for key in ["latency_ms", "connected_clients", "maxclients"] {
        assert!(
            u[key].is_number() || u[key].is_null(),
            "upstream.{key} in {u}"
        );
    }
    let recs = recommendations(s);
    assert!(!recs.is_empty(), "recommendations are never empty");
    assert!(s["sizing"]["recommended_max_connections"].is_u64(), "{s}");
}

#[tokio::test]
async fn pool_status_and_health_redis_carry_every_field() {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.max_connections = 10
    })
    .await;
    let mut con = common::raw::RawClient::connect(poolside.client_addr).await;
    con.command(&["SET", "k", "v"]).await.expect_ok();

    let s = wait_for_status(&poolside, "Redis facts arrive", |s| {
        s["upstream"]["reachable"] == true && s["upstream"]["redis_version"].is_string()
    })
    .await;
    assert_status_schema(&s);
    assert_eq!(s["status"], "healthy");
    assert_eq!(s["environment"], "development");
    assert_eq!(s["pool_mode"], "transaction");
    assert!(
        s["in_use_counts"]
            .as_str()
            .is_some_and(|t| t.starts_with("connections checked out")),
        "{s}"
    );
    assert_eq!(s["max_connections"], 10);
    assert_eq!(s["alert_level"], "ok");
    assert_eq!(
        s["upstream"]["address"],
        format!("127.0.0.1:{}", redis.port())
    );
    assert!(s["upstream"]["last_health_check"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(s["upstream"]["maxclients"].as_u64().unwrap() > 0);
    assert!(s["upstream"]["connected_clients"].as_u64().unwrap() >= 1);
    assert!(s["metrics"]["commands_total"].as_u64().unwrap() >= 1);
    assert!(s["metrics"]["connections_created"].as_u64().unwrap() >= 1);
    assert_eq!(recommendations(&s), vec!["Pool operating optimally"]);

    let health = get(poolside.admin_addr, "/health/redis").await;
    assert_eq!(health.code, 200);
    let health = health.json();
    assert_eq!(health["healthy"], true);
    assert_status_schema(&health["pool_status"]);
    assert_eq!(
        health["recommendations"],
        health["pool_status"]["recommendations"]
    );

    assert_eq!(get(poolside.admin_addr, "/health/live").await.code, 200);
    let missing = get(poolside.admin_addr, "/no/such/page").await;
    assert_eq!(
        (missing.code, missing.content_type.as_str()),
        (404, "application/json")
    );
    assert_eq!(missing.json()["error"], "not found");
    poolside.shutdown().await;
}

#[tokio::test]
async fn readiness_and_health_follow_redis_down_and_back() {
    let mut redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.min_idle = 1;
        c.pool.health_check_interval_secs = 1;
    })
    .await;
    let ready = || async { get(poolside.admin_addr, "/health/ready").await.code };
    common::wait_until(common::WAIT, "ready while Redis is up", || async {
        ready().await == 200
    })
    .await;

    redis.stop();
    common::wait_until(common::WAIT, "not ready while Redis is down", || async {
        ready().await == 503
    })
    .await;
    // Readiness may drop first (an idle connection closed below min_idle);
    // the upstream is unhealthy once a health check fails to connect.
    let health = || async { get(poolside.admin_addr, "/health/redis").await };
    common::wait_until(common::WAIT, "Redis reported unhealthy", || async {
        health().await.code == 503
    })
    .await;
    assert_eq!(ready().await, 503);
    let health = health().await.json();
    assert_eq!(health["healthy"], false);
    assert_eq!(health["pool_status"]["status"], "unhealthy");
    assert_eq!(health["pool_status"]["upstream"]["reachable"], false);
    let recs = recommendations(&health["pool_status"]);
    assert!(recs[0].contains("is unreachable"), "{recs:?}");
    let live = get(poolside.admin_addr, "/health/live").await;
    assert_eq!(
        live.code, 200,
        "the process is alive even when Redis is not"
    );

    redis.restart().await;
    common::wait_until(common::WAIT, "ready once Redis is back", || async {
        ready().await == 200
    })
    .await;
    assert_eq!(status(&poolside).await["status"], "healthy");
    poolside.shutdown().await;
}

/// Runs on a current-thread runtime so every poolside task logs into the capture.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_appears_in_admin_responses_or_logs() {
    const PASSWORD: &str = "s3cret-Upstream-Pass";
    const HOOK_TOKEN: &str = "T0KEN-in-webhook-url";
    let (logs, _guard) = capture_logs();
    let redis = RedisServer::start_with_password(PASSWORD).await;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());
    let mut config = poolside::config::Config::for_tests(&url);
    config.pool.max_connections = 1;
    config.pool.checkout_timeout_ms = 200;
    config.alerts.window_secs = 1;
    config.alerts.recommendation_window_secs = 1;
    // Nobody listens on port 9: every POST fails, and the failure is logged.
    let hook = format!("http://127.0.0.1:9/hooks/{HOOK_TOKEN}");
    config.alerts.webhook_url = Some(poolside::config::Secret::new(hook));
    let poolside = poolside::app::start(config).await.expect("poolside starts");

    // Drive an alert change (so the webhook is used) and an exhaustion error.
    let mut blocked = Blocked::new();
    blocked.hold(&poolside, 1).await;
    let mut late = common::raw::RawClient::connect(poolside.client_addr).await;
    let err = late.command(&["GET", "k"]).await.expect_error();
    assert!(err.contains("pool exhausted"), "{err}");
    wait_for_status(&poolside, "critical", |s| s["alert_level"] == "critical").await;
    blocked.release(&redis).await;
    wait_for_status(&poolside, "Redis facts arrive", |s| {
        s["upstream"]["redis_version"].is_string()
    })
    .await;

    let mut seen = String::new();
    for path in [
        "/pool/status",
        "/health/redis",
        "/health/ready",
        "/health/live",
        "/metrics",
        "/nope",
    ] {
        seen += &get(poolside.admin_addr, path).await.body;
    }
    poolside.shutdown().await;
    let logs = logs.text();
    assert!(
        logs.contains("pool alert level changed"),
        "logs were captured:\n{logs}"
    );
    assert!(
        logs.contains("alert webhook POST failed"),
        "the webhook was tried:\n{logs}"
    );
    for secret in [PASSWORD, HOOK_TOKEN] {
        assert!(!seen.contains(secret), "{secret} in an admin response");
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

/// The first health check PINGs a connection even when another task (the
/// control plane) opened the only one first: with `min_idle = 0` that one
/// is no warm connection, and a round checking only warm ones would leave
/// poolside "unhealthy" (never checked) for good.
#[tokio::test]
async fn the_first_health_check_pings_whatever_another_task_opened() {
    use poolside::config::{Config, SecretCell};
    use poolside::pool::{check_once, Address, Pool, Target};
    let redis = RedisServer::start().await;
    let config = Config::for_tests(&redis.url());
    assert_eq!(config.pool.min_idle, 0);
    let target = Target {
        address: Address::Fixed(redis.addr().to_string()),
        username: None,
        password: SecretCell::default(),
        tls: None,
        db: 0,
        connect_timeout: std::time::Duration::from_secs(5),
        keepalive: None,
        client_name: None,
        readonly: false,
    };
    let pool = Pool::new(&config, target);
    drop(
        pool.borrow()
            .await
            .expect("a connection, as the control plane takes one"),
    );
    assert_eq!(pool.snapshot().connections, 1);
    check_once(&pool).await;
    let checked = pool
        .health
        .last_check_unix_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(checked > 0, "the round checked nothing");
}
