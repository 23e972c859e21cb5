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

/// Flags an argument range whose bytes are in [`CommandScanner`]'s decoded
/// inline arguments, not in the client's buffer.
const DECODED: usize = 1 << (usize::BITS - 1);

/// Scans commands out of a client's read buffer, resuming an incomplete frame
/// where the last call stopped instead of starting it over.
#[derive(Debug)]
pub struct CommandScanner {
    limits: Limits,
    /// Argument byte ranges of every frame scanned since the last `consume`:
    /// in the client's buffer, or (flagged [`DECODED`]) in `decoded`.
    pub args: Vec<Range<usize>>,
    /// Inline arguments Redis unquotes (`"a b"`, `\x41`), as Redis reads
    /// them: not bytes of the client's buffer. Empty (unallocated) unless
    /// a client sends such a line.
    decoded: Vec<u8>,
    frame_start: usize,
    pos: usize,
    /// Bulk strings still expected in the frame in progress (at most
    /// `MAX_MULTIBULK_LEN`, a `u32`); `None` before its header.
    remaining: Option<u32>,
    frame_first_arg: usize,
}

impl CommandScanner {
    pub fn new(limits: Limits) -> CommandScanner {
        CommandScanner {
            limits,
            // Empty until the first frame: an idle client should cost little.
            args: Vec::new(),
            decoded: Vec::new(),
            frame_start: 0,
            pos: 0,
            remaining: None,
            frame_first_arg: 0,
        }
    }

    /// The argument `i` of `frame`: bytes of `buf`, or of an inline
    /// argument as Redis unquoted it.
    #[inline]
    pub fn arg<'a>(&'a self, buf: &'a [u8], frame: &Frame, i: usize) -> Option<&'a [u8]> {
        let idx = frame.args.0 as usize + i;
        if idx >= frame.args.1 as usize {
            return None;
        }
        let r = self.args[idx].clone();
        if r.start & DECODED != 0 {
            return self.decoded.get(r.start & !DECODED..r.end & !DECODED);
        }
        buf.get(r)
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
            self.remaining = Some(n.max(0) as u32);
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
    /// is dropped), found as Redis finds it (a NUL byte before it hides it),
    /// and split into arguments as Redis' `sdssplitargs` splits it (quotes,
    /// escapes); a line it refuses (unbalanced quotes) is refused with
    /// Redis' error. The arguments are what poolside classifies, checks and
    /// forwards (re-encoded as an array, see [`CommandScanner::write_frame`]).
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
        let first = self.args.len();
        if self.split_inline(buf, start, line_end).is_err() {
            self.args.truncate(first);
            return Err(ProtocolError::UnbalancedQuotes);
        }
        Ok(Some(self.finish_frame(end)))
    }

