//! Sizing recommendations: the static rules, a pool size computed from
//! what the pool saw over the recommendation window, and the fleet's room
//! under Redis' `maxclients` computed from `CLIENT LIST`.

use serde::Serialize;

use super::control::ServerInfo;
use super::fleet::FleetStatus;
use crate::alerts::{percent_of, Thresholds};
use crate::usage::Window;

/// Everything a recommendation may quote.
pub struct Inputs<'a> {
    pub max: u32,
    pub min_idle: u32,
    pub in_use: u32,
    pub thresholds: Thresholds,
    pub window: &'a Window,
    pub upstream_address: &'a str,
    pub reachable: bool,
    pub server: &'a ServerInfo,
    pub fleet: &'a FleetStatus,
}

/// The numbers behind the recommendations, as `/pool/status` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Sizing {
    #[serde(flatten)]
    pub window: Window,
    /// Checkout rate times mean hold time: connections busy on average.
    pub littles_law_connections: f64,
    /// Utilization the recommended size gives the p99 demand.
    pub target_utilization_percent: f64,
    /// The `max_connections` poolside suggests; the current one when it fits.
    pub recommended_max_connections: u32,
}

pub const OPTIMAL: &str = "Pool operating optimally";

/// Recommendations in plain words (never empty) and the numbers behind them.
pub fn recommend(i: &Inputs) -> (Vec<String>, Sizing) {
    let plan = Plan::from(i);
    let mut out = Vec::new();
    static_rules(i, &mut out);
    sizing_rules(i, &plan, &mut out);
    if !fleet_rule(i, &mut out) {
        maxclients_rule(i, &mut out);
    }
    if out.is_empty() {
        out.push(OPTIMAL.to_string());
    }
    let sizing = Sizing {
        window: i.window.clone(),
        littles_law_connections: (plan.littles * 100.0).round() / 100.0,
        target_utilization_percent: i.thresholds.target_percent(),
        recommended_max_connections: plan.recommended(i.max),
    };
    (out, sizing)
}

/// The sizes the window's numbers lead to.
struct Plan {
    /// Concurrent checkouts to size for.
    seen: u32,
    /// Little's law: checkout rate x mean hold time.
    littles: f64,
    grow_to: u32,
    /// Set when the pool stayed mostly idle for the whole window.
    shrink_to: Option<u32>,
}

impl Plan {
    fn from(i: &Inputs) -> Plan {
        let w = i.window;
        let target = i.thresholds.target_percent();
        let littles = w.checkouts_per_sec * w.mean_hold_ms / 1_000.0;
        // While checkouts time out the demand above max is unseen: count the pool as full.
        let seen = if w.exhausted > 0 {
            w.p99_in_use.max(w.peak_in_use)
        } else {
            w.p99_in_use
        };
        let shrink_to = size_for(f64::from(w.peak_in_use), target)
            .max(i.min_idle)
            .max(1);
        let idle = i.reachable && w.full && w.exhausted == 0 && w.checkouts_per_sec > 0.0;
        Plan {
            seen,
            littles,
            grow_to: size_for(f64::from(seen).max(littles), target),
            shrink_to: (idle && shrink_to * 2 <= i.max).then_some(shrink_to),
        }
    }

    fn recommended(&self, max: u32) -> u32 {
        match self.shrink_to {
            _ if self.grow_to > max => self.grow_to,
            Some(smaller) => smaller,
            None => max,
        }
    }
}

/// Unreachable Redis, exhaustion seen, utilization above a threshold.
fn static_rules(i: &Inputs, out: &mut Vec<String>) {
    let w = i.window;
    if !i.reachable {
        out.push(format!(
            "Redis at {} is unreachable: clients get errors until it answers; check that it \
             runs and that this host can reach it",
            i.upstream_address
        ));
    }
    if w.exhausted > 0 {
        out.push(format!(
            "Pool exhausted {} time(s) in the last {} s (checkouts waited checkout_timeout_ms \
             in vain): increase max_connections",
            w.exhausted, w.window_secs
        ));
    }
    let now = percent_of(i.in_use, i.max);
    if now > i.thresholds.critical {
        out.push(format!(
            "Utilization {now:.1} % is above the critical threshold ({:.0} %): increase \
             max_connections",
            i.thresholds.critical
        ));
    } else if now > i.thresholds.warning {
        out.push(format!(
            "Utilization {now:.1} % is above the warning threshold ({:.0} %): monitor the pool",
            i.thresholds.warning
        ));
    }
}

