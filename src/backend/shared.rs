//! Multiplexed mode, the session's side: a batch handed to a shared lane,
//! its replies taken from the client's own channel as they come.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::mux::{Backlog, BatchReply, MuxRequest};
use super::{Backend, Failed, Multiplexer, Out, Plan, Wants, SPILL_BYTES};
use crate::error::{Error, Refusal};
use crate::pool::Upstream;

/// How often one batch is submitted again after lanes closed before writing it.
const MAX_BOUNCES: u32 = 3;

/// A client's end of the lanes: its reply channel and backlog.
pub(super) struct Inbox {
    tx: UnboundedSender<BatchReply>,
    rx: UnboundedReceiver<BatchReply>,
    backlog: Arc<Backlog>,
}

impl Inbox {
    pub(super) fn new(limit: usize) -> Inbox {
        let (tx, rx) = unbounded_channel();
        Inbox {
            tx,
            rx,
            backlog: Arc::new(Backlog::new(limit)),
        }
    }
}

/// Multiplexed mode: hands the batch to a shared lane and waits for its
/// replies on the client's own channel, spilling a big batch's pieces to
/// the client as they come.
pub(super) async fn execute_shared(
    backend: &Backend,
    mux: &Multiplexer,
    inbox: &mut Inbox,
    plan: &mut Plan,
    wants: Wants,
    out: &mut Out<'_>,
) -> Result<Option<Upstream>, Failed> {
    let bytes = plan.upstream.split().freeze();
    let failed = |error| Failed { error, answered: 0 };
    let mark = out.buf.len();
    let mut resent = false;
    // Lanes that closed before writing the batch (their node moved or
    // failed): nothing was sent, so it is submitted again, a few times.
    let mut bounced = 0;
    loop {
        let req = MuxRequest {
            bytes: bytes.clone(),
            replies: plan.remote_replies(),
            wants,
            reply_to: inbox.tx.clone(),
            backlog: inbox.backlog.clone(),
        };
        let started = Instant::now();
        mux.submit(req).await.map_err(failed)?;
        let refused = loop {
            let piece = match inbox.rx.recv().await.unwrap_or(Err(Error::Internal)) {
                Ok(piece) => piece,
                Err(Error::NotSent) if bounced < MAX_BOUNCES => break None,
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
            bounced += 1;
            out.buf.truncate(mark);
            continue;
        };
        out.reply_done();
        backend.traffic.round_trip_done(started.elapsed());
        // The lane has marked the pool stale and closed; the one re-send
        // goes to a lane on a fresh connection.
        if let Some(kind) = refused.kind {
            backend.traffic.refused(kind, refused.count);
            if !resent && plan.resendable && refused.whole_batch() && !out.spilled {
                out.buf.truncate(mark);
                resent = true;
                backend.traffic.resent();
                if kind != Refusal::ReadOnly {
                    tokio::time::sleep(backend.resend_delay).await;
                }
                continue;
            }
        }
        return Ok(None);
    }
}
