//! Configuration: profiles, layering, the shipped profile files and error
//! messages. Environment and working directory come from `figment::Jail`,
//! which serializes the tests that touch them and restores both afterwards;
//! the binary's tests (`cli`) give each child its own environment instead.

#[path = "config/cli.rs"]
mod cli;

use std::path::PathBuf;

use figment::Jail;
use poolside::config::{render_effective, Config, ConfigError, Loaded, Overrides, Profile};

/// Runs `f` in a jail with an empty environment and an empty working directory,
/// so whatever the CI machine exports (REDIS_URL...) cannot leak in.
// figment's `Jail` API returns its large error type; nothing here returns one.
#[allow(clippy::result_large_err)]
fn jailed(f: impl FnOnce(&mut Jail)) {
    Jail::expect_with(|jail| {
        jail.clear_env();
        f(jail);
        Ok(())
    });
}

fn create_file(jail: &Jail, path: &str, contents: &str) {
    if let Some((dir, _)) = path.rsplit_once('/') {
        jail.create_dir(dir).expect("creates the directory");
    }
    jail.create_file(path, contents).expect("creates the file");
}

fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::load(overrides).map(|(config, _)| config)
}

fn load_default() -> Config {
    load(&Overrides::default()).expect("configuration loads")
}

fn load_error() -> String {
    match load(&Overrides::default()) {
        Ok(config) => panic!("expected a ConfigError, loaded {config:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn without_any_setting_the_profile_is_development() {
    jailed(|_| {
        let config = load_default();
        assert_eq!(config.profile, Profile::Development);
        assert_eq!(config.pool.max_connections, 20);
        assert_eq!(config.listen, "127.0.0.1:6380");
        assert_eq!(config.admin_listen, "127.0.0.1:9180");
        assert_eq!(config.upstream.url, "redis://127.0.0.1:6379");
    });
}

#[test]
fn deployment_env_and_its_aliases_size_the_pool() {
    let cases = [
        ("development", Profile::Development, 20),
        ("dev", Profile::Development, 20),
        ("staging", Profile::Staging, 60),
        ("production", Profile::Production, 160),
        ("prod", Profile::Production, 160),
        ("PROD", Profile::Production, 160),
    ];
    for (name, profile, max_connections) in cases {
        jailed(|jail| {
            jail.set_env("DEPLOYMENT_ENV", name);
            let config = load_default();
            assert_eq!(config.profile, profile, "DEPLOYMENT_ENV={name}");
            assert_eq!(config.pool.max_connections, max_connections, "{name}");
            assert_eq!(config.pool.health_check_interval_secs, 30);
            assert_eq!(config.pool.connect_retries, 3);
        });
    }
}

#[test]
fn profile_flag_wins_over_deployment_env() {
    jailed(|jail| {
        jail.set_env("DEPLOYMENT_ENV", "production");
        let overrides = Overrides {
            profile: Some("staging".into()),
            ..Overrides::default()
        };
        let config = load(&overrides).expect("loads");
        assert_eq!(config.profile, Profile::Staging);
        assert_eq!(config.pool.max_connections, 60);
    });
}

#[test]
fn unknown_deployment_env_is_an_error_naming_the_variable() {
    jailed(|jail| {
        jail.set_env("DEPLOYMENT_ENV", "qa");
        let message = load_error();
        assert!(message.contains("DEPLOYMENT_ENV"), "{message}");
        assert!(message.contains("qa"), "{message}");
        assert!(message.contains("profile"), "{message}");
    });
}

#[test]
fn poolside_env_vars_override_nested_keys() {
    jailed(|jail| {
        jail.set_env("POOLSIDE_POOL__MAX_CONNECTIONS", "7");
        jail.set_env("POOLSIDE_LIMITS__MAX_CLIENTS", "42");
        jail.set_env("POOLSIDE_WORKER_THREADS", "2");
        let config = load_default();
        assert_eq!(config.pool.max_connections, 7);
        assert_eq!(config.limits.max_clients, 42);
        assert_eq!(config.worker_threads, 2);
    });
}

#[test]
fn poolside_env_strings_are_taken_verbatim() {
    jailed(|jail| {
        // Parsed as numbers, these would become "123" and fail as a username.
        jail.set_env("POOLSIDE_UPSTREAM__PASSWORD", "0123");
        jail.set_env("POOLSIDE_UPSTREAM__USERNAME", "123");
        jail.set_env("POOLSIDE_CLIENT_PASSWORD", "true");
        jail.set_env("POOLSIDE_CLIENT_USERS__APP", "007");
        jail.set_env("POOLSIDE_TLS__MIN_VERSION", "1.3");
        let config = load_default();
        let app = config.client_users.get("app").map(|s| s.expose());
        assert_eq!(app, Some("007"));
        assert_eq!(config.tls.min_version, "1.3");
        let password = config.upstream.password.as_ref().map(|s| s.expose());
        assert_eq!(password, Some("0123"));
        assert_eq!(config.upstream.username.as_deref(), Some("123"));
        let client = config.client_password.as_ref().map(|s| s.expose());
        assert_eq!(client, Some("true"));
    });
}

#[test]
fn redis_url_sets_the_upstream() {
    jailed(|jail| {
        jail.set_env("REDIS_URL", "redis://cache.internal:6390/2");
        jail.set_env("REDIS_HOST", "ignored-when-redis-url-is-set");
        assert_eq!(load_default().upstream.url, "redis://cache.internal:6390/2");
    });
}

#[test]
fn redis_host_and_port_set_the_upstream() {
    jailed(|jail| {
        jail.set_env("REDIS_HOST", "cache.internal");
        jail.set_env("REDIS_PORT", "6390");
        assert_eq!(load_default().upstream.url, "redis://cache.internal:6390");
    });
    jailed(|jail| {
        jail.set_env("REDIS_PORT", "7000");
        assert_eq!(load_default().upstream.url, "redis://127.0.0.1:7000");
    });
}

fn load_with_warnings() -> Loaded {
    Config::load_with_warnings(&Overrides::default()).expect("configuration loads")
}

#[test]
fn redis_port_service_link_gives_host_and_port() {
    jailed(|jail| {
        // Kubernetes sets this for a Service named `redis` in the namespace.
        jail.set_env("REDIS_PORT", "tcp://10.0.0.5:6390");
        let loaded = load_with_warnings();
        assert_eq!(loaded.config.upstream.url, "redis://10.0.0.5:6390");
        let [warning] = &loaded.warnings[..] else {
            panic!("one warning: {:?}", loaded.warnings);
        };
        assert!(
            warning.contains("REDIS_PORT=tcp://10.0.0.5:6390"),
            "{warning}"
        );
        assert!(warning.contains("Kubernetes service link"), "{warning}");
        let rendered = render_effective(&loaded.config, &loaded.figment);
        let url = find_line(&rendered, "url = ");
        assert!(
            url.contains("# REDIS_PORT (Kubernetes service link)"),
            "{url}"
        );
    });
    jailed(|jail| {
        jail.set_env("REDIS_PORT", "tcp://[fd00::5]:6379");
        assert_eq!(load_default().upstream.url, "redis://[fd00::5]:6379");
    });
}

#[test]
fn redis_port_service_link_is_ignored_when_redis_host_or_url_is_set() {
    jailed(|jail| {
        jail.set_env("REDIS_PORT", "tcp://10.0.0.5:6390");
        jail.set_env("REDIS_HOST", "cache");
        let loaded = load_with_warnings();
        assert_eq!(loaded.config.upstream.url, "redis://cache:6379");
        let [warning] = &loaded.warnings[..] else {
            panic!("one warning: {:?}", loaded.warnings);
        };
        assert!(warning.starts_with("ignoring REDIS_PORT="), "{warning}");
        assert!(warning.contains("REDIS_HOST"), "{warning}");
    });
    jailed(|jail| {
        jail.set_env("REDIS_PORT", "tcp://10.0.0.5:6390");
        jail.set_env("REDIS_URL", "redis://cache.internal:6391");
        let loaded = load_with_warnings();
        assert_eq!(loaded.config.upstream.url, "redis://cache.internal:6391");
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("REDIS_URL"));
    });
}

#[test]
fn plain_redis_settings_give_no_warnings() {
    jailed(|jail| {
        jail.set_env("REDIS_HOST", "cache");
        jail.set_env("REDIS_PORT", "6390");
        jail.set_env("POOLSIDE_POOL__MAX_CONNECTIONS", "7");
        let loaded = load_with_warnings();
        assert_eq!(loaded.config.upstream.url, "redis://cache:6390");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    });
}

#[test]
fn other_redis_service_link_variables_are_not_read() {
    jailed(|jail| {
        for (var, value) in [
            ("REDIS_PORT_6379_TCP", "tcp://10.0.0.5:6379"),
            ("REDIS_PORT_6379_TCP_PROTO", "tcp"),
            ("REDIS_PORT_6379_TCP_PORT", "6379"),
            ("REDIS_PORT_6379_TCP_ADDR", "10.0.0.5"),
            ("REDIS_SERVICE_HOST", "10.0.0.5"),
            ("REDIS_SERVICE_PORT", "6379"),
            ("REDIS_SERVICE_PORT_REDIS", "6379"),
        ] {
            jail.set_env(var, value);
        }
        let loaded = load_with_warnings();
        assert_eq!(loaded.config.upstream.url, "redis://127.0.0.1:6379");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    });
}

#[test]
fn poolside_service_link_variables_are_ignored_with_warnings() {
    jailed(|jail| {
        // Kubernetes sets these for a Service named `poolside`.
        let links = [
            ("POOLSIDE_PORT", "tcp://10.0.0.7:6380"),
            ("POOLSIDE_PORT_6380_TCP", "tcp://10.0.0.7:6380"),
            ("POOLSIDE_PORT_6380_TCP_PROTO", "tcp"),
            ("POOLSIDE_PORT_6380_TCP_PORT", "6380"),
            ("POOLSIDE_PORT_6380_TCP_ADDR", "10.0.0.7"),
            ("POOLSIDE_SERVICE_HOST", "10.0.0.7"),
            ("POOLSIDE_SERVICE_PORT", "6380"),
            ("POOLSIDE_SERVICE_PORT_POOLSIDE_ADMIN", "9180"),
        ];
        for (var, value) in links {
            jail.set_env(var, value);
        }
        jail.set_env("POOLSIDE_POOL__MAX_CONNECTIONS", "7");
        let loaded = load_with_warnings();
        assert_eq!(loaded.config.pool.max_connections, 7);
        assert_eq!(loaded.warnings.len(), links.len(), "{:?}", loaded.warnings);
        for (var, value) in links {
            let named = loaded
                .warnings
                .iter()
                .any(|w| w.starts_with(&format!("ignoring {var}={value}: ")));
            assert!(named, "no warning for {var}: {:?}", loaded.warnings);
        }
    });
}

#[test]
fn misspelled_poolside_key_still_fails_next_to_service_links() {
    jailed(|jail| {
        jail.set_env("POOLSIDE_PORT", "tcp://10.0.0.7:6380");
        jail.set_env("POOLSIDE_POOL__MAX_CONECTIONS", "1");
        let message = load_error();
        assert!(message.contains("pool.max_conections"), "{message}");
        assert!(
            message.contains("POOLSIDE_POOL__MAX_CONECTIONS"),
            "{message}"
        );
        assert!(!message.contains("POOLSIDE_PORT"), "{message}");
    });
}

#[test]
fn redis_password_and_username_land_in_upstream() {
    jailed(|jail| {
        jail.set_env("REDIS_PASSWORD", "hunter2");
        jail.set_env("REDIS_USERNAME", "app");
        let config = load_default();
        let password = config.upstream.password.as_ref().map(|s| s.expose());
        assert_eq!(password, Some("hunter2"));
        assert_eq!(config.upstream.username.as_deref(), Some("app"));
        assert!(!format!("{config:?}").contains("hunter2"));
    });
}

#[test]
fn pod_name_names_the_instance_unless_poolside_env_does() {
    jailed(|jail| {
        assert_eq!(load_default().fleet.instance, None);
        jail.set_env("POD_NAME", "checkout-7d9f8-x2k4q");
        let (config, figment) = Config::load(&Overrides::default()).expect("loads");
        assert_eq!(
            config.fleet.instance.as_deref(),
            Some("checkout-7d9f8-x2k4q")
        );
        let rendered = render_effective(&config, &figment);
        assert!(find_line(&rendered, "instance = ").contains("# POD_NAME"));
        // A numeric name stays a string, and POOLSIDE_* wins.
        jail.set_env("POOLSIDE_FLEET__INSTANCE", "0042");
        assert_eq!(load_default().fleet.instance.as_deref(), Some("0042"));
    });
}

#[test]
fn layers_apply_in_order_flags_last() {
    jailed(|jail| {
        jail.set_env("REDIS_URL", "redis://from-redis-url:1");
        jail.set_env("POOLSIDE_UPSTREAM__URL", "redis://from-poolside-env:2");
        assert_eq!(load_default().upstream.url, "redis://from-poolside-env:2");
        let flags = Overrides {
            upstream: Some("redis://from-flag:3".into()),
            listen: Some("127.0.0.1:7380".into()),
            ..Overrides::default()
        };
        let config = load(&flags).expect("loads");
        assert_eq!(config.upstream.url, "redis://from-flag:3");
        assert_eq!(config.listen, "127.0.0.1:7380");
    });
}

#[test]
fn profile_file_in_the_working_directory_overrides_defaults() {
    jailed(|jail| {
        jail.set_env("DEPLOYMENT_ENV", "production");
        create_file(
            jail,
            "profiles/production.toml",
            "[pool]\nmax_connections = 100\n",
        );
        let (config, figment) = Config::load(&Overrides::default()).expect("loads");
        assert_eq!(config.pool.max_connections, 100);
        assert_eq!(
            config.pool.min_idle, 10,
            "keys the file omits keep defaults"
        );
        let rendered = render_effective(&config, &figment);
        let line = find_line(&rendered, "max_connections = ");
        assert!(line.contains("profiles/production.toml"), "{line}");
    });
}

#[test]
fn config_file_replaces_the_profile_file() {
    jailed(|jail| {
        create_file(jail, "profiles/development.toml", "worker_threads = 3\n");
        create_file(jail, "custom.toml", "worker_threads = 4\n");
        let flags = Overrides {
            config_file: Some(PathBuf::from("custom.toml")),
            ..Overrides::default()
        };
        assert_eq!(load(&flags).expect("loads").worker_threads, 4);
        jail.set_env("POOLSIDE_CONFIG", "custom.toml");
        assert_eq!(load_default().worker_threads, 4);
    });
}

#[test]
fn zero_worker_threads_is_accepted_as_chosen_from_the_cores() {
    jailed(|jail| {
        jail.set_env("POOLSIDE_WORKER_THREADS", "0");
        assert_eq!(load_default().worker_threads, 0);
    });
}

#[test]
fn missing_config_file_is_an_error() {
    jailed(|_| {
        let flags = Overrides {
            config_file: Some(PathBuf::from("absent.toml")),
            ..Overrides::default()
        };
        let message = load(&flags).unwrap_err().to_string();
        assert!(message.contains("absent.toml"), "{message}");
        assert!(message.contains("--config"), "{message}");
    });
}

#[test]
fn bad_values_name_the_key_and_the_source() {
    let cases = [
        (
            "POOLSIDE_POOL__MAX_CONNECTIONS",
            "0",
            "pool.max_connections",
        ),
        ("POOLSIDE_POOL__MIN_IDLE", "abc", "pool.min_idle"),
        ("POOLSIDE_LISTEN", "not-an-address", "listen"),
        ("POOLSIDE_POOL__SIZE", "5", "pool.size"),
        ("POOLSIDE_WORKER_THREADS", "65", "worker_threads"),
    ];
    for (var, value, key) in cases {
        jailed(|jail| {
            jail.set_env(var, value);
            let message = load_error();
            assert!(message.contains(key), "{var}={value}: {message}");
            assert!(message.contains(var), "{var}={value}: {message}");
        });
    }
}

#[test]
fn bad_value_in_a_file_names_the_file() {
    jailed(|jail| {
        create_file(jail, "profiles/development.toml", "[pool]\nmin_idle = 50\n");
        let message = load_error();
        assert!(message.contains("pool.min_idle"), "{message}");
        assert!(message.contains("profiles/development.toml"), "{message}");
    });
}

#[test]
fn bad_upstream_url_is_rejected_without_its_password() {
    jailed(|jail| {
        jail.set_env("REDIS_URL", "redis://app:pw-in-url@cache:notaport");
        let message = load_error();
        assert!(message.contains("upstream.url"), "{message}");
        assert!(message.contains("REDIS_URL"), "{message}");
        assert!(!message.contains("pw-in-url"), "{message}");
    });
}

#[test]
fn rendered_config_names_each_source() {
    jailed(|jail| {
        jail.set_env("DEPLOYMENT_ENV", "prod");
        jail.set_env("POOLSIDE_POOL__MAX_CONNECTIONS", "70");
        jail.set_env("REDIS_PASSWORD", "hunter2");
        let (config, figment) = Config::load(&Overrides::default()).expect("loads");
        let rendered = render_effective(&config, &figment);
        let max = find_line(&rendered, "max_connections = ");
        assert!(max.contains("70") && max.contains("# POOLSIDE_POOL__MAX_CONNECTIONS"));
        let min = find_line(&rendered, "min_idle = ");
        assert!(min.contains("# defaults (production)"), "{min}");
        assert!(find_line(&rendered, "profile = ").contains("# DEPLOYMENT_ENV"));
        let password = find_line(&rendered, "password = ");
        assert!(password.contains("<redacted>") && password.contains("# REDIS_PASSWORD"));
        assert!(!rendered.contains("hunter2"));
        assert!(
            toml::from_str::<toml::Value>(&rendered).is_ok(),
            "valid TOML"
        );
    });
}

#[test]
fn sentinel_settings_come_from_the_url_or_their_table() {
    jailed(|jail| {
        jail.set_env(
            "REDIS_URL",
            "redis+sentinel://app:data-pw@10.0.0.1:26380,10.0.0.2/mymaster/2",
        );
        jail.set_env("POOLSIDE_UPSTREAM__SENTINEL__PASSWORD", "sentinel-pw");
        jail.set_env("POOLSIDE_UPSTREAM__SENTINEL__FAILOVER_HOLD_MS", "2500");
        let (config, figment) = Config::load(&Overrides::default()).expect("loads");
        let url = poolside::config::url::parse(&config.upstream.url).unwrap();
        let setup = config.upstream.sentinel_setup(&url).unwrap().unwrap();
        assert_eq!(setup.master_name, "mymaster");
        assert_eq!(setup.addresses, ["10.0.0.1:26380", "10.0.0.2:26379"]);
        assert_eq!(config.upstream.sentinel.failover_hold_ms, 2500);
        let rendered = render_effective(&config, &figment);
        assert!(rendered.contains("[upstream.sentinel]"), "{rendered}");
        // [upstream.cluster] has a failover_hold_ms too: the Sentinel one is this.
        let hold = find_line(&rendered, "failover_hold_ms = 2500");
        assert!(hold.contains("POOLSIDE_UPSTREAM__SENTINEL__FAILOVER_HOLD_MS"));
        assert!(!rendered.contains("sentinel-pw") && !rendered.contains("data-pw"));
        assert!(
            toml::from_str::<toml::Value>(&rendered).is_ok(),
            "valid TOML"
        );

        // The table wins over the URL.
        jail.set_env("POOLSIDE_UPSTREAM__SENTINEL__MASTER_NAME", "other");
        let config = load_default();
        let setup = config.upstream.sentinel_setup(&url).unwrap().unwrap();
        assert_eq!(setup.master_name, "other");
    });
}

#[test]
fn incomplete_sentinel_settings_are_rejected_by_key() {
    jailed(|jail| {
        jail.set_env("REDIS_URL", "redis+sentinel://10.0.0.1:26379");
        let message = load_error();
        assert!(
            message.contains("upstream.url") && message.contains("MASTER_NAME"),
            "{message}"
        );
        jail.set_env("REDIS_URL", "redis://127.0.0.1:6379");
        jail.set_env(
            "POOLSIDE_UPSTREAM__SENTINEL__ADDRESSES",
            "[\"10.0.0.1:26379\"]",
        );
        let message = load_error();
        assert!(
            message.contains("upstream.sentinel.master_name"),
            "{message}"
        );
        jail.set_env("POOLSIDE_UPSTREAM__SENTINEL__MASTER_NAME", "m");
        jail.set_env(
            "POOLSIDE_UPSTREAM__SENTINEL__ADDRESSES",
            "[\"10.0.0.1:notaport\"]",
        );
        let message = load_error();
        assert!(message.contains("upstream.sentinel.addresses"), "{message}");
    });
}

fn find_line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
}

