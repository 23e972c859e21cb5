//! Where configuration values come from: flags, the application's own
//! environment variables, `POOLSIDE_*` variables, and how each source is named
//! in `poolside config` and in error messages.

use std::path::PathBuf;

use figment::providers::Env;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Provider};

use super::{Config, ConfigError, LogFormat, Profile};

/// Prefix of poolside's own environment variables; nested keys are split on `__`.
const ENV_PREFIX: &str = "POOLSIDE_";

/// Name of the `POOLSIDE_*` provider; values from it are described by their variable.
const POOLSIDE_ENV: &str = "POOLSIDE_* environment variables";

/// Whether `key` holds a string (or an optional string, path or secret), judged
/// from the compiled-in defaults so a new key needs no list kept by hand.
/// figment parses environment values (`0123` becomes the number 123, `1.3` a
/// float, `true` a bool), which would corrupt a password such as `0123` or
/// reject a numeric user name, so such keys are read from `POOLSIDE_*` verbatim.
/// Entries of a map that is empty by default (`client_users.<name>`) count too.
fn is_verbatim(key: &str) -> bool {
    use serde_json::Value as Json;
    let Ok(mut node) = serde_json::to_value(Config::for_profile(Profile::Development)) else {
        return false;
    };
    let key = key.to_ascii_lowercase();
    let mut segments = key.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Json::Object(mut map) = node else {
            return false;
        };
        match map.remove(segment) {
            Some(next) => node = next,
            None => return map.is_empty() && segments.peek().is_none(),
        }
    }
    matches!(node, Json::String(_) | Json::Null)
}

/// Values given on the command line (layer 4) plus the choice of profile and file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub profile: Option<String>,
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub upstream: Option<String>,
    pub unix_socket: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub worker_threads: Option<usize>,
    /// `transaction` or `multiplexed`.
    pub pool_mode: Option<String>,
}

/// A set, non-empty environment variable; `DEPLOYMENT_ENV=` counts as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Overrides {
    /// `--profile`, else `POOLSIDE_PROFILE`, else `DEPLOYMENT_ENV`, else development.
    pub fn select_profile(&self) -> Result<Profile, ConfigError> {
        self.choose_profile().map(|(profile, _)| profile)
    }

    /// The profile and the name of where the choice came from.
    pub(super) fn choose_profile(&self) -> Result<(Profile, &'static str), ConfigError> {
        let chosen = match &self.profile {
            Some(p) => Some((p.clone(), "--profile")),
            None => env_var("POOLSIDE_PROFILE")
                .map(|p| (p, "POOLSIDE_PROFILE"))
                .or_else(|| env_var("DEPLOYMENT_ENV").map(|p| (p, "DEPLOYMENT_ENV"))),
        };
        let Some((value, source)) = chosen else {
            return Ok((Profile::Development, "default profile"));
        };
        match Profile::parse(&value) {
            Some(profile) => Ok((profile, source)),
            None => Err(ConfigError {
                key: "profile".into(),
                value,
                source: source.into(),
                reason: "unknown profile; expected development (dev), staging or production (prod)"
                    .into(),
            }),
        }
    }

    /// `--config`, else `POOLSIDE_CONFIG`, with the name of where it came from.
    pub(super) fn select_file(&self) -> Option<(PathBuf, &'static str)> {
        match &self.config_file {
            Some(path) => Some((path.clone(), "--config")),
            None => env_var("POOLSIDE_CONFIG").map(|p| (PathBuf::from(p), "POOLSIDE_CONFIG")),
        }
    }

    /// Layer 4: one provider per flag, so a value is annotated with its flag.
    pub(super) fn merge_flags(&self, mut figment: Figment) -> Figment {
        let log_format = self.log_format.map(|f| match f {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        });
        let unix_socket = self
            .unix_socket
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let strings = [
            ("--listen", "listen", self.listen.clone()),
            ("--admin-listen", "admin_listen", self.admin_listen.clone()),
            ("--upstream", "upstream.url", self.upstream.clone()),
            ("--unix-socket", "unix_socket", unix_socket),
            ("--log-format", "log_format", log_format.map(String::from)),
            ("--pool-mode", "pool.mode", self.pool_mode.clone()),
        ];
        for (flag, key, value) in strings {
            if let Some(value) = value {
                figment = figment.merge(Named::single(flag, key, value.into()));
            }
        }
        if let Some(n) = self.worker_threads {
            figment = figment.merge(Named::single(
                "--worker-threads",
                "worker_threads",
                (n as u64).into(),
            ));
        }
        figment
    }
}

/// A provider with a readable name, so `poolside config` can say where a value came from.
pub(super) struct Named {
    name: String,
    dict: Dict,
}