/// Grow to fit the p99 demand, or shrink a pool idle for the whole window.
fn sizing_rules(i: &Inputs, plan: &Plan, out: &mut Vec<String>) {
    let w = i.window;
    if plan.grow_to > i.max {
        out.push(format!(
            "p99 concurrent checkouts {} of {} ({:.0} %), waits p99 {}: raise \
             max_connections to {}{}",
            plan.seen,
            i.max,
            percent_of(plan.seen, i.max),
            ms(w.checkout_wait_ms_p99),
            plan.grow_to,
            littles_clause(w, plan.littles),
        ));
    } else if let Some(smaller) = plan.shrink_to {
        out.push(format!(
            "Pool mostly idle: at most {} of {} connections in use ({:.0} %) over the last {} s: \
             lower max_connections to {smaller}, freeing up to {} Redis connections per pod",
            w.peak_in_use,
            i.max,
            percent_of(w.peak_in_use, i.max),
            w.window_secs,
            i.max - smaller,
        ));
    }
}

/// Without the fleet's numbers: Redis's connected clients near its limit.
fn maxclients_rule(i: &Inputs, out: &mut Vec<String>) {
    let (Some(connected), Some(limit)) = (i.server.connected_clients, i.server.maxclients) else {
        return;
    };
    let used = if limit == 0 {
        0.0
    } else {
        connected as f64 * 100.0 / limit as f64
    };
    if used >= i.thresholds.critical {
        out.push(format!(
            "Redis has {connected} of maxclients {limit} clients connected ({used:.0} %): \
             the whole fleet's connections, not only this pod's {}, are about to hit \
             Redis's limit; lower max_connections across pods or raise maxclients",
            i.max
        ));
    }
}

