//! One client connection: read whatever complete commands are buffered (a
//! pipeline), run them as one batch, write the replies, repeat.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::local::{ClientState, ReplyMode};
use super::planner::{self, Batch};
use super::socket::ClientSocket;
use super::Shared;
use crate::backend::{ClientView, Event, Exec, Out, Plan};
use crate::error::{Error, Side};
use crate::pool::Upstream;
use crate::resp::{write_error, CommandScanner, Frame, ProtocolError};

/// Sent ahead of a stream for a client whose replies are off; Redis
/// answers it nothing.
const CLIENT_REPLY_OFF: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n";

/// A new client's read buffer.
const INITIAL_BUFFER: usize = 1024;
/// Reads grow up to this size.
const MAX_READ: usize = 64 * 1024;

/// What the session does after a batch.
enum Flow {
    Continue,
    /// Reply, then close the client (QUIT).
    Close,
    /// Stream both ways from buffer offset `from` on this dedicated connection.
    Stream {
        from: usize,
        conn: Box<Upstream>,
    },
    /// Close at once, without writing what is buffered: the client's
    /// replies overflowed, or it got part of a reply that never completed.
    Abort,
}

/// Why a session ended, for the disconnect log line.
#[derive(Debug)]
enum End {
    ClientClosed,
    Quit,
    Shutdown,
    IdleTimeout,
    FrameTimeout,
    ProtocolError,
    #[allow(dead_code)] // read through `Debug` in the disconnect log line
    Io(std::io::Error),
    StreamEnded,
    /// Its replies could not be delivered in-band (see `Flow::Abort`).
    Aborted,
    /// Sentinel mode: what it pinned (MULTI, WATCH, a subscription, a
    /// blocking command) is on a node that is no longer the primary.
    PrimaryMoved,
}

pub struct Session<S> {
    shared: Arc<Shared>,
    client: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    scanner: CommandScanner,
    frames: Vec<Frame>,
    /// Client bytes read while a blocking batch was in flight.
    early: BytesMut,
    client_state: ClientState,
    plan: Plan,
    exec: Exec,
    shutdown: watch::Receiver<bool>,
}

impl<S: ClientSocket> Session<S> {
    pub fn new(shared: Arc<Shared>, client: S, shutdown: watch::Receiver<bool>) -> Session<S> {
        Session {
            scanner: CommandScanner::new(shared.limits),
            client_state: shared.new_client().at(client.local_ip()),
            plan: Plan::default(),
            exec: Exec::new(shared.backend.clone(), client.direct()),
            shared,
            client,
            // Empty to start: an idle client should cost little. The read
            // buffer is taken when the client sends (`read_client`); the
            // write buffer when a reply is written here (in multiplexed mode
            // the lanes write most replies to the client themselves). Both
            // grow with what passes.
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            frames: Vec::new(),
            early: BytesMut::new(),
            shutdown,
        }
    }

    /// Serves the client until the session ends. By reference, and with
    /// nothing else to keep: every byte of this future is every session's.
    pub async fn run(&mut self) {
        let end = self.serve().await;
        self.exec.release();
        debug!(client = self.id(), reason = ?end, "client disconnected");
    }

    /// The client's id (`CLIENT ID`), which names it in the log.
    pub fn id(&self) -> u64 {
        self.client_state.id
    }

