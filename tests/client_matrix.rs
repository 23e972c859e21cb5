//! The real-client matrix: today's client libraries, pinned by the project
//! (tests/clients: redis-py in python/requirements.txt, node-redis and
//! ioredis in node/package-lock.json), each run through poolside in both pool
//! modes with the library's default protocol and with RESP2.
//!
//! Every program runs the same scenario (connect, SET/GET, a 1,000-command
//! pipeline, MULTI/EXEC, a WATCH conflict, pub/sub beside other commands,
//! pub/sub and commands on one RESP3 connection, BLPOP, SELECT through a `/1`
//! URL, EVALSHA with the NOSCRIPT fallback, a 10 MiB value, client-side
//! caching) and exits non-zero naming the first step that failed; a test
//! failure shows the program's whole output. [`scenarios_pass_against_redis`]
//! runs every program straight against redis-server, so a failure through
//! poolside is poolside's.
//!
//! Until poolside speaks RESP3 (it answers `HELLO 3` with NOPROTO), the two
//! RESP3 defaults, redis-py's and node-redis's, fail at `connect` through
//! poolside; ioredis's default passes because it falls back to RESP2.
//!
//! The interpreters come from `scripts/install-deps.sh clients`
//! (tests/clients/python/.venv, node on PATH with tests/clients/node/
//! node_modules): when they are missing the tests fail saying so.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{both_modes, start_poolside, RedisServer};
use poolside::config::PoolMode;

/// A scenario takes a few seconds; past this the program is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_HINT: &str = "run `scripts/install-deps.sh clients`";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    /// tests/clients/python/scenario.py (redis-py).
    RedisPy,
    /// tests/clients/node/node_redis.mjs (node-redis).
    NodeRedis,
    /// tests/clients/node/ioredis.mjs (ioredis).
    Ioredis,
}

/// One row of the matrix: a program and the `--protocol` it is given.
#[derive(Clone, Copy, Debug)]
struct Variant {
    name: &'static str,
    program: Program,
    /// `default` (the library's own choice), `2` or `3`.
    protocol: &'static str,
}

/// redis-py 8: RESP3 unless told otherwise.
const REDIS_PY_DEFAULT: Variant = Variant {
    name: "redis-py 8.1.0, default (RESP3)",
    program: Program::RedisPy,
    protocol: "default",
};
const REDIS_PY_RESP2: Variant = Variant {
    name: "redis-py 8.1.0, protocol=2",
    program: Program::RedisPy,
    protocol: "2",
};
/// node-redis 6: RESP3 unless told otherwise.
const NODE_REDIS_DEFAULT: Variant = Variant {
    name: "node-redis 6.3.1, default (RESP3)",
    program: Program::NodeRedis,
    protocol: "default",
};
const NODE_REDIS_RESP2: Variant = Variant {
    name: "node-redis 6.3.1, RESP: 2",
    program: Program::NodeRedis,
    protocol: "2",
};
/// ioredis 6: sends HELLO 3, and goes on in RESP2 when the server refuses it.
const IOREDIS_DEFAULT: Variant = Variant {
    name: "ioredis 6.0.0, default (RESP3, RESP2 fallback)",
    program: Program::Ioredis,
    protocol: "default",
};
const IOREDIS_RESP2: Variant = Variant {
    name: "ioredis 6.0.0, protocol: 2",
    program: Program::Ioredis,
    protocol: "2",
};

