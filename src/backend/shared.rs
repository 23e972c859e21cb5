//! Multiplexed mode, the session's side: a batch handed to a shared lane,
//! its replies taken from the client's own channel as they come; or, when
//! its replies are all the batch puts out, *deferred*: the session goes back
//! to reading its client and the lane writes the replies to the client's
//! socket itself ([`Direct`]), so a request costs one task wake-up, not two.
//! The session settles a deferred batch before it writes anything else.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::cluster::{self, NodeLanes};
use super::mux::{Backlog, BatchReply, ClientWrite, Direct, MuxRequest};
use super::{Backend, Failed, Mode, Multiplexer, Out, Plan, Wants, SPILL_BYTES};
use crate::error::{Error, Refusal};
use crate::pool::Upstream;

/// How often one batch is submitted again after lanes closed before writing it.
pub(super) const MAX_BOUNCES: u32 = 3;

/// A client's end of the lanes: its backlog (where its replies come).
pub(super) struct Inbox {
    backlog: Arc<Backlog>,
    /// The client's socket as lanes may write to it.
    direct: Option<Arc<Direct>>,
    /// The deferred batch, until the session settles it.
    pending: Option<Batch>,
    /// A message about the deferred batch, taken while the session read.
    early: Option<BatchReply>,
}

impl Inbox {
    pub(super) fn new(limit: usize, client: Option<&Arc<dyn ClientWrite>>) -> Inbox {
        Inbox {
            backlog: Arc::new(Backlog::new(limit)),
            direct: client.map(|c| Arc::new(Direct::new(c.clone()))),
            pending: None,
            early: None,
        }
    }

    pub(super) fn has_deferred(&self) -> bool {
        self.pending.is_some()
    }

    /// A deferred batch whose replies have not reached the client yet.
    pub(super) fn deferred_in_flight(&self) -> bool {
        self.pending.is_some()
            && (self.early.is_some() || !self.direct.as_ref().is_some_and(|d| d.is_written()))
    }

    /// Waits for a message about the deferred batch (cancel-safe); never
    /// resolves while there is none to wait for. A deferred batch the lane
    /// wrote to the client sends none.
    pub(super) async fn message(&mut self) {
        if self.pending.is_none() || self.early.is_some() {
            return std::future::pending().await;
        }
        self.early = Some(self.backlog.recv().await);
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Lanes still reading this client's replies drop them from now on.
        self.backlog.close();
    }
}

/// A batch in the lanes' hands, with what submitting it again needs.
struct Batch {
    bytes: Bytes,
    replies: usize,
    wants: Wants,
    resendable: bool,
    /// Re-sent once already after Redis refused all of it.
    resent: bool,
    /// Times lanes closed before writing it.
    bounced: u32,
    started: Instant,
    /// Cluster mode: the node whose lanes run it.
    node: Option<Arc<NodeLanes>>,
}

/// The lanes a batch goes to: its cluster node's, else the backend's.
fn lanes<'a>(backend: &'a Backend, node: &'a Option<Arc<NodeLanes>>) -> Option<&'a Multiplexer> {
    match (node, &backend.mode) {
        (Some(node), _) => Some(&node.mux),
        (None, Mode::Multiplexed(mux)) => Some(mux),
        (None, _) => None,
    }
}

/// Multiplexed mode: hands the batch to a shared lane (the backend's, or
/// a cluster `node`'s) and waits for its replies on the client's own
/// channel, spilling a big batch's pieces to the client as they come; or
/// defers it (see the module doc) and returns.
pub(super) async fn execute_shared(
    backend: &Backend,
    node: Option<Arc<NodeLanes>>,
    inbox: &mut Inbox,
    plan: &mut Plan,
    wants: Wants,
    out: &mut Out<'_>,
) -> Result<Option<Upstream>, Failed> {
    // The batch keeps its node (for a re-send, and its redirects).
    let held = node.clone();
    let Some(mux) = lanes(backend, &held) else {
        // Never: the callers have lanes.
        return Err(Failed {
            error: Error::Internal,
            answered: 0,
        });
    };
    let mut batch = Batch {
        node,
        bytes: plan.upstream.split().freeze(),
        replies: plan.remote_replies(),
        wants,
        resendable: plan.resendable,
        resent: false,
        bounced: 0,
        started: Instant::now(),
    };
    // Deferred only when its replies are all the client is owed now and
    // the session gave its socket (a blocking batch's session reads instead).
    let defer = out.buf.is_empty() && out.can_spill() && !plan.close;
    let direct = inbox.direct.clone().filter(|_| defer);
    if let Some(direct) = &direct {
        direct.begin();
    }
    let deferred = direct.is_some();
    if let Err(failed) = submit(mux, inbox, &mut batch, direct).await {
        if batch.node.is_some() {
            // Nothing was sent: the cluster may run the batch otherwise
            // (held for a failover), from the plan.
            plan.upstream.extend_from_slice(&batch.bytes);
        }
        return Err(failed);
    }
    if deferred {
        inbox.pending = Some(batch);
        return Ok(None);
    }
    let mark = out.buf.len();
    // Boxed, as in `settle`: most batches are deferred.
    let redirected = Box::pin(receive(backend, mux, inbox, &mut batch, out)).await?;
    if redirected {
        // Boxed: the redirects' state is no part of every session's future.
        Box::pin(follow_redirects(backend, &batch, out, mark)).await;
    }
    Ok(None)
}

