//! Client commands: RESP arrays of bulk strings, or inline lines.

use std::ops::Range;

use bytes::BytesMut;

use super::{write_command, Limits, ProtocolError};

/// Redis' `PROTO_INLINE_MAX_SIZE` (64 KiB): the longest inline command, and
/// the most bytes a length line (`*<n>`, `$<n>`) may take before its `\r`.
pub(crate) const MAX_INLINE: usize = 64 * 1024;
/// Redis' default `proto-max-bulk-len` (512 MiB): a longer bulk string is an
/// "invalid bulk length" to Redis, whatever poolside's own frame limit.
pub(crate) const MAX_BULK_LEN: i64 = 512 << 20;
/// The largest multibulk length Redis 7 accepts (`INT_MAX`).
pub(crate) const MAX_MULTIBULK_LEN: i64 = i32::MAX as i64;

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
            // Empty until the first frame: an idle client should cost little.
            args: Vec::new(),
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
    ///
    /// Input is read as Redis 7 reads it (`processMultibulkBuffer` and
    /// `processInlineBuffer` in its networking.c), so that a frame poolside
    /// forwards as it came is framed the same way upstream, and malformed
    /// input gets Redis' own error: a length line ends at its first `\r`, and
    /// the byte after that is skipped unread; Redis searches with `strchr`, so
    /// a NUL byte hides what follows it and the line waits for more input (up
    /// to [`MAX_INLINE`]); lengths are strict decimals (no `+`, no leading
    /// zero, no `-0`); the `$` is checked once its whole length line is in.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        if self.pos >= buf.len() {
            return Ok(None);
        }
        if self.remaining.is_none() {
            if buf[self.frame_start] != b'*' {
                return self.scan_inline(buf);
            }
            let too_big = ProtocolError::TooBigMultibulkCount;
            let Some(cr) = length_line(buf, self.frame_start, too_big)? else {
                return Ok(None);
            };
            let n = redis_int(&buf[self.frame_start + 1..cr])
                .filter(|n| *n <= MAX_MULTIBULK_LEN)
                .ok_or(ProtocolError::InvalidMultibulkLength)?;
            if n > self.limits.max_args as i64 {
                return Err(ProtocolError::TooManyArgs(self.limits.max_args));
            }
            self.pos = cr + 2;
            self.remaining = Some(n.max(0) as usize);
        }
        while let Some(left) = self.remaining.filter(|n| *n > 0) {
            if self.pos >= buf.len() {
                return Ok(None);
            }
            let Some(cr) = length_line(buf, self.pos, ProtocolError::TooBigBulkCount)? else {
                return Ok(None);
            };
            if buf[self.pos] != b'$' {
                return Err(ProtocolError::ExpectedBulk(buf[self.pos]));
            }
            let len = redis_int(&buf[self.pos + 1..cr])
                .filter(|n| (0..=MAX_BULK_LEN).contains(n))
                .ok_or(ProtocolError::InvalidBulkLength)? as usize;
            // Like Redis, the two bytes after the data are skipped unread.
            let data = cr + 2;
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

    /// An inline command: a line ending at the first `\n` (a `\r` before it
    /// is dropped), found as Redis finds it (a NUL byte before it hides it).
    /// A line Redis' `sdssplitargs` refuses (unbalanced quotes) is refused
    /// with Redis' error; the arguments are split at whitespace all the same
    /// (see [`CommandScanner::write_frame`] for why not as Redis splits them).
    fn scan_inline(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let start = self.frame_start;
        let nl = match memchr::memchr2(b'\n', 0, &buf[start..]) {
            Some(i) if buf[start + i] == b'\n' => start + i,
            _ => {
                if buf.len() - start > MAX_INLINE {
                    return Err(ProtocolError::InlineTooLarge);
                }
                self.pos = buf.len();
                return Ok(None);
            }
        };
        let end = nl + 1;
        let mut line_end = nl;
        if line_end > start && buf[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        if !quotes_balanced(&buf[start..line_end]) {
            return Err(ProtocolError::UnbalancedQuotes);
        }
        let mut i = start;
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

/// The `\r` ending the length line (`*<n>`, `$<n>`) at `start`, searched as
/// Redis' `strchr` searches: a NUL byte ends the search unanswered, as when
/// the line has not arrived yet. `Ok(None)` until that `\r` and the byte after
/// it are buffered; `too_big` once more than [`MAX_INLINE`] bytes from
/// `start` have no `\r` (Redis' "too big (m)bulk count string").
fn length_line(
    buf: &[u8],
    start: usize,
    too_big: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    match memchr::memchr2(b'\r', 0, &buf[start..]) {
        Some(i) if buf[start + i] == b'\r' => Ok((start + i + 1 < buf.len()).then_some(start + i)),
        _ if buf.len() - start > MAX_INLINE => Err(too_big),
        _ => Ok(None),
    }
}

/// A length as Redis' `string2ll` reads it: an optional `-`, then `0` alone
/// or digits not starting with `0`, within `i64`. (`+1`, `01`, `-0` and
/// the empty string are not numbers to Redis.)
fn redis_int(digits: &[u8]) -> Option<i64> {
    let (negative, unsigned) = match digits.strip_prefix(b"-") {
        Some(unsigned) => (true, unsigned),
        None => (false, digits),
    };
    match unsigned {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    // Accumulated on the number's own side of 0, so i64::MIN is read too;
    // the checked steps catch the overflow. (Every frame's lengths pass
    // here: no UTF-8 check and no second pass.)
    let mut n: i64 = 0;
    for &d in unsigned {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(digit)?
        } else {
            n.checked_add(digit)?
        };
    }
    Some(n)
}

/// C's `isspace` in the C locale.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Whether Redis' `sdssplitargs` (sds.c) accepts `line`, an inline command
/// without its line ending: every quoted part closed, each closing quote
/// followed by a space or the end of the line. A quote anywhere in a word
/// opens a quoted part; inside `"..."`, `\` escapes the next byte and
/// `\xHH` is one byte; inside `'...'`, only `\'` is an escape. A
/// translation of that loop, with the end of `line` as its NUL.
fn quotes_balanced(line: &[u8]) -> bool {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut i = 0;
    loop {
        while at(i) != 0 && is_c_space(at(i)) {
            i += 1;
        }
        if at(i) == 0 {
            return true;
        }
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(i);
            let mut done = false;
            if in_double {
                if c == b'\\'
                    && at(i + 1) == b'x'
                    && at(i + 2).is_ascii_hexdigit()
                    && at(i + 3).is_ascii_hexdigit()
                {
                    i += 3;
                } else if c == b'\\' && at(i + 1) != 0 {
                    i += 1;
                } else if c == b'"' {
                    if at(i + 1) != 0 && !is_c_space(at(i + 1)) {
                        return false;
                    }
                    done = true;
                } else if c == 0 {
                    return false;
                }
            } else if in_single {
                if c == b'\\' && at(i + 1) == b'\'' {
                    i += 1;
                } else if c == b'\'' {
                    if at(i + 1) != 0 && !is_c_space(at(i + 1)) {
                        return false;
                    }
                    done = true;
                } else if c == 0 {
                    return false;
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => {}
                }
            }
            if at(i) != 0 {
                i += 1;
            }
            if done {
                break;
            }
        }
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
            Err(ProtocolError::TooManyArgs(16))
        );
    }

    /// Each input with the error Redis 7.0.15 answers it with (checked
    /// against a redis-server; tests/bad_input.rs compares the replies).
    #[test]
    fn malformed_input_gets_redis_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"*x\r\n", "invalid multibulk length"),
            (b"*\r\n", "invalid multibulk length"),
            (b"*01\r\n", "invalid multibulk length"),
            (b"*+1\r\n", "invalid multibulk length"),
            (b"*-0\r\n", "invalid multibulk length"),
            (b"*2147483648\r\n", "invalid multibulk length"),
            (b"*99999999999999999999\r\n", "invalid multibulk length"),
            (b"*1\r\n$x\r\n", "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$-0\r\n", "invalid bulk length"),
            (b"*1\r\n$04\r\n", "invalid bulk length"),
            (b"*1\r\n$536870913\r\n", "invalid bulk length"),
            (b"*1\r\nfoo\r\n", "expected '$', got 'f'"),
            (b"*1\r\n*1\r\n$4\r\nPING\r\n", "expected '$', got '*'"),
            (b"*1\r\n\n$4\r\n", "expected '$', got ' '"),
            (b"*1\r\n\r\n", "expected '$', got ' '"),
            (b"*1\r\n\t\r\n", "expected '$', got '\t'"),
            (b"*1\r\n\xff\r\n", "expected '$', got '\\xff'"),
            (b"SET \"a b\r\n", "unbalanced quotes in request"),
            (b"PING\r\nSET 'a b\r\n", "unbalanced quotes in request"),
        ];
        for (input, message) in cases {
            let got = scan_all(input).map_err(|e| e.message());
            assert_eq!(got, Err(message.to_string()), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn lengths_are_read_as_redis_reads_them() {
        for (digits, n) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("-1", Some(-1)),
            ("1234567890", Some(1234567890)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("00", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1x", None),
        ] {
            assert_eq!(redis_int(digits.as_bytes()), n, "{digits:?}");
        }
        // Zero and negative counts are an empty command, answered by nothing.
        let empty: Vec<Vec<u8>> = vec![];
        assert_eq!(
            scan_all(b"*0\r\n*-5\r\n").unwrap(),
            vec![empty.clone(), empty]
        );
    }

    #[test]
    fn a_length_line_ends_at_its_first_cr_as_in_redis() {
        // Redis skips the byte after the `\r` unread, and the two after the
        // data: these are PINGs to it, so they are to poolside.
        for input in [
            &b"*1\rx$4\r\nPING\r\n"[..],
            b"*1\r\n$4\rxPING\r\n",
            b"*1\r\n$4\r\nPINGxx",
        ] {
            let frames = scan_all(input).unwrap();
            assert_eq!(
                frames,
                vec![vec![b"PING".to_vec()]],
                "{}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn a_nul_byte_hides_the_line_end_as_in_redis() {
        // Redis' strchr stops at the NUL: it waits for more, then refuses
        // the line as too long.
        for (input, too_big) in [
            (&b"*1\x00\r\n"[..], ProtocolError::TooBigMultibulkCount),
            (b"*1\r\n$4\x00\r\nPING\r\n", ProtocolError::TooBigBulkCount),
            (b"*1\r\n\x00\r\n", ProtocolError::TooBigBulkCount),
            (b"PI\x00NG\r\n", ProtocolError::InlineTooLarge),
        ] {
            assert_eq!(scan_all(input), Ok(vec![]), "{}", input.escape_ascii());
            let mut long = input.to_vec();
            long.resize(MAX_INLINE + 8, b'x');
            assert_eq!(scan_all(&long), Err(too_big), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn lines_over_64_kib_without_their_end_are_refused_as_in_redis() {
        for (prefix, too_big) in [
            (&b"*"[..], ProtocolError::TooBigMultibulkCount),
            (b"*1\r\n$", ProtocolError::TooBigBulkCount),
            (b"", ProtocolError::InlineTooLarge),
        ] {
            let offset = if prefix.len() > 1 { 4 } else { 0 };
            let mut input = prefix.to_vec();
            input.resize(offset + MAX_INLINE, b'1');
            assert_eq!(scan_all(&input), Ok(vec![]), "{too_big:?} at 64 KiB");
            input.push(b'1');
            assert_eq!(scan_all(&input), Err(too_big), "{too_big:?} past 64 KiB");
        }
        // With its `\r` in, an over-long count is just not a number.
        let mut input = b"*".to_vec();
        input.resize(MAX_INLINE + 8, b'1');
        input.extend_from_slice(b"\r\n");
        assert_eq!(scan_all(&input), Err(ProtocolError::InvalidMultibulkLength));
    }

    #[test]
    fn quotes_are_checked_as_redis_splits_inline_commands() {
        for line in [
            &b""[..],
            b"   ",
            b"PING",
            b"SET k v",
            b"SET \"a b\" c",
            b"SET 'a b' c",
            b"SET \"a\\\" b\"",
            b"SET \"\\x41\"",
            b"SET 'it\\'s'",
            b"SET a\"b c\"",
            b"SET \"a\"\x0b",
            b"\"FLUSHALL\"",
            b"\x0b",
        ] {
            assert!(quotes_balanced(line), "{}", line.escape_ascii());
        }
        for line in [
            &b"SET \"a b"[..],
            b"SET 'a b",
            b"SET \"a\"b c",
            b"SET 'a'b",
            b"SET a\"b c",
            b"SET \"a\\\" b",
            b"SET 'a\\'",
            b"SET \"a\\",
            b"\"",
            b"'",
        ] {
            assert!(!quotes_balanced(line), "{}", line.escape_ascii());
        }
    }
}
