//! The fleet's view. Every poolside names its upstream connections
//! `poolside:<instance>:<profile>` ([`connection_name`]), so `CLIENT LIST`
//! on Redis tells any one of them which poolside instances share that Redis,
//! how many connections each holds, how many other clients there are, and
//! how many more instances of this one's size fit under `maxclients`.
//!
//! The arithmetic ([`assess`]), with M = `maxclients`, O = other clients,
//! n_i = the connections of poolside instance i (k instances, this one
//! included), C = this instance's `max_connections`:
//!
//! 1. Worst case: every instance grows to its `max_connections`. Redis does
//!    not say what the others' limit is, so it is taken to be C, but never
//!    less than an instance holds now: W = O + Σ max(n_i, C).
//! 2. `more_instances_fit` = ⌊(M − W) / C⌋, 0 once W ≥ M.
//! 3. `suggested_max_connections` S: the busiest instance's connections at
//!    the target utilization (`critical_percent − hysteresis_percent`), and
//!    at least `min_idle`: S = max(⌈max n_i × 100 / target⌉, min_idle, 1).
//!    Open connections are the one measure of every instance's demand that
//!    Redis gives (what its traffic needed, plus the idle ones it keeps).
//! 4. `more_instances_fit_at_suggested` = ⌊(M − O − Σ max(n_i, S)) / S⌋.

use std::collections::BTreeMap;

use serde::Serialize;

use super::control::ServerInfo;
use crate::config::Profile;

/// What every poolside connection name starts with.
const PREFIX: &str = "poolside:";

/// The name of every upstream connection: `poolside:<instance>:<profile>`.
pub fn connection_name(instance: &str, profile: Profile) -> String {
    format!("{PREFIX}{}:{}", sanitize(instance), profile.name())
}

/// Redis refuses client names with spaces, newlines or anything outside
/// `!`..`~`; `:` would split the name ambiguously. Each becomes `-`.
fn sanitize(instance: &str) -> String {
    let name: String = instance
        .trim()
        .chars()
        .map(|c| match c {
            '!'..='~' if c != ':' => c,
            _ => '-',
        })
        .collect();
    if name.is_empty() {
        "poolside".into()
    } else {
        name
    }
}

/// This instance's name: `fleet.instance` (which `POD_NAME` sets), else the
/// hostname, else `poolside`.
pub fn instance_name(configured: Option<&str>) -> String {
    let hostname = || {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|path| {
                let name = std::fs::read_to_string(path).ok()?;
                let name = name.trim();
                (!name.is_empty()).then(|| name.to_string())
            })
    };
    configured
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .or_else(hostname)
        .unwrap_or_else(|| "poolside".into())
}

/// One poolside instance as `CLIENT LIST` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub instance: String,
    pub profile: String,
    pub connections: u64,
}

/// `CLIENT LIST`, grouped by poolside instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clients {
    /// Sorted by instance, then profile.
    pub instances: Vec<Instance>,
    /// Every connection not named by a poolside, replicas and MONITOR
    /// included: Redis counts them all against `maxclients`.
    pub other_clients: u64,
}

/// What the last `CLIENT LIST` gave: the clients, or Redis' refusal.
#[derive(Debug, Clone)]
pub enum Census {
    Listed(Clients),
    Refused(String),
}

/// Groups the lines of a `CLIENT LIST` reply by their `name=` field.
pub fn parse_client_list(list: &str) -> Clients {
    let mut instances: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut other_clients = 0;
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let name = line
            .split(' ')
            .find_map(|field| field.strip_prefix("name="))
            .unwrap_or_default();
        let poolside = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.rsplit_once(':'))
            .filter(|(instance, profile)| !instance.is_empty() && !profile.is_empty());
        match poolside {
            Some(key) => *instances.entry(key).or_default() += 1,
            None => other_clients += 1,
        }
    }
    Clients {
        instances: instances
            .into_iter()
            .map(|((instance, profile), connections)| Instance {
                instance: instance.into(),
                profile: profile.into(),
                connections,
            })
            .collect(),
        other_clients,
    }
}

