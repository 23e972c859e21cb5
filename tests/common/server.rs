//! A real `redis-server` child process on a free loopback port, killed on
//! drop: plain, with a password, TLS-only, or with a config file and any
//! extra arguments (the deploy tests run deploy/redis/production.conf).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::raw::{RawClient, Reply};
use super::{client_count_on, connect_url, free_port, info_field};

/// How long a redis-server may take to accept its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when another process took the free one first.
const START_ATTEMPTS: usize = 5;

/// TLS for the server: `--port 0 --tls-port P`, so it accepts TLS only.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// `--tls-auth-clients yes` (mutual TLS) or `no`.
    pub auth_clients: bool,
}

/// How to start a [`RedisServer`]; [`RedisServer::builder`] makes one.
#[derive(Clone, Debug, Default)]
pub struct RedisBuilder {
    config_file: Option<PathBuf>,
    password: Option<String>,
    requirepass: bool,
    tls: Option<TlsFiles>,
    persistent: bool,
    args: Vec<String>,
    log_file: Option<PathBuf>,
    port: Option<u16>,
}

impl RedisBuilder {
    /// `--requirepass PASSWORD`; the helpers that connect directly use it.
    pub fn password(mut self, password: &str) -> RedisBuilder {
        self.password = Some(password.to_string());
        self.requirepass = true;
        self
    }

    /// The password the server's own config file sets: used to connect
    /// (readiness PING, direct connections), not passed as `--requirepass`.
    pub fn password_from_config(mut self, password: &str) -> RedisBuilder {
        self.password = Some(password.to_string());
        self.requirepass = false;
        self
    }

