//! Security settings: TLS to Redis, the command policy, secret files, and the
//! start-up checks that keep a misconfigured poolside from serving at all.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::{url, Config, Profile, Secret, UpstreamConfig};

/// TLS to Redis (`[tls]`). On when `enabled` or the upstream URL is `rediss://`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Encrypt upstream connections even with a `redis://` URL. Default false.
    pub enabled: bool,
    /// PEM bundle of the CAs that may sign Redis' certificate. Not set by
    /// default: the system trust store is used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name checked against Redis' certificate. Default: the URL's host.
    pub server_name: Option<String>,
    /// Lowest accepted protocol version, "1.2" (default) or "1.3".
    pub min_version: String,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            enabled: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            min_version: "1.2".into(),
        }
    }
}

/// What clients may run (`[policy]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Commands answered with `-ERR command 'X' is disabled by poolside
    /// policy` instead of being forwarded: a name (`FLUSHALL`) or a name and
    /// a subcommand (`SCRIPT KILL`), case-insensitive.
    pub deny_commands: Vec<String>,
}

impl PolicyConfig {
    /// Production and staging refuse commands that destroy data, stall Redis
    /// or reconfigure it; development refuses none.
    pub fn for_profile(profile: Profile) -> PolicyConfig {
        let deny: &[&str] = match profile {
            Profile::Development => &[],
            Profile::Staging | Profile::Production => &[
                "FLUSHALL",
                "FLUSHDB",
                "KEYS",
                "CONFIG",
                "DEBUG",
                "SHUTDOWN",
                "SLAVEOF",
                "REPLICAOF",
                "MIGRATE",
                "MODULE",
                "SCRIPT KILL",
            ],
        };
        PolicyConfig {
            deny_commands: deny.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Reads a secret from a file as Kubernetes mounts them: the whole content,
/// less one trailing line break. The error names the file, never the content.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// A secret that can be replaced while poolside runs (SIGHUP re-reads a
/// password file); every clone sees the latest value. Prints redacted.
#[derive(Clone, Default)]
pub struct SecretCell(Arc<RwLock<Option<Secret>>>);

impl SecretCell {
    pub fn new(value: Option<Secret>) -> SecretCell {
        SecretCell(Arc::new(RwLock::new(value)))
    }

    pub fn get(&self) -> Option<Secret> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, value: Option<Secret>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

impl fmt::Debug for SecretCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCell(<redacted>)")
    }
}

/// Like the derived `Debug`, with the URL's password redacted: a config
/// printed with `{:?}` (a panic message, a debug log) must not leak it.
impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &url::redact(&self.url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("sentinel", &self.sentinel)
            .finish()
    }
}

/// A rejected security setting: key, shown value, reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

pub(super) fn problem(
    key: &'static str,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> Problem {
    Problem {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// Whether clients must authenticate: a password or a user list is set.
    pub fn requires_client_auth(&self) -> bool {
        self.client_password.is_some()
            || self.client_password_file.is_some()
            || !self.client_users.is_empty()
    }

    /// The security checks run at start, by `Config::load` and `app::start`:
    /// a flat list of independent checks, one `if` each.
    pub fn check_security(&self) -> Result<(), Problem> {
        let remote = self
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        if remote && !self.requires_client_auth() && !self.allow_unauthenticated_remote {
            return Err(problem(
                "listen",
                &self.listen,
                "a non-loopback address without client authentication would let anyone on \
                 the network use Redis as poolside; set client_password \
                 (POOLSIDE_CLIENT_PASSWORD or POOLSIDE_CLIENT_PASSWORD_FILE) or client_users, \
                 or set allow_unauthenticated_remote = true if the network is trusted",
            ));
        }
        let files = [
            ("client_password_file", &self.client_password_file),
            ("upstream.password_file", &self.upstream.password_file),
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ];
        for (key, path) in files {
            if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                return Err(problem(key, path.display().to_string(), "no such file"));
            }
        }
        let tls = &self.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(problem(
                "tls.key_file",
                "",
                "mutual TLS needs both tls.cert_file and tls.key_file",
            ));
        }
        if !matches!(tls.min_version.as_str(), "1.2" | "1.3") {
            return Err(problem(
                "tls.min_version",
                &tls.min_version,
                "expected \"1.2\" or \"1.3\"",
            ));
        }
        for entry in &self.policy.deny_commands {
            let words = entry.split_whitespace().count();
            if !(1..=2).contains(&words) || !entry.is_ascii() {
                return Err(problem(
                    "policy.deny_commands",
                    entry,
                    "each entry is a command name, optionally followed by one subcommand",
                ));
            }
        }
        for name in self.client_users.keys() {
            if name.is_empty() || name.bytes().any(|b| b <= b' ') {
                return Err(problem(
                    "client_users",
                    name,
                    "user names must be non-empty without spaces",
                ));
            }
        }
        let limits = &self.limits;
        if limits.max_pipeline_bytes < 1024 {
            return Err(problem(
                "limits.max_pipeline_bytes",
                limits.max_pipeline_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if limits.max_output_bytes < 64 * 1024 {
            return Err(problem(
                "limits.max_output_bytes",
                limits.max_output_bytes.to_string(),
                "must be at least 65536",
            ));
        }
        if limits.max_reply_buffer_bytes < 256 * 1024 {
            return Err(problem(
                "limits.max_reply_buffer_bytes",
                limits.max_reply_buffer_bytes.to_string(),
                "must be at least 262144",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap().expose(), "s3cret");
        std::fs::write(&path, "s3 cret \r\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap().expose(), "s3 cret ");
        std::fs::write(&path, "").unwrap();
        assert!(read_secret_file(&path).unwrap_err().contains("empty"));
        let missing = read_secret_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let mut config = Config::for_profile(Profile::Production);
        config.upstream.url = "rediss://app:url-secret@h:1/0".into();
        config.upstream.password = Some(Secret::new("upstream-secret"));
        config.client_password = Some(Secret::new("client-secret"));
        config
            .client_users
            .insert("app".into(), Secret::new("user-secret"));
        let shown = format!(
            "{config:?} {:?}",
            SecretCell::new(config.client_password.clone())
        );
        assert!(!shown.contains("secret\""), "{shown}");
        assert!(!shown.contains("url-secret"), "{shown}");
        assert!(shown.contains("rediss://app:<redacted>@h:1/0"), "{shown}");
    }

    #[test]
    fn remote_listen_needs_client_auth_or_explicit_opt_out() {
        let mut config = Config::for_profile(Profile::Production);
        assert!(config.check_security().is_ok());
        config.listen = "0.0.0.0:6380".into();
        let err = config.check_security().unwrap_err();
        assert_eq!(err.key, "listen");
        assert!(err.reason.contains("allow_unauthenticated_remote"));
        config.client_password = Some(Secret::new("x"));
        assert!(config.check_security().is_ok());
        config.client_password = None;
        config.allow_unauthenticated_remote = true;
        assert!(config.check_security().is_ok());
    }

    #[test]
    fn rejects_half_configured_mutual_tls_and_bad_policy() {
        let mut config = Config::for_profile(Profile::Development);
        config.tls.cert_file = Some("Cargo.toml".into());
        assert_eq!(config.check_security().unwrap_err().key, "tls.key_file");
        let mut config = Config::for_profile(Profile::Development);
        config.policy.deny_commands = vec!["CLIENT KILL NOW".into()];
        assert_eq!(
            config.check_security().unwrap_err().key,
            "policy.deny_commands"
        );
        config.policy.deny_commands = vec!["client kill".into()];
        assert!(config.check_security().is_ok());
    }
}
