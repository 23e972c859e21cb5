//! Typed configuration, per-environment profiles and figment layering.
//!
//! Layers, each overriding the one before (DESIGN.md "Configuration"):
//! 1. compiled-in defaults of the selected profile;
//! 2. `profiles/<profile>.toml` when present, or `--config FILE`;
//! 3. environment: first the variables applications already use (`REDIS_URL`,
//!    `REDIS_HOST`/`REDIS_PORT`, `REDIS_PASSWORD`, `REDIS_USERNAME`, and
//!    `POD_NAME` for `fleet.instance`), then
//!    poolside's own `POOLSIDE_*` (nested keys split on `__`), which win;
//! 4. command-line flags.
//!
//! The profile itself comes from `--profile`, `POOLSIDE_PROFILE` or
//! `DEPLOYMENT_ENV`; the file from `--config` or `POOLSIDE_CONFIG`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use figment::providers::{Format, Toml};
use figment::value::Value;
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod defaults;
mod render;
mod security;
mod sources;
pub mod url;
mod validate;

pub use render::render_effective;
pub use security::{read_secret_file, PolicyConfig, Problem, SecretCell, TlsConfig};
pub use sources::Overrides;
pub use validate::ConfigError;

/// The deployment environment a pool is sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Development,
    Staging,
    Production,
}

impl Profile {
    /// Parses a profile name as `--profile` or `DEPLOYMENT_ENV` spell it.
    pub fn parse(name: &str) -> Option<Profile> {
        match name.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Some(Profile::Development),
            "staging" | "stage" => Some(Profile::Staging),
            "production" | "prod" => Some(Profile::Production),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Development => "development",
            Profile::Staging => "staging",
            Profile::Production => "production",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that must never be printed: `Debug`, `Display` and `Serialize`
/// all redact it. Only [`Secret::expose`] gives the real value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Env values such as `REDIS_PASSWORD=12345` arrive as numbers.
        let value = <figment::value::Value as Deserialize>::deserialize(d)?;
        match value {
            figment::value::Value::String(_, s) => Ok(Secret(s)),
            figment::value::Value::Num(_, n) => Ok(Secret(num_to_string(n))),
            figment::value::Value::Bool(_, b) => Ok(Secret(b.to_string())),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
}

fn num_to_string(n: figment::value::Num) -> String {
    use figment::value::Num;
    match n {
        Num::U8(v) => v.to_string(),
        Num::U16(v) => v.to_string(),
        Num::U32(v) => v.to_string(),
        Num::U64(v) => v.to_string(),
        Num::U128(v) => v.to_string(),
        Num::USize(v) => v.to_string(),
        Num::I8(v) => v.to_string(),
        Num::I16(v) => v.to_string(),
        Num::I32(v) => v.to_string(),
        Num::I64(v) => v.to_string(),
        Num::I128(v) => v.to_string(),
        Num::ISize(v) => v.to_string(),
        Num::F32(v) => v.to_string(),
        Num::F64(v) => v.to_string(),
    }
}

/// How client batches use upstream connections (DESIGN.md, "Pool modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A connection per batch, pinned for stateful sessions.
    Transaction,
    /// Stateless batches of many clients share connections in flight; the
    /// default (stateful sessions still get a connection of their own).
    Multiplexed,
}

impl PoolMode {
    pub fn name(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Multiplexed => "multiplexed",
        }
    }

