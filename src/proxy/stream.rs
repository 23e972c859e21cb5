//! Pub/sub and MONITOR: once replies no longer pair with commands, bytes flow
//! both ways on the client's own upstream connection. This pump does that
//! with two hard bounds and the command policy still in force:
//!
//! - upstream bytes waiting for a client that does not read are capped at
//!   `limits.max_output_bytes`; past that the client is disconnected (like
//!   Redis' `client-output-buffer-limit pubsub`), so poolside's memory per
//!   subscriber stays below the cap plus one 16 KiB read. Poolside keeps
//!   reading from Redis meanwhile, so Redis does not buffer on its behalf.
//!   Messages are passed on whole, so one message must fit in the cap.
//! - client bytes are read only while less than `limits.max_pipeline_bytes`
//!   wait to go upstream, and each frame is at most `limits.max_frame_bytes`.
//!
//! Client commands are still scanned: RESET leaves subscribed mode, after
//! which anything could be sent, so a denied command ends the stream with the
//! policy's error written between two whole messages.
//!
//! When Redis confirms that the client's last subscription ended (and nothing
//! else was sent after that UNSUBSCRIBE), the pump returns the unused client
//! bytes and the session goes back to request/reply on pooled connections.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::policy::write_refusal;
use super::subscriptions::Subscriptions;
use super::Shared;
use crate::pool::UpstreamStream;
use crate::resp::{CommandScanner, ReplyScanner};

const READ_CHUNK: usize = 16 * 1024;

/// Upstream-to-client side: bytes received and where the last whole reply ends.
struct Downstream {
    buf: BytesMut,
    scanner: ReplyScanner,
    /// `buf[..whole]` holds complete replies, ready to write.
    whole: usize,
    subscriptions: Subscriptions,
    /// The last complete reply ended the client's last subscription.
    unsubscribed: bool,
}

impl Downstream {
    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self
            .scanner
            .scan(&self.buf, self.whole)
            .map_err(|e| io::Error::other(format!("malformed reply from Redis: {}", e.message())))?
        {
            self.unsubscribed = self.subscriptions.replied(&self.buf[self.whole..end]);
            self.whole = end;
        }
        Ok(())
    }

    fn written(&mut self, n: usize) {
        self.buf.advance(n);
        self.scanner.consume(n);
        self.whole -= n;
    }
}

/// Why the stream ends early: the reply the client gets (may be empty) and
/// the reason logged.
type Closing = Option<(BytesMut, io::Error)>;

/// Client-to-upstream side: bytes read, their scanner, allowed bytes to send.
struct Upward {
    client_in: BytesMut,
    scanner: CommandScanner,
    to_upstream: BytesMut,
}

impl Upward {
    /// Moves every complete, allowed command to `to_upstream`. A denied
    /// command or malformed input stops it and says why the stream must end.
    fn filter(&mut self, shared: &Shared, subscriptions: &mut Subscriptions) -> Closing {
        let mut consumed = 0;
        let mut closing = None;
        loop {
            let buf = &self.client_in;
            match self.scanner.next_frame(buf) {
                Ok(Some(f)) => {
                    let name = self.scanner.arg(buf, &f, 0).unwrap_or_default();
                    let sub = self.scanner.arg(buf, &f, 1);
                    if let Some(shown) = shared.policy.denied(name, sub) {
                        shared.traffic.command_denied();
                        let mut reply = BytesMut::new();
                        write_refusal(&mut reply, shown);
                        let why = io::Error::other(format!("command '{shown}' refused by policy"));
                        closing = Some((reply, why));
                        break;
                    }
                    if !f.is_empty() {
                        subscriptions.forwarded(name, sub, f.argc());
                    }
                    self.scanner.write_frame(buf, &f, &mut self.to_upstream);
                    consumed = f.end;
                }
                Ok(None) => break,
                Err(e) => {
                    let mut reply = BytesMut::new();
                    e.write_reply(&mut reply);
                    let why = io::Error::other(format!("protocol error: {}", e.message()));
                    closing = Some((reply, why));
                    break;
                }
            }
        }
        self.client_in.advance(consumed);
        self.scanner.consume(consumed);
        closing
    }
}

/// Streams until either side closes (`Ok(None)`) or the client's last
/// subscription ends (`Ok(Some(unused client bytes))`). `pending` holds the
/// client bytes from the streaming command on. An error says why the client
/// was cut off. One `select!` over both directions and their bounds, which
/// must be seen together.
pub async fn pump<C>(
    client: &mut C,
    upstream: &mut UpstreamStream,
    pending: BytesMut,
    shared: &Shared,
) -> io::Result<Option<BytesMut>>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut up_rx, mut up_tx) = tokio::io::split(upstream);
    let mut down = Downstream {
        buf: BytesMut::with_capacity(READ_CHUNK),
        scanner: ReplyScanner::default(),
        whole: 0,
        subscriptions: Subscriptions::default(),
        unsubscribed: false,
    };
    let mut up = Upward {
        client_in: pending,
        scanner: CommandScanner::new(shared.limits),
        to_upstream: BytesMut::new(),
    };
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut closing = up.filter(shared, &mut down.subscriptions);
    while closing.is_none() {
        let resume = down.unsubscribed && down.whole == down.buf.len() && up.to_upstream.is_empty();
        if resume {
            break;
        }
        if down.buf.len() > shared.max_output_bytes {
            return Err(io::Error::other(format!(
                "slow reader: more than {} bytes of pub/sub output waiting \
                 (limits.max_output_bytes)",
                shared.max_output_bytes
            )));
        }
        tokio::select! {
            read = up_rx.read(&mut chunk) => match read? {
                0 => closing = Some((BytesMut::new(), io::Error::other("Redis closed the stream"))),
                n => down.push(&chunk[..n])?,
            },
            wrote = client_tx.write(&down.buf[..down.whole]), if down.whole > 0 => {
                down.written(wrote?);
            }
            read = client_rx.read_buf(&mut up.client_in),
                if up.to_upstream.len() < shared.max_batch_bytes =>
            {
                if read? == 0 {
                    return Ok(None);
                }
                closing = up.filter(shared, &mut down.subscriptions);
            }
            wrote = up_tx.write(&up.to_upstream), if !up.to_upstream.is_empty() => {
                up.to_upstream.advance(wrote?);
            }
        }
    }
    // The whole replies received so far, then the closing error if any; a
    // client that does not take them within the frame timeout is cut off.
    let mut last = down.buf.split_to(down.whole);
    let outcome = match closing {
        Some((reply, why)) => {
            last.extend_from_slice(&reply);
            if reply.is_empty() {
                Ok(None)
            } else {
                Err(why)
            }
        }
        None => Ok(Some(std::mem::take(&mut up.client_in))),
    };
    match tokio::time::timeout(shared.frame_timeout, client_tx.write_all(&last)).await {
        Ok(Ok(())) => outcome,
        _ => outcome.and(Ok(None)),
    }
}
