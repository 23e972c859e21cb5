//! Where the users connect (an endpoint, or the primary found through
//! Sentinel the way an application's Sentinel client finds it) and the
//! Sentinel commands that force and watch the failover.

use std::time::Duration;

use anyhow::{bail, Context as _};
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, RedisConnectionInfo, RedisResult};
use tokio::time::timeout;

use crate::runner::Connector;
use crate::url::check_loopback_url;

pub const SENTINEL_SCHEME: &str = "redis+sentinel";
const SENTINEL_DEFAULT_PORT: u16 = 26379;

/// `redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelSpec {
    pub nodes: Vec<String>,
    pub service: String,
}

impl SentinelSpec {
    pub fn parse(url: &str) -> anyhow::Result<SentinelSpec> {
        let rest = url
            .strip_prefix(SENTINEL_SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .with_context(|| {
                format!("{url}: expected {SENTINEL_SCHEME}://HOST:PORT,.../SERVICE")
            })?;
        let (hosts, service) = rest.split_once('/').unwrap_or((rest, ""));
        if service.is_empty() || service.contains(['/', '?']) {
            bail!("{url}: the path must be the service (master) name, e.g. /mymaster");
        }
        if hosts.contains('@') {
            bail!("{url}: credentials are not supported here");
        }
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            let has_port = if host.starts_with('[') {
                host.contains("]:")
            } else {
                host.contains(':')
            };
            let node = if has_port {
                format!("redis://{host}")
            } else {
                format!("redis://{host}:{SENTINEL_DEFAULT_PORT}")
            };
            check_loopback_url(&node, "redis").with_context(|| format!("Sentinel {host:?}"))?;
            nodes.push(node);
        }
        Ok(SentinelSpec {
            nodes,
            service: service.to_string(),
        })
    }
}

/// How one user reaches Redis.
#[derive(Clone)]
pub enum Route {
    /// One address: poolside (which follows the failover itself) or any endpoint.
    Endpoint(Box<Connector>),
    /// Straight to the primary, found through Sentinel by the redis crate.
    Sentinel(SentinelSpec),
}

impl Route {
    pub fn new(url: &str, limit: Duration) -> anyhow::Result<Route> {
        if url.starts_with(SENTINEL_SCHEME) {
            return Ok(Route::Sentinel(SentinelSpec::parse(url)?));
        }
        check_loopback_url(url, "redis")?;
        Ok(Route::Endpoint(Box::new(Connector::new(url, limit)?)))
    }

    /// A user's own dialer (each user has its own Sentinel client, as each
    /// application instance would).
    pub fn dialer(&self, limit: Duration) -> RedisResult<Dialer> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(limit));
        Ok(match self {
            Route::Endpoint(c) => Dialer::Endpoint(c.as_ref().clone()),
            Route::Sentinel(spec) => {
                let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(
                    RedisConnectionInfo::default().set_skip_set_lib_name(),
                );
                let client = SentinelClient::build(
                    spec.nodes.clone(),
                    spec.service.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )?;
                Dialer::Sentinel(Box::new(client), config)
            }
        })
    }
}

pub enum Dialer {
    Endpoint(Connector),
    Sentinel(Box<SentinelClient>, AsyncConnectionConfig),
}

impl Dialer {
    /// Endpoint: one TCP connect. Sentinel: ask the Sentinels for the
    /// primary (SENTINEL MASTERS), check its ROLE on a fresh connection,
    /// then connect: what `SentinelClient::get_async_connection` does.
    pub async fn connect(&mut self) -> RedisResult<MultiplexedConnection> {
        match self {
            Dialer::Endpoint(c) => c.connect().await,
            Dialer::Sentinel(client, config) => {
                client.get_async_connection_with_config(config).await
            }
        }
    }
}

/// Control connections to the Sentinels: the primary's address, the forced
/// failover. A Sentinel that does not answer is skipped; its connection is
/// kept between queries while it works.
pub struct Sentinels {
    spec: SentinelSpec,
    nodes: Vec<(Client, Option<MultiplexedConnection>)>,
    limit: Duration,
}

impl Sentinels {
    pub fn new(spec: SentinelSpec, limit: Duration) -> anyhow::Result<Sentinels> {
        let nodes = spec
            .nodes
            .iter()
            .map(|n| Ok((Client::open(n.as_str())?, None)))
            .collect::<RedisResult<_>>()?;
        Ok(Sentinels { spec, nodes, limit })
    }

