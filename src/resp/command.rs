//! Client commands: RESP arrays of bulk strings, or inline lines.

use std::ops::Range;

use bytes::BytesMut;

use super::{find_crlf, parse_int, write_command, Limits, ProtocolError};

/// Inline commands longer than this are refused, as Redis does (64 KiB).
const MAX_INLINE: usize = 64 * 1024;
/// A length line longer than this cannot be valid.
const MAX_HEADER: usize = 32;

/// One complete command inside the read buffer: `start..end` are its bytes,
/// `args` indexes [`CommandScanner::args`]. An empty frame (`*0`, a blank
/// inline line) has no arguments and is not forwarded: Redis answers nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
    pub args: (u32, u32),
}

impl Frame {
    pub fn is_empty(&self) -> bool {
        self.args.0 == self.args.1
    }
    pub fn argc(&self) -> usize {
        (self.args.1 - self.args.0) as usize
    }
}

/// Scans commands out of a client's read buffer, resuming an incomplete frame
/// where the last call stopped instead of starting it over.
#[derive(Debug)]
pub struct CommandScanner {
    limits: Limits,
    /// Argument byte ranges of every frame scanned since the last `consume`.
    pub args: Vec<Range<usize>>,
    frame_start: usize,
    pos: usize,
    /// Bulk strings still expected in the frame in progress; `None` before its header.
    remaining: Option<usize>,
    frame_first_arg: usize,
}

impl CommandScanner {
    pub fn new(limits: Limits) -> CommandScanner {
        CommandScanner {
            limits,
            args: Vec::with_capacity(64),
            frame_start: 0,
            pos: 0,
            remaining: None,
            frame_first_arg: 0,
        }
    }