    async fn serve(&mut self) -> End {
        let mut partial_since: Option<Instant> = None;
        // The last batch stopped at `max_batch_bytes`: frames may be buffered.
        let mut more_buffered = false;
        loop {
            if *self.shutdown.borrow() {
                // A deferred batch's replies still reach the client.
                return self.settle().await.err().unwrap_or(End::Shutdown);
            }
            if !std::mem::take(&mut more_buffered) {
                match self.read_more(partial_since).await {
                    Ok(0) => return End::ClientClosed,
                    Ok(_) => {}
                    Err(end) => return end,
                }
            }
            let (protocol_error, capped) = self.scan_batch();
            more_buffered = capped;
            let flow = match self.plan_and_run().await {
                Some(flow) => flow,
                None => return End::ClientClosed,
            };
            // A plan that stopped early (RESET, a stream that did not start)
            // leaves the frames after it for the next round, in order; a
            // protocol error further on is met again when they are rescanned.
            let rest = self
                .plan
                .rest
                .filter(|_| !self.frames.is_empty() && !matches!(flow, Flow::Stream { .. }));
            let consumed = rest.unwrap_or_else(|| self.frames.last().map_or(0, |f| f.end));
            if matches!(flow, Flow::Abort) {
                return End::Aborted;
            }
            if let Some(e) = protocol_error.filter(|_| rest.is_none()) {
                return Box::pin(self.refuse_malformed(e)).await;
            }
            if let Err(e) = self.flush().await {
                return End::Io(e);
            }
            match flow {
                Flow::Continue | Flow::Abort => {}
                Flow::Close => return End::Quit,
                Flow::Stream { from, conn } => match Box::pin(self.stream(from, *conn)).await {
                    // The last subscription ended: request/reply again, on
                    // the client bytes the stream did not use.
                    Ok(rest) => {
                        self.rbuf = rest;
                        self.scanner = CommandScanner::new(self.shared.limits);
                        more_buffered = !self.rbuf.is_empty();
                        partial_since = None;
                        continue;
                    }
                    Err(end) => return end,
                },
            }
            self.rbuf.advance(consumed);
            if rest.is_some() {
                self.scanner = CommandScanner::new(self.shared.limits);
                more_buffered = true;
            } else {
                self.scanner.consume(consumed);
            }
            if !self.early.is_empty() {
                // They may hold whole commands the client now waits on.
                more_buffered = true;
                self.rbuf.extend_from_slice(&self.early);
                self.early.clear();
            }
            partial_since = match (self.rbuf.is_empty(), partial_since) {
                (true, _) => None,
                (false, Some(t)) if consumed == 0 => Some(t),
                (false, _) => Some(Instant::now()),
            };
        }
    }

    /// Collects the whole frames buffered now, up to `max_batch_bytes`
    /// (then `true`: more may be buffered), and the protocol error that
    /// stopped the scan, if any: the frames before it still run.
    fn scan_batch(&mut self) -> (Option<ProtocolError>, bool) {
        self.frames.clear();
        loop {
            if self
                .frames
                .last()
                .is_some_and(|f| f.end >= self.shared.max_batch_bytes)
            {
                return (None, true);
            }
            match self.scanner.next_frame(&self.rbuf) {
                Ok(Some(f)) => self.frames.push(f),
                Ok(None) => return (None, false),
                Err(e) => return (Some(e), false),
            }
        }
    }

    /// Plans the scanned frames and runs them; `None` when the client left
    /// while a blocking batch waited.
    async fn plan_and_run(&mut self) -> Option<Flow> {
        if self.frames.is_empty() {
            return Some(Flow::Continue);
        }
        // The previous batch's replies come first.
        if self.settle().await.is_err() {
            return Some(Flow::Abort);
        }
        // In a block: what is not held across the awaits below is not
        // part of every session's future.
        {
            let batch = Batch {
                buf: &self.rbuf,
                scanner: &self.scanner,
                frames: &self.frames,
            };
            let shared = &self.shared;
            planner::plan(
                &shared.policy,
                &shared.traffic,
                &mut self.client_state,
                &batch,
                &mut self.plan,
            );
        }
        if self.plan.may_block {
            // Boxed, like the other rare paths (a stream, a malformed
            // frame): their state would be part of every session's future.
            Box::pin(self.run_watching_client()).await
        } else {
            Some(self.run_batch().await)
        }
    }

    /// A malformed frame: the client gets Redis' protocol error and is
    /// closed; nobody else notices.
    async fn refuse_malformed(&mut self, e: ProtocolError) -> End {
        if let Err(end) = self.settle().await {
            return end;
        }
        self.shared.traffic.failed(Side::Client);
        debug!(
            client = self.client_state.id,
            error = e.message(),
            "client protocol error"
        );
        e.write_reply(&mut self.wbuf);
        let _ = self.flush().await;
        End::ProtocolError
    }