    async fn query<T: redis::FromRedisValue>(
        &mut self,
        node: usize,
        cmd: &redis::Cmd,
    ) -> anyhow::Result<T> {
        let (client, cached) = &mut self.nodes[node];
        let reply = timeout(self.limit, async {
            let conn = match cached {
                Some(conn) => conn,
                None => cached.insert(
                    client
                        .get_multiplexed_async_connection_with_config(&control(self.limit))
                        .await?,
                ),
            };
            cmd.query_async::<T>(conn).await
        })
        .await;
        match reply {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    *cached = None;
                }
                Err(e.into())
            }
            Err(_) => {
                *cached = None;
                bail!("no answer within {:?}", self.limit)
            }
        }
    }

    /// `host:port` of the primary as each answering Sentinel sees it.
    pub async fn primaries(&mut self) -> Vec<String> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.spec.service);
        let mut out = Vec::new();
        for node in 0..self.nodes.len() {
            if let Ok(Some((host, port))) = self.query::<Option<(String, String)>>(node, &cmd).await
            {
                out.push(format!("{host}:{port}"));
            }
        }
        out
    }

    /// The primary the first answering Sentinel names.
    pub async fn primary(&mut self) -> anyhow::Result<String> {
        let first = self.primaries().await.into_iter().next();
        first.with_context(|| {
            format!(
                "no Sentinel of {:?} names a primary for {}",
                self.spec.nodes, self.spec.service
            )
        })
    }

    /// `SENTINEL FAILOVER` on the first Sentinel that accepts it.
    pub async fn force_failover(&mut self) -> anyhow::Result<()> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("FAILOVER").arg(&self.spec.service);
        let mut last = None;
        for node in 0..self.nodes.len() {
            match self.query::<()>(node, &cmd).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("a Sentinel spec has at least one node")).context("SENTINEL FAILOVER")
    }
}

/// A control connection's timeouts: the run's `--timeout`, not the client
/// library's defaults (a 500 ms response timeout, which a Sentinel on a busy
/// machine can miss for SENTINEL FAILOVER).
fn control(limit: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit))
}

/// The pid of the redis-server at `addr` (INFO server), checked against
/// /proc so that only a redis-server listening on that port is ever killed.
pub async fn redis_pid(addr: &str, limit: Duration) -> anyhow::Result<u32> {
    let client = Client::open(format!("redis://{addr}"))?;
    let info: String = timeout(limit, async {
        let config = control(limit);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
    })
    .await
    .map_err(|_| anyhow::anyhow!("{addr}: no INFO within {limit:?}"))??;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let pid: u32 = field("process_id")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("{addr}: INFO server has no process_id"))?;
    let port = field("tcp_port").unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    if comm.trim() != "redis-server"
        || !cmdline.contains(port)
        || !addr.ends_with(&format!(":{port}"))
    {
        bail!("{addr}: pid {pid} is not a redis-server on port {port} of this machine (comm {comm:?}); not killing it");
    }
    Ok(pid)
}

/// `kill -9 PID`.
pub fn kill_hard(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -9 {pid} exited {status}");
    }
    Ok(())
}

/// A connection to `addr` once it answers ROLE as a primary, within `limit`.
pub async fn connect_primary(addr: &str, limit: Duration) -> anyhow::Result<MultiplexedConnection> {
    let client = Client::open(format!("redis://{addr}"))?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let attempt = timeout(Duration::from_secs(1), async {
            let config = control(limit);
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let role: redis::Value = redis::cmd("ROLE").query_async(&mut conn).await?;
            RedisResult::Ok((conn, role))
        })
        .await;
        if let Ok(Ok((conn, redis::Value::Array(items)))) = attempt {
            if matches!(items.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                return Ok(conn);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{addr} did not answer ROLE as a primary within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_list_loopback_nodes_and_a_service() {
        let s =
            SentinelSpec::parse("redis+sentinel://127.0.0.1:26379,localhost,[::1]:26381/mymaster")
                .unwrap();
        assert_eq!(
            s.nodes,
            [
                "redis://127.0.0.1:26379",
                "redis://localhost:26379",
                "redis://[::1]:26381"
            ]
        );
        assert_eq!(s.service, "mymaster");
        assert!(SentinelSpec::parse("redis+sentinel://127.0.0.1:26379").is_err());
        assert!(SentinelSpec::parse("redis+sentinel://10.0.0.1:26379/m").is_err());
        assert!(SentinelSpec::parse("redis+sentinel://u:p@127.0.0.1/m").is_err());
        assert!(SentinelSpec::parse("redis://127.0.0.1/m").is_err());
    }
}
