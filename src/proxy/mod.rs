//! Listener, per-client session and router (DESIGN.md, hops 1-3).

mod auth;
mod listener;
mod local;
mod policy;
mod router;
mod session;
mod state;
mod stream;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

pub use auth::Credentials;
pub use listener::{serve, Accept};
pub use local::constant_time_eq;
pub use policy::Policy;

use crate::config::{Config, PoolMode, Secret};
use crate::pool::{Multiplexer, Pool, Stats};
use crate::resp::Limits;

/// What every session of one poolside shares.
pub struct Shared {
    pub pool: Pool,
    pub stats: Arc<Stats>,
    pub limits: Limits,
    pub max_clients: usize,
    pub frame_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub client_password: Option<Secret>,
    /// The database clients start in (the upstream URL's `/db`).
    pub default_db: u32,
    /// Present in multiplexed pool mode.
    pub mux: Option<Arc<Multiplexer>>,
    /// Client password and users; `app` re-reads a password file on SIGHUP.
    pub credentials: Arc<Credentials>,
    /// The profile's deny-list.
    pub policy: Policy,
    /// `limits.max_pipeline_bytes`: client bytes handled per batch.
    pub max_batch_bytes: usize,
    /// `limits.max_output_bytes`: bytes held for a slow pub/sub reader.
    pub max_output_bytes: usize,
}

impl Shared {
    pub fn new(config: &Config, pool: Pool, default_db: u32) -> Shared {
        let l = &config.limits;
        Shared {
            stats: pool.stats.clone(),
            pool: pool.clone(),
            limits: Limits {
                max_frame_bytes: l.max_frame_bytes,
                ..Limits::default()
            },
            max_clients: l.max_clients,
            frame_timeout: Duration::from_millis(l.frame_timeout_ms.max(1)),
            idle_timeout: (l.client_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(l.client_idle_timeout_secs)),
            client_password: config.client_password.clone(),
            credentials: Arc::new(Credentials::new(config)),
            policy: Policy::new(&config.policy.deny_commands),
            max_batch_bytes: l.max_pipeline_bytes.max(1),
            max_output_bytes: l.max_output_bytes,
            default_db,
            mux: (config.pool.mode == PoolMode::Multiplexed).then(|| {
                Arc::new(Multiplexer::new(
                    pool.clone(),
                    config.pool.multiplex_saturation,
                    Duration::from_millis(config.pool.multiplex_idle_ms),
                ))
            }),
        }
    }
}
