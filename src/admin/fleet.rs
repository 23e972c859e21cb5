//! The fleet's view. Every poolside names its upstream connections
//! `poolside:<instance>:<profile>` ([`connection_name`]), so `CLIENT LIST`
//! on Redis tells which poolside instances share that Redis and how many
//! connections each holds.

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
}
