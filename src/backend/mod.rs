//! The execution stage (DESIGN.md: plan, execute, backend): runs a planned
//! batch upstream and puts its replies in `out` in the client's order.
//!
//! The interface a session sees is small:
//!
//! - [`Backend`], one per poolside: where batches go;
//! - [`Exec`], one per client: `execute(plan, ClientView, out)` returns
//!   `Ok(None)` (replies written, or deferred: see below), `Ok(Some(conn))`
//!   (a stream starts on that connection) or [`Failed`] (which steps were
//!   answered, and the [`Error`] the edge answers the rest with); `release()`
//!   drops what the client pinned (RESET, or the client left). In
//!   multiplexed mode a batch may be *deferred* (`shared.rs`): the lane
//!   writes its replies to the client; the session watches `event()` while
//!   it reads and calls `settle(out)` before it writes anything else. [`ClientView`] is what a backend
//!   reads of the client (id, name) and updates from replies (database,
//!   protocol, transaction pins).
//!
//! The backends are the per-batch checkout ([`checkout`], transaction
//! mode), shared lanes ([`mux`], multiplexed mode) and the cluster's. How
//! the others plug in without touching the session or the planner:
//!
//! - **Sentinel** changes where connections go, not how batches run: it is
//!   an upstream *target* inside [`Pool`] (`pool::Primary`, the address the
//!   manager connects to, swapped on `+switch-master`, with a pool
//!   generation that closes older connections at check-in). Both backends
//!   run unchanged; the failover hold waits in `Pool::ready` before the
//!   checkout or the lane submit, where nothing has been written yet, and
//!   the backends check a connection's generation once more before writing.
//! - **Cluster** is a third variant of `Mode` ([`cluster`]): one [`Pool`]
//!   per node; a plan of plain commands is split by slot owner (its frames
//!   re-read from `Plan::upstream`), each node's share run at once and the
//!   replies merged back in step order, MOVED/ASK re-sent per command; any
//!   other plan runs whole with the checkout path on one node's pool.

mod checkout;
pub mod cluster;
mod mux;
mod out;
mod pin;
mod plan;
mod prepare;
mod rewrite;
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

pub use mux::{ClientWrite, Multiplexer, SLOW_READER_GRACE};
pub use out::{Out, Refused, SPILL_BYTES};
pub use pin::Pin;
pub use plan::{Part, Plan, Remote, Step, Wait};
pub use prepare::Wants;

use crate::error::{Error, Refusal};
use crate::pool::{Pool, Upstream};
use crate::traffic::Traffic;
use shared::{execute_shared, settle, Inbox};

/// What the backend reads of a client and updates from its replies.
pub struct ClientView<'a> {
    pub id: u64,
    pub name: Option<&'a [u8]>,
    /// Database and protocol; SELECT and HELLO replies move them.
    pub wants: &'a mut Wants,
    pub pin: &'a mut Pin,
}

/// A cluster's held MULTI, as it goes to its node.
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";