/// Cluster mode: a node answered some of the batch with a redirect; they
/// are followed before the client sees them (unless replies reached the
/// client already, in pieces: then they stand).
async fn follow_redirects(backend: &Backend, batch: &Batch, out: &mut Out<'_>, mark: usize) {
    if let (Some(node), Mode::Cluster(cluster)) = (&batch.node, &backend.mode) {
        if !out.spilled {
            let (bytes, wants) = (&batch.bytes, batch.wants);
            cluster::fix_redirects(backend, cluster, node, bytes, wants, out.buf, mark).await;
        }
    }
}

/// Settles the deferred batch, if any: its replies reached the client, or
/// they are in `out` now. On failure, how many replies the client is owed
/// (every one gets the error).
pub(super) async fn settle(
    backend: &Backend,
    inbox: &mut Inbox,
    out: &mut Out<'_>,
) -> Result<(), (Failed, usize)> {
    let Some(mut batch) = inbox.pending.take() else {
        return Ok(());
    };
    let node = batch.node.clone();
    // Never without lanes: only shared batches are deferred.
    let Some(mux) = lanes(backend, &node) else {
        return Ok(());
    };
    let waits = inbox.early.is_some() || inbox.direct.as_ref().is_some_and(|d| d.wait());
    if !waits {
        // The lane wrote the replies to the client.
        return Ok(());
    }
    let replies = batch.replies;
    let mark = out.buf.len();
    // Boxed: when the lane wrote the replies (above) the session waits for
    // nothing, and this state would be part of every session's future,
    // idle or not.
    let redirected = Box::pin(receive(backend, mux, inbox, &mut batch, out))
        .await
        .map_err(|failed| (failed, replies))?;
    if redirected {
        // Boxed: the redirects' state is no part of every session's future.
        Box::pin(follow_redirects(backend, &batch, out, mark)).await;
    }
    Ok(())
}

async fn submit(
    mux: &Multiplexer,
    inbox: &Inbox,
    batch: &mut Batch,
    direct: Option<Arc<Direct>>,
) -> Result<(), Failed> {
    batch.started = Instant::now();
    let req = MuxRequest {
        bytes: batch.bytes.clone(),
        replies: batch.replies,
        wants: batch.wants,
        backlog: inbox.backlog.clone(),
        direct,
        started: batch.started,
    };
    let Err(req) = mux.try_submit(req) else {
        return Ok(());
    };
    // Boxed: see `try_submit`.
    Box::pin(mux.submit(req))
        .await
        .map_err(|error| Failed { error, answered: 0 })
}

/// Takes the batch's replies from the channel into `out` until the last
/// piece, submitting it again where nothing of it ran: bounced by lanes
/// that closed before writing it, or refused whole by Redis (once).
/// `true`: a reply is a cluster node's redirect.
async fn receive(
    backend: &Backend,
    mux: &Multiplexer,
    inbox: &mut Inbox,
    batch: &mut Batch,
    out: &mut Out<'_>,
) -> Result<bool, Failed> {
    let failed = |error| Failed { error, answered: 0 };
    let mark = out.buf.len();
    loop {
        let refused = loop {
            let message = match inbox.early.take() {
                Some(message) => message,
                None => inbox.backlog.recv().await,
            };
            let piece = match message {
                Ok(piece) => piece,
                Err(Error::NotSent) if batch.bounced < MAX_BOUNCES => break None,
                Err(error) => {
                    // Nothing of the batch reached the client: every reply is
                    // answered with the error instead.
                    out.buf.truncate(mark);
                    return Err(failed(error));
                }
            };
            inbox.backlog.taken(piece.bytes.len());
            out.buf.extend_from_slice(&piece.bytes);
            if piece.last {
                break Some(piece.refused);
            }
            if out.buf.len() >= SPILL_BYTES && out.can_spill() {
                let overflowed = inbox.backlog.overflowed.notified();
                tokio::select! {
                    spilled = out.spill(true) => spilled.map_err(failed)?,
                    _ = overflowed => {
                        let limit = inbox.backlog.limit();
                        return Err(failed(Error::ReplyOverflow { limit }));
                    }
                }
            }
        };
        let Some(refused) = refused else {
            // Lanes that closed before writing it (their node moved or
            // failed): nothing was sent, so it goes again, a few times.
            batch.bounced += 1;
            out.buf.truncate(mark);
            submit(mux, inbox, batch, None).await?;
            continue;
        };
        out.reply_done();
        backend.traffic.round_trip_done(batch.started.elapsed());
        // The lane has marked the pool stale and closed; the one re-send
        // goes to a lane on a fresh connection.
        if let Some(kind) = refused.kind {
            backend.traffic.refused(kind, refused.count);
            if !batch.resent && batch.resendable && refused.whole_batch() && !out.spilled {
                out.buf.truncate(mark);
                batch.resent = true;
                backend.traffic.resent();
                if kind != Refusal::ReadOnly {
                    tokio::time::sleep(backend.resend_delay).await;
                }
                submit(mux, inbox, batch, None).await?;
                continue;
            }
        }
        return Ok(refused.redirected);
    }
}
