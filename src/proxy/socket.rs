//! A client socket split in two halves, so that in multiplexed mode the lane
//! that read a batch's replies can write them to the client itself
//! ([`ClientWrite`]): one task wake-up per request instead of two (the
//! lane's, then the session's). The session keeps reading its half, and
//! writes only once no batch of its client is in the lane's hands.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix};

use crate::backend::ClientWrite;

/// What a session serves: a byte stream, and maybe a write half a lane may
/// use directly.
pub trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send {
    fn direct(&self) -> Option<Arc<dyn ClientWrite>> {
        None
    }

    /// Ready when a read would not wait (data, EOF or an error): an idle
    /// session waits here without a read buffer.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// The address the client connected to (TCP): poolside's own, as the
    /// one-node cluster it presents.
    fn local_ip(&self) -> Option<IpAddr> {
        None
    }
}

/// A read half that can say when a read would not wait.
pub trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for tcp::OwnedReadHalf {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl ReadReady for unix::OwnedReadHalf {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

/// A write half shared by the session (through [`AsyncWrite`]) and a lane
/// (through [`ClientWrite`]): both only try to write, and the session waits
/// for writability itself.
pub trait SharedWrite: ClientWrite + 'static {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    fn local_ip(&self) -> Option<IpAddr> {
        None
    }
}

impl ClientWrite for tcp::OwnedWriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        tcp::OwnedWriteHalf::try_write(self, buf)
    }
}

impl SharedWrite for tcp::OwnedWriteHalf {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_write_ready(cx)
    }

    fn local_ip(&self) -> Option<IpAddr> {
        self.local_addr().ok().map(|a| a.ip())
    }
}

impl ClientWrite for unix::OwnedWriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        unix::OwnedWriteHalf::try_write(self, buf)
    }
}

impl SharedWrite for unix::OwnedWriteHalf {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_write_ready(cx)
    }
}

/// A client connection as two halves. Reads go through the read half's own
/// `poll_read` (which knows that a short read drained the socket, so no
/// extra read returns `EAGAIN`); writes try the shared write half when it is
/// ready. The socket closes when the session and every lane let go of it.
pub struct Split<R, W> {
    read: R,
    write: Arc<W>,
}

impl Split<tcp::OwnedReadHalf, tcp::OwnedWriteHalf> {
    pub fn tcp(socket: tokio::net::TcpStream) -> Self {
        let (read, write) = socket.into_split();
        Split {
            read,
            write: Arc::new(write),
        }
    }
}

impl Split<unix::OwnedReadHalf, unix::OwnedWriteHalf> {
    pub fn unix(socket: tokio::net::UnixStream) -> Self {
        let (read, write) = socket.into_split();
        Split {
            read,
            write: Arc::new(write),
        }
    }
}

impl<R: AsyncRead + ReadReady + Unpin + Send, W: SharedWrite> ClientSocket for Split<R, W> {
    fn direct(&self) -> Option<Arc<dyn ClientWrite>> {
        Some(self.write.clone())
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.read.poll_read_ready(cx)
    }

    fn local_ip(&self) -> Option<IpAddr> {
        self.write.local_ip()
    }
}

impl<R: AsyncRead + Unpin, W> AsyncRead for Split<R, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: SharedWrite> AsyncWrite for Split<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.write.poll_write_ready(cx))?;
            match self.write.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: a write went to the socket or not at all.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The write half shuts down when its last holder drops it; a lane
        // may still hold it for a batch it is writing.
        Poll::Ready(Ok(()))
    }
}
