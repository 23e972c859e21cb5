//! Failures talking to Redis.

use crate::error::Cause;

/// Failures talking to Redis. Everything here is the upstream side's fault.
/// The details are logged; clients get the [`Cause`].
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("unexpected reply: {0}")]
    Reply(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("connection closed by Redis")]
    Closed,
    #[error("no primary known: the Sentinels named none yet")]
    NoPrimary,
    #[error("the primary moved while connecting")]
    Moved,
    #[error("malformed reply: {}", .0.message())]
    Protocol(crate::resp::ProtocolError),
}

impl UpstreamError {
    /// Worth retrying a connect: the network, not the credentials.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Io(_)
                | UpstreamError::Closed
                | UpstreamError::Moved
        )
    }

    /// What a client is told about this failure.
    pub fn cause(&self) -> Cause {
        match self {
            UpstreamError::Connect(e) | UpstreamError::Io(e) => match e.kind() {
                std::io::ErrorKind::TimedOut => Cause::TimedOut,
                kind => Cause::Io(kind),
            },
            UpstreamError::Auth(_) => Cause::Auth,
            UpstreamError::Reply(_) => Cause::Refused,
            UpstreamError::Tls(_) => Cause::Tls,
            UpstreamError::Closed => Cause::Closed,
            UpstreamError::NoPrimary => Cause::NoPrimary,
            UpstreamError::Moved => Cause::Closed,
            UpstreamError::Protocol(_) => Cause::Malformed,
        }
    }
}
