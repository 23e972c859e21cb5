//! Accepts clients, enforces the client limit, and drains on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{tcp, unix, TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::session::Session;
use super::socket::{ClientSocket, Split};
use super::Shared;

/// A listener the accept loop can serve: TCP or a unix socket.
pub trait Accept: Send + 'static {
    type Socket: ClientSocket + 'static;
    /// The next client and a printable peer name.
    fn next(&self) -> impl Future<Output = io::Result<(Self::Socket, String)>> + Send;
}

impl Accept for TcpListener {
    type Socket = Split<tcp::OwnedReadHalf, tcp::OwnedWriteHalf>;
    async fn next(&self) -> io::Result<(Self::Socket, String)> {
        let (socket, peer) = self.accept().await?;
        let _ = socket.set_nodelay(true);
        Ok((Split::tcp(socket), peer.to_string()))
    }
}

impl Accept for UnixListener {
    type Socket = Split<unix::OwnedReadHalf, unix::OwnedWriteHalf>;
    async fn next(&self) -> io::Result<(Self::Socket, String)> {
        let (socket, _) = self.accept().await?;
        Ok((Split::unix(socket), "unix".into()))
    }
}

/// Serves clients until `shutdown`, then waits up to `drain` for in-flight
/// batches before cutting the remaining sessions.
pub async fn serve<L: Accept>(
    listener: L,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut sessions = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.next() => match accepted {
                Ok((socket, peer)) => admit(&mut sessions, &shared, socket, peer, &shutdown),
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

fn admit<S>(
    sessions: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    mut socket: S,
    peer: String,
    shutdown: &watch::Receiver<bool>,
) where
    S: ClientSocket + 'static,
{
    let traffic = shared.traffic.clone();
    if traffic.clients_connected() as usize >= shared.max_clients {
        traffic.client_rejected();
        sessions.spawn(async move {
            let _ = socket
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
        });
        return;
    }
    traffic.client_connected();
    let mut session = Session::new(shared.clone(), socket, shutdown.clone());
    debug!(client = session.id(), peer, "client connected");
    // Made here, not inside the task: the task then holds the session and
    // nothing else of what made it.
    sessions.spawn(async move {
        session.run().await;
        traffic.client_disconnected();
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