    /// Reads more client bytes. A frame left incomplete longer than
    /// `frame_timeout` (slow-loris), or silence longer than the idle timeout,
    /// ends the session; so does shutdown while no batch is in flight. A
    /// deferred batch that needs the session meanwhile is settled here.
    async fn read_more(&mut self, partial_since: Option<Instant>) -> Result<usize, End> {
        if self.rbuf.is_empty() {
            // Nothing buffered: no buffer is held while the client is silent
            // (see `read_client`), unless reads grew it (the client sends
            // big pipelines or values). `reserve` first takes back what the
            // batches before advanced past, so that `capacity` is the whole
            // allocation's.
            if self.rbuf.capacity() > 0 {
                self.rbuf.reserve(INITIAL_BUFFER);
            }
            if self.rbuf.capacity() <= INITIAL_BUFFER {
                self.rbuf = BytesMut::new();
            }
        } else if self.rbuf.capacity() - self.rbuf.len() < INITIAL_BUFFER / 4 {
            // Doubling: a long pipeline or a big value is read in ever larger reads.
            self.rbuf
                .reserve(self.rbuf.capacity().clamp(INITIAL_BUFFER, MAX_READ));
        }
        loop {
            // A partial frame's deadline, else the idle one (`idle`).
            let (deadline, idle) = match (partial_since, self.shared.idle_timeout) {
                (Some(t), _) => (Some(t + self.shared.frame_timeout), false),
                (None, Some(idle)) => (Some(Instant::now() + idle), true),
                (None, None) => (None, true),
            };
            // Without a deadline the timer branch is never polled, so no timer is
            // registered per read: it showed in profiles of 1000-client runs.
            let timed = deadline.is_some();
            let at = deadline.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                read = read_client(&mut self.client, &mut self.rbuf) => return read.map_err(End::Io),
                _ = tokio::time::sleep_until(at.into()), if timed => {
                    if idle && self.exec.deferred_in_flight() {
                        // The client waits for its replies: not idle. The
                        // timer starts again once they are in.
                        self.settle().await?;
                        continue;
                    }
                    self.settle().await?;
                    if idle {
                        return Err(End::IdleTimeout);
                    }
                    write_error(&mut self.wbuf, "ERR Protocol error: incomplete command timed out");
                    let _ = self.flush().await;
                    return Err(End::FrameTimeout);
                }
                _ = self.shutdown.changed() => {
                    self.settle().await?;
                    return Err(End::Shutdown);
                }
                event = self.exec.event() => match event {
                    Event::PinMoved => return Err(End::PrimaryMoved),
                    Event::Replies => self.settle().await?,
                },
            }
        }
    }

    /// Settles a deferred batch (see `backend/shared.rs`): its replies
    /// reached the client, or they (or its error replies) are written now.
    async fn settle(&mut self) -> Result<(), End> {
        if !self.exec.has_deferred() {
            return Ok(());
        }
        let mut out = Out::new(&mut self.wbuf, Some(&mut self.client));
        let settled = self.exec.settle(&mut out).await;
        let torn = out.torn();
        if let Err((failed, replies)) = settled {
            let id = self.client_state.id;
            let Some(detail) = failure_edge(&self.shared, id, failed.error, torn) else {
                return Err(End::Aborted);
            };
            let mut text = BytesMut::new();
            failed.error.write_reply_with(detail.as_deref(), &mut text);
            for _ in 0..replies {
                self.wbuf.extend_from_slice(&text);
            }
        }
        self.flush().await.map_err(End::Io)
    }

    /// Runs a batch that may block (BLPOP 0) while watching the client: if it
    /// leaves, the batch is dropped, which discards its upstream connection
    /// (Redis sees the close and forgets the blocked command). Bytes the client
    /// sends meanwhile are kept for the next batch.
    async fn run_watching_client(&mut self) -> Option<Flow> {
        let mut early = BytesMut::new();
        let limit = self.shared.limits.max_frame_bytes;
        // A blocking command waits on the primary of now; when the Sentinels
        // move it, the client is closed (it reconnects to the new one).
        let generation = self.shared.backend.generation();
        let backend = self.shared.backend.clone();
        let id = self.client_state.id;
        let flow = {
            // The client is read meanwhile, so its replies are only buffered.
            let run = execute(
                &mut self.exec,
                &mut self.plan,
                &mut self.client_state,
                &self.shared,
                Out::new(&mut self.wbuf, None),
            );
            tokio::pin!(run);
            loop {
                tokio::select! {
                    flow = &mut run => break flow,
                    read = self.client.read_buf(&mut early), if early.len() < limit => {
                        if matches!(read, Ok(0) | Err(_)) {
                            return None;
                        }
                    }
                    _ = backend.moved_from(generation) => {
                        warn!(client = id, "closing the client: the primary moved while its blocking command waited");
                        return Some(Flow::Abort);
                    }
                }
            }
        };
        self.early = early;
        Some(flow)
    }

    async fn run_batch(&mut self) -> Flow {
        execute(
            &mut self.exec,
            &mut self.plan,
            &mut self.client_state,
            &self.shared,
            Out::new(&mut self.wbuf, Some(&mut self.client)),
        )
        .await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let result = self.client.write_all(&self.wbuf).await;
        self.wbuf.clear();
        result
    }

    /// Pub/sub and MONITOR: replies no longer pair with commands, so bytes
    /// flow both ways on this client's own connection (bounded, policy still
    /// applied: see `stream.rs`) until either side closes, or until the last
    /// subscription ends (`Ok`: the client bytes not used yet). The
    /// connection is then closed, not pooled: it carried a subscription.
    async fn stream(&mut self, from: usize, mut conn: Upstream) -> Result<BytesMut, End> {
        let pending = self.rbuf.split_off(from);
        let generation = conn.generation;
        let backend = self.shared.backend.clone();
        let upstream = conn.streaming();
        if self.client_state.reply == ReplyMode::Off && !self.client_state.pin.multi {
            // poolside silences replies itself, but a stream's replies pass
            // through untouched: Redis must know, and it then still sends
            // the pushes (confirmations, messages) and silences the rest,
            // as it does for such a client straight. (Inside MULTI it would
            // only be queued: a stream that starts there is not silenced.)
            upstream
                .write_all(CLIENT_REPLY_OFF)
                .await
                .map_err(End::Io)?;
        }
        let result = tokio::select! {
            r = super::stream::pump(&mut self.client, upstream, pending, &self.shared) => r,
            _ = self.shutdown.changed() => Ok(None),
            _ = backend.moved_from(generation) => return Err(End::PrimaryMoved),
        };
        match result {
            Ok(Some(rest)) => Ok(rest),
            Ok(None) => Err(End::StreamEnded),
            Err(e) => Err(End::Io(e)),
        }
    }
}