    /// What `in_use_connections` (and so utilization and its alerts) counts.
    pub fn in_use_counts(self) -> &'static str {
        match self {
            PoolMode::Transaction => {
                "connections checked out: one per batch in flight, and one per pinned client (MULTI, WATCH, pub/sub, blocking command)"
            }
            PoolMode::Multiplexed => {
                "connections open for clients: shared lanes (a lane opens when every open lane has multiplex_saturation batches in flight) and one per pinned client (MULTI, WATCH, pub/sub, blocking command)"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole effective configuration. Every field has a compiled-in default
/// per profile (see [`Config::for_profile`]); `profiles/*.toml` mirror them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Profile the defaults came from.
    pub profile: Profile,
    /// Client listener. Default `127.0.0.1:6380`.
    pub listen: String,
    /// Optional unix socket path for clients, in addition to `listen`.
    pub unix_socket: Option<PathBuf>,
    /// Admin HTTP listener. Default `127.0.0.1:9180`.
    pub admin_listen: String,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Runtime worker threads. Default 1: measured faster when Redis and the
    /// clients share the cores (DESIGN.md, performance notes). 0: chosen
    /// from the cores the process may use (`app::runtime_threads`).
    pub worker_threads: usize,
    /// How long in-flight batches may run after SIGTERM. Default 10 s.
    pub drain_timeout_ms: u64,
    /// Password clients must send with AUTH/HELLO; none by default.
    pub client_password: Option<Secret>,
    /// File holding the client password (wins over `client_password`);
    /// re-read on SIGHUP. Env: `POOLSIDE_CLIENT_PASSWORD_FILE`.
    pub client_password_file: Option<PathBuf>,
    /// ACL-style users for `AUTH user password`; none by default.
    #[serde(default)]
    pub client_users: BTreeMap<String, Secret>,
    /// Listening on a non-loopback address without client authentication is
    /// refused at start unless this is true. Default false.
    pub allow_unauthenticated_remote: bool,
    pub upstream: UpstreamConfig,
    pub pool: PoolConfig,
    pub limits: LimitsConfig,
    pub alerts: AlertsConfig,
    pub tls: TlsConfig,
    pub policy: PolicyConfig,
    pub fleet: FleetConfig,
}

/// How this poolside names itself to Redis (`CLIENT SETNAME
/// poolside:<instance>:<profile>` on every upstream connection), so that any
/// poolside reading `CLIENT LIST` sees the whole fleet on that Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// This instance's name. Not set by default: `POD_NAME` (the Kubernetes
    /// downward API), else the hostname, else `poolside`. Characters Redis
    /// does not allow in a client name (spaces, control characters, non-ASCII)
    /// and `:` become `-`.
    pub instance: Option<String>,
}

/// `Debug` redacts the URL's password (see `security.rs`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `redis://[user[:password]@]host:port[/db]`. Default `redis://127.0.0.1:6379`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// File holding the password (wins over `password` and the URL's);
    /// re-read on SIGHUP for new connections. Env: `REDIS_PASSWORD_FILE`.
    pub password_file: Option<PathBuf>,
    /// One TCP connect + AUTH attempt. Default 1000 ms.
    pub connect_timeout_ms: u64,
    /// Where the primary is when Sentinel names it (`redis+sentinel://` URLs).
    #[serde(default)]
    pub sentinel: SentinelConfig,
    /// A Redis Cluster behind poolside (`redis+cluster://` URLs).
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[upstream.cluster]`: a Redis Cluster, routed by key slot. Used when
/// `upstream.url` is `redis+cluster://` / `rediss+cluster://`, or when
/// `seeds` is set; `seeds` defaults to the URL's hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `host:port` of nodes asked for the topology (`CLUSTER SLOTS`), in
    /// order, when no node learned from it answers.
    pub seeds: Vec<String>,
    /// How often the topology is read again, besides the refreshes a
    /// `MOVED`, a `CLUSTERDOWN` or a failed connection brings. Default 5000 ms.
    pub refresh_interval_ms: u64,
    /// How many `MOVED` / `ASK` redirections one command may follow before
    /// the client gets the last one. Default 5.
    pub max_redirects: u32,
    /// How long commands for a primary that cannot be reached (nothing was
    /// sent) wait for the slot map to name another owner. Default 10000 ms.
    pub failover_hold_ms: u64,
    /// `primary` (default): every command goes to the slot's primary.
    pub read_from: ReadFrom,
}

/// Where a cluster's read commands go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Primary,
    /// Reads to a replica of the slot (with `READONLY`) when one answers.
    ReplicaPreferred,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            seeds: Vec::new(),
            refresh_interval_ms: 5_000,
            max_redirects: 5,
            failover_hold_ms: 10_000,
            read_from: ReadFrom::Primary,
        }
    }
}

