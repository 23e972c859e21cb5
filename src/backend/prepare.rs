//! Connection state that must match the client's before its batch runs,
//! prepared in one place for every backend: the database today; the
//! protocol version (HELLO 2/3) is the next field of [`Wants`].

use bytes::BytesMut;

use crate::error::Error;
use crate::resp::{decimal, write_command};

/// What a client needs its upstream connection to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub db: u32,
}

/// Appends the commands that take a connection from `have` to `wants`, and
/// returns how many replies they produce (read and checked with [`check`]
/// before the batch's own replies).
pub fn write(have: Wants, wants: Wants, out: &mut BytesMut) -> usize {
    if have.db == wants.db {
        return 0;
    }
    let mut digits = [0; 20];
    let db = decimal(u64::from(wants.db), &mut digits);
    write_command(out, [&b"SELECT"[..], db].into_iter());
    1
}

/// One reply to a preparing command: anything but `+OK` fails the batch.
pub fn check(reply: &[u8]) -> Result<(), Error> {
    if reply.first() == Some(&b'+') {
        Ok(())
    } else {
        Err(Error::PrepareFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_only_when_the_database_differs() {
        let mut out = BytesMut::new();
        assert_eq!(write(Wants { db: 3 }, Wants { db: 3 }, &mut out), 0);
        assert!(out.is_empty());
        assert_eq!(write(Wants { db: 0 }, Wants { db: 15 }, &mut out), 1);
        assert_eq!(&out[..], b"*2\r\n$6\r\nSELECT\r\n$2\r\n15\r\n");
        assert!(check(b"+OK\r\n").is_ok());
        assert_eq!(
            check(b"-ERR DB index is out of range\r\n"),
            Err(Error::PrepareFailed)
        );
    }
}
