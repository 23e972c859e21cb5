//! Multiplexed pool mode: stateless batches from many clients share upstream
//! connections in flight. One task owns each connection ("lane"): it writes
//! every queued batch in one write and hands each batch's replies, matched
//! first-in first-out, straight to the waiting client. A new lane opens only
//! when every open lane has `saturation` batches in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::debug;

use super::{prepare, Wants};
use crate::error::Error;
use crate::pool::{Pool, Upstream};
use crate::resp::ReplyScanner;

/// All replies of one batch, or why there are none.
pub type BatchReply = Result<Bytes, Error>;

/// One client batch: its bytes, how many replies they produce, the
/// connection state it must run in, and where its replies go.
pub struct MuxRequest {
    pub bytes: Bytes,
    pub replies: usize,
    pub wants: Wants,
    pub reply_to: mpsc::UnboundedSender<BatchReply>,
}

struct Lane {
    tx: mpsc::UnboundedSender<MuxRequest>,
    in_flight: AtomicUsize,
    closed: AtomicBool,
}

/// The set of lanes, shared by every session.
pub struct Multiplexer {
    pool: Pool,
    lanes: Mutex<Vec<Arc<Lane>>>,
    opening: tokio::sync::Mutex<()>,
    saturation: usize,
    idle_close: Duration,
    /// A lane whose oldest batch waits longer for its replies fails.
    response_timeout: Option<Duration>,
}

impl Multiplexer {
    pub fn new(pool: Pool, saturation: usize, idle_close: Duration) -> Multiplexer {
        Multiplexer {
            pool,
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
        loop {
            let lane = match self.pick() {
                Some(lane) => lane,
                None => self.open_lane().await?,
            };
            lane.in_flight.fetch_add(1, Ordering::AcqRel);
            match lane.tx.send(req) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    // The lane closed before taking it: nothing was written, try another.
                    lane.in_flight.fetch_sub(1, Ordering::AcqRel);
                    lane.closed.store(true, Ordering::Release);
                    req = back;
                }
            }
        }
    }

    /// The least busy open lane, unless every lane is saturated and the pool has room.
    fn pick(&self) -> Option<Arc<Lane>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.retain(|l| !l.closed.load(Ordering::Acquire));
        let best = lanes
            .iter()
            .min_by_key(|l| l.in_flight.load(Ordering::Acquire))?
            .clone();
        let busy = best.in_flight.load(Ordering::Acquire) >= self.saturation;
        if busy && self.pool.has_room() {
            return None;
        }
        Some(best)
    }

    async fn open_lane(&self) -> Result<Arc<Lane>, Error> {
        // One opener at a time; the others find its lane when they get the lock.
        let _guard = self.opening.lock().await;
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
        });
        self.lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lane.clone());
        let limits = LaneLimits {
            idle_close: self.idle_close,
            response_timeout: self.response_timeout,
            pool: self.pool.clone(),
        };
        tokio::spawn(run_lane(conn, rx, lane.clone(), limits));
        debug!("multiplexer: opened a lane");
        Ok(lane)
    }

    fn any_lane(&self) -> Option<Arc<Lane>> {
        let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .iter()
            .filter(|l| !l.closed.load(Ordering::Acquire))
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
}

/// A batch written upstream whose replies are still to come.
struct Waiting {
    /// When it was written: the response timeout counts from here.
    sent: tokio::time::Instant,
    /// Replies to check and skip first: the commands that prepared the lane
    /// for this batch (SELECT).
    skip: usize,
    replies: usize,
    reply_to: mpsc::UnboundedSender<BatchReply>,
}

/// Owns one upstream connection: writes queued batches, routes replies back.
/// One `select!` over the lane's own state (read, queue, idle timer), so it
/// reads longer than most functions; the per-batch work is in `queue` and
/// `dispatch`.
async fn run_lane(
    mut conn: Upstream,
    mut rx: mpsc::UnboundedReceiver<MuxRequest>,
    lane: Arc<Lane>,
    limits: LaneLimits,
) {
    let idle_close = limits.idle_close;
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut scanner = ReplyScanner::default();
    // Offset in `rbuf` where the next unscanned reply of the front batch starts.
    let mut scanned = 0usize;
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
    let mut last_busy = tokio::time::Instant::now();
    let failure = loop {
        if rx_done && waiting.is_empty() {
            break None;
        }
        tokio::select! {
            biased;
            read = conn.read_into(&mut rbuf), if !waiting.is_empty() => {
                if let Err(e) = read {
                    break Some(Error::ConnectionLost(e.cause()));
                }
                if let Err(e) = dispatch(&mut rbuf, &mut scanner, &mut scanned, &mut waiting, &lane) {
                    break Some(e);
                }
                if rbuf.capacity() - rbuf.len() < 4096 {
                    rbuf.reserve(64 * 1024);
                }
                if waiting.is_empty() {
                    last_busy = tokio::time::Instant::now();
                }
            }
            req = rx.recv(), if !rx_done => {
                let Some(req) = req else { rx_done = true; continue };
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
            _ = stall.tick(), if timeout.is_some() && !waiting.is_empty() => {
                if let (Some(t), Some(front)) = (timeout, waiting.front()) {
                    if front.sent.elapsed() >= t {
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
        None if rbuf.is_empty() => {
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
            for w in waiting.drain(..) {
                let _ = w.reply_to.send(Err(error));
            }
            while let Ok(req) = rx.try_recv() {
                let _ = req.reply_to.send(Err(error));
            }
        }
    }
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
        reply_to: req.reply_to,
    });
}

/// Hands every batch whose replies are complete to its client.
fn dispatch(
    rbuf: &mut BytesMut,
    scanner: &mut ReplyScanner,
    scanned: &mut usize,
    waiting: &mut VecDeque<Waiting>,
    lane: &Lane,
) -> Result<(), Error> {
    while let Some(front) = waiting.front_mut() {
        let Some(end) = scanner
            .scan(rbuf, *scanned)
            .map_err(|_| Error::ConnectionLost(crate::error::Cause::Malformed))?
        else {
            return Ok(());
        };
        // A push frame is never a reply (lanes carry no tracking or
        // subscriptions; this keeps FIFO matching safe all the same).
        if rbuf[*scanned] == b'>' {
            *scanned = end;
            continue;
        }
        if front.skip > 0 {
            prepare::check(&rbuf[..end])?;
            front.skip -= 1;
            rbuf.advance(end);
            *scanned = 0;
            continue;
        }
        *scanned = end;
        front.replies -= 1;
        if front.replies == 0 {
            let done = waiting.pop_front().map(|w| w.reply_to);
            let replies = rbuf.split_to(end).freeze();
            *scanned = 0;
            lane.in_flight.fetch_sub(1, Ordering::AcqRel);
            if let Some(to) = done {
                let _ = to.send(Ok(replies));
            }
        }
    }
    Ok(())
}
