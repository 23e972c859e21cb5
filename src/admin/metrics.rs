//! `/metrics`: a per-instance `prometheus` registry with one collector that
//! reads the pool's own counters at scrape time, so the data path pays for
//! no second set of counters and the exposition is always one consistent view.

use crate::backend::cluster::{Cluster, NodeStatus};
use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};

use super::control::ControlPlane;
use super::fleet::{self, Census};
use crate::alerts::Alerts;
use crate::error::{Refusal, Side};
use crate::histogram::Counts;
use crate::pool::Pool;
use crate::sentinel::Sentinels;
use crate::traffic::Traffic;

/// One metric family: its name, help and (at most one) label.
struct Def(&'static str, &'static str, Option<&'static str>);

const MAX: Def = Def(
    "poolside_pool_max_connections",
    "Upper bound on upstream connections (pool.max_connections).",
    None,
);
const IN_USE: Def = Def(
    "poolside_pool_in_use_connections",
    "Upstream connections checked out by clients.",
    None,
);
const IDLE: Def = Def(
    "poolside_pool_idle_connections",
    "Open upstream connections waiting in the pool.",
    None,
);
const UTILIZATION: Def = Def(
    "poolside_pool_utilization_ratio",
    "In-use connections divided by max connections (0..1).",
    None,
);
const PEAK: Def = Def(
    "poolside_peak_in_use_connections",
    "Most connections checked out at once since start.",
    None,
);
const EXHAUSTED: Def = Def(
    "poolside_pool_exhausted_total",
    "Checkouts that timed out because every connection was in use.",
    None,
);
const TIMEOUTS: Def = Def(
    "poolside_pool_checkout_timeouts_total",
    "Checkouts that waited checkout_timeout_ms in vain, whatever the cause.",
    None,
);
const WAIT: Def = Def(
    "poolside_pool_checkout_wait_seconds",
    "Time a client batch waited for an upstream connection.",
    None,
);
const CREATED: Def = Def(
    "poolside_upstream_connections_created_total",
    "Upstream connections opened.",
    None,
);
const CLOSED: Def = Def(
    "poolside_upstream_connections_closed_total",
    "Upstream connections closed, by reason.",
    Some("reason"),
);
const CHECKS: Def = Def(
    "poolside_health_checks_total",
    "Health-check rounds run.",
    None,
);
const CHECK_FAILURES: Def = Def(
    "poolside_health_check_failures_total",
    "Health-check rounds that found Redis or a connection failing.",
    None,
);
const CLIENTS: Def = Def(
    "poolside_clients_connected",
    "Client connections open now.",
    None,
);
const COMMANDS: Def = Def(
    "poolside_commands_total",
    "Commands received from clients, by command name (others as \"other\").",
    Some("command"),
);
const ERRORS: Def = Def(
    "poolside_errors_total",
    "Client batches answered with a poolside error, by side, counted once per batch in every pool mode: client (malformed input), upstream (Redis unreachable, connection lost), internal (poolside refused: pool exhausted, max_clients reached).",
    Some("side"),
);
const DURATION: Def = Def(
    "poolside_command_duration_seconds",
    "Upstream round trip of one client batch: write, then every reply read.",
    None,
);
const UP: Def = Def(
    "poolside_upstream_up",
    "1 when Redis answered the last health check, else 0.",
    None,
);
const ALERT: Def = Def(
    "poolside_alert_level",
    "Utilization alert level: 0 ok, 1 warning, 2 critical.",
    None,
);

const AUTH_FAILURES: Def = Def(
    "poolside_client_auth_failures_total",
    "AUTH or HELLO AUTH attempts from clients with a wrong password.",
    None,
);
const DENIED: Def = Def(
    "poolside_commands_denied_total",
    "Commands refused by the profile's command policy.",
    None,
);

const REPLY_OVERFLOWS: Def = Def(
    "poolside_reply_buffer_overflows_total",
    "Clients disconnected for leaving more than limits.max_reply_buffer_bytes of replies unread (multiplexed mode).",
    None,
);
const FLEET_INSTANCES: Def = Def(
    "poolside_fleet_instances",
    "poolside instances with connections to this Redis (CLIENT LIST, by connection name); absent while CLIENT LIST is refused.",
    None,
);
const FLEET_CONNECTIONS: Def = Def(
    "poolside_fleet_connections",
    "Connections all poolside instances hold on this Redis (CLIENT LIST).",
    None,
);
const FLEET_OTHERS: Def = Def(
    "poolside_fleet_other_clients",
    "Connections to this Redis not from a poolside, replicas included (CLIENT LIST).",
    None,
);
const FLEET_FIT: Def = Def(
    "poolside_fleet_more_instances_fit",
    "More instances of this max_connections that fit under maxclients if every instance grows to max_connections.",
    None,
);

const REFUSALS: Def = Def(
    "poolside_upstream_refusals_total",
    "Replies refusing commands because of where Redis is: a replica after a failover (readonly), loading its dataset, or without its primary (masterdown).",
    Some("reply"),
);
const MOVES: Def = Def(
    "poolside_upstream_moves_total",
    "Times Redis was found moved (a -READONLY reply, a replica behind a primary URL) and every older upstream connection closed.",
    None,
);
const RESENT: Def = Def(
    "poolside_batches_resent_total",
    "Batches refused as a whole (nothing ran) and sent once more on a fresh connection.",
    None,
);

const SENTINEL_FAILOVERS: Def = Def(
    "poolside_sentinel_failovers_total",
    "Times the Sentinels moved the primary and poolside followed.",
    None,
);
const SENTINEL_LAST_FAILOVER: Def = Def(
    "poolside_sentinel_last_failover_timestamp_seconds",
    "Unix time poolside last followed a failover (0: never).",
    None,
);
const SENTINEL_PRIMARY: Def = Def(
    "poolside_sentinel_primary",
    "1 for the primary poolside connects to now (none while no primary is known).",
    Some("address"),
);
const SENTINEL_HOLDING: Def = Def(
    "poolside_sentinel_holding",
    "1 while batches wait for a primary (unreachable, reported down or failing over).",
    None,
);
const SENTINEL_HELD: Def = Def(
    "poolside_sentinel_held_batches_total",
    "Batches that waited for a primary before they were written.",
    None,
);
const SENTINEL_EXPIRED: Def = Def(
    "poolside_sentinel_hold_expired_total",
    "Held batches that got -ERR poolside: no primary after upstream.sentinel.failover_hold_ms.",
    None,
);
const SENTINEL_REACHABLE: Def = Def(
    "poolside_sentinel_reachable",
    "1 for each Sentinel that answered the last poll, 0 for one that did not.",
    Some("sentinel"),
);

const CLUSTER_REDIRECTS: Def = Def(
    "poolside_cluster_redirects_total",
    "Redis Cluster redirects poolside followed: moved, ask, and re-sends after tryagain.",
    Some("kind"),
);
const CLUSTER_READS: Def = Def(
    "poolside_cluster_slot_map_reads_total",
    "CLUSTER SLOTS readings: ok, or failed (no node answered).",
    Some("result"),
);
const CLUSTER_SLOTS: Def = Def(
    "poolside_cluster_node_slots",
    "Slots each cluster node owns in poolside's slot map.",
    Some("node"),
);
const CLUSTER_IN_USE: Def = Def(
    "poolside_cluster_node_connections_in_use",
    "Connections to each cluster node checked out now (each node has pool.max_connections).",
    Some("node"),
);
const CLUSTER_OPEN: Def = Def(
    "poolside_cluster_node_connections",
    "Open connections to each cluster node, in use or idle.",
    Some("node"),
);

const ALL: [&Def; 40] = [
    &MAX,
    &IN_USE,
    &IDLE,
    &UTILIZATION,
    &PEAK,
    &EXHAUSTED,
    &TIMEOUTS,
    &WAIT,
    &CREATED,
    &CLOSED,
    &CHECKS,
    &CHECK_FAILURES,
    &CLIENTS,
    &COMMANDS,
    &ERRORS,
    &DURATION,
    &UP,
    &ALERT,
    &AUTH_FAILURES,
    &DENIED,
    &REPLY_OVERFLOWS,
    &REFUSALS,
    &MOVES,
    &RESENT,
    &FLEET_INSTANCES,
    &FLEET_CONNECTIONS,
    &FLEET_OTHERS,
    &FLEET_FIT,
    &SENTINEL_FAILOVERS,
    &SENTINEL_LAST_FAILOVER,
    &SENTINEL_PRIMARY,
    &SENTINEL_HOLDING,
    &SENTINEL_HELD,
    &SENTINEL_EXPIRED,
    &SENTINEL_REACHABLE,
    &CLUSTER_REDIRECTS,
    &CLUSTER_READS,
    &CLUSTER_SLOTS,
    &CLUSTER_IN_USE,
    &CLUSTER_OPEN,
];

/// The registry of one poolside instance.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(
        pool: Pool,
        traffic: Arc<Traffic>,
        alerts: Arc<Alerts>,
        control: Arc<ControlPlane>,
        sentinels: Option<Sentinels>,
        cluster: Option<Arc<Cluster>>,
    ) -> prometheus::Result<Metrics> {
        let descs = ALL
            .iter()
            .map(|d| {
                let labels = d.2.iter().map(|l| l.to_string()).collect();
                Desc::new(d.0.into(), d.1.into(), labels, HashMap::new())
            })
            .collect::<prometheus::Result<_>>()?;
        let registry = Registry::new();
        registry.register(Box::new(PoolCollector {
            pool,
            traffic,
            alerts,
            control,
            sentinels,
            cluster,
            descs,
        }))?;
        Ok(Metrics { registry })
    }

    /// The text exposition format, and its content type.
    pub fn render(&self) -> prometheus::Result<(Vec<u8>, String)> {
        let encoder = TextEncoder::new();
        let mut out = Vec::with_capacity(16 * 1024);
        encoder.encode(&self.registry.gather(), &mut out)?;
        Ok((out, encoder.format_type().to_string()))
    }
}

