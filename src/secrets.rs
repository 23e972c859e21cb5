//! Secrets that may change while poolside runs: password files, read at
//! start and re-read on SIGHUP. Values are never logged; only file names are.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use crate::config::{read_secret_file, Config, Secret, SecretCell};
use crate::proxy::Credentials;

/// The upstream password as configured: `upstream.password_file`, else
/// `upstream.password`, else the URL's.
pub fn upstream_password(
    config: &Config,
    url_password: Option<String>,
) -> Result<SecretCell, String> {
    let password = match &config.upstream.password_file {
        Some(path) => {
            Some(read_secret_file(path).map_err(|e| format!("upstream.password_file: {e}"))?)
        }
        None => config
            .upstream
            .password
            .clone()
            .or(url_password.map(Secret::new)),
    };
    Ok(SecretCell::new(password))
}

/// Re-reads the password files poolside was started with.
pub struct SecretFiles {
    upstream_file: Option<PathBuf>,
    upstream: SecretCell,
    client: Arc<Credentials>,
    /// `upstream.sentinel.password_file` and the Sentinels' password.
    sentinel: Option<(PathBuf, SecretCell)>,
}

impl SecretFiles {
    /// Reads the client password file now: a missing file stops the start.
    pub fn load(
        config: &Config,
        upstream: SecretCell,
        client: Arc<Credentials>,
    ) -> Result<SecretFiles, String> {
        client
            .reload()
            .map_err(|e| format!("client_password_file: {e}"))?;
        Ok(SecretFiles {
            upstream_file: config.upstream.password_file.clone(),
            upstream,
            client,
            sentinel: None,
        })
    }

    /// Also re-read the Sentinels' password file into `cell` on SIGHUP.
    pub fn with_sentinel(mut self, file: Option<PathBuf>, cell: SecretCell) -> SecretFiles {
        self.sentinel = file.map(|f| (f, cell));
        self
    }

    /// SIGHUP: new upstream connections and new AUTHs use the files' current
    /// contents; open connections stay as they are. A file that cannot be
    /// read leaves its previous secret in force. Returns how many were read.
    pub fn reload(&self) -> usize {
        let mut read = 0;
        if let Some(path) = &self.upstream_file {
            match read_secret_file(path) {
                Ok(secret) => {
                    self.upstream.set(Some(secret));
                    read += 1;
                    info!(file = %path.display(), "reloaded the upstream password");
                }
                Err(e) => {
                    warn!(error = %e, "upstream.password_file not reloaded; the previous password stays")
                }
            }
        }
        if let Some((path, cell)) = &self.sentinel {
            match read_secret_file(path) {
                Ok(secret) => {
                    cell.set(Some(secret));
                    read += 1;
                    info!(file = %path.display(), "reloaded the Sentinels' password");
                }
                Err(e) => {
                    warn!(error = %e, "upstream.sentinel.password_file not reloaded; the previous password stays")
                }
            }
        }
        match self.client.reload() {
            Ok(true) => {
                read += 1;
                info!("reloaded the client password");
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "client_password_file not reloaded; the previous password stays")
            }
        }
        if self.upstream_file.is_none() && self.sentinel.is_none() && read == 0 {
            info!("SIGHUP: no password files configured; nothing to reload");
        }
        read
    }
}
