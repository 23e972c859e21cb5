//! Accepts clients, enforces the client limit, and drains on shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::session::Session;
use super::Shared;

/// Serves TCP clients until `shutdown`, then waits up to `drain` for
/// in-flight batches before cutting the remaining sessions.
pub async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut sessions = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    admit(&mut sessions, &shared, socket, peer.to_string(), &shutdown);
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    drain_sessions(sessions, drain).await;
}

/// The same for a unix socket listener.
pub async fn serve_unix(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut sessions = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => admit(&mut sessions, &shared, socket, "unix".into(), &shutdown),
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    drain_sessions(sessions, drain).await;
}

fn admit<S>(
    sessions: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    mut socket: S,
    peer: String,
    shutdown: &watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stats = shared.stats.clone();
    if stats.clients_connected.load(Relaxed) as usize >= shared.max_clients {
        stats.clients_rejected.fetch_add(1, Relaxed);
        sessions.spawn(async move {
            let _ = socket
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
        });
        return;
    }
    stats.clients_connected.fetch_add(1, Relaxed);
    stats.clients_total.fetch_add(1, Relaxed);
    let session = Session::new(shared.clone(), socket, shutdown.clone());
    sessions.spawn(async move {
        session.run(&peer).await;
        stats.clients_connected.fetch_sub(1, Relaxed);
    });
}

async fn drain_sessions(mut sessions: JoinSet<()>, drain: Duration) {
    let open = sessions.len();
    if open > 0 {
        info!(sessions = open, ?drain, "draining client sessions");
    }
    let drained = tokio::time::timeout(drain, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            sessions = sessions.len(),
            "drain timeout: closing remaining client sessions"
        );
        sessions.shutdown().await;
    }
}
