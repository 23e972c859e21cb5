//! End to end: the real binary, 20 users of the mixed workload for two
//! seconds against a redis-server started on a free port; and a short
//! failover run against a primary, a replica and one Sentinel.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A redis-server child without persistence, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A redis-server with `extra` arguments (e.g. `--replicaof`).
    fn start_with(extra: &[&str]) -> RedisServer {
        // The probed port can be taken before redis binds it: try again
        // with a fresh one when the server does not come up.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server (is it installed? scripts/install-deps.sh redis)");
            let mut server = RedisServer { child, port };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}

#[test]
fn mixed_run_against_redis_has_no_failures_and_a_full_report() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_poolside-loadtest"))
        .args(["--target", &format!("redis://127.0.0.1:{}", redis.port)])
        .args([
            "--workload",
            "mixed",
            "--users",
            "20",
            "--duration",
            "2s",
            "--spawn-rate",
            "0",
        ])
        .args(["--max-failure-rate", "0"])
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .output()
        .expect("run poolside-loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for row in [
        "requests",
        "success rate %",
        "throughput req/s",
        "latency p99 ms",
    ] {
        assert!(stdout.contains(row), "report lacks {row:?}:\n{stdout}");
    }

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON report written"))
            .expect("valid JSON");
    assert_eq!(report["interrupted"], false);
    let target = &report["targets"][0];
    let total = target["total"].as_u64().expect("total");
    assert!(total > 0, "no requests ran: {target}");
    assert_eq!(target["failed"], 0, "{target}");
    assert_eq!(target["successes"].as_u64(), Some(total));
    assert_eq!(
        target["connections_opened"], 20,
        "persistent users connect once each: {target}"
    );
    assert!(
        target["latency"]["p99_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{target}"
    );
    assert!(
        target["throughput_rps"].as_f64().unwrap_or(0.0) > 0.0,
        "{target}"
    );
}

/// A redis-sentinel child watching `primary` as `mymaster` (quorum 1),
/// with its config file in `dir`; killed on drop.
struct Sentinel {
    server: RedisServer,
}

impl Sentinel {
    fn start(dir: &std::path::Path, primary: u16) -> Sentinel {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                dir.display()
            ),
        )
        .expect("write the Sentinel config");
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-sentinel (is it installed? scripts/install-deps.sh redis)");
        let mut server = RedisServer { child, port };
        assert!(server.wait_ready(), "redis-sentinel did not start");
        Sentinel { server }
    }
}

/// Polls `probe` every 50 ms until it holds or `limit` passes.
fn wait_for(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !probe() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn query(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    cmd.query(&mut conn)
}

fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let text: String =
        redis::from_redis_value(query(port, redis::cmd("INFO").arg(section)).ok()?).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

#[test]
fn failover_run_sees_the_switch_and_checks_the_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No 5 s wait before the first sync; the replica's RDB goes to `dir`.
    let data = dir.path().to_str().expect("UTF-8 temp dir");
    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0", "--dir", data]);
    let primary_port = primary.port.to_string();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary_port, "--dir", data]);
    let sentinel = Sentinel::start(dir.path(), primary.port);
    let sentinel_port = sentinel.server.port;
    wait_for("replica in sync", READY_TIMEOUT, || {
        info_field(replica.port, "replication", "master_link_status").as_deref() == Some("up")
    });
    wait_for("Sentinel sees the replica", READY_TIMEOUT, || {
        info_field(sentinel_port, "sentinel", "master0")
            .is_some_and(|m| m.contains("status=ok") && m.contains("slaves=1"))
    });

    let json_path = dir.path().join("failover.json");
    let url = format!("redis+sentinel://127.0.0.1:{sentinel_port}/mymaster");
    let output = Command::new(env!("CARGO_BIN_EXE_poolside-loadtest"))
        .args(["failover", "--target", &url, "--failover", "manual"])
        .args(["--failover-at", "1s", "--duration", "4s", "--users", "10"])
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .output()
        .expect("run poolside-loadtest failover");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for line in ["primary", "requests", "latency", "recovered", "writes"] {
        assert!(stdout.contains(line), "report lacks {line:?}:\n{stdout}");
    }

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON report written"))
            .expect("valid JSON");
    assert_eq!(
        report["old_primary"],
        format!("127.0.0.1:{}", primary.port),
        "{report}"
    );
    assert_eq!(
        report["new_primary"],
        format!("127.0.0.1:{}", replica.port),
        "{report}"
    );
    assert!(
        report["switch_after_ms"].as_f64().is_some(),
        "no switch seen: {report}"
    );
    assert!(report["ok"].as_u64().unwrap_or(0) > 0, "{report}");
    let writes = &report["writes"];
    let acked = writes["acknowledged"].as_u64().expect("acknowledged");
    assert!(acked > 0, "{writes}");
    assert!(writes["lost"].as_u64().expect("lost") <= acked, "{writes}");
    // 4 s of 50 ms bins.
    assert_eq!(
        report["timeline"]["ok"].as_array().map(Vec::len),
        Some(80),
        "{report}"
    );
}