impl UpstreamConfig {
    /// The cluster's seeds when poolside fronts a Redis Cluster: the
    /// configured ones, else the URL's. `Ok(None)` for any other upstream.
    pub fn cluster_seeds(
        &self,
        url: &url::UpstreamUrl,
    ) -> Result<Option<Vec<String>>, (&'static str, String)> {
        let c = &self.cluster;
        if c.seeds.is_empty() {
            return Ok(url.cluster.clone());
        }
        host_ports(&c.seeds, 6379, "upstream.cluster.seeds").map(Some)
    }
}

/// Each of `addresses` as `host:port` (`default_port` when it has none), or
/// `key` and the first one that is not an address.
fn host_ports(
    addresses: &[String],
    default_port: u16,
    key: &'static str,
) -> Result<Vec<String>, (&'static str, String)> {
    let mut checked = Vec::new();
    for a in addresses {
        match url::split_host_port_or(a, default_port) {
            Ok((host, port)) if !host.is_empty() && !host.contains(['/', '@', ',']) => {
                checked.push(url::join_host_port(&host, port))
            }
            _ => return Err((key, format!("'{a}' is not a host:port address"))),
        }
    }
    Ok(checked)
}

/// `[upstream.sentinel]`: the Sentinels that name the primary. Used when
/// `upstream.url` is `redis+sentinel://` / `rediss+sentinel://`, or when
/// `addresses` is set; `master_name` and `addresses` default to the URL's.
/// The URL's credentials are the data nodes'; these are the Sentinels' own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The name the Sentinels monitor the primary under (`sentinel monitor NAME ...`).
    pub master_name: Option<String>,
    /// `host:port` of each Sentinel poolside asks first; more are learned
    /// from them (`SENTINEL sentinels`).
    pub addresses: Vec<String>,
    /// For Sentinels started with `requirepass` / ACL users.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// File holding the Sentinels' password (wins over `password`);
    /// re-read on SIGHUP for new Sentinel connections.
    pub password_file: Option<PathBuf>,
    /// How long a batch not yet written may wait for a primary while a
    /// failover runs (the primary unreachable, or a Sentinel reporting it
    /// down or failing over); then the client gets `-ERR poolside: no
    /// primary ...`. 0 turns the hold off. Default 10000 ms.
    pub failover_hold_ms: u64,
    /// How often every Sentinel is asked for the primary and its state,
    /// behind the event subscriptions. Default 1000 ms.
    pub poll_interval_ms: u64,
}

/// Sentinel mode as configured: `[upstream.sentinel]` keys, else the URL's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSetup {
    pub master_name: String,
    /// `host:port` each.
    pub addresses: Vec<String>,
}

impl UpstreamConfig {
    /// `Ok(None)` for a plain `redis://` upstream; the reason (and the key it
    /// concerns) when Sentinel mode is asked for but incomplete.
    pub fn sentinel_setup(
        &self,
        url: &url::UpstreamUrl,
    ) -> Result<Option<SentinelSetup>, (&'static str, String)> {
        let s = &self.sentinel;
        if url.sentinel.is_none() && s.addresses.is_empty() {
            return Ok(None);
        }
        let from_url = url.sentinel.as_ref();
        let addresses = if s.addresses.is_empty() {
            from_url.map(|u| u.addresses.clone()).unwrap_or_default()
        } else {
            host_ports(
                &s.addresses,
                url::SENTINEL_PORT,
                "upstream.sentinel.addresses",
            )?
        };
        let master_name = s
            .master_name
            .clone()
            .or_else(|| from_url.map(|u| u.master_name.clone()))
            .filter(|m| !m.is_empty())
            .ok_or((
                "upstream.sentinel.master_name",
                "Sentinel mode needs the master's name (upstream.sentinel.master_name, \
                 or redis+sentinel://HOST:PORT/MASTER_NAME)"
                    .to_string(),
            ))?;
        if addresses.is_empty() {
            return Err((
                "upstream.sentinel.addresses",
                "Sentinel mode needs at least one Sentinel address".into(),
            ));
        }
        Ok(Some(SentinelSetup {
            master_name,
            addresses,
        }))
    }
}

