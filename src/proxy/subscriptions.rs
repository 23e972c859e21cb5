//! Subscription bookkeeping for the pub/sub pump: it learns from Redis'
//! (un)subscribe confirmations when the client's last subscription ended, so
//! the session can go back to request/reply on pooled connections.

use crate::command::{classify, Class};

/// What Redis last confirmed and what the client asked last.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Channels plus patterns, as the last (P)(UN)SUBSCRIBE confirmation said.
    channels: i64,
    /// Shard channels, as the last S(UN)SUBSCRIBE confirmation said.
    shard: i64,
    /// The last command forwarded upstream was an UNSUBSCRIBE of some kind:
    /// nothing else was sent after it whose reply could still come.
    last_was_unsubscribe: bool,
    /// Confirmations that command still owes: one per channel it named (a
    /// bare UNSUBSCRIBE is confirmed until the count reaches zero).
    owed: usize,
    /// A command that changes connection state (SELECT, HELLO, CLIENT
    /// TRACKING, MULTI...; RESP3 allows them while subscribed) went through:
    /// the connection no longer matches what the session knows, so the
    /// stream never goes back to pooled request/reply.
    sticky: bool,
}

impl Subscriptions {
    /// A client command was forwarded upstream.
    pub fn forwarded(&mut self, name: &[u8], sub: Option<&[u8]>, argc: usize) {
        self.sticky |= !matches!(
            classify(name, sub),
            Class::Stateless | Class::Blocking | Class::Stream
        );
        let unsubscribe = [&b"UNSUBSCRIBE"[..], b"PUNSUBSCRIBE", b"SUNSUBSCRIBE"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name));
        self.last_was_unsubscribe = unsubscribe;
        self.owed = if unsubscribe {
            argc.saturating_sub(1)
        } else {
            0
        };
    }

    /// One complete reply from upstream. True when it confirms that the
    /// client has no subscription left and nothing more is owed to it.
    pub fn replied(&mut self, reply: &[u8]) -> bool {
        let Some((kind, count)) = confirmation(reply) else {
            return false;
        };
        let kind = kind.to_ascii_lowercase();
        let unsubscribe = matches!(
            kind.as_slice(),
            b"unsubscribe" | b"punsubscribe" | b"sunsubscribe"
        );
        match kind.as_slice() {
            b"ssubscribe" | b"sunsubscribe" => self.shard = count,
            _ => self.channels = count,
        }
        if !unsubscribe {
            return false;
        }
        self.owed = self.owed.saturating_sub(1);
        !self.sticky
            && self.last_was_unsubscribe
            && self.owed == 0
            && self.channels == 0
            && self.shard == 0
    }
}

/// `*3 $kind $channel-or-nil :count` (a `>3` push in RESP3) where kind is
/// one of the six (un)subscribe confirmations: the kind and the count.
fn confirmation(reply: &[u8]) -> Option<(&[u8], i64)> {
    let rest = reply
        .strip_prefix(b"*3\r\n")
        .or_else(|| reply.strip_prefix(b">3\r\n"))?;
    let (kind, rest) = bulk(rest)?;
    const KINDS: [&[u8]; 6] = [
        b"subscribe",
        b"psubscribe",
        b"ssubscribe",
        b"unsubscribe",
        b"punsubscribe",
        b"sunsubscribe",
    ];
    if !KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
        return None;
    }
    let rest = match rest
        .strip_prefix(b"$-1\r\n")
        .or_else(|| rest.strip_prefix(b"_\r\n"))
    {
        Some(rest) => rest,
        None => bulk(rest)?.1,
    };
    let digits = rest.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    let count = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((kind, count))
}

/// A bulk string at the start of `buf`, and what follows it.
fn bulk(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = buf.strip_prefix(b"$")?;
    let eol = rest.iter().position(|b| *b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
    let data = rest.get(eol + 2..eol + 2 + len)?;
    let after = rest.get(eol + 2 + len..)?.strip_prefix(b"\r\n")?;
    Some((data, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(kind: &str, channel: Option<&str>, count: i64) -> Vec<u8> {
        let channel = match channel {
            Some(c) => format!("${}\r\n{c}\r\n", c.len()),
            None => "$-1\r\n".into(),
        };
        format!("*3\r\n${}\r\n{kind}\r\n{channel}:{count}\r\n", kind.len()).into_bytes()
    }

    #[test]
    fn the_last_unsubscribe_ends_the_subscriptions() {
        let mut s = Subscriptions::default();
        s.forwarded(b"SUBSCRIBE", None, 3);
        assert!(!s.replied(&conf("subscribe", Some("a"), 1)));
        assert!(!s.replied(&conf("subscribe", Some("b"), 2)));
        assert!(!s.replied(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\n0\r\n"));
        s.forwarded(b"unsubscribe", None, 4);
        assert!(!s.replied(&conf("unsubscribe", Some("a"), 1)));
        // The count is zero here, but `c` is still owed its confirmation.
        assert!(!s.replied(&conf("unsubscribe", Some("b"), 0)));
        assert!(s.replied(&conf("unsubscribe", Some("c"), 0)));
    }

    #[test]
    fn a_bare_unsubscribe_ends_at_zero_unless_more_was_sent() {
        let mut s = Subscriptions::default();
        s.forwarded(b"PSUBSCRIBE", None, 2);
        assert!(!s.replied(&conf("psubscribe", Some("p*"), 1)));
        s.forwarded(b"PUNSUBSCRIBE", None, 1);
        assert!(s.replied(&conf("punsubscribe", Some("p*"), 0)));

        let mut s = Subscriptions::default();
        s.forwarded(b"SUBSCRIBE", None, 2);
        s.replied(&conf("subscribe", Some("a"), 1));
        s.forwarded(b"UNSUBSCRIBE", None, 1);
        s.forwarded(b"PING", None, 1);
        assert!(!s.replied(&conf("unsubscribe", Some("a"), 0)));
    }

    #[test]
    fn resp3_confirmations_are_pushes_and_state_changes_stick() {
        let push = |kind: &str, count| {
            format!(">3\r\n${}\r\n{kind}\r\n$1\r\na\r\n:{count}\r\n", kind.len()).into_bytes()
        };
        let mut s = Subscriptions::default();
        s.forwarded(b"SUBSCRIBE", None, 2);
        assert!(!s.replied(&push("subscribe", 1)));
        s.forwarded(b"UNSUBSCRIBE", None, 1);
        assert!(s.replied(&push("unsubscribe", 0)));

        let mut s = Subscriptions::default();
        s.forwarded(b"SUBSCRIBE", None, 2);
        s.replied(&push("subscribe", 1));
        s.forwarded(b"SELECT", None, 2);
        s.forwarded(b"UNSUBSCRIBE", None, 1);
        assert!(!s.replied(&push("unsubscribe", 0)), "SELECT sticks");
    }

    #[test]
    fn shard_channels_count_separately() {
        let mut s = Subscriptions::default();
        s.forwarded(b"SSUBSCRIBE", None, 2);
        s.replied(&conf("ssubscribe", Some("s"), 1));
        s.forwarded(b"SUBSCRIBE", None, 2);
        s.replied(&conf("subscribe", Some("a"), 1));
        s.forwarded(b"UNSUBSCRIBE", None, 1);
        assert!(!s.replied(&conf("unsubscribe", Some("a"), 0)));
        s.forwarded(b"SUNSUBSCRIBE", None, 1);
        assert!(s.replied(&conf("sunsubscribe", None, 0)));
    }
}
