//! Helpers for the security tests: certificates made with rcgen, a
//! redis-server listening with TLS only, and this process's RSS.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA with its key, able to sign server and client certificates.
pub struct Ca {
    pub pem: String,
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A leaf certificate for `names` (DNS names or IPs): (cert PEM, key PEM).
    pub fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "poolside test");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// Certificate files for one test, in a temporary directory.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it must fail the handshake.
    pub other_ca: PathBuf,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("poolside test CA");
        let (server_cert, server_key) = ca.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = ca.leaf(&["poolside"], ExtendedKeyUsagePurpose::ClientAuth);
        let other = Ca::new("some other CA");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write cert file");
            path
        };
        Certs {
            ca: write("ca.pem", &ca.pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other.pem),
            dir,
        }
    }
}

/// A redis-server that accepts TLS only (`--port 0 --tls-port P`), killed on drop.
pub struct TlsRedis {
    child: Child,
    pub port: u16,
}

impl TlsRedis {
    /// `require_client_cert`: `--tls-auth-clients yes` (mutual TLS) or `no`.
    pub async fn start(certs: &Certs, require_client_cert: bool) -> TlsRedis {
        for _ in 0..5 {
            let port = free_port();
            let child = spawn(certs, port, require_client_cert);
            let mut server = TlsRedis { child, port };
            if server.wait_listening().await {
                return server;
            }
        }
        panic!("TLS redis-server did not start (is it built with TLS?)");
    }

    async fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(certs: &Certs, port: u16, require_client_cert: bool) -> Child {
    let arg = |p: &Path| p.display().to_string();
    Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--tls-port", &port.to_string()])
        .args(["--tls-cert-file", &arg(&certs.server_cert)])
        .args(["--tls-key-file", &arg(&certs.server_key)])
        .args(["--tls-ca-cert-file", &arg(&certs.ca)])
        .args([
            "--tls-auth-clients",
            if require_client_cert { "yes" } else { "no" },
        ])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// This process's resident set size (`VmRSS` in /proc/self/status), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}