impl Default for SentinelConfig {
    fn default() -> SentinelConfig {
        SentinelConfig {
            master_name: None,
            addresses: Vec::new(),
            username: None,
            password: None,
            password_file: None,
            failover_hold_ms: 10_000,
            poll_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// `transaction` (default) or `multiplexed`.
    pub mode: PoolMode,
    /// Upper bound on upstream connections: 20 / 60 / 160 by profile.
    pub max_connections: u32,
    /// Connections kept open and health-checked: 2 / 5 / 10. A floor on
    /// open connections, in use or idle (not spare ones on top of those in use).
    pub min_idle: u32,
    /// A checkout that waits longer is a pool-exhaustion event. Default 5000 ms.
    pub checkout_timeout_ms: u64,
    /// Connections older than this are closed at check-in. Default 1800 s.
    pub max_lifetime_secs: u64,
    /// Idle connections above `min_idle` are closed after this (by bb8's
    /// reaper, which looks every 30 s or this, if shorter). Default 600 s.
    pub idle_timeout_secs: u64,
    /// The `min_idle` most recently used idle connections are PINGed this
    /// often; any other connection idle this long is PINGed when checked
    /// out. Default 30 s.
    pub health_check_interval_secs: u64,
    /// Connect retries after the first attempt. Default 3.
    pub connect_retries: u32,
    /// First backoff delay. Default 8 ms; each next one is `backoff_factor`
    /// times larger (8, 32, 128, 512 ms), capped at `backoff_max_ms`, jittered.
    pub backoff_base_ms: u64,
    pub backoff_factor: u32,
    pub backoff_max_ms: u64,
    /// Multiplexed mode: batches in flight on every shared connection
    /// before another one is opened. Default 1024: fewer, fuller lanes cost
    /// Redis and poolside fewer system calls per command (README, Performance).
    pub multiplex_saturation: usize,
    /// Multiplexed mode: a shared connection idle this long goes back to the
    /// pool, so an idle lane does not count as in use. Default 200 ms.
    pub multiplex_idle_ms: u64,
    /// Replies that do not arrive this long after a batch was written fail
    /// it (`-ERR poolside: upstream timed out after N ms`) and discard the
    /// connection; blocking commands get their own timeout on top, and
    /// `BLPOP key 0` none. 0 disables. Default 5000 ms.
    pub response_timeout_ms: u64,
    /// TCP keepalive on upstream connections (seconds idle before probes);
    /// 0 leaves the OS default. Default 60 s.
    pub tcp_keepalive_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Clients beyond this are sent an error and closed: 1000 / 5000 / 10000.
    pub max_clients: usize,
    /// Largest single RESP frame a client may send. Default 64 MiB.
    pub max_frame_bytes: usize,
    /// A client whose frame stays incomplete this long is closed. Default 30000 ms.
    pub frame_timeout_ms: u64,
    /// A client silent this long is closed; 0 disables (like Redis `timeout 0`).
    pub client_idle_timeout_secs: u64,
    /// Client bytes handled as one batch; the rest waits for the next round.
    /// Default 1 MiB (a larger single frame is still one batch).
    pub max_pipeline_bytes: usize,
    /// Pub/sub and MONITOR: upstream bytes held for a client that does not
    /// read before it is disconnected. Default 8 MiB.
    pub max_output_bytes: usize,
    /// Multiplexed mode: replies a lane has read for a client that has not
    /// taken them. Past this the lane waits for the client (up to 1 s
    /// without progress), then disconnects it, like Redis'
    /// client-output-buffer-limit. Default 8 MiB.
    pub max_reply_buffer_bytes: usize,
}

/// Utilization alerts and sizing recommendations (see `src/alerts.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Utilization (percent of max_connections checked out) held above this
    /// for `window_secs` raises a warning. Default 60.
    pub warning_percent: u32,
    /// Held above this, or any pool exhaustion in the window: critical. Default 80.
    pub critical_percent: u32,
    /// A level is left only once utilization stays this many points below
    /// its threshold for a window, so it does not flap. Default 5.
    pub hysteresis_percent: u32,
    /// How long a level's condition must hold. Default 30 s.
    pub window_secs: u64,
    /// Window behind the sizing recommendations. Default 300 s.
    pub recommendation_window_secs: u64,
    /// Plain `http://` URL that receives a JSON POST on every level change
    /// (Slack-compatible `text` field). Not set by default. Printed redacted.
    pub webhook_url: Option<Secret>,
    /// One webhook POST may take this long. Default 2000 ms.
    pub webhook_timeout_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            warning_percent: 60,
            critical_percent: 80,
            hysteresis_percent: 5,
            window_secs: 30,
            recommendation_window_secs: 300,
            webhook_url: None,
            webhook_timeout_ms: 2_000,
        }
    }
}