const ALL: [Variant; 6] = [
    REDIS_PY_DEFAULT,
    REDIS_PY_RESP2,
    NODE_REDIS_DEFAULT,
    NODE_REDIS_RESP2,
    IOREDIS_DEFAULT,
    IOREDIS_RESP2,
];

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The command line that runs `variant` against `url`; panics with the
/// install hint when the interpreter or the libraries are missing.
fn command_for(variant: Variant, url: &str) -> Command {
    let dir = clients_dir();
    let mut command = match variant.program {
        Program::RedisPy => {
            let python = dir.join("python/.venv/bin/python");
            assert!(
                python.is_file(),
                "{} is missing: {INSTALL_HINT}",
                python.display()
            );
            let mut command = Command::new(python);
            command.arg(dir.join("python/scenario.py"));
            command
        }
        Program::NodeRedis | Program::Ioredis => {
            let node_ok = Command::new("node")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(node_ok, "node is not on PATH: {INSTALL_HINT}");
            let (script, package) = match variant.program {
                Program::NodeRedis => ("node_redis.mjs", "redis"),
                _ => ("ioredis.mjs", "ioredis"),
            };
            let installed = dir.join("node/node_modules").join(package);
            assert!(
                installed.join("package.json").is_file(),
                "{} is missing: {INSTALL_HINT}",
                installed.display()
            );
            let mut command = Command::new("node");
            command.arg(dir.join("node").join(script));
            command
        }
    };
    command
        .arg(url)
        .arg("--protocol")
        .arg(variant.protocol)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// What one program run did.
struct Run {
    variant: Variant,
    target: String,
    /// `None`: killed after [`RUN_TIMEOUT`].
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn passed(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The `FAIL <step>: ...` line, or how the program ended.
    fn verdict(&self) -> String {
        match self.status {
            Some(s) if s.success() => "passed".into(),
            None => format!("killed after {RUN_TIMEOUT:?}"),
            Some(s) => self
                .stderr
                .lines()
                .rev()
                .find(|l| l.starts_with("FAIL "))
                .map(str::to_string)
                .unwrap_or_else(|| format!("exited with {s}")),
        }
    }

    fn report(&self) -> String {
        format!(
            "{} against {}: {} ({:.1}s)\n--- stdout\n{}--- stderr\n{}---",
            self.variant.name,
            self.target,
            self.verdict(),
            self.took.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_bounded(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        match child.try_wait().expect("wait for the client program") {
            Some(status) => return Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs `variant` against `url` (off the async runtime: it blocks).
async fn run(variant: Variant, url: String, target: &str) -> Run {
    let target = target.to_string();
    let mut command = command_for(variant, &url);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e} ({INSTALL_HINT})"));
        let stdout = read_all(child.stdout.take().expect("piped stdout"));
        let stderr = read_all(child.stderr.take().expect("piped stderr"));
        let status = wait_bounded(&mut child);
        Run {
            variant,
            target,
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            took: started.elapsed(),
        }
    })
    .await
    .expect("client program thread")
}

/// Starts redis-server and poolside in `mode`, runs `variant` through it.
async fn through_poolside(variant: Variant, mode: PoolMode) {
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, mode, |_| {}).await;
    let url = format!("redis://{}", poolside.client_addr);
    let result = run(variant, url, &format!("poolside ({mode:?} mode)")).await;
    assert!(result.passed(), "{}", result.report());
    println!("{}", result.report());
}

/// Every program passes straight against redis-server: the scenarios
/// themselves are right, and whatever fails through poolside is poolside's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_pass_against_redis() {
    let redis = RedisServer::start().await;
    let runs = ALL.map(|variant| tokio::spawn(run(variant, redis.url(), "redis-server")));
    let mut failed = Vec::new();
    for handle in runs {
        let result = handle.await.expect("run task");
        if result.passed() {
            println!("{}", result.report());
        } else {
            failed.push(result.report());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} programs failed against redis-server itself:\n{}",
        failed.len(),
        ALL.len(),
        failed.join("\n")
    );
}

both_modes! {
    /// redis-py's default: HELLO 3 on connect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_py_default(mode: PoolMode) {
        through_poolside(REDIS_PY_DEFAULT, mode).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_py_resp2(mode: PoolMode) {
        through_poolside(REDIS_PY_RESP2, mode).await
    }

    /// node-redis's default: HELLO 3 on connect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn node_redis_default(mode: PoolMode) {
        through_poolside(NODE_REDIS_DEFAULT, mode).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn node_redis_resp2(mode: PoolMode) {
        through_poolside(NODE_REDIS_RESP2, mode).await
    }

    /// ioredis's default: HELLO 3, then RESP2 if poolside refuses it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ioredis_default(mode: PoolMode) {
        through_poolside(IOREDIS_DEFAULT, mode).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ioredis_resp2(mode: PoolMode) {
        through_poolside(IOREDIS_RESP2, mode).await
    }
}
