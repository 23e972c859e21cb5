//! The router: turns one client batch into one upstream round trip plus
//! local answers, in the client's order, and keeps the client's state.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::local::{self, Answer};
use super::policy;
use super::state::{Pin, Remote};
use super::Shared;
use crate::command::{allowed_before_auth, classify, Class};
use crate::pool::{BatchReply, Multiplexer, MuxRequest, Upstream};
use crate::resp::{write_command, write_error, CommandScanner, Frame};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What the session does after a batch.
pub enum Flow {
    Continue,
    /// Reply, then close the client (QUIT).
    Close,
    /// Stream both ways from buffer offset `from` on this dedicated connection.
    Stream {
        from: usize,
        conn: Upstream,
    },
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A local reply: `local[..end]` past the previous local step.
    Local {
        end: usize,
    },
    Remote(Remote),
}

/// Per-client state: the session's half of DESIGN.md's "session" hop.
pub struct Router {
    shared: Arc<Shared>,
    pub(super) client: local::ClientState,
    pinned: Option<Upstream>,
    pin: Pin,
    steps: Vec<Step>,
    local: BytesMut,
    upbuf: BytesMut,
    prefix: BytesMut,
    /// The planned batch is plain stateless commands only: in multiplexed
    /// mode it may share a connection with other clients' batches.
    shareable: bool,
    /// The planned batch has a blocking command: the session watches for the
    /// client leaving while it waits, so the connection is not held forever.
    pub(super) may_block: bool,
    /// This client's reply channel for multiplexed batches, made on first use.
    mux_replies: Option<(UnboundedSender<BatchReply>, UnboundedReceiver<BatchReply>)>,
}

impl Router {
    pub fn new(shared: Arc<Shared>) -> Router {
        let client = local::ClientState::new(&shared);
        Router {
            shared,
            client,
            pinned: None,
            pin: Pin::default(),
            steps: Vec::with_capacity(64),
            local: BytesMut::new(),
            upbuf: BytesMut::with_capacity(16 * 1024),
            prefix: BytesMut::new(),
            shareable: false,
            may_block: false,
            mux_replies: None,
        }
    }

