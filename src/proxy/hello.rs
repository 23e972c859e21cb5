//! `HELLO [protover [AUTH user pass] [SETNAME name]]`. poolside checks the
//! version and the options in Redis' order and words, and answers AUTH and
//! SETNAME itself (they are the client's, not a pooled connection's). When
//! all is well the reply comes from Redis: poolside sends a bare
//! `HELLO [protover]` on the client's connection (switching its protocol),
//! and the backend puts the client's own id into Redis' reply.

use bytes::BytesMut;

use super::local::ClientState;
use crate::resp::{write_error, write_error_quoting, CommandScanner, Frame};

/// The protocol HELLO asks for (`Some(None)`: keep the current one), or
/// `None` after the refusal was written to `out`.
pub fn check(
    client: &mut ClientState,
    buf: &[u8],
    scanner: &CommandScanner,
    f: &Frame,
    out: &mut BytesMut,
) -> Option<Option<u8>> {
    let arg = |i: usize| scanner.arg(buf, f, i);
    let argc = f.argc();
    let mut proto = None;
    if argc >= 2 {
        let version = arg(1).and_then(|v| std::str::from_utf8(v).ok());
        match version.and_then(|v| v.parse::<i64>().ok()) {
            Some(v @ 2..=3) => proto = Some(v as u8),
            Some(_) => return refuse(out, "NOPROTO unsupported protocol version"),
            None => {
                return refuse(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                )
            }
        }
    }
    let (mut auth, mut name) = (None, None);
    let mut i = 2;
    while i < argc {
        let opt = arg(i).unwrap_or_default();
        let more = argc - 1 - i;
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            auth = Some((
                arg(i + 1).unwrap_or_default(),
                arg(i + 2).unwrap_or_default(),
            ));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            let n = arg(i + 1).unwrap_or_default();
            if !super::local::valid_attr(n) {
                return refuse(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            name = Some(n);
            i += 2;
        } else {
            write_error_quoting(out, &[b"ERR Syntax error in HELLO option '", opt, b"'"]);
            return None;
        }
    }
    if let Some((user, pass)) = auth {
        let mut reply = BytesMut::new();
        if !client.auth(Some(user), pass, &mut reply) {
            out.extend_from_slice(&reply);
            return None;
        }
    }
    if !client.authenticated {
        return refuse(
            out,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        let mut reply = BytesMut::new();
        client.set_name(name, &mut reply);
    }
    Some(proto)
}

fn refuse(out: &mut BytesMut, text: &str) -> Option<Option<u8>> {
    write_error(out, text);
    None
}
