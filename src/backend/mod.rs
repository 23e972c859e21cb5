//! The execution stage (DESIGN.md: plan, execute, backend): runs a planned
//! batch upstream and puts its replies in `out` in the client's order.
//!
//! The interface a session sees is small:
//!
//! - [`Backend`], one per poolside: where batches go;
//! - [`Exec`], one per client: `execute(plan, ClientView, out)` returns
//!   `Ok(None)` (replies written), `Ok(Some(conn))` (a stream starts on that
//!   connection) or [`Failed`] (which steps were answered, and the [`Error`]
//!   the edge answers the rest with); `release()` drops what the client
//!   pinned (RESET, or the client left). [`ClientView`] is what a backend
//!   reads of the client (id, name) and updates from replies (database,
//!   protocol, transaction pins).
//!
//! Today's backends are the per-batch checkout ([`checkout`], transaction
//! mode) and shared lanes ([`mux`], multiplexed mode). Where the next ones
//! plug in, without touching the session or the planner:
//!
//! - **Sentinel** changes where connections go, not how batches run: it is
//!   an upstream *target* inside [`Pool`] (the address the manager connects
//!   to, swapped on `+switch-master`, with a pool generation that closes older
//!   connections at check-in). Both backends keep working unchanged; a
//!   failover hold would wait in [`Exec::execute`] before the checkout or
//!   the lane submit, where nothing has been written yet.
//! - **Cluster** is a third variant of `Mode`: one [`Pool`] per node, the
//!   plan's remote steps grouped by slot owner (the planner writes one frame
//!   per remote step into `Plan::upstream`; the cluster backend also needs
//!   each frame's range and key slot, which `push_remote` is the one place to
//!   record), each group run with [`checkout::round_trip`] or a node's
//!   lanes, and the replies merged back in step order. MOVED/ASK re-sends
//!   happen per step inside it.

mod checkout;
mod mux;
mod pin;
mod plan;
mod prepare;
mod rewrite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

pub use mux::{Multiplexer, SLOW_READER_GRACE};
pub use pin::Pin;
pub use plan::{Part, Plan, Remote, Step, Wait};
pub use prepare::Wants;

use crate::error::{Error, Refusal};
use crate::pool::{Pool, Upstream};
use crate::traffic::Traffic;
use mux::{Backlog, BatchReply, MuxRequest};

/// What the backend reads of a client and updates from its replies.
pub struct ClientView<'a> {
    pub id: u64,
    pub name: Option<&'a [u8]>,
    /// Database and protocol; SELECT and HELLO replies move them.
    pub wants: &'a mut Wants,
    pub pin: &'a mut Pin,
}

/// A batch's replies this big are written to the client before the batch
/// ends, so no reply is ever held whole.
pub const SPILL_BYTES: usize = 128 * 1024;

/// `limits.max_reply_buffer_bytes` unless configured.
const DEFAULT_REPLY_BUFFER: usize = 8 << 20;
/// `pool.backoff_max_ms` unless configured.
const DEFAULT_RESEND_DELAY: Duration = Duration::from_millis(512);

/// Where a batch's replies go: `buf`, which the session writes to the
/// client when the batch is done. A batch whose replies outgrow
/// [`SPILL_BYTES`] has them written out early ("spilled") when the session
/// gave the client's socket, with its backpressure: a slow reader slows its
/// own upstream reads, and memory stays bounded whatever the reply sizes.
pub struct Out<'a> {
    pub buf: &'a mut BytesMut,
    client: Option<&'a mut (dyn AsyncWrite + Unpin + Send)>,
    torn: bool,
    /// Some of this batch's replies were written to the client already.
    spilled: bool,
}

impl<'a> Out<'a> {
    /// `client`: `None` while the session reads the client itself (a
    /// blocking batch watching for the client to leave); replies are then
    /// only buffered.
    pub fn new(
        buf: &'a mut BytesMut,
        client: Option<&'a mut (dyn AsyncWrite + Unpin + Send)>,
    ) -> Self {
        Out {
            buf,
            client,
            torn: false,
            spilled: false,
        }
    }

    pub fn can_spill(&self) -> bool {
        self.client.is_some()
    }

    /// Part of a reply reached the client and the rest will not: its
    /// framing cannot be repaired, so the client must be closed, not answered.
    pub fn torn(&self) -> bool {
        self.torn
    }

    /// The reply that was spilled in parts is complete.
    fn reply_done(&mut self) {
        self.torn = false;
    }

