//! Commands poolside answers itself: AUTH, QUIT, RESET, CLIENT
//! SETNAME/GETNAME/SETINFO/REPLY, and HELLO's options (see `hello.rs`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;

use super::auth::{Credentials, Verdict};
use super::cluster_face::ClusterFace;
use crate::backend::{Pin, Wants};
use crate::command::Local;
use crate::resp::{
    write_bulk, write_error, write_error_quoting, write_simple, CommandScanner, Frame,
};
use crate::traffic::Traffic;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// `CLIENT REPLY` as Redis keeps it per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// The next command's reply is skipped.
    Skip,
}

/// What a client has told poolside about itself, and what its upstream
/// connection must match. Owned by the client's session.
pub struct ClientState {
    pub id: u64,
    /// The database and protocol its batches run in.
    pub wants: Wants,
    /// Transaction, WATCH and session pins.
    pub pin: Pin,
    pub name: Option<Vec<u8>>,
    pub authenticated: bool,
    pub reply: ReplyMode,
    /// The protocol local answers are written in: `wants.proto`, or what a
    /// HELLO earlier in the batch being planned asked for.
    pub(super) answer_proto: u8,
    default_db: u32,
    pub(super) credentials: Arc<Credentials>,
    pub(super) traffic: Arc<Traffic>,
    /// What CLUSTER SLOTS and its kin answer.
    pub(super) face: Arc<ClusterFace>,
    /// The address the client connected to: the one-node cluster's.
    host: Option<IpAddr>,
}

/// What the planner must do after a local answer.
pub enum Answer {
    Done,
    Close,
    /// RESET: the plan ends here; the session resets the client's state and
    /// drops any pinned connection after the batch ran.
    Reset,
}

impl ClientState {
    pub fn new(
        default_db: u32,
        credentials: Arc<Credentials>,
        traffic: Arc<Traffic>,
    ) -> ClientState {
        ClientState {
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            wants: Wants {
                db: default_db,
                proto: 2,
            },
            pin: Pin::default(),
            name: None,
            authenticated: !credentials.required(),
            reply: ReplyMode::On,
            answer_proto: 2,
            default_db,
            credentials,
            traffic,
            face: Arc::default(),
            host: None,
        }
    }

    /// The one-node cluster this client is told about (poolside's port).
    pub fn with_face(mut self, face: Arc<ClusterFace>) -> ClientState {
        self.face = face;
        self
    }

    /// The client connected to `host`: the one-node cluster is there.
    pub fn at(mut self, host: Option<IpAddr>) -> ClientState {
        self.host = host;
        self
    }

    /// RESET, in pipeline order: what Redis' `clearClientConnectionState`
    /// clears (database, protocol, transaction, name, CLIENT REPLY, auth).
    pub fn reset(&mut self) {
        self.wants = Wants {
            db: self.default_db,
            proto: 2,
        };
        self.pin = Pin::default();
        self.name = None;
        self.reply = ReplyMode::On;
        self.authenticated = !self.credentials.required();
    }