/// Reads what the client sent into `buf`; a buffer with no room (an idle
/// client's: none) gets one only once the client's socket is readable, so a
/// silent client holds no read buffer. Cancel-safe.
async fn read_client<S: ClientSocket>(
    client: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() == buf.len() {
        let waiting = &mut *client;
        std::future::poll_fn(move |cx| waiting.poll_read_ready(cx)).await?;
        buf.reserve(INITIAL_BUFFER);
    }
    client.read_buf(buf).await
}

/// Runs the planned batch on the backend. This is the edge where a failure
/// becomes the client's `-ERR` replies and is counted, once per batch.
async fn execute(
    exec: &mut Exec,
    plan: &mut Plan,
    client: &mut ClientState,
    shared: &Shared,
    mut out: Out<'_>,
) -> Flow {
    let view = ClientView {
        id: client.id,
        name: client.name.as_deref(),
        wants: &mut client.wants,
        pin: &mut client.pin,
    };
    let ran = exec.execute(plan, view, &mut out).await;
    if plan.reset {
        // After the commands before RESET ran on the state they were sent in.
        exec.release();
        client.reset();
    }
    match ran {
        Ok(Some(conn)) => {
            if let Some(from) = plan.stream_from {
                return Flow::Stream {
                    from,
                    conn: Box::new(conn),
                };
            }
        }
        Ok(None) => {}
        Err(failed) => {
            let Some(detail) = failure_edge(shared, client.id, failed.error, out.torn()) else {
                return Flow::Abort;
            };
            plan.answer_failed(failed.answered, failed.error, detail.as_deref(), out.buf);
        }
    }
    if plan.close {
        Flow::Close
    } else {
        Flow::Continue
    }
}

/// A failed batch at the edge: counted once. `None` when the client must be
/// closed (its replies cannot be delivered in-band); else the upstream's
/// own words its error replies carry, if any.
fn failure_edge(shared: &Shared, id: u64, error: Error, torn: bool) -> Option<Option<Arc<str>>> {
    shared.traffic.failed(error.side());
    if error.closes_client() || torn {
        if matches!(error, Error::ReplyOverflow { .. }) {
            shared.traffic.reply_overflowed();
        }
        warn!(client = id, %error, torn, "closing the client: its replies cannot be delivered");
        return None;
    }
    Some(shared.backend.detail(error))
}
