//! Validation: a bad value is rejected at start with its key, source and reason.

use std::fmt;
use std::net::SocketAddr;

use figment::Figment;

use super::security::problem;
use super::{sources, url, AlertsConfig, Config, Problem};

/// A rejected configuration value. `poolside` exits with code 2 on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub source: String,
    pub reason: String,
}

impl ConfigError {
    pub(super) fn from_figment(e: figment::Error) -> ConfigError {
        let key = e.path.join(".");
        let source = e
            .metadata
            .as_ref()
            .map(|m| sources::describe(m, &key))
            .unwrap_or_else(|| "configuration".into());
        ConfigError {
            key: if key.is_empty() { "<root>".into() } else { key },
            value: String::new(),
            source,
            reason: e.kind.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.key)?;
        if !self.value.is_empty() {
            write!(f, " = {}", self.value)?;
        }
        write!(f, " (from {}): {}", self.source, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Every value checked at start; a flat list of independent checks, one `if`
/// (and one [`ConfigError`]) each, so it runs long.
pub(super) fn validate(config: &Config, figment: &Figment) -> Result<(), ConfigError> {
    let fail = |key: &str, value: String, reason: String| -> Result<(), ConfigError> {
        let source = sources::source_of(figment, key, "defaults");
        Err(ConfigError {
            key: key.into(),
            value,
            source,
            reason,
        })
    };
    for (key, addr) in [
        ("listen", &config.listen),
        ("admin_listen", &config.admin_listen),
    ] {
        if addr.parse::<SocketAddr>().is_err() {
            return fail(key, addr.clone(), "expected an IP:port address".into());
        }
    }
    let parsed = match url::parse(&config.upstream.url) {
        Ok(parsed) => parsed,
        Err(reason) => return fail("upstream.url", url::redact(&config.upstream.url), reason),
    };
    if let Err((key, reason)) = config.upstream.sentinel_setup(&parsed) {
        let shown = match key {
            "upstream.sentinel.addresses" => format!("{:?}", config.upstream.sentinel.addresses),
            _ => format!("{:?}", config.upstream.sentinel.master_name),
        };
        return fail(key, shown, reason);
    }
    if parsed.sentinel.is_some() || !config.upstream.sentinel.addresses.is_empty() {
        let poll = config.upstream.sentinel.poll_interval_ms;
        if !(100..=60_000).contains(&poll) {
            return fail(
                "upstream.sentinel.poll_interval_ms",
                poll.to_string(),
                "must be between 100 and 60000".into(),
            );
        }
    }
    if let Some((key, value, reason)) = check_cluster(config, &parsed) {
        return fail(key, value, reason);
    }
    let pool = &config.pool;
    let checks: [(&str, u64, bool, String); 9] = [
        (
            "pool.max_connections",
            pool.max_connections.into(),
            (1..=10_000).contains(&pool.max_connections),
            "must be between 1 and 10000".into(),
        ),
        (
            "pool.min_idle",
            pool.min_idle.into(),
            pool.min_idle <= pool.max_connections,
            format!(
                "must not exceed pool.max_connections ({})",
                pool.max_connections
            ),
        ),
        (
            "pool.checkout_timeout_ms",
            pool.checkout_timeout_ms,
            pool.checkout_timeout_ms > 0,
            "must be greater than 0".into(),
        ),
        (
            "pool.health_check_interval_secs",
            pool.health_check_interval_secs,
            pool.health_check_interval_secs > 0,
            "must be greater than 0".into(),
        ),
        (
            "pool.backoff_factor",
            pool.backoff_factor.into(),
            pool.backoff_factor >= 1,
            "must be at least 1".into(),
        ),
        (
            "pool.backoff_base_ms",
            pool.backoff_base_ms,
            pool.backoff_base_ms > 0 && pool.backoff_base_ms <= pool.backoff_max_ms,
            format!(
                "must be between 1 and pool.backoff_max_ms ({})",
                pool.backoff_max_ms
            ),
        ),
        (
            "worker_threads",
            config.worker_threads as u64,
            config.worker_threads <= 64,
            "must be between 0 (chosen from the cores) and 64".into(),
        ),
        (
            "limits.max_clients",
            config.limits.max_clients as u64,
            config.limits.max_clients > 0,
            "must be greater than 0".into(),
        ),
        (
            "limits.max_frame_bytes",
            config.limits.max_frame_bytes as u64,
            (1024..=(1 << 30)).contains(&config.limits.max_frame_bytes),
            "must be between 1024 and 1073741824".into(),
        ),
    ];
    for (key, value, ok, reason) in checks {
        if !ok {
            return fail(key, value.to_string(), reason);
        }
    }
    if config.upstream.connect_timeout_ms == 0 {
        return fail(
            "upstream.connect_timeout_ms",
            "0".into(),
            "must be greater than 0".into(),
        );
    }
    if let Err(p) = config.check_security() {
        return fail(p.key, p.value, p.reason);
    }
    if let Err(p) = check_alerts(&config.alerts) {
        return fail(p.key, p.value, p.reason);
    }
    Ok(())
}

/// `[upstream.cluster]`, when poolside fronts a cluster: the key, the value
/// shown and why it is refused.
fn check_cluster(
    config: &Config,
    parsed: &url::UpstreamUrl,
) -> Option<(&'static str, String, String)> {
    let c = &config.upstream.cluster;
    let seeds = match config.upstream.cluster_seeds(parsed) {
        Ok(seeds) => seeds?,
        Err((key, reason)) => return Some((key, format!("{:?}", c.seeds), reason)),
    };
    if parsed.sentinel.is_some() {
        let reason = "a redis+sentinel:// upstream takes no cluster seeds: a primary named \
                      by Sentinel and a Redis Cluster are different upstreams"
            .to_string();
        return Some(("upstream.cluster.seeds", format!("{seeds:?}"), reason));
    }
    if !(100..=600_000).contains(&c.refresh_interval_ms) {
        let reason = "must be between 100 and 600000".to_string();
        return Some((
            "upstream.cluster.refresh_interval_ms",
            c.refresh_interval_ms.to_string(),
            reason,
        ));
    }
    if !(1..=100).contains(&c.max_redirects) {
        let reason = "must be between 1 and 100".to_string();
        return Some((
            "upstream.cluster.max_redirects",
            c.max_redirects.to_string(),
            reason,
        ));
    }
    if c.failover_hold_ms > 600_000 {
        let reason = "must be at most 600000".to_string();
        return Some((
            "upstream.cluster.failover_hold_ms",
            c.failover_hold_ms.to_string(),
            reason,
        ));
    }
    None
}

/// Checks `[alerts]`: thresholds in order, windows in range, webhook URL usable.
fn check_alerts(c: &AlertsConfig) -> Result<(), Problem> {
    if !(1..=100).contains(&c.critical_percent) {
        return Err(problem(
            "alerts.critical_percent",
            c.critical_percent.to_string(),
            "must be between 1 and 100",
        ));
    }
    if c.warning_percent == 0 || c.warning_percent >= c.critical_percent {
        return Err(problem(
            "alerts.warning_percent",
            c.warning_percent.to_string(),
            format!(
                "must be between 1 and alerts.critical_percent ({}) - 1",
                c.critical_percent
            ),
        ));
    }
    if c.hysteresis_percent >= c.warning_percent {
        return Err(problem(
            "alerts.hysteresis_percent",
            c.hysteresis_percent.to_string(),
            format!(
                "must be below alerts.warning_percent ({})",
                c.warning_percent
            ),
        ));
    }
    if !(1..=3_600).contains(&c.window_secs) {
        return Err(problem(
            "alerts.window_secs",
            c.window_secs.to_string(),
            "must be between 1 and 3600",
        ));
    }
    if c.recommendation_window_secs < c.window_secs || c.recommendation_window_secs > 86_400 {
        return Err(problem(
            "alerts.recommendation_window_secs",
            c.recommendation_window_secs.to_string(),
            format!(
                "must be between alerts.window_secs ({}) and 86400",
                c.window_secs
            ),
        ));
    }
    if c.webhook_timeout_ms == 0 {
        return Err(problem(
            "alerts.webhook_timeout_ms",
            "0",
            "must be greater than 0",
        ));
    }
    if let Some(url) = &c.webhook_url {
        url::parse_webhook(url.expose())
            .map_err(|why| problem("alerts.webhook_url", "<redacted>", why))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn rejects_inconsistent_alert_thresholds() {
        let mut c = AlertsConfig::default();
        assert!(check_alerts(&c).is_ok());
        c.warning_percent = 85;
        assert_eq!(check_alerts(&c).unwrap_err().key, "alerts.warning_percent");
        c = AlertsConfig {
            webhook_url: Some(Secret::new("https://hooks.example/T0KEN")),
            ..AlertsConfig::default()
        };
        let p = check_alerts(&c).unwrap_err();
        assert_eq!(
            (p.key, p.value.as_str()),
            ("alerts.webhook_url", "<redacted>")
        );
    }
}
