//! TLS to Redis with rustls (ring provider): the connector, built once at
//! start, and the stream type every upstream connection reads and writes.
//!
//! Pooling makes the handshake a cost per upstream connection, not per
//! client; rustls' in-memory session cache lets new connections resume.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::UpstreamError;
use crate::config::TlsConfig;

/// How to wrap a new upstream TCP connection in TLS.
#[derive(Clone)]
pub struct TlsTarget {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// `tls.server_name` was set: every node is verified against it.
    fixed_name: bool,
}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsTarget {
    /// Builds the rustls client config: roots from `ca_file` or the system
    /// store, an optional client certificate, TLS 1.2 or 1.3 from
    /// `min_version`. `host` is the URL's, used unless `server_name` is set.
    /// Errors name the file or setting at fault.
    pub fn build(config: &TlsConfig, host: &str) -> Result<TlsTarget, String> {
        let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version.as_str() {
            "1.3" => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots(config)?);
        let client = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!("tls.cert_file {}: no certificate", cert.display()));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("tls.cert_file/tls.key_file: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        let name = config.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("tls.server_name '{name}': {e}"))?;
        Ok(TlsTarget {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
            fixed_name: config.server_name.is_some(),
        })
    }

    /// The same settings for another node (a primary a Sentinel named, a
    /// Sentinel): verified against `host`, unless `tls.server_name` is set.
    pub fn for_host(&self, host: &str) -> Result<TlsTarget, UpstreamError> {
        let server_name = if self.fixed_name {
            self.server_name.clone()
        } else {
            ServerName::try_from(host.to_string())
                .map_err(|e| UpstreamError::Tls(format!("server name '{host}': {e}")))?
        };
        Ok(TlsTarget {
            connector: self.connector.clone(),
            server_name,
            fixed_name: self.fixed_name,
        })
    }

    /// Runs the handshake on a connected socket. A certificate problem is
    /// `UpstreamError::Tls` (not retried); a network one stays `Connect`.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<UpstreamStream, UpstreamError> {
        match self.connector.connect(self.server_name.clone(), tcp).await {
            Ok(tls) => Ok(UpstreamStream::Tls(Box::new(tls))),
            Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => Err(UpstreamError::Tls(format!(
                    "{tls} (server name '{}'; check tls.ca_file, tls.server_name and the \
                     client certificate)",
                    self.server_name.to_str()
                ))),
                None => Err(UpstreamError::Connect(e)),
            },
        }
    }
}

fn roots(config: &TlsConfig) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            // Unparsable system certificates are skipped, as browsers do.
            let native = rustls_native_certs::load_native_certs();
            let _ = roots.add_parsable_certificates(native.certs);
        }
    }
    if roots.is_empty() {
        return Err(match &config.ca_file {
            Some(path) => format!("tls.ca_file {}: no certificate in it", path.display()),
            None => "tls: the system trust store has no CA certificates; set tls.ca_file".into(),
        });
    }
    Ok(roots)
}

/// An upstream byte stream: plain TCP or TLS over TCP.
pub enum UpstreamStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for UpstreamStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamStream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            UpstreamStream::Tls(s) => f.debug_tuple("Tls").field(s.get_ref().0).finish(),
        }
    }
}

impl UpstreamStream {
    /// True when the peer closed this idle connection or sent something
    /// unasked. No syscall while the socket is not readable (tokio caches
    /// readiness); over TLS a pending record (a session ticket) is consumed
    /// and does not count.
    pub fn is_closed(&mut self) -> bool {
        match self {
            UpstreamStream::Tcp(tcp) => {
                let mut probe = [0u8; 1];
                match tcp.try_read(&mut probe) {
                    Ok(_) => true,
                    Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                }
            }
            UpstreamStream::Tls(tls) => {
                let waker = noop_waker();
                let mut cx = Context::from_waker(&waker);
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                !Pin::new(tls.as_mut())
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => {
                // rustls may still hold ciphertext of a write that returned
                // early (socket full); it must go out before we wait for the
                // reply to it, whether or not the caller flushed.
                if let Poll::Ready(Err(e)) = Pin::new(s.as_mut()).poll_flush(cx) {
                    return Poll::Ready(Err(e));
                }
                Pin::new(s.as_mut()).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Tcp(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A waker that does nothing, for the one non-blocking poll in `is_closed`
/// (`Waker::noop` needs a newer Rust than the crate's minimum).
fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(|_| RAW, |_| {}, |_| {}, |_| {});
    const RAW: RawWaker = RawWaker::new(std::ptr::null(), &VTABLE);
    // SAFETY: every vtable function ignores the (null) data pointer.
    unsafe { Waker::from_raw(RAW) }
}
