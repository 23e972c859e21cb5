//! Wires listener, pool, health checker and admin server; signals and drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::admin::{self, AdminState};
use crate::backend::cluster::Cluster;
use crate::config::{url, Config, SecretCell};
use crate::pool::{
    check_once, spawn_health_checker, Address, Pool, Primary, Snapshot, Target, TlsTarget,
};
use crate::proxy::{serve, Shared};
use crate::secrets::{self, SecretFiles};
use crate::sentinel::{SentinelLink, Sentinels};
use crate::traffic::Traffic;

/// A running poolside: what tests and `main` hold on to.
pub struct Running {
    /// Where clients connect (the real port when configured with port 0).
    pub client_addr: SocketAddr,
    /// Where the admin HTTP server listens.
    pub admin_addr: SocketAddr,
    pub unix_socket: Option<PathBuf>,
    pool: Pool,
    traffic: Arc<Traffic>,
    /// Set when the upstream is a Redis Cluster.
    cluster: Option<Arc<Cluster>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    secrets: SecretFiles,
}

/// Starts poolside on the current tokio runtime and returns once it listens.
/// Redis need not be up: clients get errors until it is. The wiring is one
/// sequence (config, pool, backend, listeners, admin), read top to bottom.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let parsed =
        url::parse(&config.upstream.url).map_err(|e| anyhow::anyhow!("upstream.url: {e}"))?;
    config
        .check_security()
        .map_err(|p| anyhow::anyhow!("{} {}: {}", p.key, p.value, p.reason))?;
    let password =
        secrets::upstream_password(&config, parsed.password.clone()).map_err(anyhow::Error::msg)?;
    let tls = (parsed.tls || config.tls.enabled)
        .then(|| TlsTarget::build(&config.tls, &parsed.host))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let sentinel = config
        .upstream
        .sentinel_setup(&parsed)
        .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
    let cluster_seeds = config
        .upstream
        .cluster_seeds(&parsed)
        .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
    let address = match (&sentinel, &cluster_seeds) {
        (Some(setup), _) => Address::Sentinel(Arc::new(Primary::new(
            setup.master_name.clone(),
            Duration::from_millis(config.upstream.sentinel.failover_hold_ms),
        ))),
        // The first seed's pool is the one `/pool/status` reports on; the
        // other nodes' pools come with the slot map.
        (None, Some(seeds)) => Address::Fixed(seeds[0].clone()),
        (None, None) => Address::Fixed(parsed.address()),
    };
    let target = Target {
        address,
        username: config.upstream.username.clone().or(parsed.username.clone()),
        password: password.clone(),
        tls,
        // A cluster has database 0 only.
        db: if cluster_seeds.is_some() {
            0
        } else {
            parsed.db
        },
        connect_timeout: Duration::from_millis(config.upstream.connect_timeout_ms),
        keepalive: (config.pool.tcp_keepalive_secs > 0)
            .then(|| Duration::from_secs(config.pool.tcp_keepalive_secs)),
        client_name: Some(admin::connection_name(
            &admin::instance_name(config.fleet.instance.as_deref()),
            config.profile,
        )),
        readonly: false,
    };
    let pool = Pool::new(&config, target.clone());
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut sentinel_password = SecretCell::default();
    let sentinels = match sentinel {
        Some(setup) => {
            let s = &config.upstream.sentinel;
            let password = match &s.password_file {
                Some(path) => Some(
                    crate::config::read_secret_file(path)
                        .map_err(|e| anyhow::anyhow!("upstream.sentinel.password_file: {e}"))?,
                ),
                None => s.password.clone(),
            };
            sentinel_password = SecretCell::new(password);
            let link = SentinelLink {
                master_name: setup.master_name,
                addresses: setup.addresses,
                username: s.username.clone(),
                password: sentinel_password.clone(),
                tls: target.tls.clone(),
                timeout: Duration::from_millis(config.upstream.connect_timeout_ms.min(1_000)),
                poll_every: Duration::from_millis(s.poll_interval_ms),
            };
            let (sentinels, task) =
                Sentinels::spawn(link, pool.clone(), target.clone(), rx.clone());
            tasks.push(task);
            Some(sentinels)
        }
        None => None,
    };
    let traffic = Arc::new(Traffic::default());
    let cluster = cluster_seeds.map(|seeds| {
        let (pool, traffic) = (pool.clone(), traffic.clone());
        let cluster = Cluster::new(&config, target.clone(), seeds, pool, traffic, rx.clone());
        tasks.push(cluster.spawn_refresher());
        cluster
    });
    let shared = Shared::new(
        &config,
        pool.clone(),
        traffic.clone(),
        &target,
        cluster.clone(),
    );
    let shared = Arc::new(shared);
    let secrets = SecretFiles::load(&config, password, shared.credentials.clone())
        .map_err(anyhow::Error::msg)?
        .with_sentinel(
            config.upstream.sentinel.password_file.clone(),
            sentinel_password,
        );
    let drain = Duration::from_millis(config.drain_timeout_ms);

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let client_addr = listener.local_addr()?;
    shared.cluster_face.set_port(client_addr.port());
    let admin_listener = TcpListener::bind(&config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;

    tasks.push(tokio::spawn(serve(
        listener,
        shared.clone(),
        rx.clone(),
        drain,
    )));
    if let Some(path) = &config.unix_socket {
        // A socket file left by an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
        let unix = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        tasks.push(tokio::spawn(serve(unix, shared.clone(), rx.clone(), drain)));
    }
    let interval = Duration::from_secs(config.pool.health_check_interval_secs);
    tasks.push(spawn_health_checker(pool.clone(), interval, rx.clone()));
    let admin_state = Arc::new(AdminState::new(
        &config,
        pool.clone(),
        traffic.clone(),
        &target,
        sentinels,
        cluster.clone(),
    )?);
    admin_state.listening.store(true, Ordering::Release);
    tasks.extend(admin_state.spawn_background(rx.clone()));
    tasks.push(tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        rx.clone(),
    )));
    // Learn at once whether Redis answers, rather than at the first client
    // (in Sentinel mode the discovery does: ROLE on the node named).
    if pool.primary().is_none() {
        let probe = pool.clone();
        tokio::spawn(async move { check_once(&probe).await });
    }

    info!(
        listen = %client_addr,
        admin = %admin_addr,
        upstream = %url::redact(&config.upstream.url),
        profile = %config.profile,
        connection_name = target.client_name.as_deref().unwrap_or_default(),
        max_connections = config.pool.max_connections,
        "poolside started"
    );
    Ok(Running {
        client_addr,
        admin_addr,
        unix_socket: config.unix_socket.clone(),
        pool,
        traffic,
        cluster,
        shutdown,
        tasks,
        secrets,
    })
}

