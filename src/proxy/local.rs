//! Commands poolside answers itself: AUTH, HELLO, QUIT, RESET, CLIENT SETNAME/GETNAME.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::auth::Credentials;
use crate::backend::{Pin, Wants};
use crate::command::Local;
use crate::resp::{write_bulk, write_error, write_simple, CommandScanner, Frame};
use crate::traffic::Traffic;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// What a client has told poolside about itself, and what its upstream
/// connection must match. Owned by the client's session.
pub struct ClientState {
    pub id: u64,
    /// The database (and, next, protocol) its batches run in.
    pub wants: Wants,
    /// Transaction, WATCH and session pins.
    pub pin: Pin,
    pub name: Option<Vec<u8>>,
    pub authenticated: bool,
    default_db: u32,
    credentials: Arc<Credentials>,
    traffic: Arc<Traffic>,
}

/// What the router must do after a local answer.
pub enum Answer {
    Done,
    Close,
    /// Connection state reset: drop any pinned connection.
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
            wants: Wants { db: default_db },
            pin: Pin::default(),
            name: None,
            authenticated: !credentials.required(),
            default_db,
            credentials,
            traffic,
        }
    }

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
                2 => self.auth(None, arg(1).unwrap_or_default(), out),
                3 => self.auth(arg(1), arg(2).unwrap_or_default(), out),
                _ => wrong_arity(out, "auth"),
            },
            Local::Hello => self.hello(argc, &arg, out),
            Local::Reset => {
                self.wants = Wants {
                    db: self.default_db,
                };
                self.pin = Pin::default();
                self.name = None;
                self.authenticated = !self.credentials.required();
                write_simple(out, "RESET");
                return Answer::Reset;
            }
            Local::ClientSetName => match arg(2) {
                Some(name) if argc == 3 => self.set_name(name, out),
                _ => wrong_arity(out, "client|setname"),
            },
            Local::ClientGetName if argc == 2 => write_bulk(out, self.name.as_deref()),
            Local::ClientGetName => wrong_arity(out, "client|getname"),
            Local::ClientSetInfo => {
                let attr = arg(2).map(|a| a.to_ascii_uppercase());
                match attr.as_deref() {
                    Some(b"LIB-NAME" | b"LIB-VER") if argc == 4 => write_simple(out, "OK"),
                    Some(_) if argc == 4 => write_error(out, "ERR Unrecognized option"),
                    _ => wrong_arity(out, "client|setinfo"),
                }
            }
        }
        Answer::Done
    }

    /// Checks credentials in constant time (see [`Credentials::check`]);
    /// a wrong password is answered as Redis does, and counted.
    fn auth(&mut self, user: Option<&[u8]>, pass: &[u8], out: &mut BytesMut) {
        if self.credentials.check(user, pass) {
            self.authenticated = true;
            write_simple(out, "OK");
        } else {
            self.traffic.auth_failed();
            write_error(
                out,
                "WRONGPASS invalid username-password pair or user is disabled.",
            );
        }
    }

    fn set_name(&mut self, name: &[u8], out: &mut BytesMut) {
        if name.iter().any(|b| *b <= b' ' || *b > b'~') {
            write_error(
                out,
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
        } else {
            self.name = (!name.is_empty()).then(|| name.to_vec());
            write_simple(out, "OK");
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`. poolside speaks RESP2
    /// to its clients; asking for 3 gets NOPROTO, as from a Redis without RESP3,
    /// and clients fall back to RESP2. Long because HELLO's options are parsed
    /// and refused in Redis' own order and words.
    fn hello<'a>(
        &mut self,
        argc: usize,
        arg: &dyn Fn(usize) -> Option<&'a [u8]>,
        out: &mut BytesMut,
    ) {
        if argc >= 2 {
            let version = arg(1).and_then(|v| std::str::from_utf8(v).ok());
            match version.and_then(|v| v.parse::<u32>().ok()) {
                Some(2) => {}
                Some(_) => {
                    write_error(out, "NOPROTO unsupported protocol version");
                    return;
                }
                None => {
                    write_error(
                        out,
                        "ERR Protocol version is not an integer or out of range",
                    );
                    return;
                }
            }
        }
        let mut i = 2;
        let mut new_name = None;
        while i < argc {
            let opt = arg(i).unwrap_or_default().to_ascii_uppercase();
            match opt.as_slice() {
                b"AUTH" if i + 2 < argc => {
                    let mut scratch = BytesMut::new();
                    self.auth(arg(i + 1), arg(i + 2).unwrap_or_default(), &mut scratch);
                    if scratch.first() == Some(&b'-') {
                        out.extend_from_slice(&scratch);
                        return;
                    }
                    i += 3;
                }
                b"SETNAME" if i + 1 < argc => {
                    new_name = arg(i + 1);
                    i += 2;
                }
                _ => {
                    write_error(out, "ERR Syntax error in HELLO option");
                    return;
                }
            }
        }
        if !self.authenticated {
            write_error(
                out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return;
        }
        if let Some(name) = new_name {
            let mut scratch = BytesMut::new();
            self.set_name(name, &mut scratch);
            if scratch.first() == Some(&b'-') {
                out.extend_from_slice(&scratch);
                return;
            }
        }
        out.put_slice(b"*14\r\n");
        write_bulk(out, Some(b"server"));
        write_bulk(out, Some(b"redis"));
        write_bulk(out, Some(b"version"));
        write_bulk(out, Some(env!("CARGO_PKG_VERSION").as_bytes()));
        write_bulk(out, Some(b"proto"));
        out.put_slice(b":2\r\n");
        write_bulk(out, Some(b"id"));
        out.put_slice(format!(":{}\r\n", self.id).as_bytes());
        write_bulk(out, Some(b"mode"));
        write_bulk(out, Some(b"standalone"));
        write_bulk(out, Some(b"role"));
        write_bulk(out, Some(b"master"));
        write_bulk(out, Some(b"modules"));
        out.put_slice(b"*0\r\n");
    }
}

/// `PING [message]` for a client that has not authenticated yet: answered
/// here, so it needs no upstream connection.
pub fn write_pong(out: &mut BytesMut, message: Option<&[u8]>) {
    match message {
        Some(m) => write_bulk(out, Some(m)),
        None => write_simple(out, "PONG"),
    }
}

fn wrong_arity(out: &mut BytesMut, cmd: &str) {
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