/// The fleet's worst case (every poolside instance at max_connections)
/// nears maxclients: how many more pods fit, and what would fit more.
/// Returns whether the fleet's numbers were known, which makes the
/// connected-clients rule redundant.
fn fleet_rule(i: &Inputs, out: &mut Vec<String>) -> bool {
    let Some(view) = &i.fleet.view else {
        return false;
    };
    let (Some(fit), Some(limit)) = (&view.fit, view.maxclients) else {
        return false;
    };
    if fit.worst_case_percent < i.thresholds.critical {
        return true;
    }
    let c = view.max_connections;
    let k = view.poolside_instances;
    let others = view.other_clients;
    let mut line = format!(
        "{k} poolside {} {} {} and {others} other {} connected: if each instance grows to \
         max_connections {c}, Redis reaches {} of maxclients {limit} ({:.0} %); {} more {} of \
         max_connections {c} {}",
        plural(k, "instance", "instances"),
        plural(k, "holds", "hold"),
        count(view.poolside_connections, "connection", "connections"),
        plural(others, "client is", "clients are"),
        fit.worst_case_clients,
        fit.worst_case_percent,
        fit.more_instances_fit,
        plural(fit.more_instances_fit, "pod", "pods"),
        plural(fit.more_instances_fit, "fits", "fit"),
    );
    let busiest = view.busiest_instance_connections;
    // Lowering max_connections is advice only if it makes room for more pods.
    if fit.suggested_max_connections < c
        && fit.more_instances_fit_at_suggested > fit.more_instances_fit
    {
        line.push_str(&format!(
            "; the busiest instance holds {}: lower max_connections to {} to fit {} more",
            count(busiest, "connection", "connections"),
            fit.suggested_max_connections,
            fit.more_instances_fit_at_suggested,
        ));
    } else {
        // Room for one more pod with the fleet's worst case at the target utilization.
        let needed = size_for(
            (fit.worst_case_clients + u64::from(c)) as f64,
            i.thresholds.target_percent(),
        );
        line.push_str(&format!(
            "; the busiest instance holds {}, so its max_connections is needed: raise \
             maxclients to {needed} to fit 1 more",
            count(busiest, "connection", "connections"),
        ));
    }
    out.push(line);
    true
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Connections so that `demand` sits at `target_percent` utilization.
pub(super) fn size_for(demand: f64, target_percent: f64) -> u32 {
    // The epsilon keeps 9 / 0.75 at 12, not 13, despite rounding.
    ((demand * 100.0 / target_percent) - 1e-9).ceil().max(0.0) as u32
}

fn littles_clause(w: &Window, littles: f64) -> String {
    if littles <= 0.0 {
        return String::new();
    }
    format!(
        " ({:.0} checkouts/s x {} mean hold = {littles:.1} connections busy on average)",
        w.checkouts_per_sec,
        ms(w.mean_hold_ms)
    )
}

fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2} ms")
    } else {
        format!("{value:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::super::fleet::{fleet_status, Census, Clients, Instance, Sizes};
    use super::*;

    const T: Thresholds = Thresholds {
        warning: 60.0,
        critical: 80.0,
        hysteresis: 5.0,
    };

    static NO_FLEET: FleetStatus = FleetStatus {
        visible: false,
        reason: None,
        connection_name: None,
        view: None,
        refreshed_unix_ms: None,
    };

    fn inputs<'a>(max: u32, in_use: u32, w: &'a Window, server: &'a ServerInfo) -> Inputs<'a> {
        Inputs {
            max,
            min_idle: 2,
            in_use,
            thresholds: T,
            window: w,
            upstream_address: "10.0.0.5:6379",
            reachable: true,
            server,
            fleet: &NO_FLEET,
        }
    }

    /// The fleet of `held` connections per instance, as `fleet_status` makes it.
    fn fleet_of(held: &[u64], other_clients: u64, maxclients: u64, max: u32) -> FleetStatus {
        let clients = Clients {
            instances: held
                .iter()
                .enumerate()
                .map(|(n, c)| Instance {
                    instance: format!("pod-{n:02}"),
                    profile: "production".into(),
                    connections: *c,
                })
                .collect(),
            other_clients,
        };
        let server = ServerInfo {
            maxclients: Some(maxclients),
            census: Some(Census::Listed(clients)),
            ..ServerInfo::default()
        };
        let sizes = Sizes {
            max_connections: max,
            min_idle: 10,
            target_percent: T.target_percent(),
        };
        fleet_status(&server, Some("poolside:pod-00:production"), sizes)
    }

    #[test]
    fn a_fleet_near_maxclients_is_told_what_fits() {
        // The example: 14 pods of 160 on maxclients 2500, the busiest holding 90.
        let mut held = vec![40; 13];
        held.push(90);
        let fleet = fleet_of(&held, 0, 2_500, 160);
        let w = Window::default();
        // connected_clients is high too: one line about it, the fleet's.
        let server = ServerInfo {
            connected_clients: Some(2_100),
            maxclients: Some(2_500),
            ..ServerInfo::default()
        };
        let (out, _) = recommend(&Inputs {
            fleet: &fleet,
            ..inputs(160, 0, &w, &server)
        });
        assert_eq!(
            out,
            vec![
                "14 poolside instances hold 610 connections and 0 other clients are connected: \
                 if each instance grows to max_connections 160, Redis reaches 2240 of maxclients \
                 2500 (90 %); 1 more pod of max_connections 160 fits; the busiest instance holds \
                 90 connections: lower max_connections to 120 to fit 6 more"
                    .to_string()
            ]
        );

        // Every instance uses its pool: only more maxclients helps.
        let fleet = fleet_of(&[150], 280, 500, 160);
        let (out, _) = recommend(&Inputs {
            fleet: &fleet,
            ..inputs(160, 0, &w, &ServerInfo::default())
        });
        assert_eq!(
            out,
            vec![
                "1 poolside instance holds 150 connections and 280 other clients are connected: \
                 if each instance grows to max_connections 160, Redis reaches 440 of maxclients \
                 500 (88 %); 0 more pods of max_connections 160 fit; the busiest instance holds \
                 150 connections, so its max_connections is needed: raise maxclients to 800 to \
                 fit 1 more"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_fleet_with_room_says_nothing() {
        let fleet = fleet_of(&[40; 10], 5, 10_000, 160);
        let w = Window::default();
        let (out, _) = recommend(&Inputs {
            fleet: &fleet,
            ..inputs(160, 0, &w, &ServerInfo::default())
        });
        assert_eq!(out, vec![OPTIMAL.to_string()]);
    }

    #[test]
    fn nothing_wrong_is_optimal() {
        let w = Window {
            full: true,
            p99_in_use: 50,
            peak_in_use: 60,
            checkouts_per_sec: 100.0,
            ..Window::default()
        };
        let (out, sizing) = recommend(&inputs(100, 30, &w, &ServerInfo::default()));
        assert_eq!(out, vec![OPTIMAL.to_string()]);
        assert_eq!(sizing.recommended_max_connections, 100);
    }

    #[test]
    fn busy_pool_gets_a_size_from_its_p99() {
        let w = Window {
            window_secs: 300,
            full: true,
            p99_in_use: 142,
            peak_in_use: 150,
            checkout_wait_ms_p99: 12.0,
            checkouts_per_sec: 4_000.0,
            mean_hold_ms: 30.0,
            ..Window::default()
        };
        let (out, sizing) = recommend(&inputs(160, 120, &w, &ServerInfo::default()));
        assert_eq!(sizing.recommended_max_connections, 190);
        assert_eq!(sizing.littles_law_connections, 120.0);
        let line = out
            .iter()
            .find(|l| l.starts_with("p99"))
            .expect("a sizing line");
        assert!(
            line.starts_with("p99 concurrent checkouts 142 of 160 (89 %), waits p99 12 ms: raise max_connections to 190"),
            "{line}"
        );
        assert!(
            out.iter()
                .any(|l| l.contains("above the warning threshold")),
            "{out:?}"
        );
    }

    #[test]
    fn idle_pool_is_told_to_shrink_and_what_that_frees() {
        let w = Window {
            window_secs: 300,
            full: true,
            p99_in_use: 9,
            peak_in_use: 12,
            checkouts_per_sec: 50.0,
            ..Window::default()
        };
        let (out, sizing) = recommend(&inputs(160, 3, &w, &ServerInfo::default()));
        assert_eq!(sizing.recommended_max_connections, 16);
        assert!(
            out[0].contains("lower max_connections to 16, freeing up to 144 Redis connections"),
            "{out:?}"
        );
        // Not before the window is full, and not without traffic.
        let young = Window {
            full: false,
            ..w.clone()
        };
        assert_eq!(
            recommend(&inputs(160, 3, &young, &ServerInfo::default())).0,
            vec![OPTIMAL.to_string()]
        );
    }

    #[test]
    fn exhaustion_counts_the_pool_as_full_demand() {
        let w = Window {
            window_secs: 5,
            full: true,
            p99_in_use: 9,
            peak_in_use: 10,
            exhausted: 1,
            ..Window::default()
        };
        let (out, sizing) = recommend(&inputs(10, 10, &w, &ServerInfo::default()));
        assert_eq!(sizing.recommended_max_connections, 14);
        assert!(
            out.iter()
                .any(|l| l.starts_with("Pool exhausted 1 time(s) in the last 5 s")),
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|l| l.contains("above the critical threshold")),
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|l| l.contains("raise max_connections to 14")),
            "{out:?}"
        );
    }

    #[test]
    fn warns_when_redis_nears_maxclients_and_when_it_is_down() {
        let server = ServerInfo {
            connected_clients: Some(9_100),
            maxclients: Some(10_000),
            ..ServerInfo::default()
        };
        let w = Window::default();
        let mut i = inputs(160, 0, &w, &server);
        i.reachable = false;
        let (out, _) = recommend(&i);
        assert!(
            out[0].starts_with("Redis at 10.0.0.5:6379 is unreachable"),
            "{out:?}"
        );
        assert!(
            out[1].starts_with("Redis has 9100 of maxclients 10000 clients connected (91 %)"),
            "{out:?}"
        );
    }
}
