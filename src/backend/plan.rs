//! The value the planner makes of one client batch and a backend executes:
//! the steps in the client's order, the local answers, the bytes to send
//! upstream, and the properties a backend must know before it starts.

use std::time::Duration;

use bytes::BytesMut;

use crate::error::Error;

/// What one upstream reply means to the client's state (see [`super::Pin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Plain,
    Select(Option<u32>),
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    PinSession,
    Dirty,
    /// EXEC of a transaction with a refused command: sent as DISCARD, answered EXECABORT.
    ExecAborted,
    /// `HELLO [proto]` as poolside sends it (the client's AUTH and SETNAME
    /// were answered locally): the reply is Redis' own with the client's id.
    Hello(Option<u8>),
    /// `CLIENT INFO`: Redis' line for the pooled connection, with the
    /// client's own id and name.
    ClientInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A local answer: `local[..end]` past the previous local step.
    Local { end: usize },
    /// One upstream reply.
    Remote(Remote),
    /// One upstream reply the client asked not to get (CLIENT REPLY OFF or
    /// SKIP): read, applied to the client's state, then dropped.
    Silent(Remote),
}

/// The longest wait a batch's blocking commands may ask of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// No command of the batch blocks.
    #[default]
    None,
    For(Duration),
    /// A timeout of 0, or one poolside cannot read: never cut off.
    Forever,
}

impl Wait {
    /// The longer of two waits.
    pub fn max(self, other: Wait) -> Wait {
        match (self, other) {
            (Wait::Forever, _) | (_, Wait::Forever) => Wait::Forever,
            (Wait::For(a), Wait::For(b)) => Wait::For(a.max(b)),
            (Wait::None, w) | (w, Wait::None) => w,
        }
    }
}

/// A step as a backend meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Local(&'a [u8]),
    Remote(Remote),
    Silent(Remote),
}

/// What Redis answers EXEC with after a command was refused while queueing.
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Replaces a refused transaction's EXEC upstream, so the server-side MULTI ends.
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";

/// One planned batch. Reused from batch to batch: [`clear`](Plan::clear)
/// keeps the buffers' capacity.
#[derive(Debug, Default)]
pub struct Plan {
    steps: Vec<Step>,
    local: BytesMut,
    /// The bytes to write upstream, one frame per remote step.
    pub(crate) upstream: BytesMut,
    /// A streaming command (SUBSCRIBE, MONITOR) starts at this offset of the
    /// client's buffer; the batch's other steps come before it.
    pub stream_from: Option<usize>,
    /// The stream is SSUBSCRIBE: the slot of its first channel.
    pub stream_slot: Option<u16>,
    /// The client asked to close (QUIT): answer, then close.
    pub close: bool,
    /// A command may block (BLPOP): the session watches for the client leaving.
    pub may_block: bool,
    /// How long the batch's blocking commands may wait in Redis: the
    /// response timeout counts on top of it.
    pub wait: Wait,
    /// Plain stateless commands only, no local answer: in multiplexed mode
    /// the batch may share a connection with other clients' batches.
    pub shareable: bool,
    /// No command of the batch runs user code (EVAL, FCALL): if Redis
    /// refuses it whole after a failover, it may go once more.
    pub resendable: bool,
    /// The plan ends with RESET: once the batch ran, the session resets the
    /// client's state and drops any pinned connection.
    pub reset: bool,
    /// The plan stopped early (RESET, a stream command): the client's frames
    /// from this buffer offset on are not part of it and run next. (A stream
    /// that starts takes them; one that could not start leaves them.)
    pub rest: Option<usize>,
    /// The next step is not answered (CLIENT REPLY OFF or SKIP).
    silent: bool,
}

impl Plan {
    pub fn clear(&mut self) {
        self.steps.clear();
        self.local.clear();
        self.upstream.clear();
        self.stream_from = None;
        self.stream_slot = None;
        self.close = false;
        self.may_block = false;
        self.wait = Wait::None;
        self.shareable = true;
        self.reset = false;
        self.rest = None;
        self.silent = false;
        self.resendable = true;
    }

    /// Whether the next step pushed is answered to the client.
    pub fn silence_next(&mut self, silent: bool) {
        self.silent = silent;
        if silent {
            self.shareable = false;
        }
    }

    /// Adds a local answer, written by `answer`. A batch with one is not
    /// shareable: shared lanes carry upstream replies only.
    pub fn push_local<R>(&mut self, answer: impl FnOnce(&mut BytesMut) -> R) -> R {
        self.shareable = false;
        let mark = self.local.len();
        let r = answer(&mut self.local);
        // Silenced, or nothing to say (CLIENT REPLY OFF answers nothing).
        if std::mem::take(&mut self.silent) || self.local.len() == mark {
            self.local.truncate(mark);
        } else {
            self.steps.push(Step::Local {
                end: self.local.len(),
            });
        }
        r
    }

