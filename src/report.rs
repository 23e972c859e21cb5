//! What `poolside status` and `poolside recommend` print.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{Config, Profile};

/// The static formula: per worker, 15 base connections plus 25 for high concurrency.
pub const BASE_PER_WORKER: u32 = 15;
pub const HIGH_CONCURRENCY_PER_WORKER: u32 = 25;

const BAR_WIDTH: usize = 40;

/// GETs `/pool/status` from the admin server at `admin`.
pub async fn fetch_status(admin: SocketAddr, timeout: Duration) -> anyhow::Result<Value> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{admin}/pool/status").parse()?;
    let fetch = async {
        let response = client.get(uri).await?;
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok(serde_json::from_slice::<Value>(&body)?)
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} ms", timeout.as_millis()))?
}

/// `poolside status`: prints the table. Exit code 0 when healthy or
/// degraded, 1 when unhealthy, 2 when the admin server does not answer.
pub fn status_command(admin: SocketAddr) -> u8 {
    // An unspecified listen address (0.0.0.0) is reached on loopback.
    let admin = match admin.ip().is_unspecified() {
        true if admin.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], admin.port())),
        true => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, admin.port())),
        false => admin,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("poolside status: {e}");
            return 2;
        }
    };
    match runtime.block_on(fetch_status(admin, Duration::from_secs(5))) {
        Ok(status) => {
            print!("{}", render_status(&status));
            if is_healthy(&status) {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("poolside status: cannot read http://{admin}/pool/status: {e:#}");
            2
        }
    }
}

/// Whether a status document says the pool can serve: not `unhealthy`.
pub fn is_healthy(status: &Value) -> bool {
    status["status"].as_str().is_some_and(|s| s != "unhealthy")
}

/// `/pool/status` as a table a person can read.
pub fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let rows = pool_rows(v)
        .into_iter()
        .chain(upstream_rows(v))
        .chain([fleet_row(v)]);
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<12}{value}");
    }
    out.push_str("\nRecommendations:\n");
    for r in v["recommendations"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}", plain(r));
    }
    out
}

/// `path` (dotted) in `v` as plain text, `?` when absent or null.
fn text(v: &Value, path: &str) -> String {
    lookup(v, path).map_or("?".into(), plain)
}

