//! `/metrics`: Prometheus text that parses, passes `promtool check metrics`,
//! belongs to one poolside instance, and moves when commands run.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::admin::wait_for_status;
use common::raw::RawClient;
use common::{get, start_poolside, wait_until, Metrics, RedisServer};
use poolside::config::PoolMode;
use poolside::error::Side;

const FAMILIES: [&str; 20] = [
    "poolside_pool_max_connections",
    "poolside_pool_in_use_connections",
    "poolside_pool_idle_connections",
    "poolside_pool_utilization_ratio",
    "poolside_pool_exhausted_total",
    "poolside_pool_checkout_timeouts_total",
    "poolside_pool_checkout_wait_seconds",
    "poolside_upstream_connections_created_total",
    "poolside_upstream_connections_closed_total",
    "poolside_health_checks_total",
    "poolside_health_check_failures_total",
    "poolside_clients_connected",
    "poolside_commands_total",
    "poolside_errors_total",
    "poolside_command_duration_seconds",
    "poolside_upstream_up",
    "poolside_alert_level",
    "poolside_peak_in_use_connections",
    "poolside_client_auth_failures_total",
    "poolside_commands_denied_total",
];

/// `promtool check metrics` on `text`; skipped, saying so, without promtool.
fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "SKIPPED promtool check metrics: promtool is not on PATH \
             (scripts/install-deps.sh installs it: Debian package prometheus)"
        );
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_counters_move() {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.max_connections = 7
    })
    .await;
    wait_for_status(&poolside, "Redis is reachable", |s| {
        s["upstream"]["reachable"] == true
    })
    .await;

    let first = get(poolside.admin_addr, "/metrics").await;
    assert_eq!(first.code, 200);
    assert!(
        first.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        first.content_type
    );
    for family in FAMILIES {
        assert!(
            first.body.contains(&format!("# TYPE {family} ")),
            "no {family} in\n{}",
            first.body
        );
    }
    promtool_check(&first.body);
    let before = Metrics::parse(&first.body);
    assert_eq!(before.value("poolside_pool_max_connections"), 7.0);
    assert_eq!(before.value("poolside_upstream_up"), 1.0);
    assert_eq!(before.value("poolside_alert_level"), 0.0);

    // A raw client: a client library's connect-time commands would count too.
    let mut con = RawClient::connect(poolside.client_addr).await;
    for i in 0..5 {
        con.command(&["SET", "counted", &i.to_string()])
            .await
            .expect_ok();
        con.command(&["GET", "counted"]).await.expect_string();
    }
    con.command(&["NO-SUCH-COMMAND", "x"]).await.expect_error();
    let mut garbage = RawClient::connect(poolside.client_addr).await;
    garbage
        .send(b"*1\r\n$x\r\n")
        .await
        .expect("send a malformed frame");
    wait_until(common::WAIT, "the malformed client is counted", || async {
        poolside.stats().failed_total(Side::Client) > 0
    })
    .await;

    let after = get(poolside.admin_addr, "/metrics").await.body;
    promtool_check(&after);
    let after = Metrics::parse(&after);
    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(moved("poolside_commands_total{command=\"SET\"}"), 5.0);
    assert_eq!(moved("poolside_commands_total{command=\"GET\"}"), 5.0);
    assert_eq!(moved("poolside_commands_total{command=\"other\"}"), 1.0);
    assert_eq!(moved("poolside_command_duration_seconds_count"), 11.0);
    assert_eq!(moved("poolside_pool_checkout_wait_seconds_count"), 11.0);
    assert_eq!(moved("poolside_errors_total{side=\"client\"}"), 1.0);
    assert!(after.value("poolside_upstream_connections_created_total") >= 1.0);
    assert!(after.value("poolside_peak_in_use_connections") >= 1.0);
    assert!(after.value("poolside_command_duration_seconds_sum") > 0.0);
    assert_eq!(
        after.value("poolside_command_duration_seconds_bucket{le=\"+Inf\"}"),
        after.value("poolside_command_duration_seconds_count")
    );
    for reason in ["broken", "invalid", "max_lifetime", "idle_timeout"] {
        after.value(&format!(
            "poolside_upstream_connections_closed_total{{reason=\"{reason}\"}}"
        ));
    }
    poolside.shutdown().await;
}

#[tokio::test]
async fn each_poolside_has_its_own_registry() {
    let redis = RedisServer::start().await;
    let small = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.max_connections = 3
    })
    .await;
    let large = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.max_connections = 30
    })
    .await;
    let mut con = RawClient::connect(small.client_addr).await;
    con.command(&["SET", "only-small", "1"]).await.expect_ok();

    let small_metrics = get(small.admin_addr, "/metrics").await.metrics();
    let large_metrics = get(large.admin_addr, "/metrics").await.metrics();
    assert_eq!(small_metrics.value("poolside_pool_max_connections"), 3.0);
    assert_eq!(large_metrics.value("poolside_pool_max_connections"), 30.0);
    assert_eq!(
        small_metrics.value("poolside_commands_total{command=\"SET\"}"),
        1.0
    );
    assert_eq!(
        large_metrics.value("poolside_commands_total{command=\"SET\"}"),
        0.0
    );
    small.shutdown().await;
    large.shutdown().await;
}

/// The fleet's gauges appear once the control plane has read CLIENT LIST,
/// and say what `/pool/status`'s `fleet` says.
#[tokio::test]
async fn fleet_gauges_pass_promtool_and_match_the_status() {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.fleet.instance = Some("metrics-a".into());
        c.pool.max_connections = 7;
    })
    .await;
    let status = wait_for_status(&poolside, "the fleet is visible", |s| {
        s["fleet"]["visible"] == true && s["fleet"]["poolside_instances"] == 1
    })
    .await;
    let fleet = &status["fleet"];
    let text = get(poolside.admin_addr, "/metrics").await.body;
    promtool_check(&text);
    let metrics = Metrics::parse(&text);
    assert_eq!(metrics.value("poolside_fleet_instances"), 1.0);
    for (series, field) in [
        ("poolside_fleet_connections", "poolside_connections"),
        ("poolside_fleet_other_clients", "other_clients"),
        ("poolside_fleet_more_instances_fit", "more_instances_fit"),
    ] {
        assert_eq!(
            Some(metrics.value(series)),
            fleet[field].as_f64(),
            "{series} vs {fleet}"
        );
    }
    poolside.shutdown().await;
}

#[tokio::test]
async fn multiplexed_batches_are_counted_and_timed() {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Multiplexed, |_| {}).await;
    let mut con = RawClient::connect(poolside.client_addr).await;
    for i in 0..5 {
        con.command(&["SET", "shared", &i.to_string()])
            .await
            .expect_ok();
    }
    let metrics = get(poolside.admin_addr, "/metrics").await.metrics();
    assert_eq!(
        metrics.value("poolside_commands_total{command=\"SET\"}"),
        5.0
    );
    assert_eq!(
        metrics.value("poolside_command_duration_seconds_count"),
        5.0
    );
    poolside.shutdown().await;
}