struct PoolCollector {
    pool: Pool,
    traffic: Arc<Traffic>,
    alerts: Arc<Alerts>,
    control: Arc<ControlPlane>,
    sentinels: Option<Sentinels>,
    cluster: Option<Arc<Cluster>>,
    descs: Vec<Desc>,
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let state = self.pool.bb8().state();
        let s = self.pool.stats.snapshot(&state);
        let t = &self.traffic;
        let closed = &state.statistics;
        let up = !self.pool.health.is_down() && super::checked_once(&self.pool);
        let ratio = f64::from(s.in_use) / f64::from(s.max_connections.max(1));
        let mut families = vec![
            gauge(&MAX, s.max_connections.into()),
            gauge(&IN_USE, s.in_use.into()),
            gauge(&IDLE, s.idle.into()),
            gauge(&UTILIZATION, ratio),
            gauge(&PEAK, s.peak_in_use.into()),
            counter(&EXHAUSTED, [("", s.exhausted_total)]),
            counter(&TIMEOUTS, [("", s.checkout_timeouts_total)]),
            histogram(&WAIT, &self.pool.stats.checkout_wait()),
            counter(&CREATED, [("", s.created_total)]),
            counter(
                &CLOSED,
                [
                    ("broken", closed.connections_closed_broken),
                    ("invalid", closed.connections_closed_invalid),
                    ("max_lifetime", closed.connections_closed_max_lifetime),
                    ("idle_timeout", closed.connections_closed_idle_timeout),
                ],
            ),
            counter(&CHECKS, [("", s.health_check_runs_total)]),
            counter(&CHECK_FAILURES, [("", s.health_check_failures_total)]),
            gauge(&CLIENTS, t.clients_connected() as f64),
            counter(&COMMANDS, t.command_counts()),
            counter(
                &ERRORS,
                Side::ALL.map(|side| (side.label(), t.failed_total(side))),
            ),
            histogram(&DURATION, &t.round_trips()),
            gauge(&UP, if up { 1.0 } else { 0.0 }),
            gauge(&ALERT, f64::from(self.alerts.level() as u8)),
            counter(&AUTH_FAILURES, [("", t.auth_failures_total())]),
            counter(&DENIED, [("", t.denied_commands_total())]),
            counter(&REPLY_OVERFLOWS, [("", t.reply_overflows_total())]),
            counter(
                &REFUSALS,
                Refusal::ALL.map(|kind| (kind.label(), t.refusals_total(kind))),
            ),
            counter(&MOVES, [("", self.pool.stale_marks())]),
            counter(&RESENT, [("", t.resent_total())]),
        ];
        self.collect_fleet(s.max_connections, &mut families);
        self.collect_sentinel(&mut families);
        self.collect_cluster(&mut families);
        families
    }
}