    /// Lets `check` write a refusal: when it refuses (`None`), what it wrote
    /// is a local answer; when it passes it must have written nothing, and
    /// the step the caller pushes next carries the silence.
    pub fn push_local_or<T>(
        &mut self,
        check: impl FnOnce(&mut BytesMut) -> Option<T>,
    ) -> Option<T> {
        let mark = self.local.len();
        let checked = check(&mut self.local);
        if checked.is_none() {
            let answer = self.local.split_off(mark);
            self.push_local(|out| out.unsplit(answer));
        }
        checked
    }

    /// Adds one upstream command, whose frame `write` appends. Only plain
    /// commands may share a lane: any other kind changes the client's or the
    /// connection's state, which a lane does not track.
    pub fn push_remote(&mut self, kind: Remote, write: impl FnOnce(&mut BytesMut)) {
        if kind != Remote::Plain {
            self.shareable = false;
        }
        write(&mut self.upstream);
        self.steps.push(match std::mem::take(&mut self.silent) {
            false => Step::Remote(kind),
            true => Step::Silent(kind),
        });
    }

    /// Puts `frame` before the batch's commands, its reply read and dropped
    /// (a cluster's MULTI held until the batch that names its node).
    pub fn prepend_silent(&mut self, kind: Remote, frame: &[u8]) {
        let mut upstream = BytesMut::with_capacity(frame.len() + self.upstream.len());
        upstream.extend_from_slice(frame);
        upstream.extend_from_slice(&self.upstream);
        self.upstream = upstream;
        self.steps.insert(0, Step::Silent(kind));
        self.shareable = false;
    }

    /// The batch is `MULTI` alone.
    pub fn is_multi_alone(&self) -> bool {
        let mut parts = self.parts(0);
        self.stream_from.is_none()
            && matches!(
                (parts.next(), parts.next()),
                (Some(Part::Remote(Remote::Multi)), None)
            )
    }

    /// The EXEC of a transaction that had a command refused: DISCARD goes
    /// upstream (ending the server-side MULTI) and the client gets EXECABORT.
    pub fn push_exec_aborted(&mut self) {
        self.push_remote(Remote::ExecAborted, |b| b.extend_from_slice(DISCARD));
    }

    /// The steps from `from` on, each with its local answer's bytes.
    pub fn parts(&self, from: usize) -> impl Iterator<Item = Part<'_>> + '_ {
        let mut start = self.steps[..from.min(self.steps.len())]
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::Local { end } => Some(*end),
                Step::Remote(_) | Step::Silent(_) => None,
            })
            .unwrap_or(0);
        self.steps.iter().skip(from).map(move |step| match *step {
            Step::Local { end } => {
                let answer = &self.local[start..end];
                start = end;
                Part::Local(answer)
            }
            Step::Remote(kind) => Part::Remote(kind),
            Step::Silent(kind) => Part::Silent(kind),
        })
    }

    /// Something must go upstream: a command, or a stream to start.
    pub fn needs_upstream(&self) -> bool {
        !self.upstream.is_empty() || self.stream_from.is_some()
    }

    pub fn remote_replies(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Remote(_) | Step::Silent(_)))
            .count()
    }

    /// The local answers of a batch with no upstream step.
    pub fn write_local(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.local);
    }

    /// Answers the steps from `from` on after a failure: local answers in
    /// place, `error` for every upstream step and for a stream that did not
    /// start. The error text is formatted once; `detail` as
    /// [`Error::write_reply_with`] takes it.
    pub fn answer_failed(
        &self,
        from: usize,
        error: Error,
        detail: Option<&str>,
        out: &mut BytesMut,
    ) {
        let mut text = BytesMut::new();
        error.write_reply_with(detail, &mut text);
        for part in self.parts(from) {
            match part {
                Part::Local(answer) => out.extend_from_slice(answer),
                Part::Remote(_) => out.extend_from_slice(&text),
                Part::Silent(_) => {}
            }
        }
        if self.stream_from.is_some() {
            out.extend_from_slice(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_batches_keep_local_answers_in_place() {
        let mut plan = Plan::default();
        plan.clear();
        plan.push_remote(Remote::Plain, |b| b.extend_from_slice(b"GET\r\n"));
        plan.push_local(|b| b.extend_from_slice(b"+A\r\n"));
        plan.push_remote(Remote::Plain, |b| b.extend_from_slice(b"GET\r\n"));
        plan.push_local(|b| b.extend_from_slice(b"+B\r\n"));
        assert_eq!(plan.remote_replies(), 2);
        assert_eq!(
            plan.parts(2).collect::<Vec<_>>(),
            [Part::Remote(Remote::Plain), Part::Local(b"+B\r\n")]
        );
        let mut out = BytesMut::new();
        plan.answer_failed(1, Error::Internal, None, &mut out);
        assert_eq!(
            &out[..],
            b"+A\r\n-ERR poolside: internal error\r\n+B\r\n".as_slice()
        );
    }
}