impl Named {
    pub(super) fn new(name: &str, dict: Dict) -> Named {
        Named {
            name: name.into(),
            dict,
        }
    }

    pub(super) fn single(name: &str, key: &str, value: Value) -> Named {
        let mut dict = Dict::new();
        insert_path(&mut dict, key, value);
        Named::new(name, dict)
    }
}

impl Provider for Named {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }
    fn data(&self) -> Result<Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.dict.clone()))
    }
}

fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.into(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.into())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// `host` as it goes into a `redis://` URL: an IPv6 address in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The host and port of `tcp://HOST:PORT`, the value Kubernetes gives the
/// service-link variable `<SERVICE>_PORT` (an IPv6 host comes in brackets).
/// Anything else, such as a plain port number, is `None`.
pub(super) fn service_link_address(value: &str) -> Option<(&str, u16)> {
    let rest = value.trim().strip_prefix("tcp://")?;
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    (plain || bracketed).then_some((host, port))
}

/// Whether `name`, the part of a `POOLSIDE_*` variable after the prefix, is
/// one Kubernetes sets for a Service named `poolside`: `PORT`,
/// `PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]`, `SERVICE_HOST`,
/// `SERVICE_PORT` or `SERVICE_PORT_<NAME>`. None of them is a configuration key.
pub(super) fn is_service_link_name(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    if matches!(name.as_str(), "PORT" | "SERVICE_HOST" | "SERVICE_PORT") {
        return true;
    }
    if let Some(port_name) = name.strip_prefix("SERVICE_PORT_") {
        // Port names are lowercase letters, digits and single hyphens.
        return !port_name.is_empty()
            && !port_name.contains("__")
            && port_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
    }
    let Some(rest) = name.strip_prefix("PORT_") else {
        return false;
    };
    let Some((number, rest)) = rest.split_once('_') else {
        return false;
    };
    let (protocol, field) = match rest.split_once('_') {
        Some((protocol, field)) => (protocol, Some(field)),
        None => (rest, None),
    };
    !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && matches!(field, None | Some("PROTO" | "PORT" | "ADDR"))
}

