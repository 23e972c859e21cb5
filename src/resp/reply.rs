//! Upstream replies (RESP2 and RESP3), and replies poolside builds itself.

use bytes::{BufMut, BytesMut};

use super::{find_crlf, parse_int, ProtocolError};

/// Finds where one reply ends. Aggregates are counted, not recursed into, so
/// nesting depth costs nothing and a half-received reply resumes at the
/// element where the last call stopped.
///
/// A bulk string is passed over as soon as its header is read: the scanner's
/// position may then lie past the end of the buffer, inside a body still
/// arriving. Every byte before that position belongs to the reply in
/// progress ([`committed`](Self::committed)), so a caller may forward or drop
/// those bytes before the reply is complete ([`consume`](Self::consume)):
/// a 50 MB value never has to be held whole.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    pos: usize,
    /// Elements still to read of the reply in progress.
    pending: u64,
    /// A reply is in progress (`pos` and `pending` describe it).
    active: bool,
}

impl ReplyScanner {
    /// End offset of the reply starting at `start`, `Ok(None)` if incomplete.
    /// After `Ok(Some(end))` the scanner is ready for the reply at `end`.
    pub fn scan(&mut self, buf: &[u8], start: usize) -> Result<Option<usize>, ProtocolError> {
        if !self.active {
            self.pos = start;
            self.pending = 1;
            self.active = true;
        }
        loop {
            if self.pos > buf.len() {
                // Inside a bulk body that has not all arrived.
                return Ok(None);
            }
            if self.pending == 0 {
                self.active = false;
                return Ok(Some(self.pos));
            }
            let pos = self.pos;
            let Some(&kind) = buf.get(pos) else {
                return Ok(None);
            };
            let Some(eol) = find_crlf(buf, pos + 1) else {
                return Ok(None);
            };
            let next = match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => eol + 2,
                b'$' | b'!' | b'=' => {
                    let len = parse_int(&buf[pos + 1..eol]).ok_or(ProtocolError::InvalidInteger)?;
                    if len < 0 {
                        eol + 2
                    } else {
                        eol + 2 + len as usize + 2
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_int(&buf[pos + 1..eol]).ok_or(ProtocolError::InvalidInteger)?;
                    let n = n.max(0) as u64;
                    self.pending += match kind {
                        b'%' => 2 * n,
                        // An attribute map precedes the value it describes.
                        b'|' => 2 * n + 1,
                        _ => n,
                    };
                    eol + 2
                }
                other => return Err(ProtocolError::UnknownReplyType(other)),
            };
            self.pos = next;
            self.pending -= 1;
        }
    }

    /// A reply is half-scanned.
    pub fn in_progress(&self) -> bool {
        self.active
    }

    /// How many bytes of `buf` (from 0) surely belong to replies already
    /// scanned or to the one in progress; `None` when no reply is in
    /// progress.
    pub fn committed(&self, buf_len: usize) -> Option<usize> {
        self.active.then(|| self.pos.min(buf_len))
    }

    /// Forgets a reply in progress (its connection is being discarded).
    pub fn reset(&mut self) {
        self.pending = 0;
        self.pos = 0;
        self.active = false;
    }

    /// Rebases a reply in progress after the caller dropped `n` leading bytes
    /// (at most [`committed`](Self::committed)).
    pub fn consume(&mut self, n: usize) {
        if self.active {
            self.pos -= n;
        }
    }
}

