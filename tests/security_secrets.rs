//! Secrets hygiene, end to end with the real binary: the upstream password
//! comes from REDIS_PASSWORD_FILE and is re-read on SIGHUP; no password ever
//! appears in the (debug-level) logs, in admin output, in `poolside config`
//! or in replies, including after failing to authenticate with a wrong one.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{get, wait_until, RedisServer};

const WRONG: &str = "wrong-SECRET-0";
const FIRST: &str = "first-SECRET-1";
const SECOND: &str = "second-SECRET-2";
const SECRETS: [&str; 3] = [WRONG, FIRST, SECOND];

/// The poolside binary with its stderr collected line by line.
struct Poolside {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Poolside {
    fn spawn(
        redis: &RedisServer,
        password_file: &std::path::Path,
        dir: &std::path::Path,
    ) -> Poolside {
        let mut child = Command::new(env!("CARGO_BIN_EXE_poolside"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "debug")
            .env("REDIS_URL", redis.url())
            .env("REDIS_PASSWORD_FILE", password_file)
            .env("POOLSIDE_POOL__CONNECT_RETRIES", "0")
            .env("POOLSIDE_POOL__BACKOFF_MAX_MS", "50")
            .env("POOLSIDE_POOL__BACKOFF_BASE_MS", "10")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn poolside");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Poolside { child, log }
    }

    fn logged(&self, message: &str) -> Option<serde_json::Value> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == message)
    }

    fn count(&self, message: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(message)).count()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Poolside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} contains a password:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_rotation_on_sighup_without_leaking_it() {
    let redis = RedisServer::start_with_password(FIRST).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{WRONG}\n")).unwrap();
    let poolside = Poolside::spawn(&redis, &file, dir.path());
    let started = wait_for(&poolside, "poolside started").await;
    let addr: SocketAddr = started["fields"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let admin: SocketAddr = started["fields"]["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // 1. The wrong password: the client gets Redis' refusal, not the password.
    let mut client = RawClient::connect(addr).await;
    let err = client.command(&["GET", "k"]).await.expect_error();
    assert!(
        err.contains("WRONGPASS") || err.contains("upstream unavailable"),
        "{err}"
    );
    assert_no_secret("an error reply", &err);

    // 2. The right password in the file, then SIGHUP: served without a restart.
    std::fs::write(&file, FIRST).unwrap();
    poolside.signal("HUP");
    wait_for(&poolside, "reloaded the upstream password").await;
    wait_until(
        Duration::from_secs(10),
        "poolside serves after SIGHUP",
        || async {
            RawClient::connect(addr)
                .await
                .command(&["SET", "k", "1"])
                .await
                == Reply::Simple("OK".into())
        },
    )
    .await;

    // 3. Rotation: Redis' password changes, then the file, then SIGHUP. Open
    //    connections stay authenticated; killing them forces new ones, which
    //    must use the new password.
    let mut direct = redis.direct_raw().await;
    direct
        .command(&["CONFIG", "SET", "requirepass", SECOND])
        .await
        .expect_ok();
    std::fs::write(&file, format!("{SECOND}\n")).unwrap();
    poolside.signal("HUP");
    wait_until(
        Duration::from_secs(10),
        "the second reload is logged",
        || async { poolside.count("reloaded the upstream password") >= 2 },
    )
    .await;
    let killed = direct.command(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    assert!(matches!(killed, Reply::Int(n) if n >= 1), "{killed:?}");
    wait_until(
        Duration::from_secs(10),
        "poolside serves with the new password",
        || async {
            RawClient::connect(addr)
                .await
                .command(&["SET", "k", "2"])
                .await
                == Reply::Simple("OK".into())
        },
    )
    .await;

    // 4. Nothing shows a password: admin output, `poolside config`, logs.
    for path in ["/pool/status", "/metrics", "/health/ready"] {
        assert_no_secret(path, &get(admin, path).await.text());
    }
    let config = Command::new(env!("CARGO_BIN_EXE_poolside"))
        .arg("config")
        .current_dir(dir.path())
        .env_clear()
        .env("REDIS_URL", format!("redis://user:{WRONG}@127.0.0.1:1"))
        .env("REDIS_PASSWORD", SECOND)
        .env("REDIS_PASSWORD_FILE", &file)
        .env("POOLSIDE_CLIENT_PASSWORD", FIRST)
        .output()
        .expect("poolside config");
    let printed = String::from_utf8_lossy(&config.stdout);
    assert!(printed.contains("password_file"), "{printed}");
    assert_no_secret("poolside config", &printed);
    poolside.signal("TERM");
    wait_for(&poolside, "poolside stopped").await;
    let log = poolside.log.lock().unwrap().join("\n");
    assert!(
        log.contains("authentication failed"),
        "the failure is logged:\n{log}"
    );
    assert_no_secret("the log", &log);
}

async fn wait_for(poolside: &Poolside, message: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(
        Duration::from_secs(10),
        &format!("poolside logs {message:?}"),
        || {
            found = poolside.logged(message);
            let done = found.is_some();
            async move { done }
        },
    )
    .await;
    found.unwrap()
}
