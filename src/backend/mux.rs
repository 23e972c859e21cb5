//! Multiplexed pool mode: stateless batches from many clients share upstream
//! connections in flight. One task owns each connection ("lane"): it writes
//! every queued batch in one write and hands each batch's replies, matched
//! first-in first-out, straight to the waiting client. A new lane opens only
//! when every open lane has `saturation` batches in flight.
//!
//! Replies are handed over as they arrive: a batch whose replies outgrow
//! [`SPILL_BYTES`] reaches its client in pieces, so the lane never holds a
//! big value whole. What a client has not taken yet is its [`Backlog`]; past
//! `limits.max_reply_buffer_bytes` the lane stops reading and waits for that
//! client, and a client that takes nothing for [`SLOW_READER_GRACE`] is cut
//! off: it gets [`Error::ReplyOverflow`], the rest of its replies are read
//! and dropped, and the lane carries on for the others.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod delivery;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::debug;

use super::{prepare, Refused, Wants};
use crate::error::Error;
use crate::pool::{Pool, Upstream};
use crate::resp::ReplyScanner;
use crate::traffic::Traffic;
use delivery::{dispatch, LaneCounts, Replies, Waiting};
pub use delivery::{Backlog, BatchReply, ClientWrite, Direct};

/// How long a slow client may hold a lane others wait on when the response
/// timeout is off.
const DEFAULT_HOLD_LIMIT: Duration = Duration::from_secs(5);

/// How long a lane waits for a client over its reply buffer to take some.
pub const SLOW_READER_GRACE: Duration = Duration::from_secs(1);

/// One client batch: its bytes, how many replies they produce, the
/// connection state it must run in, and where its replies go.
pub struct MuxRequest {
    pub bytes: Bytes,
    pub replies: usize,
    pub wants: Wants,
    /// Where its replies go.
    pub backlog: Arc<Backlog>,
    /// The session went back to its client: the lane may write the
    /// replies to it (see [`Direct`]).
    pub direct: Option<Arc<Direct>>,
    pub started: Instant,
}

struct Lane {
    tx: mpsc::UnboundedSender<MuxRequest>,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    /// Waiting for a slow client: new batches go elsewhere if they can.
    held: AtomicBool,
    /// Its connection's pool generation: a stale lane takes no new batches.
    generation: u64,
}

/// The set of lanes, shared by every session.
pub struct Multiplexer {
    pool: Pool,
    traffic: Arc<Traffic>,
    lanes: Mutex<Vec<Arc<Lane>>>,
    opening: tokio::sync::Mutex<()>,
    saturation: usize,
    idle_close: Duration,
    /// A lane whose oldest batch waits longer for its replies fails.
    response_timeout: Option<Duration>,
}

impl Multiplexer {
    pub fn new(
        pool: Pool,
        traffic: Arc<Traffic>,
        saturation: usize,
        idle_close: Duration,
    ) -> Multiplexer {
        Multiplexer {
            pool,
            traffic,
            lanes: Mutex::new(Vec::new()),
            opening: tokio::sync::Mutex::new(()),
            saturation: saturation.max(1),
            idle_close,
            response_timeout: None,
        }
    }

    pub fn set_response_timeout(&mut self, timeout: Option<Duration>) {
        self.response_timeout = timeout;
    }

    /// Queues a batch on the least busy lane, opening a lane when all are saturated.
    pub async fn submit(&self, mut req: MuxRequest) -> Result<(), Error> {
        // Sentinel mode: no lane takes a batch while a failover holds.
        if self.pool.holds() {
            self.pool.ready().await?;
        }
        loop {
            let lane = match self.pick() {
                Some(lane) => lane,
                None => self.open_lane().await?,
            };
            match send(&lane, req) {
                Ok(()) => return Ok(()),
                Err(back) => req = back,
            }
        }
    }

    /// Queues a batch on a lane now if one takes it without waiting (no
    /// failover holds, no lane must open); else gives it back, for
    /// [`Multiplexer::submit`]. The sessions' path: the waits' state (about
    /// 1.4 KiB) and the batch (held twice by an async fn's by-value
    /// argument) would otherwise be part of every session's future, idle or not.
    pub fn try_submit(&self, mut req: MuxRequest) -> Result<(), MuxRequest> {
        if self.pool.holds() {
            return Err(req);
        }
        while let Some(lane) = self.pick() {
            match send(&lane, req) {
                Ok(()) => return Ok(()),
                Err(back) => req = back,
            }
        }
        Err(req)
    }