    /// Whether the command about to be planned is answered (CLIENT REPLY);
    /// a SKIP is used up by it.
    pub fn take_silence(&mut self) -> bool {
        match self.reply {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply = ReplyMode::On;
                true
            }
        }
    }

    /// Answers a command of the local class (HELLO is planned apart: its
    /// reply comes from Redis).
    pub fn answer(
        &mut self,
        cmd: Local,
        buf: &[u8],
        scanner: &CommandScanner,
        f: &Frame,
        out: &mut BytesMut,
    ) -> Answer {
        let arg = |i: usize| scanner.arg(buf, f, i);
        let argc = f.argc();
        match cmd {
            Local::Quit => {
                write_simple(out, "OK");
                return Answer::Close;
            }
            Local::Auth => match argc {
                2 => _ = self.auth(None, arg(1).unwrap_or_default(), out),
                3 => _ = self.auth(arg(1), arg(2).unwrap_or_default(), out),
                // AUTH's arity is -2: more arguments are Redis' syntax error.
                0 | 1 => wrong_arity(out, "auth"),
                _ => write_error(out, "ERR syntax error"),
            },
            Local::Hello => unreachable_hello(out),
            // The state is reset by `reset()` once the commands before
            // RESET in the pipeline have run (RESET ends its plan).
            Local::Reset if argc == 1 => {
                write_simple(out, "RESET");
                return Answer::Reset;
            }
            Local::Reset => wrong_arity(out, "reset"),
            Local::ClientSetName => match arg(2) {
                Some(name) if argc == 3 => _ = self.set_name(name, out),
                _ => wrong_arity(out, "client|setname"),
            },
            Local::ClientGetName if argc == 2 => self.write_name(out),
            Local::ClientGetName => wrong_arity(out, "client|getname"),
            // As Redis 7.2 answers it (`clientSetinfoCommand`), whatever
            // the upstream's version: the attribute is this client's.
            Local::ClientSetInfo => match (arg(2), arg(3)) {
                (Some(attr), Some(value)) if argc == 4 => {
                    let known = attr.eq_ignore_ascii_case(b"LIB-NAME")
                        || attr.eq_ignore_ascii_case(b"LIB-VER");
                    if !known {
                        write_error_quoting(out, &[b"ERR Unrecognized option '", attr, b"'"]);
                    } else if !valid_attr(value) {
                        let tail = b" cannot contain spaces, newlines or special characters.";
                        write_error_quoting(out, &[b"ERR ", attr, tail]);
                    } else {
                        write_simple(out, "OK");
                    }
                }
                _ => wrong_arity(out, "client|setinfo"),
            },
            Local::ClientReply => self.client_reply(argc, arg(2), out),
            Local::Cluster(ask) if argc == 2 => {
                let host = self.host.map(|ip| ip.to_string()).unwrap_or_default();
                self.face.answer(ask, &host, self.answer_proto, out)
            }
            Local::Cluster(ask) => wrong_arity(out, ask.name()),
        }
        Answer::Done
    }

    /// `CLIENT REPLY ON|OFF|SKIP`: only ON is answered, as in Redis. The
    /// planner silences what follows; poolside still reads every reply.
    fn client_reply(&mut self, argc: usize, mode: Option<&[u8]>, out: &mut BytesMut) {
        if argc != 3 {
            return wrong_arity(out, "client|reply");
        }
        let mode = mode.unwrap_or_default();
        if mode.eq_ignore_ascii_case(b"ON") {
            self.reply = ReplyMode::On;
            write_simple(out, "OK");
        } else if mode.eq_ignore_ascii_case(b"OFF") {
            self.reply = ReplyMode::Off;
        } else if mode.eq_ignore_ascii_case(b"SKIP") {
            // Under OFF, Redis ignores SKIP: replies stay off.
            if self.reply != ReplyMode::Off {
                self.reply = ReplyMode::Skip;
            }
        } else {
            write_error(out, "ERR syntax error");
        }
    }

    /// Checks credentials (see [`Credentials::check`]); a refusal is answered
    /// as Redis answers it. Returns whether the client is authenticated now.
    pub(super) fn auth(&mut self, user: Option<&[u8]>, pass: &[u8], out: &mut BytesMut) -> bool {
        match self.credentials.check(user, pass) {
            Verdict::Ok => {
                self.authenticated = true;
                write_simple(out, "OK");
                return true;
            }
            Verdict::WrongPass => {
                self.traffic.auth_failed();
                write_error(
                    out,
                    "WRONGPASS invalid username-password pair or user is disabled.",
                );
            }
            Verdict::NoPasswordConfigured => write_error(
                out,
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
        }
        false
    }

    pub(super) fn set_name(&mut self, name: &[u8], out: &mut BytesMut) -> bool {
        if !valid_attr(name) {
            write_error(
                out,
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
            return false;
        }
        self.name = (!name.is_empty()).then(|| name.to_vec());
        write_simple(out, "OK");
        true
    }

    /// The name as a bulk string, or the null of the client's protocol.
    fn write_name(&self, out: &mut BytesMut) {
        match (&self.name, self.answer_proto) {
            (None, 3) => out.extend_from_slice(b"_\r\n"),
            (name, _) => write_bulk(out, name.as_deref()),
        }
    }
}

/// What Redis lets `CLIENT LIST` show (a name, a library's name and
/// version): printable ASCII without spaces, every byte, as Redis 7.0
/// checks a name. (7.2's `validateClientAttr` stops at a NUL byte, so it
/// takes `a\0 b`; 7.0, the Redis the tests run, refuses it.)
pub(super) fn valid_attr(value: &[u8]) -> bool {
    value.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// HELLO never reaches [`ClientState::answer`]; should a future table entry
/// route it here, the client gets an error rather than a wrong reply.
fn unreachable_hello(out: &mut BytesMut) {
    write_error(out, "ERR poolside: HELLO was not planned");
}

/// `PING [message]` for a client that has not authenticated yet: answered
/// here, so it needs no upstream connection.
pub fn write_pong(out: &mut BytesMut, message: Option<&[u8]>) {
    match message {
        Some(m) => write_bulk(out, Some(m)),
        None => write_simple(out, "PONG"),
    }
}

pub(super) fn wrong_arity(out: &mut BytesMut, cmd: &str) {
    write_error(
        out,
        &format!("ERR wrong number of arguments for '{cmd}' command"),
    );
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_passwords() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