    /// Sends a planned batch and collects its replies.
    pub async fn run(&mut self, planned: (Option<usize>, bool), out: &mut BytesMut) -> Flow {
        let (stream_from, close) = planned;
        let remote = !self.upbuf.is_empty() || stream_from.is_some();
        if !remote {
            self.emit_local_only(out);
            return if close { Flow::Close } else { Flow::Continue };
        }
        if let Some(mux) = self.shared.mux.clone() {
            if self.shareable && self.pinned.is_none() && stream_from.is_none() {
                self.execute_shared(&mux, out).await;
                return if close { Flow::Close } else { Flow::Continue };
            }
        }
        let mut conn = match self.pinned.take() {
            Some(c) => c,
            None => match self.shared.pool.check_out().await {
                Ok(c) => c,
                Err(e) => {
                    let text = e.reply_text();
                    self.emit_with_error(out, &text, stream_from.is_some());
                    return if close { Flow::Close } else { Flow::Continue };
                }
            },
        };
        let started = Instant::now();
        if let Err(text) = self.round_trip(&mut conn, out).await {
            self.shared.stats.upstream_error();
            conn.mark_broken();
            drop(conn);
            self.pin = Pin::default();
            if stream_from.is_some() {
                write_error(out, &text);
            }
            return if close { Flow::Close } else { Flow::Continue };
        }
        self.shared.stats.round_trip_done(started.elapsed());
        if let Some(from) = stream_from {
            return Flow::Stream { from, conn };
        }
        if self.pin.active() {
            self.pinned = Some(conn);
        }
        if close {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// Sorts the batch into upstream bytes and local answers. Returns where a
    /// streaming command starts, and whether the client asked to close.
    pub fn plan(
        &mut self,
        buf: &[u8],
        scanner: &CommandScanner,
        frames: &[Frame],
    ) -> (Option<usize>, bool) {
        self.steps.clear();
        self.local.clear();
        self.upbuf.clear();
        self.shareable = true;
        self.may_block = false;
        let mut in_multi = self.pin.multi;
        for f in frames {
            if f.is_empty() {
                continue;
            }
            let name = scanner.arg(buf, f, 0).unwrap_or_default();
            self.shared.stats.count_command(name);
            let class = classify(name, scanner.arg(buf, f, 1));
            if !self.client.authenticated && name.eq_ignore_ascii_case(b"PING") {
                local::write_pong(&mut self.local, scanner.arg(buf, f, 1));
                self.shareable = false;
                self.steps.push(Step::Local {
                    end: self.local.len(),
                });
                continue;
            }
            if !self.client.authenticated && !allowed_before_auth(class) {
                write_error(&mut self.local, "NOAUTH Authentication required.");
                self.steps.push(Step::Local {
                    end: self.local.len(),
                });
                continue;
            }
            if let Some(shown) = self.shared.policy.denied(name, scanner.arg(buf, f, 1)) {
                self.shared.stats.command_denied();
                policy::write_refusal(&mut self.local, shown);
                self.shareable = false;
                self.pin.doomed |= in_multi;
                self.steps.push(Step::Local {
                    end: self.local.len(),
                });
                continue;
            }
            let remote = match class {
                Class::Local(l) => {
                    self.shareable = false;
                    let answer = self.client.answer(l, buf, scanner, f, &mut self.local);
                    self.steps.push(Step::Local {
                        end: self.local.len(),
                    });
                    match answer {
                        Answer::Close => return (None, true),
                        Answer::Reset => {
                            if let Some(mut c) = self.pinned.take() {
                                c.mark_broken();
                            }
                            self.pin = Pin::default();
                        }
                        Answer::Done => {}
                    }
                    continue;
                }
                Class::Unsupported(msg) => {
                    self.shareable = false;
                    write_error(&mut self.local, &format!("ERR poolside: {msg}"));
                    self.steps.push(Step::Local {
                        end: self.local.len(),
                    });
                    continue;
                }
                Class::Stream => return (Some(f.start), false),
                Class::Stateless => Remote::Plain,
                Class::Blocking => {
                    self.shareable = false;
                    self.may_block = true;
                    Remote::Plain
                }
                Class::Select => Remote::Select(
                    scanner
                        .arg(buf, f, 1)
                        .filter(|_| f.argc() == 2)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|a| a.parse().ok()),
                ),
                Class::Multi => Remote::Multi,
                Class::Exec => Remote::Exec,
                Class::Discard => Remote::Discard,
                Class::Watch => Remote::Watch,
                Class::Unwatch => Remote::Unwatch,
                Class::PinSession => Remote::PinSession,
                Class::Dirty => Remote::Dirty,
            };
            if !matches!(remote, Remote::Plain) {
                self.shareable = false;
            }
            match remote {
                Remote::Multi if !in_multi => {
                    in_multi = true;
                    self.pin.doomed = false;
                }
                Remote::Exec | Remote::Discard => {
                    in_multi = false;
                    if std::mem::take(&mut self.pin.doomed) && matches!(remote, Remote::Exec) {
                        self.upbuf.extend_from_slice(policy::DISCARD);
                        self.steps.push(Step::Remote(Remote::ExecAborted));
                        continue;
                    }
                }
                _ => {}
            }
            scanner.write_frame(buf, f, &mut self.upbuf);
            self.steps.push(Step::Remote(remote));
        }
        (None, false)
    }

    /// Multiplexed mode: hands the batch to a shared connection and waits
    /// for its replies on this client's own channel.
    async fn execute_shared(&mut self, mux: &Multiplexer, out: &mut BytesMut) {
        let replies = self.steps.len();
        let (tx, rx) = self.mux_replies.get_or_insert_with(unbounded_channel);
        let req = MuxRequest {
            bytes: self.upbuf.split().freeze(),
            replies,
            db: self.client.db,
            reply_to: tx.clone(),
        };
        let started = Instant::now();
        let result = match mux.submit(req).await {
            Ok(()) => rx
                .recv()
                .await
                .unwrap_or_else(|| Err("ERR poolside: internal error".into())),
            Err(e) => Err(e.reply_text()),
        };
        match result {
            Ok(bytes) => {
                self.shared.stats.round_trip_done(started.elapsed());
                out.extend_from_slice(&bytes);
            }
            Err(text) => {
                self.shared.stats.upstream_error();
                for _ in 0..replies {
                    write_error(out, &text);
                }
            }
        }
    }

    fn emit_local_only(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.local);
    }

