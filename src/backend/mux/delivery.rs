//! How a lane's replies reach their clients: in [`Piece`]s, counted in each
//! client's [`Backlog`], cut from the bytes Redis sends ([`Replies`]) by
//! [`dispatch`], with a slow client's replies held up to a limit and then
//! dropped; or, for a client whose session waits for its next command
//! rather than for these replies, written to its socket by the lane
//! ([`Direct`]).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::Notify;
use tracing::warn;

use super::super::cluster::is_redirect;
use super::super::{prepare, Refused, SPILL_BYTES};
use crate::error::{Cause, Error, Refusal};
use crate::pool::Pool;
use crate::resp::ReplyScanner;
use crate::traffic::Traffic;

/// What [`dispatch`] updates of its lane.
pub struct LaneCounts<'a> {
    /// Batches written and not yet answered.
    pub in_flight: &'a AtomicUsize,
    /// The lane connection's pool generation.
    pub generation: u64,
    /// Round trips of batches the lane wrote to their clients itself.
    pub traffic: &'a Traffic,
}

/// A client socket's write side, as a lane may use it: a write that never
/// waits (`WouldBlock` when the socket is full).
pub trait ClientWrite: Send + Sync {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

/// The lane has the batch; the session does not wait for it.
const LANE_HAS_IT: u8 = 0;
/// The session waits for a message on its channel.
const SESSION_WAITS: u8 = 1;
/// The lane wrote the whole batch's replies to the client.
const WRITTEN: u8 = 2;

/// A client's socket, and where its one deferred batch stands: the session
/// handed the batch over and went back to reading its client; the lane
/// writes the replies to the socket itself when they come whole (one wake-up
/// per request: the lane's) and tells the session only if it waits by then.
/// Anything else (an error, a batch bounced, replies in pieces, a refusal,
/// a socket that would block) goes over the client's channel as before.
pub struct Direct {
    sink: Arc<dyn ClientWrite>,
    state: AtomicU8,
}

impl Direct {
    pub fn new(sink: Arc<dyn ClientWrite>) -> Direct {
        Direct {
            sink,
            state: AtomicU8::new(WRITTEN),
        }
    }

    /// A batch is handed over.
    pub(in crate::backend) fn begin(&self) {
        self.state.store(LANE_HAS_IT, Ordering::Release);
    }