impl PoolCollector {
    /// Redis Cluster mode only.
    fn collect_cluster(&self, families: &mut Vec<MetricFamily>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let s = cluster.status();
        families.push(counter(
            &CLUSTER_REDIRECTS,
            [("moved", s.moved), ("ask", s.ask), ("tryagain", s.tryagain)],
        ));
        families.push(counter(
            &CLUSTER_READS,
            [("ok", s.slot_map_reads), ("failed", s.slot_map_failures)],
        ));
        let per_node = |f: fn(&NodeStatus) -> f64| {
            s.nodes
                .iter()
                .map(|n| (n.address.as_str(), f(n)))
                .collect::<Vec<_>>()
        };
        families.push(gauges(&CLUSTER_SLOTS, per_node(|n| n.slots as f64)));
        families.push(gauges(&CLUSTER_IN_USE, per_node(|n| n.in_use.into())));
        families.push(gauges(&CLUSTER_OPEN, per_node(|n| n.connections.into())));
    }

    /// Sentinel mode only.
    fn collect_sentinel(&self, families: &mut Vec<MetricFamily>) {
        let (Some(sentinels), Some(primary)) = (&self.sentinels, self.pool.primary()) else {
            return;
        };
        let view = primary.view();
        let holding = primary.holds(self.pool.health.is_down());
        families.push(counter(&SENTINEL_FAILOVERS, [("", view.failovers)]));
        let last = view.last_failover_unix_ms.unwrap_or(0) as f64 / 1_000.0;
        families.push(gauge(&SENTINEL_LAST_FAILOVER, last));
        let address = view.address.as_deref().map(str::to_string);
        families.push(gauges(
            &SENTINEL_PRIMARY,
            address.iter().map(|a| (a.as_str(), 1.0)),
        ));
        families.push(gauge(&SENTINEL_HOLDING, if holding { 1.0 } else { 0.0 }));
        families.push(counter(&SENTINEL_HELD, [("", view.held_batches)]));
        families.push(counter(&SENTINEL_EXPIRED, [("", view.hold_expired)]));
        let states = sentinels.states();
        families.push(gauges(
            &SENTINEL_REACHABLE,
            states
                .iter()
                .map(|s| (s.address.as_str(), if s.reachable { 1.0 } else { 0.0 })),
        ));
    }