/// `limits.max_reply_buffer_bytes` unless configured.
const DEFAULT_REPLY_BUFFER: usize = 8 << 20;
/// `pool.backoff_max_ms` unless configured.
const DEFAULT_RESEND_DELAY: Duration = Duration::from_millis(512);

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
    Multiplexed(Box<Multiplexer>),
    /// One pool per cluster node: plain batches are split by slot owner,
    /// the others run whole on one node (see [`cluster`]).
    Cluster(Arc<cluster::Cluster>),
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
            mode: Mode::Multiplexed(Box::new(Multiplexer::new(
                pool.clone(),
                traffic.clone(),
                saturation,
                idle_close,
            ))),
            pool,
            traffic,
            response_timeout: None,
            reply_buffer: DEFAULT_REPLY_BUFFER,
            resend_delay: DEFAULT_RESEND_DELAY,
        }
    }

    /// A Redis Cluster: `pool` is the first seed's (what `/pool/status`
    /// reports on); each node gets its own from `cluster`.
    pub fn cluster(pool: Pool, traffic: Arc<Traffic>, cluster: Arc<cluster::Cluster>) -> Backend {
        Backend {
            pool,
            mode: Mode::Cluster(cluster),
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
    /// is: counted; for `-READONLY` (the node was demoted) the pool is
    /// marked stale (this connection and every other made before it are
    /// closed instead of used again; a pinned one when its client lets go);
    /// for `-LOADING` / `-MASTERDOWN` (the same node, not ready) only this
    /// connection is closed, so a restart does not churn the whole pool.
    /// Returns the refusal, if any.
    fn refused(&self, pool: &Pool, refused: &Refused, conn: &mut Upstream) -> Option<Refusal> {
        let kind = refused.kind?;
        self.traffic.refused(kind, refused.count);
        match kind {
            Refusal::ReadOnly => pool.mark_stale(conn.generation),
            Refusal::Loading | Refusal::MasterDown => conn.mark_broken(),
        }
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

    /// Resolves when the primary moved away from connections of
    /// `generation` (Sentinel mode); never otherwise.
    pub async fn moved_from(&self, generation: u64) {
        self.pool.moved_from(generation).await
    }

    /// The pool's generation now: connections made from now on belong to it.
    pub fn generation(&self) -> u64 {
        self.pool.generation()
    }

    /// The upstream's own words for `error`, when it is a configuration
    /// problem the operator must see (read only on that rare path).
    pub fn detail(&self, error: Error) -> Option<Arc<str>> {
        error.detailed_cause()?;
        self.pool.health.detail()
    }
}

/// What a session waiting for its client may have to act on meanwhile.
pub enum Event {
    /// The connection it pinned is on a node that is no longer the primary.
    PinMoved,
    /// News of the deferred batch: [`Exec::settle`] it.
    Replies,
}

/// A client's own connection, kept between its batches.
struct Pinned {
    conn: Upstream,
    /// Cluster mode: the node pool `conn` came from.
    pool: Option<Pool>,
}

/// One client's handle on the backend.
pub struct Exec {
    backend: Arc<Backend>,
    /// Held while the client's state needs it (MULTI, WATCH, CLIENT TRACKING).
    /// Boxed: most clients never pin, and this is part of every session.
    pinned: Option<Box<Pinned>>,
    /// Cluster mode: the client's MULTI was answered here; it goes to the
    /// node of the next batch's first key, ahead of that batch.
    held_multi: bool,
    /// This client's reply channel for shared batches, made on first use.
    inbox: Option<Inbox>,
    /// The client's socket, for lanes to write deferred batches' replies to.
    client: Option<Arc<dyn ClientWrite>>,
    prefix: BytesMut,
}

impl Exec {
    /// `client`: the client socket's write half, when lanes may write to it.
    pub fn new(backend: Arc<Backend>, client: Option<Arc<dyn ClientWrite>>) -> Exec {
        Exec {
            backend,
            pinned: None,
            held_multi: false,
            inbox: None,
            client,
            prefix: BytesMut::new(),
        }
    }

    /// A shared batch was handed to a lane and not settled yet: until it
    /// is, the session writes nothing to its client (the lane may).
    pub fn has_deferred(&self) -> bool {
        self.inbox.as_ref().is_some_and(Inbox::has_deferred)
    }

    /// A deferred batch's replies have not reached the client yet: the
    /// client waits for them, it is not idle.
    pub fn deferred_in_flight(&self) -> bool {
        self.inbox.as_ref().is_some_and(Inbox::deferred_in_flight)
    }

    /// Settles the deferred batch, if any: its replies reached the client,
    /// or they are in `out` now. On failure, the error and how many replies
    /// the client is owed (each one gets the error).
    pub async fn settle(&mut self, out: &mut Out<'_>) -> Result<(), (Failed, usize)> {
        let Some(inbox) = self.inbox.as_mut() else {
            return Ok(());
        };
        let settled = settle(&self.backend, inbox, out).await;
        if settled.is_err() {
            // Pieces of the failed batch may still come: not on the next
            // batch's channel.
            self.inbox = None;
        }
        settled
    }

    /// Resolves when the session must act while it waits for its client
    /// (cancel-safe); never while nothing is pinned or deferred.
    pub async fn event(&mut self) -> Event {
        if let Some(pinned) = &self.pinned {
            let pool = pinned.pool.as_ref().unwrap_or(&self.backend.pool);
            pool.moved_from(pinned.conn.generation).await;
            return Event::PinMoved;
        }
        match self.inbox.as_mut() {
            Some(inbox) => {
                inbox.message().await;
                Event::Replies
            }
            None => std::future::pending().await,
        }
    }

    /// Runs `plan`: local answers and upstream replies go to `out` in step
    /// order. The client's wants and pins follow the replies (SELECT, HELLO,
    /// MULTI, WATCH).
    pub async fn execute(
        &mut self,
        plan: &mut Plan,
        client: ClientView<'_>,
        out: &mut Out<'_>,
    ) -> Result<Option<Upstream>, Failed> {
        if !plan.needs_upstream() {
            plan.write_local(out.buf);
            return Ok(None);
        }
        if let Mode::Cluster(cluster) = &self.backend.mode {
            let cluster = cluster.clone();
            return Box::pin(self.execute_on_cluster(&cluster, plan, client, out)).await;
        }
        let multiplexed = matches!(self.backend.mode, Mode::Multiplexed(_));
        if multiplexed && plan.shareable && self.pinned.is_none() && plan.stream_from.is_none() {
            let limit = self.backend.reply_buffer;
            let socket = self.client.as_ref();
            let inbox = self.inbox.get_or_insert_with(|| Inbox::new(limit, socket));
            let backend = &self.backend;
            let wants = *client.wants;
            let ran = execute_shared(backend, None, inbox, plan, wants, out).await;
            if ran.is_err() {
                // Pieces of the failed batch may still come: not on the
                // next batch's channel.
                self.inbox = None;
            }
            return ran;
        }
        // Boxed (one allocation per batch on this path): a checkout's state
        // is about 1.7 KiB, which would otherwise be part of every session's
        // future, idle or not.
        Box::pin(self.execute_checked_out(plan, client, out, None)).await
    }

    /// Cluster mode: a plain batch is split over the nodes; any other runs
    /// whole on the node pinned, or the owner of its first key.
    async fn execute_on_cluster(
        &mut self,
        cluster: &cluster::Cluster,
        plan: &mut Plan,
        client: ClientView<'_>,
        out: &mut Out<'_>,
    ) -> Result<Option<Upstream>, Failed> {
        let topology = cluster
            .topology()
            .await
            .map_err(|error| Failed { error, answered: 0 })?;
        if std::mem::take(&mut self.held_multi) && client.pin.multi && self.pinned.is_none() {
            // The transaction's node is this batch's (its first key's).
            plan.prepend_silent(Remote::Multi, MULTI);
        } else if self.pinned.is_none() && !client.pin.active() && plan.is_multi_alone() {
            // MULTI alone names no node: answered as Redis answers it, and
            // held until the next batch does (a cluster client's commands
            // inside it must all be in one slot anyway).
            let backend = &self.backend;
            let refused = cluster::multi_refused(backend, cluster, &topology, *client.wants)
                .await
                .map_err(|error| Failed { error, answered: 0 })?;
            if let Some(refusal) = refused {
                out.buf.extend_from_slice(&refusal);
                return Ok(None);
            }
            out.buf.extend_from_slice(b"+OK\r\n");
            client.pin.multi = true;
            client.pin.queued = 0;
            client.pin.queued_selects.clear();
            self.held_multi = true;
            return Ok(None);
        }
        let shared = self.pinned.is_none() && plan.shareable && plan.stream_from.is_none();
        if let Some(node) = shared
            .then(|| cluster.single_node(&topology, plan))
            .flatten()
        {
            // Every command for one node: its lanes take the batch whole.
            let limit = self.backend.reply_buffer;
            let socket = self.client.as_ref();
            let inbox = self.inbox.get_or_insert_with(|| Inbox::new(limit, socket));
            let (backend, wants) = (&self.backend, *client.wants);
            let ran = execute_shared(backend, Some(node), inbox, plan, wants, out).await;
            match ran {
                Ok(ran) => return Ok(ran),
                // The node is down and nothing was sent: the split path
                // holds the batch for a failover.
                Err(Failed {
                    error: Error::UpstreamDown(_),
                    answered: 0,
                }) => self.inbox = None,
                Err(failed) => {
                    self.inbox = None;
                    return Err(failed);
                }
            }
        }
        if self.pinned.is_none() && cluster::splittable(plan) {
            let backend = &self.backend;
            cluster::execute_split(backend, cluster, &topology, plan, *client.wants, out).await?;
            return Ok(None);
        }
        let pool = match self.pinned.as_ref().and_then(|p| p.pool.as_ref()) {
            Some(pool) => pool.clone(),
            None => cluster.pool_for(&cluster.node_for_batch(&topology, plan)),
        };
        let mark = out.buf.len();
        let in_transaction = client.pin.multi
            || plan.parts(0).any(|p| {
                matches!(
                    p,
                    Part::Remote(Remote::Multi | Remote::Exec) | Part::Silent(Remote::Multi)
                )
            });
        let ran = self
            .execute_checked_out(plan, client, out, Some(pool))
            .await;
        let replies = &out.buf[mark.min(out.buf.len())..];
        if memchr::memmem::find(replies, b"-MOVED ").is_some() {
            // Run whole, its redirects go to the client: the map is read again.
            cluster.request_refresh();
        }
        if in_transaction && !out.spilled {
            // A key of another node's slot inside MULTI: the node's MOVED
            // (ASK) cannot be followed (the transaction is this node's) and
            // means nothing to a client that does not know the cluster.
            cluster::redirects_to_crossslot(out.buf, mark);
        }
        ran
    }

    /// Runs `plan` on a connection of its own: the pinned one, or one
    /// checked out for the batch.
    async fn execute_checked_out(
        &mut self,
        plan: &mut Plan,
        mut client: ClientView<'_>,
        out: &mut Out<'_>,
        node: Option<Pool>,
    ) -> Result<Option<Upstream>, Failed> {
        let mark = out.buf.len();
        let mut resent = false;
        loop {
            let was_pinned = self.pinned.is_some();
            let pool = node.as_ref().unwrap_or(&self.backend.pool);
            let mut conn = match self.pinned.take().map(|p| p.conn) {
                Some(mut conn) if pool.primary().is_some() && pool.is_stale(&conn) => {
                    // Its MULTI / WATCH / tracking lives on a node that is
                    // no longer the primary: the client must start again there.
                    conn.mark_broken();
                    *client.pin = Pin::default();
                    return Err(Failed {
                        error: Error::PrimaryMoved,
                        answered: 0,
                    });
                }
                Some(conn) => conn,
                None => pool
                    .check_out()
                    .await
                    .map_err(|error| Failed { error, answered: 0 })?,
            };
            if !was_pinned && pool.primary().is_some() && pool.is_stale(&conn) {
                // The primary moved between checkout and write: nothing sent.
                conn.mark_broken();
                continue;
            }
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
                        pool.probe_now();
                    }
                    return Err(failed);
                }
            };
            self.backend.traffic.round_trip_done(started.elapsed());
            if let Some(kind) = self.backend.refused(pool, &refused, &mut conn) {
                // The only re-send poolside makes: Redis ran none of it.
                let again = !resent
                    && plan.resendable
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
                let pool = node.clone();
                self.pinned = Some(Box::new(Pinned { conn, pool }));
            }
            return Ok(None);
        }
    }

    /// RESET, or the client is gone: a pinned connection carries state (a
    /// transaction, WATCH, tracking) and is closed, not reused.
    pub fn release(&mut self) {
        if let Some(mut pinned) = self.pinned.take() {
            pinned.conn.mark_broken();
        }
        self.held_multi = false;
    }
}

/// A session cut off (drain timeout, a panic) still closes what it pinned.
impl Drop for Exec {
    fn drop(&mut self) {
        self.release();
    }
}