/// Layer 3a: the variables applications already set for their own Redis client
/// (and `POD_NAME`, which names this instance to Redis), each its own provider
/// so the annotation names the variable. A `REDIS_PORT` of the form
/// `tcp://HOST:PORT` is the service link Kubernetes sets for a Service named
/// `redis`: it gives host and port when `REDIS_HOST` is not set, and is
/// ignored otherwise; either way a warning is added to `warnings`.
pub(super) fn merge_app_env(mut figment: Figment, warnings: &mut Vec<String>) -> Figment {
    let redis_port = env_var("REDIS_PORT");
    let link = redis_port.as_deref().and_then(service_link_address);
    let link_value = redis_port.as_deref().unwrap_or_default();
    if let Some(url) = env_var("REDIS_URL") {
        figment = figment.merge(Named::single("REDIS_URL", "upstream.url", url.into()));
        if link.is_some() {
            warnings.push(format!(
                "ignoring REDIS_PORT={link_value}, a Kubernetes service link: REDIS_URL is set"
            ));
        }
    } else if let (Some((host, port)), None) = (link, env_var("REDIS_HOST")) {
        let url = format!("redis://{}:{port}", url_host(host));
        warnings.push(format!(
            "upstream.url = {url} taken from REDIS_PORT={link_value}, a Kubernetes service \
             link; set REDIS_URL or REDIS_HOST to choose the upstream explicitly"
        ));
        figment = figment.merge(Named::single(
            "REDIS_PORT (Kubernetes service link)",
            "upstream.url",
            url.into(),
        ));
    } else if env_var("REDIS_HOST").is_some() || redis_port.is_some() {
        let host = env_var("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into());
        let port = match link {
            Some(_) => {
                warnings.push(format!(
                    "ignoring REDIS_PORT={link_value}, a Kubernetes service link: REDIS_HOST \
                     is set, so the port is 6379"
                ));
                "6379".into()
            }
            None => redis_port.clone().unwrap_or_else(|| "6379".into()),
        };
        let url = format!("redis://{}:{port}", url_host(&host));
        figment = figment.merge(Named::single(
            "REDIS_HOST/REDIS_PORT",
            "upstream.url",
            url.into(),
        ));
    }
    // POD_NAME is what the Kubernetes downward API is usually mapped to.
    for (var, key) in [
        ("REDIS_PASSWORD", "upstream.password"),
        ("REDIS_USERNAME", "upstream.username"),
        ("REDIS_PASSWORD_FILE", "upstream.password_file"),
        ("POD_NAME", "fleet.instance"),
    ] {
        if let Some(value) = env_var(var) {
            figment = figment.merge(Named::single(var, key, value.into()));
        }
    }
    figment
}

/// Layer 3b: `POOLSIDE_*`, nested keys split on `__`. `POOLSIDE_PROFILE` and
/// `POOLSIDE_CONFIG` choose the profile and file and are not keys. Kubernetes
/// service links for a Service named `poolside` ([`is_service_link_name`]) are
/// skipped, each with a warning; any other unknown name is still an error.
pub(super) fn merge_poolside_env(mut figment: Figment, warnings: &mut Vec<String>) -> Figment {
    let parsed = Env::prefixed(ENV_PREFIX)
        .split("__")
        .ignore(&["profile", "config"])
        .filter(|k| !is_verbatim(k.as_str()) && !is_service_link_name(k.as_str()));
    figment = figment.merge(Relabelled(parsed, POOLSIDE_ENV));
    // Not `std::env::vars()`: it panics on a variable that is not UTF-8.
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut links = Vec::new();
    for (name, value) in vars {
        let Some(rest) = strip_prefix_ignore_case(&name, ENV_PREFIX) else {
            continue;
        };
        if is_service_link_name(rest) {
            // Service links hold addresses and port numbers, never secrets.
            links.push(format!(
                "ignoring {name}={value}: a Kubernetes service link (of a Service named \
                 poolside), not a configuration key; set enableServiceLinks: false on the pod"
            ));
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        // `profile` is chosen by `select_profile`, not read as a key.
        if key != "profile" && is_verbatim(&key) {
            figment = figment.merge(Named::single(&name, &key, value.into()));
        }
    }
    links.sort();
    warnings.extend(links);
    figment
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A provider shown under another name.
struct Relabelled<P>(P, &'static str);

impl<P: Provider> Provider for Relabelled<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.1)
    }
    fn data(&self) -> Result<Map<figment::Profile, Dict>, figment::Error> {
        self.0.data()
    }
}

/// Names the source of the value at `path` (`pool.max_connections`) as an
/// operator would look for it: the file, the flag, or the exact variable.
pub(super) fn describe(metadata: &Metadata, path: &str) -> String {
    if metadata.name == POOLSIDE_ENV {
        return format!(
            "{ENV_PREFIX}{}",
            path.replace('.', "__").to_ascii_uppercase()
        );
    }
    match &metadata.source {
        Some(figment::Source::File(p)) => p.display().to_string(),
        _ => metadata.name.to_string(),
    }
}

/// The source of `path` in `figment`, or `fallback` when no provider set it.
pub(super) fn source_of(figment: &Figment, path: &str, fallback: &str) -> String {
    figment
        .find_metadata(path)
        .map(|m| describe(m, path))
        .unwrap_or_else(|| fallback.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_link_address_reads_the_kubernetes_form_only() {
        assert_eq!(
            service_link_address("tcp://10.0.0.5:6379"),
            Some(("10.0.0.5", 6379))
        );
        assert_eq!(
            service_link_address("tcp://[fd00::5]:6390"),
            Some(("[fd00::5]", 6390))
        );
        for value in [
            "6379",
            "",
            "tcp://",
            "tcp://10.0.0.5",
            "tcp://:6379",
            "tcp://10.0.0.5:0",
            "tcp://10.0.0.5:99999",
            "tcp://fd00::5:6379",
            "udp://10.0.0.5:6379",
            "tcp://u:p@10.0.0.5:6379",
            "redis://10.0.0.5:6379",
        ] {
            assert_eq!(service_link_address(value), None, "{value:?}");
        }
    }

    #[test]
    fn service_link_names_are_recognized() {
        for name in [
            "PORT",
            "port",
            "PORT_6380_TCP",
            "PORT_6380_TCP_PROTO",
            "PORT_6380_TCP_PORT",
            "PORT_6380_TCP_ADDR",
            "PORT_53_UDP_ADDR",
            "PORT_9180_SCTP",
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_POOLSIDE_ADMIN",
            "SERVICE_PORT_REDIS",
        ] {
            assert!(is_service_link_name(name), "{name}");
        }
        for name in [
            "LISTEN",
            "POOL__MAX_CONNECTIONS",
            "POOL__MAX_CONECTIONS",
            "PORTS",
            "PORT_",
            "PORT_X_TCP",
            "PORT_6380",
            "PORT_6380_HTTP",
            "PORT_6380_TCP_HOST",
            "SERVICE_PORT_",
            "SERVICE_PORT_POOL__MIN_IDLE",
            "SERVICE_HOSTS",
            "UPSTREAM__PORT",
        ] {
            assert!(!is_service_link_name(name), "{name}");
        }
    }
}