/// What [`Config::load_with_warnings`] gives: the configuration, the figment
/// it came from (for `poolside config`), and what loading noticed but did not
/// refuse, such as Kubernetes service-link variables it ignored. Configuration
/// is loaded before logging starts, so the caller reports the warnings.
pub struct Loaded {
    pub config: Config,
    pub figment: Figment,
    pub warnings: Vec<String>,
}

impl Config {
    /// Builds the layered figment for `profile` (layers 1-4 of the module doc).
    pub fn figment(profile: Profile, overrides: &Overrides) -> Figment {
        Config::layered(profile, overrides, &mut Vec::new())
    }

    /// [`Config::figment`], adding the environment layer's warnings to `warnings`.
    fn layered(profile: Profile, overrides: &Overrides, warnings: &mut Vec<String>) -> Figment {
        let defaults = match Value::serialize(Config::for_profile(profile)) {
            Ok(Value::Dict(_, dict)) => dict,
            _ => Default::default(),
        };
        let mut figment = Figment::from(sources::Named::new(
            &format!("defaults ({profile})"),
            defaults,
        ));
        figment = match overrides.select_file() {
            Some((path, _)) => figment.merge(Toml::file_exact(path)),
            // Only the working directory: a profile file found by searching
            // parent directories would surprise whoever deploys the binary.
            None => {
                let path = PathBuf::from(format!("profiles/{}.toml", profile.name()));
                match path.is_file() {
                    true => figment.merge(Toml::file_exact(path)),
                    false => figment,
                }
            }
        };
        figment = sources::merge_app_env(figment, warnings);
        figment = sources::merge_poolside_env(figment, warnings);
        overrides.merge_flags(figment)
    }

    /// Loads, extracts and validates the configuration; its warnings are
    /// dropped (see [`Config::load_with_warnings`]).
    pub fn load(overrides: &Overrides) -> Result<(Config, Figment), ConfigError> {
        Config::load_with_warnings(overrides).map(|loaded| (loaded.config, loaded.figment))
    }

    /// Loads, extracts and validates the configuration, keeping its warnings.
    pub fn load_with_warnings(overrides: &Overrides) -> Result<Loaded, ConfigError> {
        let (profile, profile_source) = overrides.choose_profile()?;
        if let Some((path, source)) = overrides.select_file() {
            if !path.is_file() {
                return Err(ConfigError {
                    key: "config".into(),
                    value: path.display().to_string(),
                    source: source.into(),
                    reason: "no such file".into(),
                });
            }
        }
        // The chosen profile is recorded last, so `poolside config` names where
        // the choice came from and a file's own `profile` key cannot contradict it.
        let mut warnings = Vec::new();
        let figment = Config::layered(profile, overrides, &mut warnings).merge(
            sources::Named::single(profile_source, "profile", profile.name().into()),
        );
        let config: Config = figment.extract().map_err(ConfigError::from_figment)?;
        validate::validate(&config, &figment)?;
        Ok(Loaded {
            config,
            figment,
            warnings,
        })
    }
}