    /// Local answers in place, `text` as the reply to every remote step.
    fn emit_with_error(&mut self, out: &mut BytesMut, text: &str, stream: bool) {
        let mut prev = 0;
        for step in &self.steps {
            match *step {
                Step::Local { end } => {
                    out.extend_from_slice(&self.local[prev..end]);
                    prev = end;
                }
                Step::Remote(_) => write_error(out, text),
            }
        }
        if stream {
            write_error(out, text);
        }
    }

    /// One write of the whole batch, then its replies in order, interleaved
    /// with the local answers. On failure every unanswered remote step gets
    /// the returned error text (already written to `out`).
    async fn round_trip(&mut self, conn: &mut Upstream, out: &mut BytesMut) -> Result<(), String> {
        self.prefix.clear();
        let select_first = conn.db != self.client.db && !self.upbuf.is_empty();
        if select_first {
            let db = self.client.db.to_string();
            write_command(
                &mut self.prefix,
                [&b"SELECT"[..], db.as_bytes()].into_iter(),
            );
        }
        if !self.upbuf.is_empty() {
            if let Err(e) = conn.write_batch(&[&self.prefix, &self.upbuf]).await {
                let text = format!("ERR poolside: upstream connection lost: {e}");
                self.emit_with_error(out, &text, false);
                return Err(text);
            }
        }
        if select_first {
            let mark = out.len();
            let ok = match conn.read_reply(out).await {
                Ok(start) => out[start] == b'+',
                Err(_) => false,
            };
            out.truncate(mark);
            if !ok {
                let text = "ERR poolside: upstream connection lost while selecting the database"
                    .to_string();
                self.emit_with_error(out, &text, false);
                return Err(text);
            }
            conn.db = self.client.db;
        }
        let mut prev = 0;
        for i in 0..self.steps.len() {
            match self.steps[i] {
                Step::Local { end } => {
                    out.extend_from_slice(&self.local[prev..end]);
                    prev = end;
                }
                Step::Remote(kind) => match conn.read_reply(out).await {
                    Ok(start) => {
                        self.pin.apply(kind, &out[start..], &mut self.client, conn);
                        if matches!(kind, Remote::ExecAborted) {
                            out.truncate(start);
                            write_error(out, policy::EXECABORT);
                        }
                    }
                    Err(e) => {
                        let text = format!("ERR poolside: upstream connection lost: {e}");
                        for step in &self.steps[i..] {
                            match *step {
                                Step::Local { end } => {
                                    out.extend_from_slice(&self.local[prev..end]);
                                    prev = end;
                                }
                                Step::Remote(_) => write_error(out, &text),
                            }
                        }
                        return Err(text);
                    }
                },
            }
        }
        conn.finish_batch();
        Ok(())
    }

    /// The client is gone: a connection still pinned carries its state
    /// (a transaction, WATCH, tracking) and is closed, not reused.
    pub fn close(&mut self) {
        if let Some(mut c) = self.pinned.take() {
            c.mark_broken();
        }
    }
}
