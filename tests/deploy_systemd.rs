//! deploy/systemd: the unit passes `systemd-analyze verify`, its hardening
//! scores well in `systemd-analyze security`, and the example environment
//! file with the unit's own flags is a configuration poolside accepts.

mod deploy_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use deploy_support::{deploy, poolside_bin, read, run, tool};

const TIMEOUT: Duration = Duration::from_secs(60);
const INSTALLED_BINARY: &str = "/usr/local/bin/poolside";
const INSTALLED_ENV_FILE: &str = "/etc/poolside/poolside.env";
/// `systemd-analyze security` rates 0 (locked down) to 10 (exposed); up to
/// 2.0 it says "OK".
const MAX_EXPOSURE: f64 = 2.0;

fn unit() -> String {
    read(&deploy("systemd/poolside.service"))
}

/// The value of `key=` in the unit (the last one, as systemd reads it).
fn directive(unit: &str, key: &str) -> String {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit sets no {key}="))
        .trim()
        .to_string()
}

/// The unit, pointed at the test-built binary and a copy of the example
/// environment file, written to a scratch directory.
fn installable_unit() -> (tempfile::TempDir, std::path::PathBuf) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let env_file = scratch.path().join("poolside.env");
    std::fs::copy(deploy("systemd/poolside.env.example"), &env_file).expect("copy env file");
    let unit = unit()
        .replace(INSTALLED_BINARY, &poolside_bin().display().to_string())
        .replace(INSTALLED_ENV_FILE, &env_file.display().to_string());
    let path = scratch.path().join("poolside.service");
    std::fs::write(&path, unit).expect("write unit");
    (scratch, path)
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", "Debian package systemd") else {
        return;
    };
    let (_scratch, path) = installable_unit();
    let ran = run(Command::new(analyze).arg("verify").arg(&path), TIMEOUT);
    ran.assert_success();
    // Unknown or misspelt keys are only warnings: fail on any about the unit.
    let warnings: Vec<&str> = ran
        .stderr
        .lines()
        .chain(ran.stdout.lines())
        .filter(|l| l.contains("poolside.service"))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd-analyze verify:\n{}",
        warnings.join("\n")
    );
}

#[test]
fn unit_is_hardened() {
    let unit = unit();
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(directive(&unit, key), value, "{key}=");
    }
    let Some(analyze) = tool("systemd-analyze", "Debian package systemd") else {
        return;
    };
    let (_scratch, path) = installable_unit();
    let ran = run(
        Command::new(analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path),
        TIMEOUT,
    );
    ran.assert_success();
    let exposure: f64 = ran
        .stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for poolside.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{}", ran.both()));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{}",
        ran.stdout
    );
}

/// `KEY=value` lines of an environment file.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn example_environment_and_flags_make_a_valid_config() {
    let unit = unit();
    let exec_start = directive(&unit, "ExecStart");
    let mut words = exec_start.split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED_BINARY));
    let flags: Vec<&str> = words.collect();
    let env = env_file(&read(&deploy("systemd/poolside.env.example")));
    let scratch = tempfile::tempdir().expect("temp dir");
    let ran = run(
        Command::new(poolside_bin())
            .arg("config")
            .args(&flags)
            .env_clear()
            .envs(&env)
            .current_dir(scratch.path()),
        TIMEOUT,
    );
    ran.assert_success();
    let config: toml::Table = ran.stdout.parse().expect("TOML from poolside config");
    assert_eq!(config["profile"].as_str(), Some("production"));
    assert_eq!(config["pool"]["max_connections"].as_integer(), Some(160));
    assert_eq!(config["upstream"]["password"].as_str(), Some("<redacted>"));
    assert_eq!(config["log_format"].as_str(), Some("json"));

    // systemd must wait out the drain before it kills.
    let drain_ms = config["drain_timeout_ms"]
        .as_integer()
        .expect("drain_timeout_ms");
    let stop = directive(&unit, "TimeoutStopSec");
    let stop_secs: i64 = stop
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop_secs * 1000 > drain_ms,
        "TimeoutStopSec={stop} <= drain {drain_ms} ms"
    );

    // Every client and upstream connection is a file descriptor.
    let files: i64 = directive(&unit, "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE");
    let needed = config["limits"]["max_clients"]
        .as_integer()
        .expect("max_clients")
        + config["pool"]["max_connections"]
            .as_integer()
            .expect("max_connections");
    assert!(
        files > needed,
        "LimitNOFILE={files} < {needed} clients and connections"
    );
}
