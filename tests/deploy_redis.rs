//! deploy/redis: `redis-server production.conf` (with a test-local port, data
//! directory and password) starts persistent and locked down, the backup
//! script's RDB restores into a second server, and the health-check script
//! reports what it should. The scripts run under `sh` (dash on Debian), so
//! they are held to POSIX.

mod common;
mod deploy_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{connect_blocking, RedisServer};
use deploy_support::{deploy, read, run, tool, Ran};
use tempfile::TempDir;

const PASSWORD: &str = "deploy-test-password";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The line of production.conf that pulls in the password.
const SECRETS_INCLUDE: &str = "include /etc/redis/secrets/requirepass.conf";

/// deploy/redis/production.conf running with a test-local data directory,
/// port, bind address and password file.
struct ProductionRedis {
    server: RedisServer,
    scratch: TempDir,
}

impl ProductionRedis {
    fn start() -> Option<ProductionRedis> {
        tool("redis-server", "Debian package redis-server")?;
        let scratch = tempfile::tempdir().expect("temp dir");
        let secrets = scratch.path().join("requirepass.conf");
        fs::write(&secrets, format!("requirepass {PASSWORD}\n")).expect("write secrets");
        let conf = read(&deploy("redis/production.conf"));
        assert!(
            conf.contains(SECRETS_INCLUDE),
            "production.conf should {SECRETS_INCLUDE}"
        );
        let conf = conf.replace(SECRETS_INCLUDE, &format!("include {}", secrets.display()));
        let conf_path = scratch.path().join("production.conf");
        fs::write(&conf_path, conf).expect("write conf");
        let data = scratch.path().join("data");
        fs::create_dir(&data).expect("create data dir");
        // The config file keeps its persistence and sets the password.
        let server = RedisServer::builder()
            .config_file(&conf_path)
            .persistent()
            .password_from_config(PASSWORD)
            .args(["--dir".to_string(), data.display().to_string()])
            .log_file(scratch.path().join("redis.log"))
            .start_blocking();
        Some(ProductionRedis { server, scratch })
    }

    fn data_dir(&self) -> PathBuf {
        self.scratch.path().join("data")
    }

    /// Runs one of deploy/redis's scripts under `sh` against this server.
    fn script(&self, name: &str, env: &[(&str, &str)]) -> Ran {
        run(
            Command::new("sh")
                .arg(deploy("redis").join(name))
                .env("REDIS_HOST", "127.0.0.1")
                .env("REDIS_PORT", self.server.port().to_string())
                .env("REDISCLI_AUTH", PASSWORD)
                .envs(env.iter().copied()),
            SCRIPT_TIMEOUT,
        )
    }
}

fn config_get(con: &mut redis::Connection, key: &str) -> String {
    let pair: Vec<String> = redis::cmd("OPS-CONFIG")
        .arg("GET")
        .arg(key)
        .query(con)
        .unwrap_or_else(|e| panic!("OPS-CONFIG GET {key}: {e}"));
    assert_eq!(pair.len(), 2, "OPS-CONFIG GET {key} returned {pair:?}");
    pair[1].clone()
}

fn refused(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    match cmd.query::<redis::Value>(con) {
        Ok(value) => panic!("{args:?} should be refused, got {value:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn production_conf_is_persistent_and_locked_down() {
    let Some(redis) = ProductionRedis::start() else {
        return;
    };
    let mut con = redis.server.blocking();
    for (key, expected) in [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("save", "900 1 300 10 60 10000"),
        ("maxmemory", "2147483648"),
        ("maxmemory-policy", "noeviction"),
        ("slowlog-log-slower-than", "10000"),
        ("latency-monitor-threshold", "100"),
        ("protected-mode", "yes"),
        ("timeout", "0"),
    ] {
        assert_eq!(config_get(&mut con, key), expected, "{key}");
    }
    for args in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "dir"],
    ] {
        let error = refused(&mut con, args);
        assert!(error.contains("unknown command"), "{args:?}: {error}");
    }

    // The URL without the password: an anonymous client.
    let mut con = connect_blocking(&redis.server.url());
    let error = refused(&mut con, &["GET", "anything"]);
    assert!(error.contains("NOAUTH"), "no password: {error}");
}

/// Fills the server with `count` keys; returns them with their values.
fn fill(con: &mut redis::Connection, count: usize) -> Vec<(String, String)> {
    let keys: Vec<(String, String)> = (0..count)
        .map(|i| (format!("backup:key:{i}"), format!("value-{i}")))
        .collect();
    let mut pipe = redis::pipe();
    for (key, value) in &keys {
        pipe.set(key, value).ignore();
    }
    pipe.query::<()>(con).expect("write keys");
    keys
}

/// The backup directories in `dir`, sorted by name (= by time).
fn backups(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read backup dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Copies a backup to a fresh directory and starts a plain redis-server on
/// it, loading from the RDB or from the AOF.
fn restore(backup: &Path, from_aof: bool) -> (RedisServer, TempDir) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let data = scratch.path().join("data");
    let ran = run(
        Command::new("cp").arg("-R").arg(backup).arg(&data),
        SCRIPT_TIMEOUT,
    );
    ran.assert_success();
    let args = [
        "--dir",
        &data.display().to_string(),
        "--dbfilename",
        "dump.rdb",
        "--save",
        "",
        "--appendonly",
        if from_aof { "yes" } else { "no" },
    ];
    let server = RedisServer::builder()
        .persistent()
        .args(args)
        .log_file(scratch.path().join("redis.log"))
        .start_blocking();
    (server, scratch)
}

