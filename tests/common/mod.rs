//! The integration tests' one support module (`mod common;` in each test
//! file): a real `redis-server` on a free port ([`RedisServer`], plain, with
//! a password, TLS-only or with a config file), poolside started in-process
//! on port 0 in a given pool mode ([`start_poolside`]; [`both_modes!`] makes
//! a test once per mode), clients (a raw RESP one in [`raw`], redis-rs ones here), the
//! admin HTTP client ([`http::get`]), the Prometheus text parser
//! ([`metrics::Metrics`]), certificates ([`tls::Certs`]), the admin tests'
//! helpers ([`admin`]), a Sentinel topology ([`sentinel::SentinelSet`]), write
//! load that records what was acknowledged ([`writers::Writers`]) and
//! condition waits.
//!
//! Tests never sleep to synchronise: they wait for a condition with a
//! deadline ([`wait_until`], [`wait_for`]), which fails the test naming it.

#![allow(dead_code)]

pub mod admin;
pub mod busy;
pub mod cluster;
pub mod http;
pub mod metrics;
pub mod raw;
pub mod sentinel;
pub mod server;
pub mod tls;
pub mod writers;

use std::fmt::Debug;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use poolside::app::Running;
use poolside::config::{Config, PoolMode};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use raw::RawClient;

// Re-exported for the test files; each one uses only some of them.
#[allow(unused_imports)]
pub use http::get;
#[allow(unused_imports)]
pub use metrics::Metrics;
#[allow(unused_imports)]
pub use server::{connect_blocking, RedisServer};

/// Safety net for every request a test client makes: a hang fails the test.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the helpers here wait for an answer or a condition.
pub const WAIT: Duration = Duration::from_secs(15);

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

/// Retries `attempt` until it is `Ok`, and returns that value; panics naming
/// `what`, with the last `Err`, after `timeout`.
pub async fn wait_for<T, E, F, Fut>(timeout: Duration, what: &str, mut attempt: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match attempt().await {
            Ok(value) => return value,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts poolside in-process for `redis` in pool `mode`, after `tweak`
/// adjusts the test config ([`Config::for_tests`] with `redis`'s URL).
pub async fn start_poolside(
    redis: &RedisServer,
    mode: PoolMode,
    tweak: impl FnOnce(&mut Config),
) -> Running {
    let mut config = Config::for_tests(&redis.url());
    config.pool.mode = mode;
    tweak(&mut config);
    poolside::app::start(config).await.expect("poolside starts")
}

/// Instantiates each test once per pool mode: every proxy behaviour must
/// hold in both. A test written as
///
/// ```ignore
/// both_modes! {
///     /// What it shows.
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     async fn replies_arrive(mode: PoolMode) {
///         let redis = RedisServer::start().await;
///         let poolside = start_poolside(&redis, mode, |_| {}).await;
///         // ...
///     }
/// }
/// ```
///
/// becomes a module `replies_arrive` with the tests
/// `replies_arrive::transaction` and `replies_arrive::multiplexed`, each
/// carrying the attributes written (the test attribute included) and
/// running the body with its mode. The body sees the file's items.
#[allow(unused_macros)]
macro_rules! both_modes {
    ($(
        $(#[$attr:meta])*
        async fn $name:ident($mode:ident: $mode_type:ty) $body:block
    )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body_in_mode($mode: $mode_type) $body

            $(#[$attr])*
            async fn transaction() {
                body_in_mode(::poolside::config::PoolMode::Transaction).await
            }

            $(#[$attr])*
            async fn multiplexed() {
                body_in_mode(::poolside::config::PoolMode::Multiplexed).await
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use both_modes;

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

pub async fn connect_url(url: &str) -> MultiplexedConnection {
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

/// This process's resident set size (`VmRSS` in /proc/self/status), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}
