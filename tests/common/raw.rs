//! A raw RESP2 client over one TCP connection: exact bytes in, exact replies out.
//! For what a real client library hides: malformed input, QUIT, HELLO, pub/sub.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn try_connect(addr: SocketAddr) -> io::Result<RawClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
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
        self.stream.write_all(bytes).await
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