    /// The session wants the batch settled: `false` when the lane wrote it
    /// already, `true` when a message will come on the channel.
    pub(in crate::backend) fn wait(&self) -> bool {
        self.state
            .compare_exchange(
                LANE_HAS_IT,
                SESSION_WAITS,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The lane wrote the last batch handed over.
    pub(in crate::backend) fn is_written(&self) -> bool {
        self.state.load(Ordering::Acquire) == WRITTEN
    }

    /// The lane wrote the batch: `true` when the session waits and must be told.
    fn written(&self) -> bool {
        self.state.swap(WRITTEN, Ordering::AcqRel) == SESSION_WAITS
    }
}

/// Replies of one batch, in order: all of them in one piece (`last`), or a
/// big batch's in several; or why there are no more.
pub type BatchReply = Result<Piece, Error>;

pub struct Piece {
    pub bytes: Bytes,
    /// The batch's replies are complete with this piece.
    pub last: bool,
    /// With the last piece: the replies that refused their commands
    /// because of where Redis is (the lane has closed then).
    pub refused: Refused,
}

/// What the lanes handed to one client and its session has not taken yet:
/// the messages, in order, and their reply bytes, counted against the
/// limit. Shared by the lanes and the session.
///
/// A queue rather than a channel: it allocates nothing until the first
/// message and then only what the messages need, where a channel holds a
/// block of 32 slots (about 2 KiB) for every idle client.
pub struct Backlog {
    queue: Mutex<Queue>,
    /// A message was queued.
    arrived: Notify,
    pub(super) bytes: AtomicUsize,
    /// `limits.max_reply_buffer_bytes`.
    pub(super) limit: usize,
    /// The session took bytes while over the limit.
    pub(super) drained: Notify,
    /// The lane gave up on this client.
    pub overflowed: Notify,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<BatchReply>,
    /// The session is gone: nobody takes messages any more.
    closed: bool,
}

impl Backlog {
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            queue: Mutex::default(),
            arrived: Notify::new(),
            bytes: AtomicUsize::new(0),
            limit,
            drained: Notify::new(),
            overflowed: Notify::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the session a message: `false` when it is gone.
    pub(super) fn send(&self, message: BatchReply) -> bool {
        let mut queue = self.queue();
        if queue.closed {
            return false;
        }
        queue.messages.push_back(message);
        drop(queue);
        self.arrived.notify_one();
        true
    }

    /// The next message, in order (cancel-safe: a message is taken only
    /// when this returns).
    pub async fn recv(&self) -> BatchReply {
        loop {
            if let Some(message) = self.queue().messages.pop_front() {
                return message;
            }
            // A message queued since is not missed: `notify_one` keeps a
            // permit when nobody waits.
            self.arrived.notified().await;
        }
    }

    /// The session is gone: what is queued is dropped, and so is what comes.
    pub fn close(&self) {
        let mut queue = self.queue();
        queue.closed = true;
        queue.messages.clear();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.queue().closed
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The session took a piece of `n` bytes.
    pub fn taken(&self, n: usize) {
        if self.bytes.fetch_sub(n, Ordering::AcqRel) > self.limit {
            self.drained.notify_one();
        }
    }

    pub(super) fn over(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > self.limit
    }
}

/// A batch written upstream whose replies are still to come.
pub struct Waiting {
    /// When it was written: the response timeout counts from here.
    pub(super) sent: tokio::time::Instant,
    /// Replies to check and skip first: the commands that prepared the lane
    /// for this batch (SELECT).
    pub(super) skip: usize,
    pub(super) replies: usize,
    /// Where its replies go.
    pub(super) backlog: Arc<Backlog>,
    /// The client was cut off (or left): its replies are read and dropped.
    pub(super) discarding: bool,
    pub(super) refused: Refused,
    /// When this batch's client first held the lane (see `run_lane`).
    pub(super) holding_since: Option<tokio::time::Instant>,
    /// The session deferred the batch: its replies may go straight to the client.
    pub(super) direct: Option<Arc<Direct>>,
    /// When the session submitted it.
    pub(super) started: Instant,
    /// Some of its replies went to the client already, over the channel.
    pub(super) split: bool,
}

impl Waiting {
    /// Hands `bytes` of this batch's replies to the client; `true` when the
    /// lane wrote them to the client's socket itself.
    pub(super) fn deliver(&mut self, mut bytes: Bytes, last: bool) -> bool {
        if self.discarding {
            return false;
        }
        if let Some(direct) = self.direct.as_ref().filter(|_| last && !self.split) {
            if self.refused.kind.is_none() && !self.refused.redirected {
                // Only whole, unrefused replies: anything else the session
                // must see (a refusal may be re-sent, a redirect followed).
                match direct.sink.try_write(&bytes) {
                    Ok(n) if n == bytes.len() => {
                        if direct.written() {
                            self.backlog.send(Ok(Piece {
                                bytes: Bytes::new(),
                                last: true,
                                refused: Refused::default(),
                            }));
                        }
                        return true;
                    }
                    // The rest goes over the channel: the session writes it
                    // before anything else of its client's.
                    Ok(n) => bytes = bytes.slice(n..),
                    // Full, or failed: the session writes it (and meets
                    // the failure itself).
                    Err(_) => {}
                }
            }
        }
        self.split |= !last;
        let n = bytes.len();
        self.backlog.bytes.fetch_add(n, Ordering::AcqRel);
        let refused = self.refused;
        if !self.backlog.send(Ok(Piece {
            bytes,
            last,
            refused,
        })) {
            // The session is gone: nobody will take them.
            self.backlog.bytes.fetch_sub(n, Ordering::AcqRel);
            self.discarding = true;
        }
        false
    }

    /// The lane waits for this client to take its replies.
    pub(super) fn holds_lane(&self) -> bool {
        !self.discarding && self.skip == 0 && self.backlog.over() && !self.backlog.is_closed()
    }

    /// Hands on (or drops, for a client cut off) the first `ready` bytes,
    /// which belong to this batch, once there are enough to be worth a piece.
    pub(super) fn forward(&mut self, r: &mut Replies, ready: usize) {
        if self.skip > 0 {
            return;
        }
        if self.discarding {
            r.drop_front(ready);
        } else if ready >= SPILL_BYTES {
            let piece = r.take(ready);
            self.deliver(piece, false);
        }
    }

    /// Cuts the client off: it gets the error, the rest of its replies are dropped.
    pub(super) fn overflow(&mut self) {
        let limit = self.backlog.limit;
        warn!(
            limit,
            "multiplexer: a client left more than limits.max_reply_buffer_bytes unread; disconnecting it"
        );
        self.backlog.send(Err(Error::ReplyOverflow { limit }));
        self.backlog.overflowed.notify_one();
        self.discarding = true;
    }
}

/// The lane's read side: bytes from Redis, cut into the front batch's replies.
pub struct Replies {
    pub(super) buf: BytesMut,
    pub(super) scanner: ReplyScanner,
    /// Where the front batch's next unscanned reply starts in `buf`.
    pub(super) scanned: usize,
    /// The frame in progress is a RESP3 push, not a reply.
    pub(super) in_push: bool,
    /// The reply in progress was partly handed on or dropped already.
    pub(super) cut: bool,
    /// Redis refused a command as not ready (`-LOADING`, `-MASTERDOWN`):
    /// the lane takes no new batches and its connection is closed.
    pub(super) retire: bool,
}

impl Replies {
    /// The first `n` bytes, handed on.
    pub(super) fn take(&mut self, n: usize) -> Bytes {
        // Only bytes of the reply in progress (from `scanned` on) cut it.
        self.cut |= self.scanner.in_progress() && n > self.scanned;
        let bytes = self.buf.split_to(n).freeze();
        self.scanner.consume(n);
        self.scanned = self.scanned.saturating_sub(n);
        bytes
    }

    /// The first `n` bytes, dropped.
    pub(super) fn drop_front(&mut self, n: usize) {
        // Only bytes of the reply in progress (from `scanned` on) cut it.
        self.cut |= self.scanner.in_progress() && n > self.scanned;
        self.buf.advance(n);
        self.scanner.consume(n);
        self.scanned = self.scanned.saturating_sub(n);
    }
}

/// Hands every batch whose replies are complete to its client, and what
/// surely belongs to the front batch once it reaches [`SPILL_BYTES`] (or at
/// once, dropped, when its client was cut off).
///
/// A reply refusing its command because of where Redis is marks the pool
/// stale at once, before the batch reaches its client: a re-send must not
/// find this lane (or another as old) still open.
pub fn dispatch(
    r: &mut Replies,
    waiting: &mut VecDeque<Waiting>,
    lane: &LaneCounts<'_>,
    pool: &Pool,
) -> Result<(), Error> {
    while let Some(front) = waiting.front_mut() {
        if !r.scanner.in_progress() {
            let Some(&first) = r.buf.get(r.scanned) else {
                // Only whole replies of this batch so far.
                front.forward(r, r.scanned);
                return Ok(());
            };
            r.in_push = first == b'>';
        }
        let scanned = r
            .scanner
            .scan(&r.buf, r.scanned)
            .map_err(|_| Error::ConnectionLost(Cause::Malformed))?;
        let Some(end) = scanned else {
            let ready = r.scanner.committed(r.buf.len()).unwrap_or(r.scanned);
            front.forward(r, ready);
            return Ok(());
        };
        let start = r.scanned;
        let whole = !std::mem::take(&mut r.cut);
        // A push frame is never a reply (lanes carry no tracking or
        // subscriptions; this keeps FIFO matching safe all the same).
        if r.in_push {
            r.scanned = end;
            continue;
        }
        if front.skip > 0 {
            prepare::check(&r.buf[start..end])?;
            front.skip -= 1;
            r.drop_front(end);
            continue;
        }
        r.scanned = end;
        front.replies -= 1;
        let kind = whole
            .then(|| Refusal::of(&r.buf[start..end.min(start + 16)]))
            .flatten();
        front.refused.tally(kind);
        front.refused.redirected |= whole && is_redirect(&r.buf[start..end]);
        match kind {
            Some(Refusal::ReadOnly) => pool.mark_stale(lane.generation),
            // The same node, not ready: this lane retires, the pool stays.
            Some(_) => r.retire = true,
            None => {}
        }
        if front.replies == 0 {
            let piece = r.take(end);
            lane.in_flight.fetch_sub(1, Ordering::AcqRel);
            if let Some(mut done) = waiting.pop_front() {
                if done.deliver(piece, true) {
                    lane.traffic.round_trip_done(done.started.elapsed());
                }
            }
        } else if front.discarding {
            r.drop_front(end);
        }
    }
    Ok(())
}
