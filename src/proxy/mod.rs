//! Listener, per-client session and planner (DESIGN.md, hops 1-3). The
//! session hands each planned batch to the backend (`crate::backend`).

mod auth;
mod blocking;
pub mod cluster_face;
mod hello;
mod listener;
mod local;
mod planner;
mod policy;
mod session;
mod socket;
mod stream;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

pub use auth::Credentials;
pub use listener::{serve, Accept};
pub use local::{constant_time_eq, ClientState};
pub use planner::{plan, Batch};
pub use policy::Policy;

use crate::backend::cluster::Cluster;
use crate::backend::Backend;
use crate::config::{Config, PoolMode};
use crate::pool::{Pool, Target};
use crate::resp::Limits;
use crate::traffic::Traffic;

/// What every session of one poolside shares.
pub struct Shared {
    pub backend: Arc<Backend>,
    pub traffic: Arc<Traffic>,
    pub limits: Limits,
    pub max_clients: usize,
    pub frame_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// The database clients start in (the upstream URL's `/db`).
    pub default_db: u32,
    /// Client password and users; `app` re-reads a password file on SIGHUP.
    pub credentials: Arc<Credentials>,
    /// The profile's deny-list.
    pub policy: Policy,
    /// `limits.max_pipeline_bytes`: client bytes handled per batch.
    pub max_batch_bytes: usize,
    /// `limits.max_output_bytes`: bytes held for a slow pub/sub reader.
    pub max_output_bytes: usize,
    /// poolside as a one-node cluster to cluster-mode clients; the app
    /// sets its port once the listener has one.
    pub cluster_face: Arc<cluster_face::ClusterFace>,
}

impl Shared {
    /// The backend follows `pool.mode`: per-batch checkout or shared lanes.
    /// `target` gives the database clients start in and the upstream's
    /// credentials (AUTH without client credentials is checked against them).
    /// With `cluster`, the backend routes by slot over its nodes, each with
    /// its own pool (and its shared lanes in multiplexed mode).
    pub fn new(
        config: &Config,
        pool: Pool,
        traffic: Arc<Traffic>,
        target: &Target,
        cluster: Option<Arc<Cluster>>,
    ) -> Shared {
        let l = &config.limits;
        let p = &config.pool;
        let backend = match (p.mode, cluster) {
            (_, Some(cluster)) => Backend::cluster(pool, traffic.clone(), cluster),
            (PoolMode::Transaction, None) => Backend::checkout(pool, traffic.clone()),
            (PoolMode::Multiplexed, None) => Backend::multiplexed(
                pool,
                traffic.clone(),
                p.multiplex_saturation,
                Duration::from_millis(p.multiplex_idle_ms),
            ),
        }
        .with_response_timeout(Some(Duration::from_millis(p.response_timeout_ms)))
        .with_reply_buffer(l.max_reply_buffer_bytes)
        .with_resend_delay(Duration::from_millis(p.backoff_max_ms));
        Shared {
            backend: Arc::new(backend),
            traffic,
            limits: Limits {
                max_frame_bytes: l.max_frame_bytes,
                ..Limits::default()
            },
            max_clients: l.max_clients,
            frame_timeout: Duration::from_millis(l.frame_timeout_ms.max(1)),
            idle_timeout: (l.client_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(l.client_idle_timeout_secs)),
            credentials: Arc::new(
                Credentials::new(config)
                    .with_upstream(target.username.clone(), target.password.clone()),
            ),
            policy: Policy::new(&config.policy.deny_commands),
            max_batch_bytes: l.max_pipeline_bytes.max(1),
            max_output_bytes: l.max_output_bytes,
            default_db: target.db,
            cluster_face: Arc::default(),
        }
    }

    /// A new client's state: unauthenticated when credentials are required.
    pub fn new_client(&self) -> ClientState {
        ClientState::new(
            self.default_db,
            self.credentials.clone(),
            self.traffic.clone(),
        )
        .with_face(self.cluster_face.clone())
    }
}
