//! Client authentication: the client password (inline or from a file) and
//! ACL-style users, compared in constant time, replaceable on SIGHUP.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::local::constant_time_eq;
use crate::config::{read_secret_file, Config, Secret, SecretCell};

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
    /// Without client credentials, AUTH is checked against the upstream's
    /// own, as Redis would: an application that moved behind poolside keeps
    /// its `REDIS_PASSWORD`.
    upstream: Option<(Option<String>, SecretCell)>,
}

/// How an AUTH is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// `-WRONGPASS ...`, counted.
    WrongPass,
    /// `AUTH <password>` while the default user has none: Redis' own error.
    NoPasswordConfigured,
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
            upstream: None,
        }
    }

    /// Checks AUTH against `username`/`password` (the upstream's) when no
    /// client credentials are configured.
    pub fn with_upstream(mut self, username: Option<String>, password: SecretCell) -> Credentials {
        self.upstream = Some((username, password));
        self
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

    /// Checks `AUTH [user] password`. With client credentials configured,
    /// against those (every user's password is compared, so timing does not
    /// reveal which matched); without, against the upstream's as Redis
    /// answers (see [`Credentials::with_upstream`]).
    pub fn check(&self, user: Option<&[u8]>, pass: &[u8]) -> Verdict {
        if !self.required {
            return self.check_upstream(user, pass);
        }
        match self.check_client(user, pass) {
            true => Verdict::Ok,
            false => Verdict::WrongPass,
        }
    }

    /// Redis' rules for its `default` user and one ACL user: a default user
    /// without a password (`nopass`) takes any password given with its name,
    /// and refuses `AUTH <password>` with its own error.
    fn check_upstream(&self, user: Option<&[u8]>, pass: &[u8]) -> Verdict {
        let Some((username, password)) = &self.upstream else {
            return Verdict::Ok;
        };
        let expected_user = username.as_deref().unwrap_or("default").as_bytes();
        match (password.get(), user) {
            (None, None) => Verdict::NoPasswordConfigured,
            (None, Some(user)) if user == b"default" && expected_user == b"default" => Verdict::Ok,
            (None, Some(_)) => Verdict::WrongPass,
            (Some(secret), user) => {
                let pass_ok = constant_time_eq(pass, secret.expose().as_bytes());
                let user_ok = user.unwrap_or(b"default") == expected_user;
                if pass_ok && user_ok {
                    Verdict::Ok
                } else {
                    Verdict::WrongPass
                }
            }
        }
    }

    fn check_client(&self, user: Option<&[u8]>, pass: &[u8]) -> bool {
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
    fn without_client_credentials_auth_is_redis_own_check() {
        let c = Credentials::new(&config());
        assert!(!c.required());
        assert_eq!(c.check(None, b"whatever"), Verdict::Ok, "no upstream known");

        let none = Credentials::new(&config()).with_upstream(None, SecretCell::new(None));
        assert_eq!(none.check(None, b"x"), Verdict::NoPasswordConfigured);
        assert_eq!(none.check(Some(b"default"), b"x"), Verdict::Ok);
        assert_eq!(none.check(Some(b"bob"), b"x"), Verdict::WrongPass);

        let pw = SecretCell::new(Some(Secret::new("pw")));
        let with = Credentials::new(&config()).with_upstream(None, pw.clone());
        assert_eq!(with.check(None, b"pw"), Verdict::Ok);
        assert_eq!(with.check(Some(b"default"), b"pw"), Verdict::Ok);
        assert_eq!(with.check(None, b"nope"), Verdict::WrongPass);
        assert_eq!(with.check(Some(b"bob"), b"pw"), Verdict::WrongPass);

        let acl = Credentials::new(&config()).with_upstream(Some("app".into()), pw);
        assert_eq!(acl.check(Some(b"app"), b"pw"), Verdict::Ok);
        assert_eq!(acl.check(None, b"pw"), Verdict::WrongPass);
    }

    #[test]
    fn password_and_users() {
        let mut cfg = config();
        cfg.client_password = Some(Secret::new("pw"));
        cfg.client_users.insert("app".into(), Secret::new("app-pw"));
        let c = Credentials::new(&cfg);
        assert!(c.required());
        let ok = |user, pass| c.check(user, pass) == Verdict::Ok;
        assert!(ok(None, b"pw"));
        assert!(ok(Some(b"default"), b"pw"));
        assert!(!ok(None, b"app-pw"));
        assert!(ok(Some(b"app"), b"app-pw"));
        assert!(!ok(Some(b"app"), b"pw"));
        assert!(!ok(Some(b"nobody"), b"app-pw"));
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
        let ok = |pass| c.check(None, pass) == Verdict::Ok;
        assert!(c.required());
        assert!(!ok(b"inline"));
        assert!(c.reload().unwrap());
        assert!(ok(b"first"));
        std::fs::write(&path, "second").unwrap();
        c.reload().unwrap();
        assert!(!ok(b"first"));
        assert!(ok(b"second"));
        std::fs::remove_file(&path).unwrap();
        assert!(c.reload().is_err());
        assert!(ok(b"second"), "a failed reload keeps the password");
    }
}