#[test]
fn backup_restores_into_a_second_server() {
    let Some(redis) = ProductionRedis::start() else {
        return;
    };
    let keys = fill(&mut redis.server.blocking(), 200);
    let backup_dir = redis.scratch.path().join("backups");
    let data_dir = redis.data_dir().display().to_string();
    let backup_dir_text = backup_dir.display().to_string();
    let ran = redis.script(
        "redis-backup.sh",
        &[
            ("REDIS_DATA_DIR", &data_dir),
            ("BACKUP_DIR", &backup_dir_text),
            ("BACKUP_TIMEOUT", "30"),
        ],
    );
    ran.assert_success();
    let backup = PathBuf::from(ran.stdout.trim());
    assert!(backup.starts_with(&backup_dir), "printed {backup:?}");
    assert!(backup.join("dump.rdb").is_file(), "{}", ran.both());
    assert!(backup.join("appendonlydir").is_dir(), "{}", ran.both());

    for from_aof in [false, true] {
        let (restored, _scratch) = restore(&backup, from_aof);
        let mut con = restored.blocking();
        let size: usize = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
        assert_eq!(size, keys.len(), "keys restored (from AOF: {from_aof})");
        for (key, value) in keys.iter().step_by(37) {
            let got: String = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
            assert_eq!(&got, value, "{key} (from AOF: {from_aof})");
        }
    }
}

#[test]
fn backup_keeps_only_the_newest() {
    let Some(redis) = ProductionRedis::start() else {
        return;
    };
    fill(&mut redis.server.blocking(), 10);
    let backup_dir = redis.scratch.path().join("backups");
    let data_dir = redis.data_dir().display().to_string();
    let backup_dir_text = backup_dir.display().to_string();
    let env = [
        ("REDIS_DATA_DIR", data_dir.as_str()),
        ("BACKUP_DIR", backup_dir_text.as_str()),
        ("BACKUP_KEEP", "2"),
        ("BACKUP_TIMEOUT", "30"),
    ];
    let mut made = Vec::new();
    for _ in 0..3 {
        let ran = redis.script("redis-backup.sh", &env);
        ran.assert_success();
        made.push(
            ran.stdout
                .trim()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(backups(&backup_dir), made[1..], "the oldest backup is gone");
}

#[test]
fn backup_fails_loudly_on_a_wrong_password() {
    let Some(redis) = ProductionRedis::start() else {
        return;
    };
    let data_dir = redis.data_dir().display().to_string();
    let backup_dir = redis.scratch.path().join("backups").display().to_string();
    let ran = redis.script(
        "redis-backup.sh",
        &[
            ("REDISCLI_AUTH", "wrong"),
            ("REDIS_DATA_DIR", &data_dir),
            ("BACKUP_DIR", &backup_dir),
        ],
    );
    assert!(!ran.status.success(), "{}", ran.both());
    assert!(ran.stderr.contains("redis-backup:"), "{}", ran.both());
}

#[test]
fn healthcheck_reports_ok_memory_pressure_and_down() {
    let Some(mut redis) = ProductionRedis::start() else {
        return;
    };
    let ran = redis.script("redis-healthcheck.sh", &[]);
    assert_eq!(ran.code(), Some(0), "healthy:\n{}", ran.both());
    assert!(
        ran.stdout.lines().all(|l| l.starts_with("OK ")),
        "{}",
        ran.both()
    );
    assert!(
        ran.stdout.contains("OK commands: CONFIG is renamed"),
        "{}",
        ran.both()
    );
    assert!(
        ran.stdout.contains("OK persistence: AOF on"),
        "{}",
        ran.both()
    );

    // maxmemory at what is used now: at least 90 %, critical.
    let mut con = redis.server.blocking();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut con)
        .expect("INFO");
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .expect("used_memory")
        .trim()
        .to_string();
    let _: () = redis::cmd("OPS-CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(&used)
        .query(&mut con)
        .expect("set maxmemory");
    let ran = redis.script("redis-healthcheck.sh", &[]);
    assert_eq!(ran.code(), Some(2), "memory full:\n{}", ran.both());
    assert!(ran.stdout.contains("CRITICAL memory:"), "{}", ran.both());
    let ran = redis.script("redis-healthcheck.sh", &[("MEMORY_CRIT_PCT", "1000")]);
    assert_eq!(ran.code(), Some(1), "above warning only:\n{}", ran.both());
    assert!(ran.stdout.contains("WARNING memory:"), "{}", ran.both());

    redis.server.stop();
    let ran = redis.script("redis-healthcheck.sh", &[]);
    assert_eq!(ran.code(), Some(2), "down:\n{}", ran.both());
    assert!(ran.stdout.starts_with("CRITICAL ping:"), "{}", ran.both());
}

#[test]
fn scripts_pass_shellcheck_as_posix_sh() {
    let Some(shellcheck) = tool("shellcheck", "Debian package shellcheck") else {
        return;
    };
    let ran = run(
        Command::new(shellcheck)
            .args(["--shell=sh", "--severity=style"])
            .arg(deploy("redis/redis-backup.sh"))
            .arg(deploy("redis/redis-healthcheck.sh")),
        SCRIPT_TIMEOUT,
    );
    ran.assert_success();
}