// The shipped profile files must stay equal to the compiled-in defaults.

fn profile_file(profile: Profile) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("profiles")
        .join(format!("{}.toml", profile.name()));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const PROFILES: [Profile; 3] = [Profile::Development, Profile::Staging, Profile::Production];

#[test]
fn profile_files_equal_the_compiled_in_defaults() {
    for profile in PROFILES {
        let parsed: Config = toml::from_str(&profile_file(profile))
            .unwrap_or_else(|e| panic!("profiles/{profile}.toml: {e}"));
        let parsed = serde_json::to_value(parsed).expect("serializes");
        let defaults = serde_json::to_value(Config::for_profile(profile)).expect("serializes");
        assert_eq!(parsed, defaults, "profiles/{profile}.toml drifted");
    }
}

#[test]
fn profile_files_mention_every_key() {
    for profile in PROFILES {
        let text = profile_file(profile);
        let defaults = serde_json::to_value(Config::for_profile(profile)).expect("serializes");
        let mut keys = Vec::new();
        collect_keys(&defaults, &mut keys);
        for key in keys {
            // Set keys read `key = ...`; unset optional ones `# key = ...`.
            let mentioned = text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
            });
            assert!(
                mentioned,
                "profiles/{profile}.toml does not document `{key}`"
            );
        }
    }
}