    /// The argument `i` of `frame` as bytes of `buf`.
    #[inline]
    pub fn arg<'b>(&self, buf: &'b [u8], frame: &Frame, i: usize) -> Option<&'b [u8]> {
        let idx = frame.args.0 as usize + i;
        if idx >= frame.args.1 as usize {
            return None;
        }
        buf.get(self.args[idx].clone())
    }

    /// The next complete frame, `Ok(None)` when the buffer holds only part of one.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        if self.pos >= buf.len() {
            return Ok(None);
        }
        if self.remaining.is_none() {
            if buf[self.frame_start] != b'*' {
                return self.scan_inline(buf);
            }
            let Some(eol) = find_crlf(buf, self.frame_start + 1) else {
                if buf.len() - self.frame_start > MAX_HEADER {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                return Ok(None);
            };
            let n = parse_int(&buf[self.frame_start + 1..eol])
                .ok_or(ProtocolError::InvalidMultibulkLength)?;
            if n > self.limits.max_args as i64 {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            self.pos = eol + 2;
            self.remaining = Some(n.max(0) as usize);
        }
        while let Some(left) = self.remaining.filter(|n| *n > 0) {
            if self.pos >= buf.len() {
                return Ok(None);
            }
            if buf[self.pos] != b'$' {
                return Err(ProtocolError::ExpectedBulk(buf[self.pos]));
            }
            let Some(eol) = find_crlf(buf, self.pos + 1) else {
                if buf.len() - self.pos > MAX_HEADER {
                    return Err(ProtocolError::InvalidBulkLength);
                }
                return Ok(None);
            };
            let len = parse_int(&buf[self.pos + 1..eol])
                .filter(|n| *n >= 0)
                .ok_or(ProtocolError::InvalidBulkLength)? as usize;
            let data = eol + 2;
            let end = data + len + 2;
            if end - self.frame_start > self.limits.max_frame_bytes {
                return Err(ProtocolError::FrameTooLarge);
            }
            if end > buf.len() {
                return Ok(None);
            }
            self.args.push(data..data + len);
            self.pos = end;
            self.remaining = Some(left - 1);
        }
        Ok(Some(self.finish_frame(self.pos)))
    }

    fn scan_inline(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let Some(nl) = memchr::memchr(b'\n', &buf[self.frame_start..]) else {
            if buf.len() - self.frame_start > MAX_INLINE {
                return Err(ProtocolError::InlineTooLarge);
            }
            self.pos = buf.len();
            return Ok(None);
        };
        let end = self.frame_start + nl + 1;
        let mut line_end = end - 1;
        if line_end > self.frame_start && buf[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let mut i = self.frame_start;
        while i < line_end {
            while i < line_end && buf[i].is_ascii_whitespace() {
                i += 1;
            }
            let s = i;
            while i < line_end && !buf[i].is_ascii_whitespace() {
                i += 1;
            }
            if i > s {
                self.args.push(s..i);
            }
        }
        Ok(Some(self.finish_frame(end)))
    }

    fn finish_frame(&mut self, end: usize) -> Frame {
        let frame = Frame {
            start: self.frame_start,
            end,
            args: (self.frame_first_arg as u32, self.args.len() as u32),
        };
        self.frame_start = end;
        self.pos = end;
        self.remaining = None;
        self.frame_first_arg = self.args.len();
        frame
    }

    /// Appends `frame` as Redis must receive it: a RESP array as it came; an
    /// inline command re-encoded as an array of the arguments read here.
    /// Redis splits inline lines its own way (quotes, `\x` escapes, `\v` as a
    /// separator), so forwarding the line itself could run another command
    /// than the one classified and checked (`"FLUSHALL"` past a deny-list),
    /// or none at all (`\v\n`), leaving a reply awaited forever.
    pub fn write_frame(&self, buf: &[u8], frame: &Frame, out: &mut BytesMut) {
        if buf.get(frame.start) == Some(&b'*') {
            out.extend_from_slice(&buf[frame.start..frame.end]);
            return;
        }
        let args = (0..frame.argc()).map(|i| self.arg(buf, frame, i).unwrap_or_default());
        write_command(out, args);
    }

    /// Forgets the first `n` buffer bytes (all frames before them are done) so
    /// positions stay relative to the buffer after the caller drops those bytes.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.frame_start);
        self.args.drain(..self.frame_first_arg);
        for r in &mut self.args {
            *r = r.start - n..r.end - n;
        }
        self.frame_first_arg = 0;
        self.frame_start -= n;
        self.pos -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut s = CommandScanner::new(Limits::default());
        let mut out = Vec::new();
        while let Some(f) = s.next_frame(input)? {
            out.push(
                (0..f.argc())
                    .map(|i| s.arg(input, &f, i).unwrap().to_vec())
                    .collect(),
            );
        }
        Ok(out)
    }

    #[test]
    fn scans_arrays_and_inline() {
        let frames =
            scan_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  set a  b \n*0\r\n").unwrap();
        assert_eq!(frames[0], vec![b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(frames[1], vec![b"PING".to_vec()]);
        assert_eq!(
            frames[2],
            vec![b"set".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert!(frames[3].is_empty());
    }

    #[test]
    fn resumes_at_every_split_point() {
        let input = b"*3\r\n$3\r\nSET\r\n$2\r\nab\r\n$5\r\nhello\r\n*1\r\n$4\r\nPING\r\n";
        let whole = scan_all(input).unwrap();
        for cut in 0..input.len() {
            let mut s = CommandScanner::new(Limits::default());
            let mut got = Vec::new();
            let mut collect = |s: &mut CommandScanner, buf: &[u8]| {
                while let Some(f) = s.next_frame(buf).unwrap() {
                    got.push(
                        (0..f.argc())
                            .map(|i| s.arg(buf, &f, i).unwrap().to_vec())
                            .collect::<Vec<_>>(),
                    );
                }
            };
            collect(&mut s, &input[..cut]);
            collect(&mut s, &input[..]);
            assert_eq!(got, whole, "split at {cut}");
        }
    }

    #[test]
    fn inline_commands_are_forwarded_as_arrays() {
        let input = b"*1\r\n$4\r\nPING\r\n\"FLUSHALL\"  x\x0b\r\n";
        let mut s = CommandScanner::new(Limits::default());
        let mut out = BytesMut::new();
        while let Some(f) = s.next_frame(input).unwrap() {
            s.write_frame(input, &f, &mut out);
        }
        assert_eq!(
            &out[..],
            b"*1\r\n$4\r\nPING\r\n*2\r\n$10\r\n\"FLUSHALL\"\r\n$2\r\nx\x0b\r\n"
        );
    }

    #[test]
    fn consume_rebases_partial_frame() {
        let input = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\n";
        let mut s = CommandScanner::new(Limits::default());
        let f = s.next_frame(input).unwrap().unwrap();
        assert!(s.next_frame(input).unwrap().is_none());
        s.consume(f.end);
        let mut rest = input[f.end..].to_vec();
        rest.extend_from_slice(b"k\r\n");
        let g = s.next_frame(&rest).unwrap().unwrap();
        assert_eq!(s.arg(&rest, &g, 0), Some(&b"GET"[..]));
        assert_eq!(s.arg(&rest, &g, 1), Some(&b"k"[..]));
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(
            scan_all(b"*abc\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            scan_all(b"*1\r\n:5\r\n"),
            Err(ProtocolError::ExpectedBulk(b':'))
        );
        assert_eq!(
            scan_all(b"*1\r\n$-5\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        let limits = Limits {
            max_frame_bytes: 1024,
            max_args: 16,
        };
        let mut s = CommandScanner::new(limits);
        assert_eq!(
            s.next_frame(b"*1\r\n$4096\r\n"),
            Err(ProtocolError::FrameTooLarge)
        );
        let mut s = CommandScanner::new(limits);
        assert_eq!(
            s.next_frame(b"*17\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }
}
