//! Control-plane facts about Redis (version, connected clients, maxclients)
//! for `/pool/status`: fetched with redis-rs over a separate one-connection
//! bb8 pool by a background task, never on the data path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bb8::ManageConnection;
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{self, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError};
use bb8_redis::RedisConnectionManager;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::clock;
use crate::config::SecretCell;

/// One refresh (connect + INFO) may take this long.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// What Redis last said about itself; `None` until it has answered once.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    pub redis_version: Option<String>,
    pub connected_clients: Option<u64>,
    pub maxclients: Option<u64>,
    pub refreshed_unix_ms: Option<u64>,
}

/// Where and as whom the control plane connects.
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: SecretCell,
    pub db: u32,
}

pub struct ControlPlane {
    /// `None` when the upstream needs TLS, which this redis-rs build lacks:
    /// the Redis facts are then left out of `/pool/status`.
    pool: Option<bb8::Pool<Manager>>,
    info: Mutex<ServerInfo>,
}

impl ControlPlane {
    /// Builds the pool (of one connection) without connecting.
    pub fn new(endpoint: Endpoint, tls: bool) -> ControlPlane {
        let pool = (!tls).then(|| {
            bb8::Pool::builder()
                .max_size(1)
                .connection_timeout(REFRESH_TIMEOUT)
                .retry_connection(false)
                .build_unchecked(Manager(endpoint))
        });
        ControlPlane {
            pool,
            info: Mutex::new(ServerInfo::default()),
        }
    }

    pub fn info(&self) -> ServerInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Asks Redis again; on failure the last answer stays (with its time).
    pub async fn refresh(&self) {
        match tokio::time::timeout(REFRESH_TIMEOUT, self.fetch()).await {
            Ok(Ok(fresh)) => {
                if let Ok(mut info) = self.info.lock() {
                    *info = fresh;
                }
            }
            Ok(Err(e)) => debug!(error = %e, "control plane: INFO failed"),
            Err(_) => debug!("control plane: INFO timed out"),
        }
    }

    async fn fetch(&self) -> anyhow::Result<ServerInfo> {
        let Some(pool) = &self.pool else {
            return Ok(ServerInfo::default());
        };
        let mut conn = pool.get().await?;
        let (server, clients): (String, String) = redis::pipe()
            .cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("clients")
            .query_async(&mut *conn)
            .await?;
        let mut maxclients = info_field(&clients, "maxclients").and_then(|v| v.parse().ok());
        if maxclients.is_none() {
            // Before Redis 7, maxclients is only in CONFIG (which may be renamed away).
            let reply: redis::RedisResult<(String, u64)> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxclients")
                .query_async(&mut *conn)
                .await;
            maxclients = reply.ok().map(|(_, n)| n);
        }
        Ok(ServerInfo {
            redis_version: info_field(&server, "redis_version").map(str::to_string),
            connected_clients: info_field(&clients, "connected_clients")
                .and_then(|v| v.parse().ok()),
            maxclients,
            refreshed_unix_ms: Some(clock::now_unix_ms()),
        })
    }
}

/// bb8-redis's manager, rebuilt at each connect so a password rotated by
/// SIGHUP is used. The password goes straight into redis-rs's connection info
/// (whose `Debug` redacts it), never into a URL.
struct Manager(Endpoint);

impl Manager {
    fn current(&self) -> Result<RedisConnectionManager, RedisError> {
        let e = &self.0;
        let mut settings = RedisConnectionInfo::default().set_db(e.db.into());
        if let Some(user) = &e.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = e.password.get() {
            settings = settings.set_password(password.expose());
        }
        let info = ConnectionAddr::Tcp(e.host.clone(), e.port)
            .into_connection_info()?
            .set_redis_settings(settings);
        RedisConnectionManager::new(info)
    }
}

impl ManageConnection for Manager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        self.current()?.connect().await
    }

    async fn is_valid(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        self.current()?.is_valid(conn).await
    }

    fn has_broken(&self, _: &mut MultiplexedConnection) -> bool {
        false
    }
}

/// The value of `name:value` in an INFO reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Refreshes at once, then every `every`, until shutdown.
pub fn spawn_refresher(
    control: Arc<ControlPlane>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            // A refresh waiting on an unreachable Redis must not hold up shutdown.
            tokio::select! {
                _ = control.refresh() => {}
                _ = shutdown.changed() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields() {
        let info = "# Clients\r\nconnected_clients:7\r\nmaxclients:10000\r\n";
        assert_eq!(info_field(info, "connected_clients"), Some("7"));
        assert_eq!(info_field(info, "maxclients"), Some("10000"));
        assert_eq!(info_field(info, "connected"), None);
    }
}
