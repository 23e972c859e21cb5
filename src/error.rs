//! The data path's one error type. Every failure knows its side (whose fault
//! it is) and its kind; it is `Copy`, so handing it to many waiting clients
//! costs nothing. The `-ERR` text is written once, at the edge that answers
//! the client ([`Error::write_reply`]), and counted there, once per client
//! batch, by side (`Traffic::failed`, in the traffic module above this one).

use std::fmt;
use std::io;

use bytes::BytesMut;

/// Whose fault a failure is; metrics and log levels key off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The application sent something poolside cannot accept.
    Client,
    /// Redis could not be reached or the connection to it failed.
    Upstream,
    /// poolside refused: pool exhausted, a limit reached.
    Internal,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Client, Side::Upstream, Side::Internal];

    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// Why an upstream connection could not be made or was lost. Details beyond
/// this (the OS error text, Redis' AUTH reply) go to the log, not the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Io(io::ErrorKind),
    /// Redis closed the connection.
    Closed,
    TimedOut,
    Auth,
    Tls,
    /// Redis sent bytes that are not RESP.
    Malformed,
    /// A reply poolside needed (SELECT, HELLO) was an error.
    Refused,
    /// Sentinel mode: no Sentinel has named a primary yet.
    NoPrimary,
    /// Not yet known: no connect was tried.
    Unknown,
}

impl Cause {
    /// A problem of configuration (certificates, credentials, a refused
    /// SELECT): the client's error carries the full text, so the operator
    /// sees what to fix. Network causes speak for themselves.
    pub fn needs_detail(self) -> bool {
        matches!(self, Cause::Auth | Cause::Tls | Cause::Refused)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Io(kind) => write!(f, "{kind}"),
            Cause::Closed => f.write_str("connection closed by Redis"),
            Cause::TimedOut => f.write_str("timed out"),
            Cause::Auth => f.write_str("authentication failed"),
            Cause::Tls => f.write_str("TLS handshake failed"),
            Cause::Malformed => f.write_str("malformed reply"),
            Cause::Refused => f.write_str("unexpected error reply"),
            Cause::NoPrimary => f.write_str("no primary known (no Sentinel named one)"),
            Cause::Unknown => f.write_str("Redis is not reachable"),
        }
    }
}

/// A reply with which Redis refused a command without running it, because of
/// where the connection points rather than what was asked: the node is a
/// replica now (`-READONLY`: a failover demoted it), is loading its dataset
/// (`-LOADING`) or lost its primary (`-MASTERDOWN`). poolside closes such
/// connections, and a batch refused as a whole may be sent once more on a
/// fresh one: nothing of it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ReadOnly,
    Loading,
    MasterDown,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::ReadOnly, Refusal::Loading, Refusal::MasterDown];

    /// The refusal a reply is, from its first bytes (16 are enough).
    pub fn of(reply: &[u8]) -> Option<Refusal> {
        let text = reply.strip_prefix(b"-")?;
        [
            (&b"READONLY "[..], Refusal::ReadOnly),
            (b"LOADING ", Refusal::Loading),
            (b"MASTERDOWN ", Refusal::MasterDown),
        ]
        .into_iter()
        .find_map(|(code, kind)| text.starts_with(code).then_some(kind))
    }

    pub fn label(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "readonly",
            Refusal::Loading => "loading",
            Refusal::MasterDown => "masterdown",
        }
    }
}

/// A failure of one client batch on the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No upstream connection came free within the checkout timeout.
    PoolExhausted { waited_ms: u64, max: u32 },
    /// Redis is known to be down, or connecting failed: nothing was sent.
    UpstreamDown(Cause),
    /// The connection failed after the batch may have reached Redis.
    ConnectionLost(Cause),
    /// Replies did not come within `pool.response_timeout_ms` (plus a
    /// blocking command's own timeout): Redis is frozen or unreachable.
    TimedOut { ms: u64 },
    /// Preparing the connection for the client (SELECT) failed.
    PrepareFailed,
    /// A poolside task went away (a bug, or shutdown).
    Internal,
    /// Writing replies to the client failed part-way: it is gone.
    ClientGone,
    /// The client left more than `limits.max_reply_buffer_bytes` of replies
    /// unread for too long (multiplexed mode): like Redis'
    /// `client-output-buffer-limit`, it is disconnected.
    ReplyOverflow { limit: usize },
    /// Sentinel mode: no usable primary came within
    /// `upstream.sentinel.failover_hold_ms`; nothing was sent.
    NoPrimary { held_ms: u64 },
    /// Sentinel mode: the client's pinned connection (MULTI, WATCH, a
    /// subscription, a blocking command) is on a node that is no longer the
    /// primary: the client is closed and reconnects to the new one.
    PrimaryMoved,
    /// A lane closed before it wrote the batch (its node moved or failed):
    /// nothing was sent, so the batch is submitted again.
    NotSent,
    /// Cluster mode: no slot map was read from any node within
    /// `upstream.connect_timeout_ms`; nothing was sent.
    NoSlotMap { waited_ms: u64 },
}

