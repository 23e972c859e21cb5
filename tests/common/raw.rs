//! A raw RESP client over one TCP connection (or TLS over it, verified
//! against a CA file: [`RawClient::try_connect_tls`]): exact bytes in, exact
//! replies out, parsed (RESP2, [`Reply`]) or as the bytes they came in (RESP2
//! and RESP3, [`RawClient::raw_reply`]). For what a real client library
//! hides: malformed input, QUIT, HELLO, pub/sub, byte-for-byte comparisons.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw read may wait before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    /// Panics unless this is `+OK`.
    pub fn expect_ok(&self) {
        assert_eq!(
            self,
            &Reply::Simple("OK".into()),
            "expected +OK, got {self:?}"
        );
    }

    /// The text of a bulk or simple string; panics otherwise.
    pub fn expect_string(&self) -> String {
        match self {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Simple(s) => s.clone(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// The message of an error reply; panics otherwise.
    pub fn expect_error(&self) -> String {
        match self {
            Reply::Error(e) => e.clone(),
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    /// The elements of a non-nil array; panics otherwise.
    pub fn expect_array(&self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(items)) => items.clone(),
            other => panic!("expected an array reply, got {other:?}"),
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a read saw.
#[derive(Debug)]
pub enum Read {
    Reply(Reply),
    /// The peer closed (EOF or reset) with no partial reply buffered.
    Closed,
}

/// A plain TCP stream or a TLS one.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub struct RawClient {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn try_connect(addr: SocketAddr) -> io::Result<RawClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream: Box::new(stream),
            buf: Vec::new(),
        })
    }

    /// TLS to `addr` (a TLS-only redis-server or Sentinel), the server's
    /// certificate verified against `ca_file` for the IP address; no client
    /// certificate. The handshake may take [`READ_TIMEOUT`].
    pub async fn try_connect_tls(addr: SocketAddr, ca_file: &Path) -> io::Result<RawClient> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| invalid(e.to_string()))? {
            let cert = cert.map_err(|e| invalid(e.to_string()))?;
            roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
        // A frozen server accepts the TCP connection (the kernel does) and
        // never answers the handshake.
        let tls = tokio::time::timeout(READ_TIMEOUT, handshake)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        Ok(RawClient {
            stream: Box::new(tls),
            buf: Vec::new(),
        })
    }

    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        // TLS buffers records: they go now (a no-op on plain TCP).
        self.stream.flush().await
    }

    /// Sends a command and reads one reply; any failure is an `Err`.
    pub async fn try_command(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(&encode(args)).await?;
        match tokio::time::timeout(READ_TIMEOUT, self.read()).await {
            Ok(Ok(Read::Reply(reply))) => Ok(reply),
            Ok(Ok(Read::Closed)) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Sends a command and reads one reply; panics on failure.
    pub async fn command(&mut self, args: &[&str]) -> Reply {
        self.try_command(args)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Reads one reply within [`READ_TIMEOUT`]; panics on timeout, close or I/O error.
    pub async fn reply(&mut self) -> Reply {
        match self.read_timeout(READ_TIMEOUT).await {
            Some(Read::Reply(reply)) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Reads one reply or the close; `None` when nothing arrived within `timeout`.
    pub async fn read_timeout(&mut self, timeout: Duration) -> Option<Read> {
        match tokio::time::timeout(timeout, self.read()).await {
            Ok(Ok(read)) => Some(read),
            Ok(Err(e)) => panic!("read failed: {e} (buffered: {:?})", self.buffered()),
            Err(_) => None,
        }
    }

    /// Reads one reply or the close. A reset counts as a close.
    pub async fn read(&mut self) -> io::Result<Read> {
        loop {
            match parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(Read::Reply(reply));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match self.stream.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) if is_reset(&e) => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(Read::Closed);
                }
                let msg = format!("closed inside a reply: {:?}", self.buffered());
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads exactly one complete reply, RESP2 or RESP3 (attributes
    /// included with the reply they precede), as the bytes it came in;
    /// panics on timeout, close or a malformed reply.
    pub async fn raw_reply(&mut self) -> Vec<u8> {
        self.try_raw_reply(READ_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("raw reply: {e}"))
    }

    /// [`RawClient::raw_reply`] within `timeout`; `Err` says what came
    /// instead (a timeout, the close, a malformed reply) and what is buffered.
    pub async fn try_raw_reply(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let read = async {
            loop {
                if let Some(n) = reply_len(&self.buf)? {
                    return Ok(self.buf.drain(..n).collect::<Vec<u8>>());
                }
                if !self.fill().await {
                    return Err("the connection closed".to_string());
                }
            }
        };
        let result = match tokio::time::timeout(timeout, read).await {
            Ok(result) => result,
            Err(_) => Err(format!("nothing within {timeout:?}")),
        };
        result.map_err(|e| format!("{e} (buffered: {})", escape(&self.buf)))
    }

    /// Everything the peer sends until it closes, and whether it closed
    /// within `timeout` (the bytes so far when it did not).
    pub async fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let closed = tokio::time::timeout(timeout, async { while self.fill().await {} })
            .await
            .is_ok();
        (std::mem::take(&mut self.buf), closed)
    }

    /// Appends what one read brings; `false` at the close (EOF or reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if is_reset(&e) => false,
            Err(e) => panic!("read failed: {e} (buffered: {})", escape(&self.buf)),
        }
    }

    fn buffered(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// Parses one RESP2 reply: `Ok(None)` when incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..line_end].split_first() else {
        return Err("empty line".into());
    };
    let text = String::from_utf8_lossy(line).into_owned();
    let after = line_end + 2;
    let number = || {
        text.parse::<i64>()
            .map_err(|_| format!("bad number {text:?}"))
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(text), after))),
        b'-' => Ok(Some((Reply::Error(text), after))),
        b':' => Ok(Some((Reply::Int(number()?), after))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let end = after + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Reply::Bulk(Some(buf[after..end].to_vec())), end + 2)))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::with_capacity(len as usize);
            let mut pos = after;
            for _ in 0..len {
                match parse(&buf[pos..])? {
                    Some((item, used)) => {
                        items.push(item);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        other => Err(format!("unexpected reply type byte {:?}", other as char)),
    }
}

/// Bytes as readable ASCII (`\r\n`, `\x00`...), for failure messages.
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The length of the one complete RESP2 or RESP3 reply at the start of
/// `buf`, `Ok(None)` while incomplete. An attribute (`|`) belongs to the
/// reply after it and is counted with it. Streamed (`?`) lengths, which
/// Redis does not send, are an error.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, String> {
    // Values still to read, including the one at `pos`.
    let mut pending: u64 = 1;
    let mut pos = 0;
    while pending > 0 {
        let Some(line_end) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line_end = pos + line_end;
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let text = &buf[pos + 1..line_end];
        let number = || -> Result<i64, String> {
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("bad length {:?} at {pos}", escape(text)))
        };
        let after = line_end + 2;
        pos = match kind {
            // Simple string, error, integer, null, double, boolean, big number.
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => after,
            // Bulk string, blob error, verbatim string.
            b'$' | b'!' | b'=' => match number()? {
                n if n < 0 => after,
                n => {
                    let end = after + n as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(format!("blob at {pos} not ended by CRLF"));
                    }
                    end
                }
            },
            // Array, set, push; map; attribute (then the value it describes).
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = number()?.max(0) as u64;
                pending += match kind {
                    b'%' => 2 * n,
                    b'|' => 2 * n + 1,
                    _ => n,
                };
                after
            }
            other => return Err(format!("unknown reply type {:?} at {pos}", other as char)),
        };
        pending -= 1;
    }
    Ok(Some(pos))
}
