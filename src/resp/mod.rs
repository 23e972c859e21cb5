//! RESP frame scanning without copies, and locally built replies.
//!
//! Our own scanner rather than `redis-protocol`: poolside needs only frame
//! boundaries plus argument ranges, never decoded values, and it must resume
//! an incomplete frame where it stopped (a 1000-command pipeline or a large
//! LRANGE reply arrives over many reads; rescanning from the frame start on
//! every read would be quadratic). `redis-protocol`'s `decode_range` starts
//! over on every call and builds a `RangeFrame` tree per frame. Measured with
//! the criterion bench `benches/resp.rs`.

mod command;
mod reply;

pub use command::{CommandScanner, Frame};
pub use reply::{
    decimal, write_bulk, write_command, write_error, write_error_quoting, write_simple,
    ReplyScanner,
};

/// Hard limits applied while scanning client input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame (one whole command) in bytes.
    pub max_frame_bytes: usize,
    /// Most arguments in one command (Redis 7 allows `INT_MAX`; this bounds
    /// the argument index a client can make poolside keep).
    pub max_args: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 64 << 20,
            max_args: 1024 * 1024,
        }
    }
}

/// Why input could not be scanned. The client gets `-ERR Protocol error: <message>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*<n>` is not a number, or over Redis' `INT_MAX`.
    InvalidMultibulkLength,
    /// `$<n>` is not a number, negative, or over Redis' 512 MiB.
    InvalidBulkLength,
    /// An array element that does not start with `$`: that byte.
    ExpectedBulk(u8),
    /// More than 64 KiB without the `\r` ending a `*<n>` line.
    TooBigMultibulkCount,
    /// More than 64 KiB without the `\r` ending a `$<n>` line.
    TooBigBulkCount,
    /// An inline line that Redis would refuse to split.
    UnbalancedQuotes,
    /// More than 64 KiB without the `\n` ending an inline line.
    InlineTooLarge,
    /// Poolside's own limit: more arguments than [`Limits::max_args`], which
    /// it carries.
    TooManyArgs(usize),
    /// Poolside's own limit: a command over `limits.max_frame_bytes`.
    FrameTooLarge,
    UnknownReplyType(u8),
    InvalidInteger,
}

impl ProtocolError {
    /// Appends `-ERR Protocol error: <message>\r\n`, Redis' reply for bad
    /// client input; a byte named after "got" is written raw, as Redis does.
    pub fn write_reply(&self, out: &mut bytes::BytesMut) {
        out.extend_from_slice(b"-ERR Protocol error: ");
        match self {
            ProtocolError::ExpectedBulk(b) if *b > 0x7f => {
                out.extend_from_slice(b"expected '$', got '");
                out.extend_from_slice(&[*b]);
                out.extend_from_slice(b"'");
            }
            other => out.extend_from_slice(other.message().as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The message, after `Protocol error: `. For client input it is Redis'
    /// own (networking.c), so that `-ERR Protocol error: <message>` is the
    /// byte-for-byte reply Redis 7 gives, except where poolside has a limit
    /// Redis does not ([`ProtocolError::TooManyArgs`],
    /// [`ProtocolError::FrameTooLarge`]). A byte over 0x7f after "got" is
    /// `\xNN` here (for logs); [`ProtocolError::write_reply`] writes it raw.
    pub fn message(&self) -> String {
        match self {
            ProtocolError::InvalidMultibulkLength => "invalid multibulk length".into(),
            ProtocolError::InvalidBulkLength => "invalid bulk length".into(),
            ProtocolError::ExpectedBulk(b) => {
                // Redis prints the byte itself (`%c`), and its error replies
                // turn `\r` and `\n` into spaces.
                let got = match *b {
                    b'\r' | b'\n' => " ".to_string(),
                    0x01..=0x7f => char::from(*b).to_string(),
                    _ => format!("\\x{b:02x}"),
                };
                format!("expected '$', got '{got}'")
            }
            ProtocolError::TooBigMultibulkCount => "too big mbulk count string".into(),
            ProtocolError::TooBigBulkCount => "too big bulk count string".into(),
            ProtocolError::UnbalancedQuotes => "unbalanced quotes in request".into(),
            ProtocolError::InlineTooLarge => "too big inline request".into(),
            ProtocolError::TooManyArgs(max) => {
                format!("too many arguments in a command (poolside accepts at most {max})")
            }
            ProtocolError::FrameTooLarge => "frame exceeds limits.max_frame_bytes".into(),
            ProtocolError::UnknownReplyType(b) => {
                format!("unknown reply type '{}'", char::from(*b).escape_default())
            }
            ProtocolError::InvalidInteger => "invalid integer".into(),
        }
    }
}

/// Position of the `\r\n` ending the line that starts at `from`, if buffered.
#[inline]
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let i = memchr::memchr(b'\r', buf.get(at..)?)? + at;
        if i + 1 >= buf.len() {
            return None;
        }
        if buf[i + 1] == b'\n' {
            return Some(i);
        }
        at = i + 1;
    }
}

/// Parses a signed decimal integer as RESP length fields carry it.
#[inline]
pub(crate) fn parse_int(digits: &[u8]) -> Option<i64> {
    let (neg, digits) = match digits.first() {
        Some(b'-') => (true, &digits[1..]),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_crlf_past_lone_cr() {
        assert_eq!(find_crlf(b"ab\rc\r\n", 0), Some(4));
        assert_eq!(find_crlf(b"ab\r", 0), None);
        assert_eq!(find_crlf(b"ab", 0), None);
    }

    #[test]
    fn parses_ints() {
        assert_eq!(parse_int(b"123"), Some(123));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"1x"), None);
        assert_eq!(parse_int(b"9999999999999999999"), None);
    }
}