impl Error {
    pub fn side(self) -> Side {
        match self {
            Error::PoolExhausted { .. } | Error::Internal => Side::Internal,
            Error::UpstreamDown(_)
            | Error::ConnectionLost(_)
            | Error::TimedOut { .. }
            | Error::PrepareFailed
            | Error::NoPrimary { .. }
            | Error::PrimaryMoved
            | Error::NotSent
            | Error::NoSlotMap { .. } => Side::Upstream,
            Error::ClientGone | Error::ReplyOverflow { .. } => Side::Client,
        }
    }

    /// The client cannot be answered in-band any more: it is closed.
    pub fn closes_client(self) -> bool {
        matches!(
            self,
            Error::ClientGone | Error::ReplyOverflow { .. } | Error::PrimaryMoved
        )
    }

    /// Appends the `-ERR poolside: ...` reply a client gets for this failure.
    pub fn write_reply(self, out: &mut BytesMut) {
        self.write_reply_with(None, out);
    }

    /// Same, with the upstream's own words for a configuration-type cause
    /// (see [`Cause::needs_detail`]), e.g. which certificate check failed.
    pub fn write_reply_with(self, detail: Option<&str>, out: &mut BytesMut) {
        use std::fmt::Write;
        out.extend_from_slice(b"-ERR poolside: ");
        // Writing into a BytesMut cannot fail.
        let _ = match (self, detail) {
            (Error::UpstreamDown(cause), Some(detail)) if cause.needs_detail() => {
                write!(out, "upstream unavailable: {detail}")
            }
            _ => write!(out, "{self}"),
        };
        out.extend_from_slice(b"\r\n");
    }

    /// The cause whose details the upstream keeps, if this failure has one.
    pub fn detailed_cause(self) -> Option<Cause> {
        match self {
            Error::UpstreamDown(cause) if cause.needs_detail() => Some(cause),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PoolExhausted { waited_ms, max } => write!(
                f,
                "pool exhausted: no upstream connection free within {waited_ms} ms (max_connections {max})"
            ),
            Error::UpstreamDown(cause) => write!(f, "upstream unavailable: {cause}"),
            Error::ConnectionLost(cause) => write!(f, "upstream connection lost: {cause}"),
            Error::TimedOut { ms } => write!(f, "upstream timed out after {ms} ms"),
            Error::PrepareFailed => {
                f.write_str("upstream connection lost while selecting the database")
            }
            Error::Internal => f.write_str("internal error"),
            Error::ClientGone => f.write_str("client connection lost"),
            Error::ReplyOverflow { limit } => write!(
                f,
                "unread replies exceeded limits.max_reply_buffer_bytes ({limit})"
            ),
            Error::NoPrimary { held_ms } => write!(
                f,
                "no primary: none reachable after waiting {held_ms} ms for the failover \
                 (upstream.sentinel.failover_hold_ms)"
            ),
            Error::PrimaryMoved => {
                f.write_str("the primary moved (Sentinel failover): reconnect")
            }
            Error::NotSent => f.write_str("upstream connection closed before the batch was sent"),
            Error::NoSlotMap { waited_ms } => write!(
                f,
                "no cluster slot map: no node answered CLUSTER SLOTS within {waited_ms} ms"
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_by_their_code() {
        assert_eq!(
            Refusal::of(b"-READONLY You can't write against a read only replica.\r\n"),
            Some(Refusal::ReadOnly)
        );
        assert_eq!(
            Refusal::of(b"-LOADING Redis is loading"),
            Some(Refusal::Loading)
        );
        assert_eq!(
            Refusal::of(b"-MASTERDOWN Link with MASTER"),
            Some(Refusal::MasterDown)
        );
        assert_eq!(Refusal::of(b"-ERR READONLY"), None);
        assert_eq!(Refusal::of(b"+READONLY "), None);
        assert_eq!(Refusal::of(b"-READONLYX"), None);
    }

    #[test]
    fn replies_are_resp_errors_with_the_side_fixed_by_kind() {
        let mut out = BytesMut::new();
        Error::PoolExhausted {
            waited_ms: 50,
            max: 2,
        }
        .write_reply(&mut out);
        assert_eq!(
            &out[..],
            b"-ERR poolside: pool exhausted: no upstream connection free within 50 ms (max_connections 2)\r\n"
        );
        out.clear();
        Error::UpstreamDown(Cause::Io(io::ErrorKind::ConnectionRefused)).write_reply(&mut out);
        assert_eq!(
            &out[..],
            b"-ERR poolside: upstream unavailable: connection refused\r\n"
        );
        assert_eq!(Error::ConnectionLost(Cause::Closed).side(), Side::Upstream);
        assert_eq!(Error::Internal.side(), Side::Internal);
    }
}