    /// The least busy open lane, unless every lane is saturated (or held
    /// by a slow client) and the pool has room.
    fn pick(&self) -> Option<Arc<Lane>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.pool.generation();
        lanes.retain(|l| !l.closed.load(Ordering::Acquire) && l.generation >= current);
        let best = lanes
            .iter()
            .min_by_key(|l| {
                (
                    l.held.load(Ordering::Acquire),
                    l.in_flight.load(Ordering::Acquire),
                )
            })?
            .clone();
        let busy = best.held.load(Ordering::Acquire)
            || best.in_flight.load(Ordering::Acquire) >= self.saturation;
        if busy && self.pool.has_room() {
            return None;
        }
        Some(best)
    }

    async fn open_lane(&self) -> Result<Arc<Lane>, Error> {
        // One opener at a time; the others find its lane when they get the lock.
        let _guard = self.pool.waiting(self.opening.lock()).await;
        if let Some(lane) = self.pick() {
            return Ok(lane);
        }
        let conn = match self.pool.check_out().await {
            Ok(conn) => conn,
            // The pool is full of dedicated connections: share a lane if any.
            Err(e) => return self.any_lane().ok_or(e),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            tx,
            in_flight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            held: AtomicBool::new(false),
            generation: conn.generation,
        });
        self.lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lane.clone());
        let limits = LaneLimits {
            idle_close: self.idle_close,
            response_timeout: self.response_timeout,
            pool: self.pool.clone(),
            traffic: self.traffic.clone(),
        };
        tokio::spawn(run_lane(conn, rx, lane.clone(), limits));
        debug!("multiplexer: opened a lane");
        Ok(lane)
    }

    fn any_lane(&self) -> Option<Arc<Lane>> {
        let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.pool.generation();
        lanes
            .iter()
            .filter(|l| !l.closed.load(Ordering::Acquire) && l.generation >= current)
            .min_by_key(|l| l.in_flight.load(Ordering::Acquire))
            .cloned()
    }
}

/// What a lane needs besides its connection.
struct LaneLimits {
    idle_close: Duration,
    response_timeout: Option<Duration>,
    /// Probed when the lane times out.
    pool: Pool,
    traffic: Arc<Traffic>,
}