pub fn write_simple(out: &mut BytesMut, s: &str) {
    out.reserve(s.len() + 3);
    out.put_u8(b'+');
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

/// An error reply; `msg` starts with its code (`ERR ...`, `WRONGPASS ...`).
/// Line breaks are replaced so a message can never break the framing.
pub fn write_error(out: &mut BytesMut, msg: &str) {
    out.reserve(msg.len() + 3);
    out.put_u8(b'-');
    for b in msg.bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

/// An error reply made of `parts` (the first starts with its code), for a
/// message that quotes what the client sent as Redis' `%s` prints it: its
/// bytes as they are, up to a NUL. Line breaks are replaced, as in
/// [`write_error`] (Redis' `addReplyErrorFormat` does the same).
pub fn write_error_quoting(out: &mut BytesMut, parts: &[&[u8]]) {
    out.put_u8(b'-');
    for part in parts {
        let part = part.split(|b| *b == 0).next().unwrap_or_default();
        for b in part {
            out.put_u8(if *b == b'\r' || *b == b'\n' { b' ' } else { *b });
        }
    }
    out.put_slice(b"\r\n");
}

pub fn write_bulk(out: &mut BytesMut, data: Option<&[u8]>) {
    match data {
        None => out.put_slice(b"$-1\r\n"),
        Some(d) => {
            out.reserve(d.len() + 16);
            write_header(out, b'$', d.len());
            out.put_slice(d);
            out.put_slice(b"\r\n");
        }
    }
}

/// Encodes a command as a RESP array of bulk strings: the one encoder for
/// commands poolside sends itself (AUTH, SELECT, PING) and for inline
/// commands it re-sends as arrays.
pub fn write_command<'a>(out: &mut BytesMut, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    write_header(out, b'*', args.len());
    for arg in args {
        write_header(out, b'$', arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// `<kind><n>\r\n`, the decimal formatted on the stack.
fn write_header(out: &mut BytesMut, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    out.put_u8(kind);
    out.put_slice(decimal(n as u64, &mut digits));
    out.put_slice(b"\r\n");
}

/// `n` in decimal, formatted into `buf` without allocating.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(input: &[u8]) -> Vec<usize> {
        let mut s = ReplyScanner::default();
        let mut at = 0;
        let mut out = Vec::new();
        while let Some(end) = s.scan(input, at).unwrap() {
            out.push(end);
            at = end;
        }
        out
    }

    #[test]
    fn scans_resp2_and_resp3_replies() {
        let input = b"+OK\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n%1\r\n+k\r\n,1.5\r\n|1\r\n+a\r\n+b\r\n+v\r\n*-1\r\n";
        assert_eq!(ends(input), vec![5, 10, 29, 43, 59, 64]);
    }

    #[test]
    fn resumes_at_every_split_point() {
        let input = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n:2\r\n-ERR x\r\n+OK\r\n";
        for cut in 0..input.len() {
            let mut s = ReplyScanner::default();
            let first = s.scan(&input[..cut], 0).unwrap();
            let end = first.or_else(|| s.scan(input, 0).unwrap()).unwrap();
            assert_eq!(end, 35, "split at {cut}");
        }
    }

    /// A caller that forwards committed bytes as they arrive, in any chunk
    /// size, forwards exactly the reply: every byte once, the end found.
    #[test]
    fn committed_bytes_can_be_forwarded_before_the_reply_is_complete() {
        let mut input = b"*3\r\n$5\r\nhello\r\n$3000\r\n".to_vec();
        input.extend_from_slice(&[b'v'; 3000]);
        input.extend_from_slice(b"\r\n%1\r\n+k\r\n:7\r\n+NEXT\r\n");
        let reply_len = input.len() - b"+NEXT\r\n".len();
        for chunk in [1, 2, 7, 100, 4096] {
            let mut s = ReplyScanner::default();
            let (mut buf, mut forwarded) = (Vec::new(), Vec::new());
            let mut fed = 0;
            let end = loop {
                if let Some(end) = s.scan(&buf, 0).unwrap() {
                    break end;
                }
                let n = s.committed(buf.len()).unwrap();
                forwarded.extend(buf.drain(..n));
                s.consume(n);
                let next = (fed + chunk).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
            };
            forwarded.extend_from_slice(&buf[..end]);
            assert_eq!(forwarded, &input[..reply_len], "chunk {chunk}");
            assert!(!s.in_progress());
        }
    }

    #[test]
    fn rejects_unknown_types() {
        let mut s = ReplyScanner::default();
        assert_eq!(
            s.scan(b"?x\r\n", 0),
            Err(ProtocolError::UnknownReplyType(b'?'))
        );
    }

    #[test]
    fn encodes_commands_and_bulks() {
        let mut out = BytesMut::new();
        write_command(&mut out, [&b"SELECT"[..], b"10"].into_iter());
        write_bulk(&mut out, Some(b""));
        assert_eq!(&out[..], b"*2\r\n$6\r\nSELECT\r\n$2\r\n10\r\n$0\r\n\r\n");
    }

    #[test]
    fn error_replies_cannot_break_framing() {
        let mut out = BytesMut::new();
        write_error(&mut out, "ERR a\r\nb");
        assert_eq!(&out[..], b"-ERR a  b\r\n");
    }
}