/// `/pool/status`'s `fleet` object.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// Redis answered `CLIENT LIST`; when false, `reason` says why not.
    pub visible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The name this instance gives its upstream connections.
    pub connection_name: Option<String>,
    #[serde(flatten)]
    pub view: Option<FleetView>,
    pub refreshed_unix_ms: Option<u64>,
}

/// The fleet as the last `CLIENT LIST` showed it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    pub instances: Vec<Instance>,
    pub poolside_instances: u64,
    pub poolside_connections: u64,
    pub other_clients: u64,
    pub maxclients: Option<u64>,
    /// This instance's, assumed for every instance (C in the module doc).
    pub max_connections: u32,
    pub busiest_instance_connections: u64,
    /// Present when `maxclients` is known.
    #[serde(flatten)]
    pub fit: Option<Fit>,
}

/// How many more instances fit under `maxclients` (steps 1-4 of the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub worst_case_clients: u64,
    /// `worst_case_clients` as a percentage of `maxclients`, one decimal.
    pub worst_case_percent: f64,
    pub more_instances_fit: u64,
    pub suggested_max_connections: u32,
    pub more_instances_fit_at_suggested: u64,
}

/// This instance's numbers that the fleet's arithmetic uses.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub max_connections: u32,
    pub min_idle: u32,
    /// Percent of `max_connections` a suggested size should run at.
    pub target_percent: f64,
}

/// The `fleet` object from the control plane's last answer.
pub fn fleet_status(server: &ServerInfo, connection_name: Option<&str>, s: Sizes) -> FleetStatus {
    let (view, reason) = match &server.census {
        Some(Census::Listed(clients)) => (Some(assess(clients, server.maxclients, s)), None),
        Some(Census::Refused(why)) => (None, Some(format!("CLIENT LIST refused: {why}"))),
        None => (None, Some("Redis has not answered CLIENT LIST yet".into())),
    };
    FleetStatus {
        visible: view.is_some(),
        reason,
        connection_name: connection_name.map(str::to_string),
        view,
        refreshed_unix_ms: server.refreshed_unix_ms,
    }
}

/// The fleet's numbers and what fits (the module doc's arithmetic).
pub fn assess(clients: &Clients, maxclients: Option<u64>, s: Sizes) -> FleetView {
    let busiest = clients
        .instances
        .iter()
        .map(|i| i.connections)
        .max()
        .unwrap_or(0);
    let fit = maxclients.map(|limit| {
        let (worst, more) = fits(clients, limit, s.max_connections);
        let suggested = super::recommend::size_for(busiest as f64, s.target_percent)
            .max(s.min_idle)
            .max(1);
        Fit {
            worst_case_clients: worst,
            worst_case_percent: percent(worst, limit),
            more_instances_fit: more,
            suggested_max_connections: suggested,
            more_instances_fit_at_suggested: fits(clients, limit, suggested).1,
        }
    });
    FleetView {
        poolside_instances: clients.instances.len() as u64,
        poolside_connections: clients.instances.iter().map(|i| i.connections).sum(),
        other_clients: clients.other_clients,
        maxclients,
        max_connections: s.max_connections,
        busiest_instance_connections: busiest,
        instances: clients.instances.clone(),
        fit,
    }
}