/// Owns one upstream connection: writes queued batches, routes replies back.
/// One `select!` over the lane's own state (read, queue, a slow reader,
/// timers), so it reads longer than most functions; the per-batch work is in
/// `queue` and `dispatch`.
async fn run_lane(
    mut conn: Upstream,
    mut rx: mpsc::UnboundedReceiver<MuxRequest>,
    lane: Arc<Lane>,
    limits: LaneLimits,
) {
    let idle_close = limits.idle_close;
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let counts = LaneCounts {
        in_flight: &lane.in_flight,
        generation: lane.generation,
        traffic: &limits.traffic,
    };
    let mut replies = Replies {
        buf: BytesMut::with_capacity(64 * 1024),
        scanner: ReplyScanner::default(),
        scanned: 0,
        in_push: false,
        cut: false,
        retire: false,
    };
    // The state the lane's connection will be in once every written batch ran.
    let mut written = Wants::of(&conn);
    let mut rx_done = false;
    let idle = tokio::time::sleep(idle_close);
    tokio::pin!(idle);
    // The oldest batch's age is checked a few times per response timeout: one
    // periodic timer per lane, rather than a timer per batch.
    let timeout = limits.response_timeout;
    let check_every = timeout.map_or(Duration::from_secs(3600), |t| {
        (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    });
    let mut stall = tokio::time::interval(check_every);
    stall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Armed while the front batch's client is over its reply buffer.
    let grace = tokio::time::sleep(SLOW_READER_GRACE);
    tokio::pin!(grace);
    let mut held = false;
    let hold_limit = timeout.unwrap_or(DEFAULT_HOLD_LIMIT);
    let mut last_busy = tokio::time::Instant::now();
    let mut last_read = last_busy;
    let failure = loop {
        if rx_done && waiting.is_empty() {
            break None;
        }
        if !rx_done && (replies.retire || limits.pool.is_stale(&conn)) {
            // Redis is no longer where this connection points: finish what
            // was queued, take nothing new.
            lane.closed.store(true, Ordering::Release);
            rx.close();
        }
        // Reading on would only pile up replies the front client is not
        // taking. It may hold the lane that way while nobody else waits on
        // it, or for as long as a response timeout: then it is cut off.
        let others = waiting.len() > 1;
        if let Some(front) = waiting.front_mut().filter(|w| w.holds_lane()) {
            let since = *front
                .holding_since
                .get_or_insert_with(tokio::time::Instant::now);
            if others && since.elapsed() >= hold_limit {
                front.overflow();
                if let Err(e) = dispatch(&mut replies, &mut waiting, &counts, &limits.pool) {
                    break Some(e);
                }
                continue;
            }
        }
        let slow = waiting
            .front()
            .filter(|w| w.holds_lane())
            .map(|w| w.backlog.clone());
        if slow.is_some() != held {
            held = slow.is_some();
            lane.held.store(held, Ordering::Release);
            grace
                .as_mut()
                .reset(tokio::time::Instant::now() + SLOW_READER_GRACE);
        }
        tokio::select! {
            biased;
            read = conn.read_into(&mut replies.buf), if !waiting.is_empty() && !held => {
                if let Err(e) = read {
                    break Some(Error::ConnectionLost(e.cause()));
                }
                last_read = tokio::time::Instant::now();
                if let Err(e) = dispatch(&mut replies, &mut waiting, &counts, &limits.pool) {
                    break Some(e);
                }
                if replies.buf.capacity() - replies.buf.len() < 4096 {
                    replies.buf.reserve(64 * 1024);
                }
                if waiting.is_empty() {
                    last_busy = tokio::time::Instant::now();
                }
            }
            // The slow client took some: wait for it again, afresh (and the
            // response timeout counts from now: Redis was not the one waited for).
            _ = async { slow.as_ref().unwrap().drained.notified().await }, if held => {
                let now = tokio::time::Instant::now();
                grace.as_mut().reset(now + SLOW_READER_GRACE);
                last_read = now;
            }
            _ = &mut grace, if held => {
                if let Some(front) = waiting.front_mut() {
                    front.overflow();
                }
                if let Err(e) = dispatch(&mut replies, &mut waiting, &counts, &limits.pool) {
                    break Some(e);
                }
            }
            req = rx.recv(), if !rx_done => {
                let Some(req) = req else { rx_done = true; continue };
                if limits.pool.is_stale(&conn) {
                    // The primary moved since these were queued: none is
                    // written here, each goes to a lane on the new primary.
                    lane.closed.store(true, Ordering::Release);
                    rx.close();
                    bounce(req, &lane);
                    while let Ok(more) = rx.try_recv() {
                        bounce(more, &lane);
                    }
                    continue;
                }
                wbuf.clear();
                let now = tokio::time::Instant::now();
                queue(&mut wbuf, &mut waiting, &mut written, req, now);
                while let Ok(more) = rx.try_recv() {
                    queue(&mut wbuf, &mut waiting, &mut written, more, now);
                }
                if let Err(e) = conn.send(&wbuf).await {
                    break Some(Error::ConnectionLost(e.cause()));
                }
            }
            // Redis is slow, not a client: a held lane is not timed.
            _ = stall.tick(), if timeout.is_some() && !waiting.is_empty() && !held => {
                // Counted from the front batch's write, or from the last
                // bytes Redis sent, whichever is later: a batch queued
                // behind a big reply waits for Redis' progress, not its age.
                if let (Some(t), Some(front)) = (timeout, waiting.front()) {
                    if front.sent.max(last_read).elapsed() >= t {
                        break Some(Error::TimedOut { ms: t.as_millis() as u64 });
                    }
                }
            }
            // Idle: stop taking batches; those already queued are still served.
            // The timer is moved only when it fires, not on every batch.
            _ = &mut idle, if waiting.is_empty() && !lane.closed.load(Ordering::Acquire) => {
                let quiet_until = last_busy + idle_close;
                if quiet_until > tokio::time::Instant::now() {
                    idle.as_mut().reset(quiet_until);
                    continue;
                }
                lane.closed.store(true, Ordering::Release);
                rx.close();
            }
        }
    };
    lane.closed.store(true, Ordering::Release);
    rx.close();
    match failure {
        // Every reply read and nothing extra: the connection may be pooled.
        None if replies.buf.is_empty() && !replies.retire => {
            written.apply_to(&mut conn);
            conn.finish_batch();
        }
        None => conn.mark_broken(),
        // Each waiting client counts the failure once, when it answers.
        Some(error) => {
            debug!(%error, waiting = waiting.len(), "multiplexer: lane failed");
            conn.mark_broken();
            if matches!(error, Error::TimedOut { .. }) {
                limits.pool.probe_now();
            }
            for w in waiting.drain(..).filter(|w| !w.discarding) {
                w.backlog.send(Err(error));
            }
            // Queued but never written: they may go again, elsewhere.
            while let Ok(req) = rx.try_recv() {
                bounce(req, &lane);
            }
        }
    }
}

/// Queues `req` on `lane`; gives it back when the lane closed before
/// taking it (nothing was written: it may go to another).
fn send(lane: &Lane, req: MuxRequest) -> Result<(), MuxRequest> {
    lane.in_flight.fetch_add(1, Ordering::AcqRel);
    lane.tx.send(req).map_err(|mpsc::error::SendError(back)| {
        lane.in_flight.fetch_sub(1, Ordering::AcqRel);
        lane.closed.store(true, Ordering::Release);
        back
    })
}

/// A batch the lane will not write: its client submits it again.
fn bounce(req: MuxRequest, lane: &Lane) {
    lane.in_flight.fetch_sub(1, Ordering::AcqRel);
    req.backlog.send(Err(Error::NotSent));
}

fn queue(
    wbuf: &mut BytesMut,
    waiting: &mut VecDeque<Waiting>,
    written: &mut Wants,
    req: MuxRequest,
    sent: tokio::time::Instant,
) {
    let skip = prepare::write(*written, req.wants, wbuf);
    *written = req.wants;
    wbuf.extend_from_slice(&req.bytes);
    waiting.push_back(Waiting {
        sent,
        skip,
        replies: req.replies,
        backlog: req.backlog,
        discarding: false,
        refused: Refused::default(),
        holding_since: None,
        direct: req.direct,
        started: req.started,
        split: false,
    });
}
