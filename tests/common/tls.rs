//! Certificates made with rcgen for the TLS tests, and a TLS-only
//! redis-server that uses them.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::server::{RedisBuilder, RedisServer};

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
        Certs::for_names(&["localhost", "127.0.0.1"])
    }

    /// A server certificate valid for `names` only.
    pub fn for_names(names: &[&str]) -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("poolside test CA");
        let (server_cert, server_key) = ca.leaf(names, ExtendedKeyUsagePurpose::ServerAuth);
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

    /// A redis-server that accepts TLS only, with the server certificate:
    /// `require_client_cert` is `--tls-auth-clients yes` (mutual TLS) or `no`.
    pub fn redis_server(&self, require_client_cert: bool) -> RedisBuilder {
        RedisServer::builder()
            .tls(&self.server_cert, &self.server_key, &self.ca)
            .tls_auth_clients(require_client_cert)
    }
}
