//! A raw RESP connection to Redis that poolside owns.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::primary::Primary;
use super::tls::{TlsTarget, UpstreamStream};
use super::UpstreamError;
use crate::config::SecretCell;
use crate::resp::{write_command, ReplyScanner};

/// Database index meaning "unknown": the next batch always SELECTs first.
pub const DB_UNKNOWN: u32 = u32::MAX;

/// Where connections go.
#[derive(Debug, Clone)]
pub enum Address {
    /// `host:port` from `upstream.url`, resolved at every connect.
    Fixed(String),
    /// The primary the Sentinels name (none until one is known).
    Sentinel(Arc<Primary>),
}

impl Address {
    /// The address a connect made now goes to.
    pub fn current(&self) -> Option<Arc<str>> {
        match self {
            Address::Fixed(a) => Some(a.as_str().into()),
            Address::Sentinel(p) => p.address(),
        }
    }

    /// What `/pool/status` shows.
    pub fn describe(&self) -> String {
        match self {
            Address::Fixed(a) => a.clone(),
            Address::Sentinel(p) => match p.address() {
                Some(a) => a.to_string(),
                None => format!("(no primary known for '{}')", p.master_name),
            },
        }
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: Address,
    pub username: Option<String>,
    /// Read at every connect: SIGHUP may have rotated it.
    pub password: SecretCell,
    /// Set for `rediss://` or `tls.enabled`.
    pub tls: Option<TlsTarget>,
    pub db: u32,
    pub connect_timeout: Duration,
    /// TCP keepalive idle time (`pool.tcp_keepalive_secs`); `None`: the OS default.
    pub keepalive: Option<Duration>,
    /// `CLIENT SETNAME` sent at connect (`poolside:<instance>:<profile>`),
    /// so `CLIENT LIST` shows the fleet; `None` leaves connections unnamed.
    pub client_name: Option<String>,
    /// `READONLY` sent at connect: a cluster replica that serves reads.
    pub readonly: bool,
}

/// One upstream connection. It is `broken` from the moment anything is
/// written until every reply to it has been read, so a connection dropped
/// half-way (I/O error, cancelled client task) is discarded by the pool,
/// never reused. Every reader and writer goes through these methods:
///
/// - request/reply: [`write_batch`](Self::write_batch), then
///   [`read_reply`](Self::read_reply) once per reply, then
///   [`finish_batch`](Self::finish_batch);
/// - multiplexed lanes, which split replies themselves:
///   [`send`](Self::send) and [`read_into`](Self::read_into), then
///   `finish_batch` when nothing is in flight;
/// - byte pumps (pub/sub, MONITOR): [`streaming`](Self::streaming), after
///   which the connection never returns to the pool.
#[derive(Debug)]
pub struct UpstreamConn {
    stream: UpstreamStream,
    rbuf: BytesMut,
    scanner: ReplyScanner,
    /// The database this connection has selected.
    db: u32,
    /// The RESP version it speaks (2 until a HELLO 3 switched it).
    proto: u8,
    broken: bool,
    /// The frame being read in parts is a RESP3 push, not a reply.
    in_push: bool,
    /// Connection state poolside does not track was changed (CLIENT NO-EVICT,
    /// RESET...): the connection is closed at check-in.
    dirty: bool,
    pub created: Instant,
    /// The pool's generation when this connection was made: an older one
    /// points where Redis no longer is (a failover moved the name).
    pub generation: u64,
    /// When Redis last answered on it: a health PING, a checkout's PING,
    /// or a batch that came back whole. A checkout PINGs a connection that
    /// has not proved itself for a health interval.
    verified_at: Instant,
}

/// The host part of `host:port` (IPv6 without its brackets).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl UpstreamConn {
    /// TCP connect with NODELAY, then AUTH, CLIENT SETNAME and SELECT as the
    /// target says.
    pub async fn connect(target: &Target) -> Result<UpstreamConn, UpstreamError> {
        let address = target.address.current().ok_or(UpstreamError::NoPrimary)?;
        let connecting = async {
            let tls = match (&target.tls, &target.address) {
                // A Sentinel names nodes by IP (or announced name): verify that.
                (Some(tls), Address::Sentinel(_)) => Some(tls.for_host(host_of(&address))?),
                (tls, _) => tls.clone(),
            };
            let mut conn = UpstreamConn::open(&address, tls.as_ref(), target.keepalive).await?;
            if let Some(password) = &target.password.get() {
                conn.auth(target.username.as_deref(), password.expose())
                    .await?;
            }
            conn.name_and_select(target.client_name.as_deref(), target.db)
                .await?;
            if target.readonly {
                let reply = conn.command(&[b"READONLY"]).await?;
                if reply.first() == Some(&b'-') {
                    return Err(UpstreamError::Reply(first_line(&reply)));
                }
            }
            Ok(conn)
        };
        match tokio::time::timeout(target.connect_timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {:?}", target.connect_timeout),
            ))),
        }
    }

    /// TCP connect with NODELAY (and TLS), nothing sent yet: for
    /// [`connect`](Self::connect), and for the Sentinel watcher's own
    /// connections (which are not the pool's). No timeout of its own.
    pub async fn open(
        address: &str,
        tls: Option<&TlsTarget>,
        keepalive: Option<Duration>,
    ) -> Result<UpstreamConn, UpstreamError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(UpstreamError::Connect)?;
        tcp.set_nodelay(true).map_err(UpstreamError::Connect)?;
        if let Some(idle) = keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            socket2::SockRef::from(&tcp)
                .set_tcp_keepalive(&keepalive)
                .map_err(UpstreamError::Connect)?;
        }
        let stream = match tls {
            Some(tls) => tls.handshake(tcp).await?,
            None => UpstreamStream::Tcp(tcp),
        };
        Ok(UpstreamConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            scanner: ReplyScanner::default(),
            db: 0,
            proto: 2,
            broken: false,
            in_push: false,
            dirty: false,
            created: Instant::now(),
            generation: 0,
            verified_at: Instant::now(),
        })
    }

    /// `AUTH [user] password`; a refusal is `UpstreamError::Auth` with
    /// Redis' words.
    pub async fn auth(&mut self, user: Option<&str>, password: &str) -> Result<(), UpstreamError> {
        let reply = match user {
            Some(user) => {
                self.command(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                    .await?
            }
            None => self.command(&[b"AUTH", password.as_bytes()]).await?,
        };
        if reply.first() == Some(&b'-') {
            return Err(UpstreamError::Auth(first_line(&reply)));
        }
        Ok(())
    }

    /// SETNAME and SELECT in one round trip. A refused name (an ACL without
    /// `client|setname`: `-NOPERM`) leaves the connection unnamed, nothing more.
    async fn name_and_select(&mut self, name: Option<&str>, db: u32) -> Result<(), UpstreamError> {
        let db_text = db.to_string();
        let mut req = BytesMut::new();
        if let Some(name) = name {
            write_command(
                &mut req,
                [&b"CLIENT"[..], b"SETNAME", name.as_bytes()].into_iter(),
            );
        }
        write_command(&mut req, [&b"SELECT"[..], db_text.as_bytes()].into_iter());
        self.write_batch(&[&req]).await?;
        let mut reply = BytesMut::new();
        if let Some(name) = name {
            self.read_reply(&mut reply).await?;
            if reply.first() == Some(&b'-') {
                let reply = first_line(&reply);
                debug!(name, %reply, "Redis refused CLIENT SETNAME: connection left unnamed");
            }
            reply.clear();
        }
        self.read_reply(&mut reply).await?;
        self.finish_batch();
        if reply.first() == Some(&b'-') {
            return Err(UpstreamError::Reply(first_line(&reply)));
        }
        self.db = db;
        Ok(())
    }

    /// Sends one command built from `args` and returns its whole reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, UpstreamError> {
        let mut req = BytesMut::new();
        write_command(&mut req, args.iter().copied());
        self.write_batch(&[&req]).await?;
        let mut out = BytesMut::new();
        self.read_reply(&mut out).await?;
        self.finish_batch();
        Ok(out.to_vec())
    }

    /// PING, for health checks.
    pub async fn ping(&mut self) -> Result<(), UpstreamError> {
        let reply = self.command(&[b"PING"]).await?;
        if reply.starts_with(b"+PONG") {
            Ok(())
        } else {
            Err(UpstreamError::Reply(first_line(&reply)))
        }
    }

    /// The database this connection has selected.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// A `SELECT` written on this connection was answered `+OK`.
    pub fn selected(&mut self, db: u32) {
        self.db = db;
    }

    /// The RESP version this connection speaks.
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// A `HELLO <proto>` written on this connection succeeded.
    pub fn switched(&mut self, proto: u8) {
        self.proto = proto;
    }

    /// Writes bytes of one or more batches whose replies the caller reads
    /// with [`read_into`](Self::read_into). Marks the connection broken.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.write_batch(&[bytes]).await
    }

    /// Appends whatever Redis sent next to `buf` (for callers that split
    /// replies themselves); `Closed` when Redis closed the connection.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> Result<usize, UpstreamError> {
        debug_assert!(self.rbuf.is_empty(), "read_reply and read_into mixed");
        match self.stream.read_buf(buf).await {
            Ok(0) => Err(UpstreamError::Closed),
            Ok(n) => Ok(n),
            Err(e) => Err(UpstreamError::Io(e)),
        }
    }

    /// Hands the socket to a byte pump (pub/sub, MONITOR). Replies no longer
    /// pair with commands, so the connection is never pooled again.
    pub fn streaming(&mut self) -> &mut UpstreamStream {
        self.mark_broken();
        &mut self.stream
    }

    /// Writes the parts of one batch. Marks the connection broken until
    /// [`finish_batch`](Self::finish_batch) says every reply was read.
    pub async fn write_batch(&mut self, parts: &[&[u8]]) -> Result<(), UpstreamError> {
        self.broken = true;
        for part in parts {
            self.stream
                .write_all(part)
                .await
                .map_err(UpstreamError::Io)?;
        }
        // A no-op over TCP; over TLS it pushes out what rustls still holds.
        self.stream.flush().await.map_err(UpstreamError::Io)?;
        Ok(())
    }

    /// Appends the next complete reply to `out` and returns where it starts.
    /// RESP3 push frames that arrive first (invalidations, messages) are
    /// appended too, in order, but are not the reply.
    pub async fn read_reply(&mut self, out: &mut BytesMut) -> Result<usize, UpstreamError> {
        loop {
            if let Some(end) = self
                .scanner
                .scan(&self.rbuf, 0)
                .map_err(UpstreamError::Protocol)?
            {
                let start = out.len();
                let push = self.rbuf[0] == b'>';
                out.put_slice(&self.rbuf[..end]);
                self.rbuf.advance(end);
                if push {
                    continue;
                }
                return Ok(start);
            }
            self.fill().await?;
        }
    }

    /// Appends the next reply to `out` as its bytes arrive, with any push
    /// frames before it, for callers that forward replies without holding
    /// them whole: [`ReplyPart::More`] once `out` holds `chunk` bytes or
    /// more and the reply is still incomplete (write `out` to the client and
    /// call again), [`ReplyPart::Done`] when it is complete. `head` gets the
    /// reply's first bytes, all that tracking its kind needs (`+OK`,
    /// `+QUEUED`, an error).
    pub async fn read_reply_part(
        &mut self,
        out: &mut BytesMut,
        chunk: usize,
        head: &mut ReplyHead,
    ) -> Result<ReplyPart, UpstreamError> {
        loop {
            if !self.scanner.in_progress() {
                if self.rbuf.is_empty() {
                    self.fill().await?;
                    continue;
                }
                self.in_push = self.rbuf[0] == b'>';
            }
            let scanned = self
                .scanner
                .scan(&self.rbuf, 0)
                .map_err(UpstreamError::Protocol)?;
            if let Some(end) = scanned {
                self.move_out(end, out, head);
                if self.in_push {
                    continue;
                }
                return Ok(ReplyPart::Done);
            }
            let committed = self.scanner.committed(self.rbuf.len()).unwrap_or(0);
            self.move_out(committed, out, head);
            self.scanner.consume(committed);
            if out.len() >= chunk {
                return Ok(ReplyPart::More);
            }
            self.fill().await?;
        }
    }

    fn move_out(&mut self, n: usize, out: &mut BytesMut, head: &mut ReplyHead) {
        if !self.in_push {
            head.extend(&self.rbuf[..n]);
        }
        out.put_slice(&self.rbuf[..n]);
        self.rbuf.advance(n);
    }

    async fn fill(&mut self) -> Result<(), UpstreamError> {
        self.rbuf.reserve(16 * 1024);
        let n = self
            .stream
            .read_buf(&mut self.rbuf)
            .await
            .map_err(UpstreamError::Io)?;
        if n == 0 {
            return Err(UpstreamError::Closed);
        }
        Ok(())
    }

    /// Every reply of the batch was read: the connection is clean again
    /// unless Redis sent more than was asked for.
    pub fn finish_batch(&mut self) {
        self.broken = !self.rbuf.is_empty();
    }

    pub fn mark_broken(&mut self) {
        self.broken = true;
        self.scanner.reset();
    }

    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Redis answered on this connection at `at`.
    pub fn mark_verified(&mut self, at: Instant) {
        self.verified_at = at;
    }

    /// How long before `now` Redis last answered on this connection.
    pub fn unverified_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.verified_at)
    }

    pub fn is_broken(&self) -> bool {
        self.broken || self.dirty
    }

    /// True when the peer has closed this idle connection (Redis restarted, or
    /// its `timeout` fired) or sent something unasked. Costs no syscall while
    /// the socket is not readable, because tokio caches readiness.
    pub fn is_closed(&mut self) -> bool {
        self.stream.is_closed()
    }
}

/// How far [`UpstreamConn::read_reply_part`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyPart {
    /// The reply is complete in `out`.
    Done,
    /// More of the reply is to come.
    More,
}

/// The first bytes of a reply read in parts.
#[derive(Debug, Default)]
pub struct ReplyHead {
    bytes: [u8; 16],
    len: usize,
}

impl ReplyHead {
    fn extend(&mut self, more: &[u8]) {
        let n = more.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&more[..n]);
        self.len += n;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn first_line(reply: &[u8]) -> String {
    let line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line.get(1..).unwrap_or_default()).into_owned()
}