    /// Writes what is buffered to the client; `mid_reply`: the last reply in
    /// it is incomplete.
    async fn spill(&mut self, mid_reply: bool) -> Result<(), Error> {
        if let Some(client) = self.client.as_mut() {
            self.torn = mid_reply;
            self.spilled = true;
            client
                .write_all(self.buf)
                .await
                .map_err(|_| Error::ClientGone)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The replies of one batch that refused their commands because of where
/// Redis is ([`Refusal`]), of how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    pub count: usize,
    pub of: usize,
    /// The last refusal seen.
    pub kind: Option<Refusal>,
}

impl Refused {
    fn tally(&mut self, reply: Option<Refusal>) {
        self.of += 1;
        if let Some(kind) = reply {
            self.count += 1;
            self.kind = Some(kind);
        }
    }

    /// Every command was refused: nothing ran, so the batch may go once
    /// more to a fresh connection.
    fn whole_batch(&self) -> bool {
        self.count > 0 && self.count == self.of
    }
}

/// A batch that failed part-way: the replies of `steps()[..answered]` are in
/// `out`; the rest get `error` from [`Plan::answer_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    pub error: Error,
    pub answered: usize,
}

enum Mode {
    /// Every batch checks a connection out for itself.
    Checkout,
    /// Shareable batches go to shared lanes; the others check out.
    Multiplexed(Multiplexer),
}

/// Where batches run: one per poolside, shared by every session.
pub struct Backend {
    pool: Pool,
    mode: Mode,
    traffic: Arc<Traffic>,
    /// `pool.response_timeout_ms`; `None` when 0 (disabled).
    response_timeout: Option<Duration>,
    /// `limits.max_reply_buffer_bytes`: a client's replies a lane holds.
    reply_buffer: usize,
    /// Before a batch refused with `-LOADING` or `-MASTERDOWN` goes again.
    resend_delay: Duration,
}

impl Backend {
    /// Per-batch checkout from `pool` (transaction mode).
    pub fn checkout(pool: Pool, traffic: Arc<Traffic>) -> Backend {
        Backend {
            pool,
            mode: Mode::Checkout,
            traffic,
            response_timeout: None,
            reply_buffer: DEFAULT_REPLY_BUFFER,
            resend_delay: DEFAULT_RESEND_DELAY,
        }
    }

    /// Shared lanes over `pool`: a new lane opens when every open one has
    /// `saturation` batches in flight; an idle lane closes after `idle_close`.
    pub fn multiplexed(
        pool: Pool,
        traffic: Arc<Traffic>,
        saturation: usize,
        idle_close: Duration,
    ) -> Backend {
        Backend {
            mode: Mode::Multiplexed(Multiplexer::new(pool.clone(), saturation, idle_close)),
            pool,
            traffic,
            response_timeout: None,
            reply_buffer: DEFAULT_REPLY_BUFFER,
            resend_delay: DEFAULT_RESEND_DELAY,
        }
    }

    /// Replies must arrive within `timeout` of a batch's write (plus its
    /// blocking commands' own wait); `None` (or zero) disables it.
    pub fn with_response_timeout(mut self, timeout: Option<Duration>) -> Backend {
        let timeout = timeout.filter(|t| !t.is_zero());
        self.response_timeout = timeout;
        if let Mode::Multiplexed(mux) = &mut self.mode {
            mux.set_response_timeout(timeout);
        }
        self
    }

    /// Multiplexed mode: how many bytes of one client's replies a lane holds
    /// before it waits for that client (see [`mux`]).
    pub fn with_reply_buffer(mut self, bytes: usize) -> Backend {
        self.reply_buffer = bytes.max(SPILL_BYTES);
        self
    }

    /// How long a batch refused by a loading Redis (or a replica without its
    /// primary) waits before its one re-send: the reconnect backoff's longest step.
    pub fn with_resend_delay(mut self, delay: Duration) -> Backend {
        self.resend_delay = delay;
        self
    }

    /// Redis refused commands of a batch run on `conn` because of where it
    /// is: counted, and the pool marked stale (this connection and every
    /// other made before it are closed instead of used again; a pinned one
    /// when its client lets go). Returns the refusal, if any.
    fn refused(&self, refused: &Refused, conn: &Upstream) -> Option<Refusal> {
        let kind = refused.kind?;
        self.traffic.refused(kind, refused.count);
        self.pool.mark_stale(conn.generation);
        Some(kind)
    }

    /// How long the replies of a batch that may wait `wait` in Redis may take.
    fn reply_limit(&self, wait: Wait) -> Option<Duration> {
        match wait {
            Wait::Forever => None,
            Wait::None => self.response_timeout,
            Wait::For(w) => self.response_timeout.map(|t| t + w),
        }
    }

