//! Connection state that must match the client's before its batch runs,
//! prepared in one place for every backend: the database (SELECT) and the
//! protocol version (HELLO 2/3). A connection switched for one client is
//! switched back, or on, for the next: replies of the two protocols never
//! mix, because each batch's replies follow its own preparing commands.

use bytes::BytesMut;

use crate::error::Error;
use crate::pool::UpstreamConn;
use crate::resp::{decimal, write_command};

/// What a client needs its upstream connection to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub db: u32,
    /// RESP version: 2 or 3.
    pub proto: u8,
}

impl Wants {
    /// What `conn` is in now.
    pub fn of(conn: &UpstreamConn) -> Wants {
        Wants {
            db: conn.db(),
            proto: conn.proto(),
        }
    }

    /// The preparing commands were answered: `conn` is in this state now.
    pub fn apply_to(self, conn: &mut UpstreamConn) {
        conn.selected(self.db);
        conn.switched(self.proto);
    }
}

/// Appends the commands that take a connection from `have` to `wants`, and
/// returns how many replies they produce (read and checked with [`check`]
/// before the batch's own replies).
pub fn write(have: Wants, wants: Wants, out: &mut BytesMut) -> usize {
    let mut n = 0;
    let mut digits = [0; 20];
    if have.proto != wants.proto {
        let proto = decimal(u64::from(wants.proto), &mut digits);
        write_command(out, [&b"HELLO"[..], proto].into_iter());
        n += 1;
    }
    if have.db != wants.db {
        let db = decimal(u64::from(wants.db), &mut digits);
        write_command(out, [&b"SELECT"[..], db].into_iter());
        n += 1;
    }
    n
}

/// One reply to a preparing command (`+OK` to SELECT, a map or array to
/// HELLO): an error reply fails the batch.
pub fn check(reply: &[u8]) -> Result<(), Error> {
    match reply.first() {
        Some(b'-' | b'!') | None => Err(Error::PrepareFailed),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_only_what_differs() {
        let mut out = BytesMut::new();
        let at = |db, proto| Wants { db, proto };
        assert_eq!(write(at(3, 2), at(3, 2), &mut out), 0);
        assert!(out.is_empty());
        assert_eq!(write(at(0, 2), at(15, 2), &mut out), 1);
        assert_eq!(&out[..], b"*2\r\n$6\r\nSELECT\r\n$2\r\n15\r\n");
        out.clear();
        assert_eq!(write(at(1, 3), at(0, 2), &mut out), 2);
        assert_eq!(
            &out[..],
            b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n"
        );
        assert!(check(b"%7\r\n").is_ok());
        assert!(check(b"+OK\r\n").is_ok());
        assert_eq!(
            check(b"-ERR DB index is out of range\r\n"),
            Err(Error::PrepareFailed)
        );
    }
}
