//! End to end: the real binary, 20 users of the mixed workload for two
//! seconds against a redis-server started on a free port.

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
        // The probed port can be taken before redis binds it: try again
        // with a fresh one when the server does not come up.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
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
