//! Client authentication: the client password (inline or from a file) and
//! ACL-style users, compared in constant time, replaceable on SIGHUP.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::local::constant_time_eq;
use crate::config::{read_secret_file, Config, Secret};

/// What a client must present. Swapped whole when a password file is re-read.
#[derive(Debug, Default)]
struct Accepted {
    /// For `AUTH <password>` and the user `default`.
    password: Option<Secret>,
    users: Vec<(String, Secret)>,
}

/// The credentials every session checks AUTH and HELLO ... AUTH against.
#[derive(Debug)]
pub struct Credentials {
    accepted: RwLock<Arc<Accepted>>,
    password_file: Option<PathBuf>,
    /// Fixed at start: a password, a password file or users are configured.
    required: bool,
}

impl Credentials {
    /// From `client_password`, `client_users` and `client_password_file`. The
    /// file is read by [`Credentials::reload`]; until then a password-file
    /// setup refuses every password (it fails closed).
    pub fn new(config: &Config) -> Credentials {
        let password = match config.client_password_file {
            Some(_) => None,
            None => config.client_password.clone(),
        };
        let users = config
            .client_users
            .iter()
            .map(|(name, secret)| (name.clone(), secret.clone()))
            .collect();
        Credentials {
            accepted: RwLock::new(Arc::new(Accepted { password, users })),
            password_file: config.client_password_file.clone(),
            required: config.requires_client_auth(),
        }
    }

    /// Whether a new client starts unauthenticated.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Re-reads `client_password_file`, if configured. On error the previous
    /// password stays in force. Returns whether a file was read.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.password_file else {
            return Ok(false);
        };
        let password = read_secret_file(path)?;
        let mut accepted = self.accepted.write().unwrap_or_else(|e| e.into_inner());
        *accepted = Arc::new(Accepted {
            password: Some(password),
            users: accepted.users.clone(),
        });
        Ok(true)
    }

    /// Checks `AUTH [user] password`. Without any credentials configured
    /// every AUTH succeeds: upstream credentials are poolside's own. Every
    /// user's password is compared, so timing does not reveal which matched.
    pub fn check(&self, user: Option<&[u8]>, pass: &[u8]) -> bool {
        if !self.required {
            return true;
        }
        let accepted = self
            .accepted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let user = user.unwrap_or(b"default");
        let mut ok = false;
        if user == b"default" {
            if let Some(expected) = &accepted.password {
                ok |= constant_time_eq(pass, expected.expose().as_bytes());
            }
        }
        for (name, secret) in &accepted.users {
            let pass_ok = constant_time_eq(pass, secret.expose().as_bytes());
            ok |= pass_ok && name.as_bytes() == user;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profile;

    fn config() -> Config {
        Config::for_profile(Profile::Development)
    }

    #[test]
    fn no_credentials_accepts_anything() {
        let c = Credentials::new(&config());
        assert!(!c.required());
        assert!(c.check(None, b"whatever"));
        assert!(c.check(Some(b"someone"), b"x"));
    }

    #[test]
    fn password_and_users() {
        let mut cfg = config();
        cfg.client_password = Some(Secret::new("pw"));
        cfg.client_users.insert("app".into(), Secret::new("app-pw"));
        let c = Credentials::new(&cfg);
        assert!(c.required());
        assert!(c.check(None, b"pw"));
        assert!(c.check(Some(b"default"), b"pw"));
        assert!(!c.check(None, b"app-pw"));
        assert!(c.check(Some(b"app"), b"app-pw"));
        assert!(!c.check(Some(b"app"), b"pw"));
        assert!(!c.check(Some(b"nobody"), b"app-pw"));
    }

    #[test]
    fn password_file_fails_closed_until_read_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "first\n").unwrap();
        let mut cfg = config();
        cfg.client_password = Some(Secret::new("inline"));
        cfg.client_password_file = Some(path.clone());
        let c = Credentials::new(&cfg);
        assert!(c.required());
        assert!(!c.check(None, b"inline"));
        assert!(c.reload().unwrap());
        assert!(c.check(None, b"first"));
        std::fs::write(&path, "second").unwrap();
        c.reload().unwrap();
        assert!(!c.check(None, b"first"));
        assert!(c.check(None, b"second"));
        std::fs::remove_file(&path).unwrap();
        assert!(c.reload().is_err());
        assert!(
            c.check(None, b"second"),
            "a failed reload keeps the password"
        );
    }
}
