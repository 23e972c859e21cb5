//! Shared helpers for the integration tests: a real `redis-server` on a free
//! port, poolside started in-process on port 0, clients, and condition waits.
//!
//! Tests never sleep to synchronise: they wait for a condition with a deadline.

#![allow(dead_code)]

pub mod busy;
pub mod raw;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use poolside::app::Running;
use poolside::config::Config;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use raw::{RawClient, Reply};

/// How long a redis-server may take to accept its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Safety net for every request a test client makes: a hang fails the test.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` child process on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a redis-server without persistence and waits until it answers PING.
    pub async fn start() -> RedisServer {
        RedisServer::start_inner(None).await
    }

    /// Same as [`RedisServer::start`] with `--requirepass`.
    pub async fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_inner(Some(password.to_string())).await
    }

    async fn start_inner(password: Option<String>) -> RedisServer {
        // Another process may take the free port between our probe and the
        // server's bind: retry with a fresh port when the server exits early.
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                password: password.clone(),
            };
            server.spawn();
            if server.wait_ready().await {
                return server;
            }
            server.stop();
        }
        panic!("redis-server did not start after 5 attempts");
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        self.child = Some(
            command
                .spawn()
                .expect("spawn redis-server (is it installed?)"),
        );
    }

    /// Polls until the server answers PING; false if the child exited or the deadline passed.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if self.ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn ping(&self) -> bool {
        let Ok(mut client) = RawClient::try_connect(self.addr()).await else {
            return false;
        };
        if let Some(password) = &self.password {
            if client
                .try_command(&["AUTH", password.as_str()])
                .await
                .is_err()
            {
                return false;
            }
        }
        matches!(client.try_command(&["PING"]).await, Ok(Reply::Simple(s)) if s == "PONG")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`, without the password (give it to poolside separately).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.spawn();
            if self.wait_ready().await {
                return;
            }
            self.stop();
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
        }
    }

    /// A direct (not through poolside) connection to this server.
    pub async fn direct(&self) -> MultiplexedConnection {
        let url = match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        connect_url(&url).await
    }

    /// A direct raw RESP connection, authenticated when the server has a password.
    pub async fn direct_raw(&self) -> RawClient {
        let mut client = RawClient::connect(self.addr()).await;
        if let Some(password) = &self.password {
            client
                .command(&["AUTH", password.as_str()])
                .await
                .expect_ok();
        }
        client
    }

    /// Client connections Redis sees, not counting the one that asks.
    pub async fn client_count(&self) -> usize {
        let mut client = self.direct_raw().await;
        client_count_on(&mut client).await
    }

    /// `blocked_clients` from `INFO clients`.
    pub async fn blocked_clients(&self) -> u64 {
        let mut client = self.direct_raw().await;
        let info = client.command(&["INFO", "clients"]).await.expect_string();
        info_field(&info, "blocked_clients")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts `CLIENT LIST` lines on an existing connection, minus that connection.
pub async fn client_count_on(client: &mut RawClient) -> usize {
    client_list_on(client).await.len() - 1
}

/// The lines of `CLIENT LIST`, the asking connection's own line included.
pub async fn client_list_on(client: &mut RawClient) -> Vec<String> {
    let list = client.command(&["CLIENT", "LIST"]).await.expect_string();
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The `cmd=` field (last command) of a `CLIENT LIST` line.
pub fn last_command(line: &str) -> &str {
    line.split(' ')
        .find_map(|field| field.strip_prefix("cmd="))
        .unwrap_or("")
}

/// Reads a numeric `name:value` line out of an INFO reply.
pub fn info_field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric field {name}: {info}"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `cond` until it is true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts poolside in-process for `redis`, after `tweak` adjusts the test config.
/// The suite runs once per pool mode: `scripts/test.sh` runs the proxy tests
/// again with `POOLSIDE_TEST_POOL_MODE=multiplexed` (read, never set, here).
pub fn pool_mode_under_test() -> poolside::config::PoolMode {
    match std::env::var("POOLSIDE_TEST_POOL_MODE").as_deref() {
        Ok("multiplexed") => poolside::config::PoolMode::Multiplexed,
        _ => poolside::config::PoolMode::Transaction,
    }
}

pub async fn start_poolside(redis: &RedisServer, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::for_tests(&redis.url());
    config.pool.mode = pool_mode_under_test();
    tweak(&mut config);
    poolside::app::start(config).await.expect("poolside starts")
}

/// One new TCP connection (a multiplexed redis-rs connection) to `addr`.
pub async fn connect(addr: SocketAddr) -> MultiplexedConnection {
    connect_url(&format!("redis://{addr}")).await
}

/// Same as [`connect`] with a password in the URL (redis-rs sends AUTH).
pub async fn connect_with_password(
    addr: SocketAddr,
    password: &str,
) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://:{password}@{addr}"))?;
    client
        .get_multiplexed_async_connection_with_config(&connection_config())
        .await
}

async fn connect_url(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid redis url");
    client
        .get_multiplexed_async_connection_with_config(&connection_config())
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Runs one command and converts the reply.
pub async fn query<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(con).await
}

/// Runs one command that must succeed.
pub async fn ok<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, args: &[&str]) -> T {
    query(con, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}