fn collect_keys(value: &serde_json::Value, keys: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, inner) in map {
            match inner {
                serde_json::Value::Object(_) => collect_keys(inner, keys),
                _ => keys.push(key.clone()),
            }
        }
    }
}

#[test]
fn cluster_settings_are_checked() {
    jailed(|jail| {
        jail.set_env("REDIS_URL", "redis+cluster://app:s3cret@n1:7000,n2:7001");
        let config = load_default();
        let parsed = poolside::config::url::parse(&config.upstream.url).expect("url");
        let seeds = config.upstream.cluster_seeds(&parsed).expect("seeds");
        assert_eq!(
            seeds,
            Some(vec!["n1:7000".to_string(), "n2:7001".to_string()])
        );
    });
    jailed(|jail| {
        jail.set_env("REDIS_URL", "redis+cluster://n1:7000/2");
        assert!(load_error().contains("only database 0"));
    });
    jailed(|jail| {
        jail.set_env("POOLSIDE_UPSTREAM__CLUSTER__SEEDS", "[\"n1:7000\"]");
        jail.set_env("POOLSIDE_UPSTREAM__CLUSTER__MAX_REDIRECTS", "0");
        let message = load_error();
        assert!(
            message.contains("upstream.cluster.max_redirects"),
            "{message}"
        );
    });
    jailed(|jail| {
        jail.set_env("POOLSIDE_UPSTREAM__CLUSTER__READ_FROM", "replica_preferred");
        jail.set_env("REDIS_URL", "redis+cluster://n1:7000");
        let config = load_default();
        assert_eq!(
            config.upstream.cluster.read_from,
            poolside::config::ReadFrom::ReplicaPreferred
        );
    });
    jailed(|jail| {
        jail.set_env("POOLSIDE_UPSTREAM__CLUSTER__READ_FROM", "any_replica");
        jail.set_env("REDIS_URL", "redis+cluster://n1:7000");
        let message = load_error();
        assert!(message.contains("read_from"), "{message}");
    });
}
