//! `/pool/status`: the pool, Redis as seen from here, the fleet of poolside
//! instances on that Redis, alerts and recommendations, in field names
//! applications already parse.

use super::nodes::{self, NodeSizing};
use crate::backend::cluster::ClusterStatus;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::control::ServerInfo;
use super::fleet::{fleet_status, FleetStatus, Sizes};
use super::recommend::{recommend, Inputs, Sizing};
use super::{checked_once, AdminState};
use crate::alerts::{percent_of, Level};
use crate::clock;
use crate::error::{Refusal, Side};
use crate::histogram::Counts;
use crate::pool::Snapshot;
use crate::traffic::Traffic;

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// `healthy`, `degraded` (alert level not ok) or `unhealthy` (Redis unreachable).
    pub status: &'static str,
    pub environment: &'static str,
    /// `transaction` or `multiplexed` (`pool.mode`).
    pub pool_mode: &'static str,
    /// What `in_use_connections` counts in this mode, in words.
    pub in_use_counts: &'static str,
    pub max_connections: u32,
    pub in_use_connections: u32,
    pub idle_connections: u32,
    pub available_connections: u32,
    /// 0-100, one decimal.
    pub utilization_percent: f64,
    pub alert_level: &'static str,
    pub alert: AlertStatus,
    pub metrics: Counters,
    pub upstream: Upstream,
    /// Every poolside instance on this Redis, from `CLIENT LIST` (`fleet.rs`).
    pub fleet: FleetStatus,
    pub sizing: Sizing,
    pub recommendations: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertStatus {
    pub level: &'static str,
    /// When the level last changed (or poolside started).
    pub since: String,
    /// Level changes since start: one webhook POST each.
    pub changes: u64,
    pub warning_percent: f64,
    pub critical_percent: f64,
    pub hysteresis_percent: f64,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    pub pool_exhausted_count: u64,
    pub checkout_timeouts: u64,
    pub health_check_failures: u64,
    pub connections_created: u64,
    pub connections_closed: u64,
    pub checkout_wait_ms_p50: f64,
    pub checkout_wait_ms_p99: f64,
    pub peak_in_use: u32,
    pub clients_connected: u64,
    pub commands_total: u64,
    pub upstream_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Upstream {
    /// `host:port` only: never credentials.
    pub address: String,
    pub reachable: bool,
    /// RFC 3339 time of the last successful health check.
    pub last_health_check: Option<String>,
    pub latency_ms: Option<f64>,
    pub redis_version: Option<String>,
    pub connected_clients: Option<u64>,
    pub maxclients: Option<u64>,
    /// `primary` or `replica` (`INFO replication`), at the last refresh.
    pub role: Option<&'static str>,
    pub role_changes: u64,
    /// Times the pool found Redis moved (a `-READONLY` reply, a replica
    /// behind a primary URL) and closed every older connection.
    pub moves: u64,
    /// Replies that refused commands because of where Redis is.
    pub refusals: Refusals,
    /// Batches refused as a whole and sent once more on a fresh connection.
    pub resent_batches: u64,
    /// Sentinel mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelStatus>,
    /// Redis Cluster only: the slot map, redirects and each node's pool
    /// (the top-level pool figures are the first seed's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// Redis Cluster only: each node's sizing recommendations and fleet,
    /// from its own pool's usage and its own `CLIENT LIST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_sizing: Option<Vec<NodeSizing>>,
}

/// `upstream.sentinel` in `/pool/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SentinelStatus {
    pub master_name: String,
    /// `host:port` of the primary connections go to; `null` while none is known.
    pub primary: Option<String>,
    /// `ok`, `holding` (batches wait: the primary is unreachable, reported
    /// down or failing over) or `no_primary`.
    pub state: &'static str,
    /// Why it holds, or why no primary is known.
    pub reason: Option<String>,
    pub holding_for_ms: Option<u64>,
    pub failovers: u64,
    pub last_failover_unix_ms: Option<u64>,
    pub last_failover: Option<String>,
    /// Batches that waited for a primary, and those that waited in vain.
    pub held_batches: u64,
    pub hold_expired: u64,
    pub failover_hold_ms: u64,
    pub sentinels: Vec<SentinelEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SentinelEntry {
    pub address: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn sentinel_status(state: &AdminState) -> Option<SentinelStatus> {
    let sentinels = state.sentinels.as_ref()?;
    let primary = state.pool.primary()?;
    let view = primary.view();
    let unreachable = state.pool.health.is_down();
    let (status, reason) = match (&view.address, primary.holds(unreachable)) {
        (None, _) => ("no_primary", view.reason.clone()),
        (Some(_), true) => (
            "holding",
            view.reason.clone().or_else(|| {
                Some(format!(
                    "the primary does not answer: {}",
                    state.pool.health.cause()
                ))
            }),
        ),
        (Some(_), false) => ("ok", None),
    };
    Some(SentinelStatus {
        master_name: sentinels.master_name().to_string(),
        primary: view.address.as_deref().map(str::to_string),
        state: status,
        reason,
        holding_for_ms: view.holding_for.map(|d| d.as_millis() as u64),
        failovers: view.failovers,
        last_failover_unix_ms: view.last_failover_unix_ms,
        last_failover: view.last_failover_unix_ms.map(clock::rfc3339),
        held_batches: view.held_batches,
        hold_expired: view.hold_expired,
        failover_hold_ms: primary.hold_limit().as_millis() as u64,
        sentinels: sentinels
            .states()
            .into_iter()
            .map(|s| SentinelEntry {
                address: s.address,
                reachable: s.reachable,
                error: s.error,
            })
            .collect(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusals {
    pub readonly: u64,
    pub loading: u64,
    pub masterdown: u64,
}

/// Redis answered a health check and is not known to be down since.
pub fn reachable(state: &AdminState) -> bool {
    !state.pool.health.is_down() && checked_once(&state.pool)
}

pub fn pool_status(state: &AdminState) -> PoolStatus {
    let s = state.pool.snapshot();
    let reachable = reachable(state);
    let server = state.control.info();
    let level = state.alerts.level();
    let thresholds = state.alerts.thresholds();
    let window = state.usage.summarize(state.recommendation_window);
    let fleet = fleet(
        state,
        &server,
        s.max_connections,
        thresholds.target_percent(),
    );
    let address = state.upstream.describe();
    let (mut recommendations, sizing) = recommend(&Inputs {
        max: s.max_connections,
        min_idle: state.min_idle,
        in_use: s.in_use,
        thresholds,
        window: &window,
        upstream_address: &address,
        reachable,
        server: &server,
        fleet: &fleet,
    });
    let cluster_sizing = state.cluster_nodes.as_ref().map(|n| {
        n.sizing(&nodes::Context {
            thresholds,
            window: state.recommendation_window,
            min_idle: state.min_idle,
            target_percent: thresholds.target_percent(),
            connection_name: state.connection_name.as_deref(),
        })
    });
    if let Some(per_node) = &cluster_sizing {
        let lines = nodes::node_lines(per_node);
        if !lines.is_empty() {
            recommendations.retain(|r| r != super::recommend::OPTIMAL);
            recommendations.extend(lines);
        }
    }
    let status = match (reachable, level) {
        (false, _) => "unhealthy",
        (true, Level::Ok) => "healthy",
        (true, _) => "degraded",
    };
    PoolStatus {
        status,
        environment: state.profile.name(),
        pool_mode: state.pool_mode.name(),
        in_use_counts: state.pool_mode.in_use_counts(),
        max_connections: s.max_connections,
        in_use_connections: s.in_use,
        idle_connections: s.idle,
        available_connections: s.max_connections.saturating_sub(s.in_use),
        utilization_percent: round(percent_of(s.in_use, s.max_connections), 1),
        alert_level: level.as_str(),
        alert: AlertStatus {
            level: level.as_str(),
            since: clock::rfc3339(state.alerts.changed_at_unix_ms()),
            changes: state.alerts.changes(),
            warning_percent: thresholds.warning,
            critical_percent: thresholds.critical,
            hysteresis_percent: thresholds.hysteresis,
            window_secs: state.alerts.window().as_secs(),
        },
        metrics: counters(&s, &state.pool.stats.checkout_wait(), &state.traffic),
        upstream: upstream(state, reachable, server, cluster_sizing),
        fleet,
        sizing,
        recommendations,
    }
}

/// The fleet, sized with this instance's `max_connections`.
fn fleet(state: &AdminState, server: &ServerInfo, max: u32, target_percent: f64) -> FleetStatus {
    let sizes = Sizes {
        max_connections: max,
        min_idle: state.min_idle,
        target_percent,
    };
    fleet_status(server, state.connection_name.as_deref(), sizes)
}

fn counters(s: &Snapshot, wait: &Counts, traffic: &Traffic) -> Counters {
    Counters {
        pool_exhausted_count: s.exhausted_total,
        checkout_timeouts: s.checkout_timeouts_total,
        health_check_failures: s.health_check_failures_total,
        connections_created: s.created_total,
        connections_closed: s.closed_total,
        checkout_wait_ms_p50: round(wait.quantile_ms(0.5), 3),
        checkout_wait_ms_p99: round(wait.quantile_ms(0.99), 3),
        peak_in_use: s.peak_in_use,
        clients_connected: traffic.clients_connected(),
        commands_total: traffic.commands_total(),
        upstream_errors: traffic.failed_total(Side::Upstream),
    }
}

fn upstream(
    state: &AdminState,
    reachable: bool,
    server: ServerInfo,
    cluster_sizing: Option<Vec<NodeSizing>>,
) -> Upstream {
    let health = &state.pool.health;
    let last_check = health.last_check_unix_ms.load(Ordering::Relaxed);
    let latency_us = health.last_latency_us.load(Ordering::Relaxed);
    Upstream {
        address: state.upstream.describe(),
        reachable,
        last_health_check: (last_check > 0).then(|| clock::rfc3339(last_check)),
        latency_ms: (last_check > 0).then(|| round(latency_us as f64 / 1_000.0, 3)),
        redis_version: server.redis_version,
        connected_clients: server.connected_clients,
        maxclients: server.maxclients,
        role: server.role,
        role_changes: server.role_changes,
        moves: state.pool.stale_marks(),
        refusals: Refusals {
            readonly: state.traffic.refusals_total(Refusal::ReadOnly),
            loading: state.traffic.refusals_total(Refusal::Loading),
            masterdown: state.traffic.refusals_total(Refusal::MasterDown),
        },
        resent_batches: state.traffic.resent_total(),
        sentinel: sentinel_status(state),
        cluster: state.cluster.as_ref().map(|c| c.status()),
        cluster_sizing,
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