/// Worst-case clients when every instance grows to `size`, and how many
/// more instances of `size` fit under `maxclients`.
pub fn fits(clients: &Clients, maxclients: u64, size: u32) -> (u64, u64) {
    let size = u64::from(size.max(1));
    let worst = clients.other_clients
        + clients
            .instances
            .iter()
            .map(|i| i.connections.max(size))
            .sum::<u64>();
    (worst, maxclients.saturating_sub(worst) / size)
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        return 0.0;
    }
    (n as f64 * 1_000.0 / of as f64).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_redis_accepts() {
        assert_eq!(
            connection_name("checkout-7d9f8-x2k4q", Profile::Production),
            "poolside:checkout-7d9f8-x2k4q:production"
        );
        assert_eq!(
            connection_name(" web 1\n:a\tb é ", Profile::Staging),
            "poolside:web-1--a-b--:staging"
        );
        assert_eq!(
            connection_name("", Profile::Development),
            "poolside:poolside:development"
        );
        assert_eq!(instance_name(Some(" pod-a ")), "pod-a");
        assert!(!instance_name(Some("")).is_empty());
    }

    #[test]
    fn client_list_is_grouped_by_instance() {
        let list = "id=3 addr=127.0.0.1:50 laddr=127.0.0.1:6379 fd=8 name=poolside:b:staging age=1 flags=N cmd=ping\n\
                    id=4 addr=127.0.0.1:51 fd=9 name=poolside:a:production age=1 flags=N cmd=get\n\
                    id=5 addr=127.0.0.1:52 fd=10 name=poolside:b:staging age=1 flags=N cmd=client|list\n\
                    id=6 addr=127.0.0.1:53 fd=11 name= age=1 flags=N cmd=get\n\
                    id=7 addr=127.0.0.1:54 fd=12 name=worker age=1 flags=S cmd=replconf\n\
                    id=8 addr=127.0.0.1:55 fd=13 name=poolside:nope age=1 flags=N cmd=get\n";
        let clients = parse_client_list(list);
        let got: Vec<_> = clients
            .instances
            .iter()
            .map(|i| (i.instance.as_str(), i.profile.as_str(), i.connections))
            .collect();
        assert_eq!(got, [("a", "production", 1), ("b", "staging", 2)]);
        assert_eq!(clients.other_clients, 3);
        assert_eq!(parse_client_list(""), Clients::default());
    }

    fn fleet(connections: &[u64], other_clients: u64) -> Clients {
        Clients {
            instances: connections
                .iter()
                .enumerate()
                .map(|(n, c)| Instance {
                    instance: format!("pod-{n}"),
                    profile: "production".into(),
                    connections: *c,
                })
                .collect(),
            other_clients,
        }
    }

    const PRODUCTION: Sizes = Sizes {
        max_connections: 160,
        min_idle: 10,
        target_percent: 75.0,
    };

    #[test]
    fn fourteen_pods_of_160_on_2500_fit_one_more_or_six_at_120() {
        // The example: 14 instances whose busiest holds 90 connections.
        let mut held = vec![40; 13];
        held.push(90);
        let view = assess(&fleet(&held, 0), Some(2_500), PRODUCTION);
        let fit = view.fit.expect("maxclients known");
        assert_eq!(view.poolside_instances, 14);
        assert_eq!(view.poolside_connections, 13 * 40 + 90);
        assert_eq!(fit.worst_case_clients, 2_240);
        assert_eq!(fit.worst_case_percent, 89.6);
        assert_eq!(fit.more_instances_fit, 1);
        assert_eq!(fit.suggested_max_connections, 120);
        assert_eq!(fit.more_instances_fit_at_suggested, 6);
    }

    #[test]
    fn instances_above_the_assumed_size_and_other_clients_count() {
        // One instance already holds 200 (a larger pool): counted as 200, not 160.
        let (worst, more) = fits(&fleet(&[200, 10], 100), 1_000, 160);
        assert_eq!((worst, more), (100 + 200 + 160, 3));
        // Over the limit already: nothing fits, no underflow.
        assert_eq!(fits(&fleet(&[160; 20], 0), 2_500, 160), (3_200, 0));
        // The suggestion never drops below min_idle.
        let view = assess(&fleet(&[1, 2], 0), Some(100), PRODUCTION);
        assert_eq!(view.fit.unwrap().suggested_max_connections, 10);
        assert!(assess(&fleet(&[1], 0), None, PRODUCTION).fit.is_none());
    }
}