    /// The upstream's own words for `error`, when it is a configuration
    /// problem the operator must see (read only on that rare path).
    pub fn detail(&self, error: Error) -> Option<Arc<str>> {
        error.detailed_cause()?;
        self.pool.health.detail()
    }
}

/// One client's handle on the backend.
pub struct Exec {
    backend: Arc<Backend>,
    /// Held while the client's state needs it (MULTI, WATCH, CLIENT TRACKING).
    pinned: Option<Upstream>,
    /// This client's reply channel for shared batches, made on first use.
    inbox: Option<Inbox>,
    prefix: BytesMut,
}

impl Exec {
    pub fn new(backend: Arc<Backend>) -> Exec {
        Exec {
            backend,
            pinned: None,
            inbox: None,
            prefix: BytesMut::new(),
        }
    }

    /// Runs `plan`: local answers and upstream replies go to `out` in step
    /// order. The client's wants and pins follow the replies (SELECT, HELLO,
    /// MULTI, WATCH).
    pub async fn execute(
        &mut self,
        plan: &mut Plan,
        mut client: ClientView<'_>,
        out: &mut Out<'_>,
    ) -> Result<Option<Upstream>, Failed> {
        if !plan.needs_upstream() {
            plan.write_local(out.buf);
            return Ok(None);
        }
        if let Mode::Multiplexed(mux) = &self.backend.mode {
            if plan.shareable && self.pinned.is_none() && plan.stream_from.is_none() {
                let limit = self.backend.reply_buffer;
                let inbox = self.inbox.get_or_insert_with(|| Inbox::new(limit));
                let backend = &self.backend;
                let ran = execute_shared(backend, mux, inbox, plan, *client.wants, out).await;
                if ran.is_err() {
                    // Pieces of the failed batch may still come: not on the
                    // next batch's channel.
                    self.inbox = None;
                }
                return ran;
            }
        }
        let mark = out.buf.len();
        let mut resent = false;
        loop {
            let was_pinned = self.pinned.is_some();
            let mut conn = match self.pinned.take() {
                Some(conn) => conn,
                None => self
                    .backend
                    .pool
                    .check_out()
                    .await
                    .map_err(|error| Failed { error, answered: 0 })?,
            };
            let started = Instant::now();
            let limit = self.backend.reply_limit(plan.wait);
            let view = &mut client;
            let ran =
                checkout::round_trip(&mut conn, plan, view, limit, &mut self.prefix, out).await;
            let refused = match ran {
                Ok(refused) => refused,
                Err(failed) => {
                    conn.mark_broken();
                    *client.pin = Pin::default();
                    if matches!(failed.error, Error::TimedOut { .. }) {
                        self.backend.pool.probe_now();
                    }
                    return Err(failed);
                }
            };
            self.backend.traffic.round_trip_done(started.elapsed());
            if let Some(kind) = self.backend.refused(&refused, &conn) {
                // The only re-send poolside makes: Redis ran none of it.
                let again = !resent
                    && refused.whole_batch()
                    && !was_pinned
                    && !client.pin.active()
                    && !out.spilled
                    && plan.stream_from.is_none();
                if again {
                    drop(conn);
                    out.buf.truncate(mark);
                    resent = true;
                    self.backend.traffic.resent();
                    if kind != Refusal::ReadOnly {
                        tokio::time::sleep(self.backend.resend_delay).await;
                    }
                    continue;
                }
            }
            if plan.stream_from.is_some() {
                // Broken before it leaves: whatever happens to the stream (the
                // session may drop it unstarted), it never goes back to the pool.
                conn.mark_broken();
                return Ok(Some(conn));
            }
            if client.pin.active() {
                self.pinned = Some(conn);
            }
            return Ok(None);
        }
    }

    /// RESET, or the client is gone: a pinned connection carries state (a
    /// transaction, WATCH, tracking) and is closed, not reused.
    pub fn release(&mut self) {
        if let Some(mut conn) = self.pinned.take() {
            conn.mark_broken();
        }
    }
}

/// A session cut off (drain timeout, a panic) still closes what it pinned.
impl Drop for Exec {
    fn drop(&mut self) {
        self.release();
    }
}

/// A client's end of the lanes: its reply channel and backlog.
struct Inbox {
    tx: UnboundedSender<BatchReply>,
    rx: UnboundedReceiver<BatchReply>,
    backlog: Arc<Backlog>,
}

impl Inbox {
    fn new(limit: usize) -> Inbox {
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
async fn execute_shared(
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
                break piece.refused;
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
        out.reply_done();
        backend.traffic.round_trip_done(started.elapsed());
        // The lane has marked the pool stale and closed; the one re-send
        // goes to a lane on a fresh connection.
        if let Some(kind) = refused.kind {
            backend.traffic.refused(kind, refused.count);
            if !resent && refused.whole_batch() && !out.spilled {
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