impl Running {
    /// Pool occupancy and counters right now.
    pub fn pool_snapshot(&self) -> Snapshot {
        self.pool.snapshot()
    }

    /// The live client-side counters (clients, commands, auth failures,
    /// denied commands, failures by side).
    pub fn stats(&self) -> &Traffic {
        &self.traffic
    }

    /// The Redis Cluster behind poolside (its slot map, node pools and
    /// redirect counters), if the upstream is one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_deref()
    }

    /// What SIGHUP does: re-read the password files (see [`SecretFiles::reload`]).
    pub fn reload_secrets(&self) -> usize {
        self.secrets.reload()
    }

    /// Shutdown order:
    /// 1. stop accepting clients and admin requests;
    /// 2. let in-flight batches finish, up to the drain timeout, then cut sessions;
    /// 3. drop the pool, which closes every upstream connection.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        drop(self.pool);
    }
}

/// The runtime's worker threads for `worker_threads = configured` on a
/// process that may use `cores` cores. `0` chooses: half of them, at least
/// one. A sidecar shares its cores with the application (and often Redis),
/// and where they share them more threads lose: on a shared 2-core machine
/// one thread beat two in every scenario measured (README, Performance),
/// so 2 cores give 1; more cores were not measured here.
pub fn runtime_threads(configured: usize, cores: usize) -> usize {
    match configured {
        0 => (cores / 2).max(1),
        n => n,
    }
}

/// Builds the runtime from `config.worker_threads`, starts, and runs until SIGTERM/SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    // The cores this process may use: affinity and the cgroup CPU quota
    // (a Kubernetes CPU limit) included.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = runtime_threads(config.worker_threads, cores);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        info!(
            worker_threads = threads,
            configured = config.worker_threads,
            cores,
            "runtime started"
        );
        let running = start(config).await?;
        wait_for_signal(&running).await?;
        info!("shutdown signal received: no new clients; draining");
        running.shutdown().await;
        info!("poolside stopped");
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT; SIGHUP meanwhile re-reads the password files.
async fn wait_for_signal(running: &Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                running.reload_secrets();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::runtime_threads;

    #[test]
    fn zero_worker_threads_means_half_the_cores_at_least_one() {
        let chosen: Vec<usize> = [1, 2, 3, 4, 16]
            .map(|cores| runtime_threads(0, cores))
            .into();
        assert_eq!(chosen, [1, 1, 1, 2, 8]);
        // A number set is the number used, whatever the cores.
        assert_eq!(runtime_threads(3, 2), 3);
    }
}
