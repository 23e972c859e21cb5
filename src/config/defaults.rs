//! The compiled-in defaults of each profile (layer 1 of the module doc):
//! the binary works with no file. `profiles/*.toml` repeat them, checked by
//! a test.

use std::collections::BTreeMap;

use super::{
    AlertsConfig, ClusterConfig, Config, FleetConfig, LimitsConfig, LogFormat, PolicyConfig,
    PoolConfig, PoolMode, Profile, SentinelConfig, TlsConfig, UpstreamConfig,
};

impl Config {
    /// Compiled-in defaults for a profile: the binary works with no file.
    pub fn for_profile(profile: Profile) -> Config {
        let (max_connections, min_idle, max_clients) = match profile {
            Profile::Development => (20, 2, 1_000),
            Profile::Staging => (60, 5, 5_000),
            Profile::Production => (160, 10, 10_000),
        };
        Config {
            profile,
            listen: "127.0.0.1:6380".into(),
            unix_socket: None,
            admin_listen: "127.0.0.1:9180".into(),
            log_format: LogFormat::Text,
            worker_threads: 1,
            drain_timeout_ms: 10_000,
            client_password: None,
            client_password_file: None,
            client_users: BTreeMap::new(),
            allow_unauthenticated_remote: false,
            upstream: UpstreamConfig {
                url: "redis://127.0.0.1:6379".into(),
                username: None,
                password: None,
                password_file: None,
                connect_timeout_ms: 1_000,
                sentinel: SentinelConfig::default(),
                cluster: ClusterConfig::default(),
            },
            pool: PoolConfig {
                mode: PoolMode::Multiplexed,
                max_connections,
                min_idle,
                checkout_timeout_ms: 5_000,
                max_lifetime_secs: 1_800,
                idle_timeout_secs: 600,
                health_check_interval_secs: 30,
                connect_retries: 3,
                backoff_base_ms: 8,
                backoff_factor: 4,
                backoff_max_ms: 512,
                multiplex_saturation: 1024,
                multiplex_idle_ms: 200,
                response_timeout_ms: 5_000,
                tcp_keepalive_secs: 60,
            },
            limits: LimitsConfig {
                max_clients,
                max_frame_bytes: 64 << 20,
                frame_timeout_ms: 30_000,
                client_idle_timeout_secs: 0,
                max_pipeline_bytes: 1 << 20,
                max_output_bytes: 8 << 20,
                max_reply_buffer_bytes: 8 << 20,
            },
            alerts: AlertsConfig::default(),
            tls: TlsConfig::default(),
            policy: PolicyConfig::for_profile(profile),
            fleet: FleetConfig::default(),
        }
    }

    /// A development config for tests: loopback port 0 everywhere, pointed at `upstream_url`.
    pub fn for_tests(upstream_url: &str) -> Config {
        let mut config = Config::for_profile(Profile::Development);
        config.listen = "127.0.0.1:0".into();
        config.admin_listen = "127.0.0.1:0".into();
        config.upstream.url = upstream_url.into();
        config.pool.min_idle = 0;
        config.drain_timeout_ms = 2_000;
        config
    }
}