    /// The fleet's gauges, only while Redis shows `CLIENT LIST`: a refused
    /// list is no fleet of zero.
    fn collect_fleet(&self, max_connections: u32, families: &mut Vec<MetricFamily>) {
        let server = self.control.info();
        let Some(Census::Listed(clients)) = &server.census else {
            return;
        };
        let connections: u64 = clients.instances.iter().map(|i| i.connections).sum();
        families.push(gauge(&FLEET_INSTANCES, clients.instances.len() as f64));
        families.push(gauge(&FLEET_CONNECTIONS, connections as f64));
        families.push(gauge(&FLEET_OTHERS, clients.other_clients as f64));
        if let Some(limit) = server.maxclients {
            let (_, more) = fleet::fits(clients, limit, max_connections);
            families.push(gauge(&FLEET_FIT, more as f64));
        }
    }
}

fn family(def: &Def, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(def.0.into());
    f.set_help(def.1.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(def: &Def, value: f64) -> MetricFamily {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    family(def, MetricType::GAUGE, vec![proto::Metric::from_gauge(g)])
}

/// A labelled gauge: one series per `(label value, value)`.
fn gauges<'a>(def: &Def, values: impl IntoIterator<Item = (&'a str, f64)>) -> MetricFamily {
    let metrics = values
        .into_iter()
        .map(|(label, v)| {
            let mut g = proto::Gauge::default();
            g.set_value(v);
            let mut m = proto::Metric::default();
            m.set_gauge(g);
            let mut pair = proto::LabelPair::default();
            pair.set_name(def.2.unwrap_or("label").into());
            pair.set_value(label.into());
            m.set_label(vec![pair]);
            m
        })
        .collect();
    family(def, MetricType::GAUGE, metrics)
}

/// A counter; with a label, one series per `(label value, count)`.
fn counter<'a>(def: &Def, values: impl IntoIterator<Item = (&'a str, u64)>) -> MetricFamily {
    let metrics = values
        .into_iter()
        .map(|(label, n)| {
            let mut c = proto::Counter::default();
            c.set_value(n as f64);
            let mut m = proto::Metric::default();
            m.set_counter(c);
            if let Some(name) = def.2 {
                let mut pair = proto::LabelPair::default();
                pair.set_name(name.into());
                pair.set_value(label.into());
                m.set_label(vec![pair]);
            }
            m
        })
        .collect();
    family(def, MetricType::COUNTER, metrics)
}

fn histogram(def: &Def, counts: &Counts) -> MetricFamily {
    let buckets = counts
        .cumulative_seconds()
        .map(|(bound, n)| {
            let mut b = proto::Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(n);
            b
        })
        .collect();
    let mut h = proto::Histogram::default();
    h.set_sample_count(counts.count());
    h.set_sample_sum(counts.sum_seconds());
    h.set_bucket(buckets);
    let mut m = proto::Metric::default();
    m.set_histogram(h);
    family(def, MetricType::HISTOGRAM, vec![m])
}