    /// Listens with TLS only, with this certificate, key and CA.
    pub fn tls(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> RedisBuilder {
        self.tls = Some(TlsFiles {
            cert: cert.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
            ca: ca.as_ref().to_path_buf(),
            auth_clients: false,
        });
        self
    }

    /// With [`RedisBuilder::tls`]: require a client certificate (mutual TLS).
    pub fn tls_auth_clients(mut self, require: bool) -> RedisBuilder {
        let tls = self
            .tls
            .as_mut()
            .expect("tls_auth_clients needs tls(...) first");
        tls.auth_clients = require;
        self
    }

    /// A config file, given to redis-server as its first argument; the
    /// port, bind address and other arguments follow and override it.
    pub fn config_file(mut self, path: impl AsRef<Path>) -> RedisBuilder {
        self.config_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Leaves persistence to the config file and the extra arguments:
    /// without this, `--save "" --appendonly no` are passed.
    pub fn persistent(mut self) -> RedisBuilder {
        self.persistent = true;
        self
    }

    /// One more argument, after all the others.
    pub fn arg(mut self, arg: impl Into<String>) -> RedisBuilder {
        self.args.push(arg.into());
        self
    }

    /// More arguments, after all the others.
    pub fn args<I, S>(mut self, args: I) -> RedisBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The server's stdout and stderr go to this file (truncated at each
    /// start) instead of nowhere; a server that fails to start shows it.
    pub fn log_file(mut self, path: impl AsRef<Path>) -> RedisBuilder {
        self.log_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Listens on this port instead of a free one (no retry with another
    /// port when it is taken): for a test that pointed poolside at the port
    /// before anything listened there.
    pub fn port(mut self, port: u16) -> RedisBuilder {
        self.port = Some(port);
        self
    }

    /// Starts the server on a free port and waits until it is ready: it
    /// answers PING (a TLS server: it accepts TCP connections).
    pub async fn start(self) -> RedisServer {
        // Another process may take the free port between our probe and the
        // server's bind: retry with a fresh port when the server exits early.
        let attempts = if self.port.is_some() {
            1
        } else {
            START_ATTEMPTS
        };
        for _ in 0..attempts {
            let mut server = RedisServer {
                child: None,
                port: self.port.unwrap_or_else(free_port),
                options: self.clone(),
            };
            server.spawn();
            if server.wait_ready().await {
                return server;
            }
            server.stop();
        }
        let hint = match self.tls {
            Some(_) => " (is it built with TLS?)",
            None => "",
        };
        panic!(
            "redis-server {:?} did not start after {attempts} attempts{hint}{}",
            self.command_line(self.port.unwrap_or(0)),
            self.log_text()
        );
    }

    /// [`RedisBuilder::start`] for a plain `#[test]`, on a runtime of its own.
    /// Not from inside a tokio runtime.
    pub fn start_blocking(self) -> RedisServer {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(self.start())
    }

    /// Every argument of a server on `port`.
    fn command_line(&self, port: u16) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(file) = &self.config_file {
            args.push(file.display().to_string());
        }
        let port = port.to_string();
        match &self.tls {
            None => args.extend(["--port".into(), port]),
            Some(tls) => {
                args.extend(["--port".into(), "0".into()]);
                args.extend(["--tls-port".into(), port]);
                args.extend(["--tls-cert-file".into(), tls.cert.display().to_string()]);
                args.extend(["--tls-key-file".into(), tls.key.display().to_string()]);
                args.extend(["--tls-ca-cert-file".into(), tls.ca.display().to_string()]);
                let auth = if tls.auth_clients { "yes" } else { "no" };
                args.extend(["--tls-auth-clients".into(), auth.into()]);
            }
        }
        args.extend(["--bind".into(), "127.0.0.1".into()]);
        if !self.persistent {
            args.extend(["--save".into(), String::new()]);
            args.extend(["--appendonly".into(), "no".into()]);
            // A replica loads a full sync from the socket: no dump.rdb left
            // in the working directory.
            args.extend(["--repl-diskless-load".into(), "swapdb".into()]);
        }
        args.extend(["--daemonize".into(), "no".into()]);
        if let (true, Some(password)) = (self.requirepass, &self.password) {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        args.extend(self.args.iter().cloned());
        args
    }

    fn log_text(&self) -> String {
        match &self.log_file {
            Some(path) => format!(
                "; log {}:\n{}",
                path.display(),
                std::fs::read_to_string(path).unwrap_or_default()
            ),
            None => String::new(),
        }
    }
}

/// A `redis-server` child process on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    options: RedisBuilder,
}

impl RedisServer {
    /// Options for a server; `RedisServer::builder().start()` is [`RedisServer::start`].
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// Starts a redis-server without persistence and waits until it answers PING.
    pub async fn start() -> RedisServer {
        RedisServer::builder().start().await
    }

    /// Same as [`RedisServer::start`] with `--requirepass`.
    pub async fn start_with_password(password: &str) -> RedisServer {
        RedisServer::builder().password(password).start().await
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(self.options.command_line(self.port))
            .stdin(Stdio::null());
        match &self.options.log_file {
            Some(path) => {
                let log = File::create(path)
                    .unwrap_or_else(|e| panic!("create redis log {}: {e}", path.display()));
                command
                    .stdout(log.try_clone().expect("clone log handle"))
                    .stderr(log);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        self.child = Some(
            command
                .spawn()
                .expect("spawn redis-server (is it installed?)"),
        );
    }

    /// Polls until the server is ready; false if the child exited or the deadline passed.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if self.ready().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn ready(&self) -> bool {
        if self.is_tls() {
            // No TLS client here: a listening socket will do.
            return tokio::net::TcpStream::connect(self.addr()).await.is_ok();
        }
        let Ok(mut client) = RawClient::try_connect(self.addr()).await else {
            return false;
        };
        if let Some(password) = &self.options.password {
            if client
                .try_command(&["AUTH", password.as_str()])
                .await
                .is_err()
            {
                return false;
            }
        }
        matches!(client.try_command(&["PING"]).await, Ok(Reply::Simple(s)) if s == "PONG")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Started and not stopped (it may still have died by itself).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn is_tls(&self) -> bool {
        self.options.tls.is_some()
    }

    pub fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` with TLS), without the password
    /// (give it to poolside separately).
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// [`RedisServer::url`] with the password in it, when there is one.
    pub fn url_with_password(&self) -> String {
        match &self.options.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => self.url(),
        }
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`, ...) to the server process, as
    /// `kill -<signal>` does: `STOP` freezes it the way a partition or a stuck
    /// fork looks from poolside. Panics when the server is not running.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", child.id());
    }

    /// Kills the server and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.spawn();
            if self.wait_ready().await {
                return;
            }
            self.stop();
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}{}",
                self.port,
                self.options.log_text()
            );
        }
    }

    fn assert_plain(&self) {
        assert!(
            !self.is_tls(),
            "no redis-rs connections to a TLS-only redis-server (direct_raw has TLS)"
        );
    }

    /// A direct (not through poolside) connection to this server.
    pub async fn direct(&self) -> MultiplexedConnection {
        self.assert_plain();
        connect_url(&self.url_with_password()).await
    }

    /// A direct raw RESP connection, authenticated when the server has a
    /// password; over TLS (verified with the server's CA) to a TLS-only
    /// server that does not require client certificates.
    pub async fn direct_raw(&self) -> RawClient {
        let mut client = match &self.options.tls {
            None => RawClient::connect(self.addr()).await,
            Some(tls) => {
                assert!(!tls.auth_clients, "no direct connections with mutual TLS");
                RawClient::try_connect_tls(self.addr(), &tls.ca)
                    .await
                    .unwrap_or_else(|e| panic!("TLS connect to {}: {e}", self.addr()))
            }
        };
        if let Some(password) = &self.options.password {
            client
                .command(&["AUTH", password.as_str()])
                .await
                .expect_ok();
        }
        client
    }

    /// A direct blocking redis-rs connection, for plain `#[test]`s.
    pub fn blocking(&self) -> redis::Connection {
        self.assert_plain();
        connect_blocking(&self.url_with_password())
    }

    /// Client connections Redis sees, not counting the one that asks.
    pub async fn client_count(&self) -> usize {
        let mut client = self.direct_raw().await;
        client_count_on(&mut client).await
    }

    /// `blocked_clients` from `INFO clients`.
    pub async fn blocked_clients(&self) -> u64 {
        let mut client = self.direct_raw().await;
        let info = client.command(&["INFO", "clients"]).await.expect_string();
        info_field(&info, "blocked_clients")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking redis-rs connection to `url`, with a read timeout.
pub fn connect_blocking(url: &str) -> redis::Connection {
    let connect = || -> redis::RedisResult<redis::Connection> {
        let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(con)
    };
    connect().unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}
