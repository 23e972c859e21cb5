//! deploy/prometheus and deploy/grafana: `promtool` checks and unit-tests the
//! alerting rules and parses every dashboard query, and each metric the rules
//! or the dashboard name is one that a running poolside exports on /metrics.

mod common;
mod deploy_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use deploy_support::{deploy, poolside_names, read, run, tool, yaml_file};
use poolside::config::PoolMode;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// What a dashboard query stands for when promtool parses it.
const GRAFANA_VARIABLES: [(&str, &str); 3] = [
    ("$__rate_interval", "5m"),
    ("$namespace", ".*"),
    ("$pod", ".*"),
];

#[test]
fn promtool_checks_the_rules() {
    let Some(promtool) = tool("promtool", "Debian package prometheus") else {
        return;
    };
    run(
        Command::new(promtool)
            .args(["check", "rules"])
            .arg(deploy("prometheus/poolside-rules.yml")),
        TIMEOUT,
    )
    .assert_success();
}

#[test]
fn promtool_unit_tests_fire_and_hold_each_alert() {
    let Some(promtool) = tool("promtool", "Debian package prometheus") else {
        return;
    };
    let ran = run(
        Command::new(promtool)
            .args(["test", "rules", "poolside-rules.test.yml"])
            .current_dir(deploy("prometheus")),
        TIMEOUT,
    );
    ran.assert_success();
    // Every alert of the rules file is exercised by the unit tests.
    let tests = read(&deploy("prometheus/poolside-rules.test.yml"));
    for alert in alert_names() {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no unit test for {alert}"
        );
    }
}

fn alert_names() -> Vec<String> {
    let rules = yaml_file(&deploy("prometheus/poolside-rules.yml"));
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect()
}

fn rule_expressions() -> Vec<String> {
    let rules = yaml_file(&deploy("prometheus/poolside-rules.yml"));
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect()
}

fn dashboard() -> Value {
    let text = read(&deploy("grafana/poolside-dashboard.json"));
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Panels, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Every PromQL query of the dashboard (panel targets), and the selectors
/// inside its `label_values(...)` variable queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries: Vec<String> = panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("target expr").to_string())
        .collect();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("variable query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector.to_string())
            .unwrap_or_else(|| panic!("unexpected variable query {query}"));
        queries.push(inner);
    }
    queries
}

#[test]
fn dashboard_is_well_formed() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "poolside");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeMap::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_i64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let pos = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| pos[k].as_i64().expect("gridPos"));
        assert!(x + w <= 24, "panel {id} is wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), id) {
                    panic!("panels {other} and {id} overlap at ({cx}, {cy})");
                }
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {id}");
        }
    }
    // The views the issue asks for: utilization, in use vs max, waits,
    // exhaustion, command rate and latency, alert level.
    let used: BTreeSet<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|q| poolside_names(q))
        .collect();
    for name in [
        "poolside_pool_utilization_ratio",
        "poolside_pool_in_use_connections",
        "poolside_pool_max_connections",
        "poolside_pool_checkout_wait_seconds_bucket",
        "poolside_pool_exhausted_total",
        "poolside_commands_total",
        "poolside_command_duration_seconds_bucket",
        "poolside_alert_level",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let Some(promtool) = tool("promtool", "Debian package prometheus") else {
        return;
    };
    // promtool parses recording rules: one per query, variables filled in.
    let rules: Vec<Value> = dashboard_queries(&dashboard())
        .iter()
        .enumerate()
        .map(|(i, query)| {
            let expr = GRAFANA_VARIABLES
                .iter()
                .fold(query.clone(), |q, (var, value)| q.replace(var, value));
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let scratch = tempfile::tempdir().expect("temp dir");
    let path = scratch.path().join("dashboard-queries.yml");
    std::fs::write(&path, file.to_string()).expect("write rules");
    let ran = run(
        Command::new(promtool).args(["check", "rules"]).arg(&path),
        TIMEOUT,
    );
    ran.assert_success();
}

/// The series names a family of `kind` can be queried by.
fn series_names(name: &str, kind: &str) -> Vec<String> {
    match kind {
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect(),
        "summary" => vec![name.into(), format!("{name}_sum"), format!("{name}_count")],
        _ => vec![name.into()],
    }
}

#[tokio::test]
async fn every_metric_in_rules_and_dashboard_is_exported() {
    let redis = common::RedisServer::start().await;
    let running = common::start_poolside(&redis, PoolMode::Transaction, |_| {}).await;
    // Labelled families (commands by name) have series once traffic passed.
    let mut client = common::connect(running.client_addr).await;
    common::ok::<()>(&mut client, &["SET", "deploy:metrics", "1"]).await;
    let _: String = common::ok(&mut client, &["GET", "deploy:metrics"]).await;

    let exported: BTreeSet<String> = common::http::metrics(running.admin_addr)
        .await
        .types
        .iter()
        .flat_map(|(name, kind)| series_names(name, kind))
        .collect();

    let mut missing = BTreeMap::new();
    let sources = [
        ("deploy/prometheus/poolside-rules.yml", rule_expressions()),
        (
            "deploy/grafana/poolside-dashboard.json",
            dashboard_queries(&dashboard()),
        ),
    ];
    for (file, queries) in &sources {
        for name in queries.iter().flat_map(|q| poolside_names(q)) {
            if !exported.contains(&name) {
                missing
                    .entry(name)
                    .or_insert_with(BTreeSet::new)
                    .insert(*file);
            }
        }
    }
    running.shutdown().await;
    assert!(
        missing.is_empty(),
        "used but not exported by /metrics: {missing:?}\nexported: {exported:?}"
    );
}