    /// Redis' `sdssplitargs` (sds.c) over `buf[start..end]`, with `end` as
    /// its NUL (the line holds none: the search for `\n` stopped at any).
    /// Between arguments C's `isspace` is skipped; an unquoted run ends at a
    /// space, `\t`, `\r` or `\n` (so `\v` and `\f` belong to it); a quote
    /// anywhere in a word opens a quoted part, which must close and be
    /// followed by a space or the end. Inside `"..."`, `\xHH` is one byte,
    /// `\n \r \t \b \a` are control bytes and `\` escapes any other;
    /// inside `'...'` only `\'` is an escape. An argument without quotes is
    /// a range of `buf`; one with quotes is decoded into `decoded`.
    fn split_inline(&mut self, buf: &[u8], start: usize, end: usize) -> Result<(), ()> {
        let at = |i: usize| if i < end { buf[i] } else { 0 };
        let mut i = start;
        loop {
            while at(i) != 0 && is_c_space(at(i)) {
                i += 1;
            }
            if at(i) == 0 {
                return Ok(());
            }
            let word = i;
            // Where the argument's decoded bytes start, once it has a quote.
            let mut decoded_from: Option<usize> = None;
            // The quote the argument is inside, if any.
            let mut quote: Option<u8> = None;
            loop {
                let c = at(i);
                // The byte the argument gains, if any.
                let mut byte = None;
                let mut done = false;
                match quote {
                    Some(q) if c == b'\\' => match (q, at(i + 1)) {
                        (b'"', b'x') if is_hex(at(i + 2)) && is_hex(at(i + 3)) => {
                            byte = Some(hex(at(i + 2)) * 16 + hex(at(i + 3)));
                            i += 3;
                        }
                        (b'"', next) if next != 0 => {
                            i += 1;
                            byte = Some(match next {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                        }
                        (b'\'', b'\'') => {
                            i += 1;
                            byte = Some(b'\'');
                        }
                        // A backslash that escapes nothing is itself.
                        _ => byte = Some(c),
                    },
                    Some(q) if c == q => {
                        if at(i + 1) != 0 && !is_c_space(at(i + 1)) {
                            return Err(());
                        }
                        done = true;
                    }
                    Some(_) if c == 0 => return Err(()),
                    Some(_) => byte = Some(c),
                    None => match c {
                        b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                        b'"' | b'\'' => {
                            quote = Some(c);
                            if decoded_from.is_none() {
                                // The plain bytes before the quote come first.
                                decoded_from = Some(self.decoded.len());
                                self.decoded.extend_from_slice(&buf[word..i]);
                            }
                        }
                        _ => byte = Some(c),
                    },
                }
                if let (Some(b), Some(_)) = (byte, decoded_from) {
                    self.decoded.push(b);
                }
                if done {
                    break;
                }
                if at(i) != 0 {
                    i += 1;
                }
            }
            match decoded_from {
                None => self.args.push(word..i),
                Some(from) => {
                    let to = self.decoded.len();
                    self.args.push(from | DECODED..to | DECODED);
                }
            }
            if at(i) != 0 {
                i += 1;
            }
        }
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
        let mut decoded = false;
        for r in &mut self.args {
            if r.start & DECODED != 0 {
                decoded = true;
            } else {
                *r = r.start - n..r.end - n;
            }
        }
        if !decoded {
            // Freed, not kept: such lines are rare.
            self.decoded = Vec::new();
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

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

/// The value of a hex digit (one [`is_hex`] accepts).
fn hex(c: u8) -> u8 {
    char::from(c).to_digit(16).unwrap_or(0) as u8
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
            b"*1\r\n$4\r\nPING\r\n*2\r\n$8\r\nFLUSHALL\r\n$2\r\nx\x0b\r\n"
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
    fn inline_commands_are_split_as_redis_splits_them() {
        let split = |line: &[u8]| -> Vec<Vec<u8>> {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            let frames =
                scan_all(&input).unwrap_or_else(|e| panic!("{}: {e:?}", line.escape_ascii()));
            frames.into_iter().next().unwrap_or_default()
        };
        let v = |args: &[&[u8]]| args.iter().map(|a| a.to_vec()).collect::<Vec<_>>();
        assert_eq!(split(b""), v(&[]));
        assert_eq!(split(b"   "), v(&[]));
        assert_eq!(split(b"\x0b"), v(&[]));
        assert_eq!(split(b"SET k  v"), v(&[b"SET", b"k", b"v"]));
        assert_eq!(split(b"SET \"a b\" c"), v(&[b"SET", b"a b", b"c"]));
        assert_eq!(split(b"SET 'a b' c"), v(&[b"SET", b"a b", b"c"]));
        assert_eq!(split(b"SET \"a\\\" b\""), v(&[b"SET", b"a\" b"]));
        assert_eq!(
            split(b"ECHO \"\\x41\\n\\t\\r\\b\\a\\q\""),
            v(&[b"ECHO", b"A\n\t\r\x08\x07q"])
        );
        assert_eq!(split(b"ECHO \"\\x4g\""), v(&[b"ECHO", b"x4g"]));
        assert_eq!(split(b"SET 'it\\'s'"), v(&[b"SET", b"it's"]));
        assert_eq!(split(b"SET 'a\\nb'"), v(&[b"SET", b"a\\nb"]));
        assert_eq!(split(b"SET a\"b c\""), v(&[b"SET", b"ab c"]));
        assert_eq!(split(b"SET \"a\"\x0b"), v(&[b"SET", b"a"]));
        assert_eq!(split(b"SET \"a b\" "), v(&[b"SET", b"a b"]));
        assert_eq!(split(b"\"FLUSHALL\""), v(&[b"FLUSHALL"]));
        assert_eq!(split(b"x\x0by\x0cz"), v(&[b"x\x0by\x0cz"]));
        assert_eq!(split(b"\x0c a"), v(&[b"a"]));
        assert_eq!(split(b"SET \"\""), v(&[b"SET", b""]));
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
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            assert_eq!(
                scan_all(&input),
                Err(ProtocolError::UnbalancedQuotes),
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn decoded_inline_arguments_survive_consume() {
        let input = b"SET \"a b\" 'c'\r\n*1\r\n$4\r\nPI";
        let mut s = CommandScanner::new(Limits::default());
        let f = s.next_frame(input).unwrap().unwrap();
        assert_eq!(s.arg(input, &f, 1), Some(&b"a b"[..]));
        assert!(s.next_frame(input).unwrap().is_none());
        s.consume(f.end);
        let mut rest = input[f.end..].to_vec();
        rest.extend_from_slice(b"NG\r\nECHO \"x\"\r\n");
        let g = s.next_frame(&rest).unwrap().unwrap();
        assert_eq!(s.arg(&rest, &g, 0), Some(&b"PING"[..]));
        let h = s.next_frame(&rest).unwrap().unwrap();
        assert_eq!(s.arg(&rest, &h, 1), Some(&b"x"[..]));
        let mut out = BytesMut::new();
        s.write_frame(&rest, &h, &mut out);
        assert_eq!(&out[..], b"*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n");
    }
}
