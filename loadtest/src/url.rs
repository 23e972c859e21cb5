//! Endpoint URLs: the host and port, and the rule that every target is on
//! this machine.

use std::net::IpAddr;

use anyhow::{bail, Context as _};

/// The scheme must match and the host must be a loopback address: a load
/// test never leaves this machine.
pub fn check_loopback_url(url: &str, scheme: &str) -> anyhow::Result<()> {
    let (host, _) = host_port(url, scheme)?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("{url}: only loopback hosts (127.0.0.0/8, ::1, localhost) may be loaded");
    }
    Ok(())
}

/// Host and optional port of `scheme://[user@]host[:port][/...]`.
pub fn host_port<'a>(url: &'a str, scheme: &str) -> anyhow::Result<(&'a str, Option<u16>)> {
    let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
        bail!("{url}: expected a {scheme}:// URL");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').context("unclosed [ in host")?;
        (&authority[..=end], authority[end + 1..].strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().with_context(|| format!("{url}: bad port")))
        .transpose()?;
    if host.is_empty() {
        bail!("{url}: no host");
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(check_loopback_url("redis://127.0.0.1:6379", "redis").is_ok());
        assert!(check_loopback_url("redis://:pw@localhost:6380/0", "redis").is_ok());
        assert!(check_loopback_url("redis://[::1]:6380", "redis").is_ok());
        assert!(check_loopback_url("http://127.0.0.1:9180/pool/status", "http").is_ok());
        assert!(check_loopback_url("redis://10.0.0.1:6379", "redis").is_err());
        assert!(check_loopback_url("redis://example.com", "redis").is_err());
        assert!(check_loopback_url("http://127.0.0.1:9180", "redis").is_err());
    }
}
