//! poolside: a Redis connection-pool sidecar. See DESIGN.md for the data path.
//!
//! Module layering: a module imports only from layers below it, so the graph
//! of `use crate::...` between these top-level modules has no cycle.
//! 1. `config`: imports nothing from the crate;
//! 2. `resp`, `command`, `histogram`, `clock`, `error` (no crate imports
//!    either), and `logging` (config only);
//! 3. `pool`: config, resp, error, histogram; `sentinel` (pool, config,
//!    resp): keeps a Sentinel pool's primary current;
//! 4. `traffic` (command, error, histogram): client-side counters;
//! 5. `backend` (pool, resp, error, traffic): runs planned batches;
//! 6. `proxy` (backend, pool, config, resp, command, error, traffic):
//!    listener, sessions, the planner;
//! 7. `secrets` (config, proxy), `usage` (pool, histogram, traffic),
//!    `report` (config);
//! 8. `alerts`: config, clock, usage (usage never calls alerts: the sampler
//!    takes a callback);
//! 9. `admin`: alerts, usage, pool, sentinel, traffic, error, config, clock,
//!    histogram;
//! 10. `app`: admin, proxy, pool, sentinel, traffic, secrets, config. `main.rs` sits on top.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod backend;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
pub mod error;
pub mod histogram;
pub mod logging;
pub mod pool;
pub mod proxy;
pub mod report;
pub mod resp;
pub mod secrets;
pub mod sentinel;
pub mod traffic;
pub mod usage;
