//! Control-plane facts about Redis (version, connected clients, maxclients,
//! and `CLIENT LIST` grouped into the fleet's view, see `fleet.rs`) for
//! `/pool/status`, fetched by a background task on a connection borrowed
//! from the data pool: Redis never sees more than `max_connections`
//! connections from one poolside, and TLS upstreams are covered too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

use super::fleet::{parse_client_list, Census};
use crate::clock;
use crate::pool::{Pool, UpstreamConn};

/// The roles `/pool/status` reports (`INFO replication`'s `master`, `slave`).
const PRIMARY: &str = "primary";
const REPLICA: &str = "replica";

/// One refresh (connect, INFO, CLIENT LIST) may take this long.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// What Redis last said about itself; `None` until it has answered once.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    pub redis_version: Option<String>,
    pub connected_clients: Option<u64>,
    pub maxclients: Option<u64>,
    pub refreshed_unix_ms: Option<u64>,
    /// `primary` or `replica`, from `INFO replication`.
    pub role: Option<&'static str>,
    /// Times the role seen changed (a failover shows as primary -> replica,
    /// on a connection to the demoted node, then replica -> primary).
    pub role_changes: u64,
    /// `CLIENT LIST`, grouped; shown as `/pool/status`'s `fleet`.
    #[serde(skip)]
    pub census: Option<Census>,
}

pub struct ControlPlane {
    pool: Pool,
    info: Mutex<ServerInfo>,
    /// The role Redis had when first seen: a URL that named a primary then
    /// is a primary URL, and a replica behind it means the name has not
    /// moved yet for this pool's connections.
    first_role: std::sync::OnceLock<&'static str>,
}

impl ControlPlane {
    pub fn new(pool: Pool) -> ControlPlane {
        ControlPlane {
            pool,
            info: Mutex::new(ServerInfo::default()),
            first_role: std::sync::OnceLock::new(),
        }
    }

    pub fn info(&self) -> ServerInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Asks Redis again; on failure the last answer stays (with its time).
    /// Returns whether Redis answered.
    pub async fn refresh(&self) -> bool {
        match tokio::time::timeout(REFRESH_TIMEOUT, self.fetch()).await {
            Ok(Ok((mut fresh, generation))) => {
                if let Ok(mut info) = self.info.lock() {
                    fresh.role_changes = info.role_changes;
                    if info.role.is_some() && fresh.role.is_some() && info.role != fresh.role {
                        fresh.role_changes += 1;
                    }
                    *info = fresh.clone();
                }
                let first = fresh.role.map(|role| *self.first_role.get_or_init(|| role));
                if first == Some(PRIMARY) && fresh.role == Some(REPLICA) {
                    // A replica behind a primary URL: the connection (and
                    // every one as old) points at a demoted node. Asked
                    // again soon, on a fresh connection.
                    self.pool.mark_stale(generation);
                    return false;
                }
                return true;
            }
            Ok(Err(e)) => debug!(error = %e, "control plane: INFO or CLIENT LIST failed"),
            Err(_) => debug!("control plane: INFO or CLIENT LIST timed out"),
        }
        false
    }

    /// What Redis says, and the generation of the connection that asked.
    async fn fetch(&self) -> anyhow::Result<(ServerInfo, u64)> {
        let mut conn = self.pool.borrow().await?;
        let server = text(&conn.command(&[b"INFO", b"server"]).await?);
        let replication = text(&conn.command(&[b"INFO", b"replication"]).await?);
        let role = match info_field(&replication, "role") {
            Some("master") => Some(PRIMARY),
            Some("slave") => Some(REPLICA),
            _ => None,
        };
        let clients = text(&conn.command(&[b"INFO", b"clients"]).await?);
        let mut maxclients = info_field(&clients, "maxclients").and_then(|v| v.parse().ok());
        if maxclients.is_none() {
            // Before Redis 7, maxclients is only in CONFIG (which may be renamed away).
            maxclients = config_value(&mut conn, b"maxclients").await;
        }
        // An ACL may deny CLIENT LIST (it is @dangerous): the fleet is then
        // not visible, and the rest of the refresh stands.
        let list = conn.command(&[b"CLIENT", b"LIST"]).await?;
        let census = match list.first() {
            Some(b'-') => Census::Refused(error_text(&list)),
            _ => Census::Listed(parse_client_list(&text(&list))),
        };
        let info = ServerInfo {
            redis_version: info_field(&server, "redis_version").map(str::to_string),
            connected_clients: info_field(&clients, "connected_clients")
                .and_then(|v| v.parse().ok()),
            maxclients,
            refreshed_unix_ms: Some(clock::now_unix_ms()),
            census: Some(census),
            role,
            role_changes: 0,
        };
        Ok((info, conn.generation))
    }
}

/// The text of a bulk (RESP2) or verbatim (RESP3, `txt:`) string reply;
/// empty for anything else. The borrowed connection may speak either.
fn text(reply: &[u8]) -> String {
    let body = match reply.first() {
        Some(b'$' | b'=') => reply
            .iter()
            .position(|b| *b == b'\n')
            .map(|eol| &reply[eol + 1..reply.len().saturating_sub(2).max(eol + 1)])
            .unwrap_or_default(),
        _ => &[][..],
    };
    let body = match reply.first() {
        Some(b'=') => body.get(4..).unwrap_or_default(),
        _ => body,
    };
    String::from_utf8_lossy(body).into_owned()
}

/// The message of an error reply (`-NOPERM ...`), without the `-` and CRLF.
fn error_text(reply: &[u8]) -> String {
    let line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line.get(1..).unwrap_or_default()).into_owned()
}

/// `CONFIG GET <name>` as a number: the last line of its reply (an array
/// in RESP2, a map in RESP3, both ending with the value).
async fn config_value(conn: &mut UpstreamConn, name: &[u8]) -> Option<u64> {
    let reply = conn.command(&[b"CONFIG", b"GET", name]).await.ok()?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.lines()
        .rev()
        .find(|l| !l.is_empty())?
        .trim()
        .parse()
        .ok()
}

/// The value of `name:value` in an INFO reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// After a failed refresh (Redis down, or every pool connection busy) the
/// next one comes this soon, not a whole interval later.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Refreshes at once, then every `every` (every second after a failure),
/// until shutdown.
pub fn spawn_refresher(
    control: Arc<ControlPlane>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            // A refresh waiting on an unreachable Redis must not hold up shutdown.
            let answered = tokio::select! {
                answered = control.refresh() => answered,
                _ = shutdown.changed() => return,
            };
            wait = if answered {
                every
            } else {
                RETRY_AFTER.min(every)
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bulk_and_verbatim_replies() {
        assert_eq!(text(b"$9\r\na:1\r\nb:22\r\n"), "a:1\r\nb:22");
        assert_eq!(text(b"=13\r\ntxt:a:1\r\nb:22\r\n"), "a:1\r\nb:22");
        assert_eq!(text(b"-ERR nope\r\n"), "");
        assert_eq!(text(b"$0\r\n\r\n"), "");
        assert_eq!(
            error_text(b"-NOPERM no permissions to run 'client|list'\r\n"),
            "NOPERM no permissions to run 'client|list'"
        );
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Clients\r\nconnected_clients:7\r\nmaxclients:10000\r\n";
        assert_eq!(info_field(info, "connected_clients"), Some("7"));
        assert_eq!(info_field(info, "maxclients"), Some("10000"));
        assert_eq!(info_field(info, "connected"), None);
    }
}