fn pool_rows(v: &Value) -> [(&'static str, String); 3] {
    let t = |path: &str| text(v, path);
    let percent = lookup(v, "utilization_percent")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let filled = ((percent / 100.0 * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
    let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
    [
        (
            "status",
            format!("{} ({})", t("status").to_uppercase(), t("environment")),
        ),
        (
            "pool",
            format!(
                "{bar} {percent:.1} %  {} of {} in use, {} available, {} idle",
                t("in_use_connections"),
                t("max_connections"),
                t("available_connections"),
                t("idle_connections"),
            ),
        ),
        (
            "alert",
            format!(
                "{} since {} (warning > {} %, critical > {} % for {} s)",
                t("alert_level").to_uppercase(),
                t("alert.since"),
                t("alert.warning_percent"),
                t("alert.critical_percent"),
                t("alert.window_secs"),
            ),
        ),
    ]
}

fn upstream_rows(v: &Value) -> [(&'static str, String); 4] {
    let t = |path: &str| text(v, path);
    let reachable = lookup(v, "upstream.reachable").and_then(Value::as_bool) == Some(true);
    let rate = lookup(v, "sizing.checkouts_per_sec")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    [
        (
            "upstream",
            format!(
                "{} {}, latency {} ms, Redis {}, {} of maxclients {} clients",
                t("upstream.address"),
                if reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                },
                t("upstream.latency_ms"),
                t("upstream.redis_version"),
                t("upstream.connected_clients"),
                t("upstream.maxclients"),
            ),
        ),
        (
            "checkouts",
            format!(
                "wait p50 {} ms, p99 {} ms; peak {} in use; exhausted {} times",
                t("metrics.checkout_wait_ms_p50"),
                t("metrics.checkout_wait_ms_p99"),
                t("metrics.peak_in_use"),
                t("metrics.pool_exhausted_count"),
            ),
        ),
        (
            "traffic",
            format!(
                "{} commands, {} clients connected, {} upstream errors",
                t("metrics.commands_total"),
                t("metrics.clients_connected"),
                t("metrics.upstream_errors"),
            ),
        ),
        (
            "sizing",
            format!(
                "last {} s: p99 {} / peak {} concurrent, {rate:.0} checkouts/s, mean hold {} ms \
                 -> max_connections {}",
                t("sizing.covered_secs"),
                t("sizing.p99_in_use"),
                t("sizing.peak_in_use"),
                t("sizing.mean_hold_ms"),
                t("sizing.recommended_max_connections"),
            ),
        ),
    ]
}

/// The poolside instances on this Redis, or why Redis does not show them.
fn fleet_row(v: &Value) -> (&'static str, String) {
    let t = |path: &str| text(v, path);
    if lookup(v, "fleet.visible").and_then(Value::as_bool) != Some(true) {
        return ("fleet", format!("not visible: {}", t("fleet.reason")));
    }
    (
        "fleet",
        format!(
            "{} poolside instances hold {} connections, {} other clients; {} more of \
             max_connections {} fit under maxclients {}",
            t("fleet.poolside_instances"),
            t("fleet.poolside_connections"),
            t("fleet.other_clients"),
            t("fleet.more_instances_fit"),
            t("fleet.max_connections"),
            t("fleet.maxclients"),
        ),
    )
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The static sizing formula's answer for `workers` processes serving
/// `users` concurrent users, and the profile it matches.
pub fn recommend(workers: u32, users: u32) -> String {
    let base = workers * BASE_PER_WORKER;
    let high = workers * HIGH_CONCURRENCY_PER_WORKER;
    // A user holds at most one connection at a time: more users than base
    // connections is when the high-concurrency share is needed.
    let high_needed = users > base;
    let total = if high_needed { base + high } else { base };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Pool sizing for {workers} workers and {users} concurrent users"
    );
    let _ = writeln!(
        out,
        "  base              {workers} workers x {BASE_PER_WORKER} = {base}"
    );
    let _ = writeln!(
        out,
        "  high concurrency  {workers} workers x {HIGH_CONCURRENCY_PER_WORKER} = {high} ({})",
        if high_needed {
            format!("added: {users} users > {base} base connections")
        } else {
            format!("not needed: {users} users <= {base} base connections")
        }
    );
    let _ = writeln!(out, "  max_connections   {total}");
    let profiles = [Profile::Development, Profile::Staging, Profile::Production];
    let fits = profiles
        .into_iter()
        .map(|p| (p, Config::for_profile(p).pool.max_connections))
        .find(|(_, max)| *max >= total);
    let _ = match fits {
        Some((p, max)) => writeln!(out, "  profile           {p} (max_connections {max})"),
        None => writeln!(
            out,
            "  profile           none is large enough: use production with \
             POOLSIDE_POOL__MAX_CONNECTIONS={total}"
        ),
    };
    let _ = writeln!(
        out,
        "\nThen let /pool/status recommend from what the pool actually sees."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_busy_workers_match_production() {
        let out = recommend(4, 500);
        assert!(out.contains("max_connections   160"), "{out}");
        assert!(out.contains("profile           production"), "{out}");
        let quiet = recommend(4, 40);
        assert!(quiet.contains("max_connections   60"), "{quiet}");
        assert!(quiet.contains("staging"), "{quiet}");
        assert!(recommend(10, 5_000).contains("POOLSIDE_POOL__MAX_CONNECTIONS=400"));
    }

    #[test]
    fn renders_a_status_document() {
        let v = serde_json::json!({
            "status": "degraded", "environment": "production", "utilization_percent": 50.0,
            "in_use_connections": 80, "max_connections": 160, "alert_level": "warning",
            "upstream": {"reachable": true, "address": "10.0.0.5:6379"},
            "recommendations": ["Pool operating optimally"],
        });
        let out = render_status(&v);
        assert!(
            out.contains(&format!("[{}{}] 50.0 %", "#".repeat(20), "-".repeat(20))),
            "{out}"
        );
        assert!(out.contains("DEGRADED (production)"), "{out}");
        assert!(out.contains("  fleet       not visible: ?"), "{out}");
        let fleet = serde_json::json!({"fleet": {
            "visible": true, "poolside_instances": 3, "poolside_connections": 12,
            "other_clients": 1, "more_instances_fit": 496, "max_connections": 20,
            "maxclients": 10000,
        }});
        assert!(
            render_status(&fleet).contains(
                "  fleet       3 poolside instances hold 12 connections, 1 other clients; 496 \
                 more of max_connections 20 fit under maxclients 10000"
            ),
            "{}",
            render_status(&fleet)
        );
        assert!(out.contains("  - Pool operating optimally"), "{out}");
        assert!(is_healthy(&v));
        assert!(!is_healthy(&serde_json::json!({"status": "unhealthy"})));
    }
}
