//! Listener, per-client session and router (DESIGN.md, hops 1-3).

mod listener;
mod local;
mod router;
mod session;

use std::sync::Arc;
use std::time::Duration;

pub use listener::{serve_tcp, serve_unix};
pub use local::constant_time_eq;

use crate::config::{Config, Secret};
use crate::pool::{Pool, Stats};
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
}

impl Shared {
    pub fn new(config: &Config, pool: Pool, default_db: u32) -> Shared {
        let l = &config.limits;
        Shared {
            stats: pool.stats.clone(),
            pool,
            limits: Limits {
                max_frame_bytes: l.max_frame_bytes,
                ..Limits::default()
            },
            max_clients: l.max_clients,
            frame_timeout: Duration::from_millis(l.frame_timeout_ms.max(1)),
            idle_timeout: (l.client_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(l.client_idle_timeout_secs)),
            client_password: config.client_password.clone(),
            default_db,
        }
    }
}
