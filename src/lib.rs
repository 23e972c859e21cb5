//! poolside: a Redis connection-pool sidecar. See DESIGN.md for the data path.
//!
//! Module layering: a module imports only from layers below it, so the graph
//! of `use crate::...` between these top-level modules has no cycle.
//! 1. `config`: imports nothing from the crate;
//! 2. `resp`, `command`, `histogram`, `clock` (no crate imports either), and
//!    `logging` (config only);
//! 3. `pool`: config, resp, command, histogram;
//! 4. `proxy`: config, resp, command, pool;
//! 5. `secrets` (config, proxy), `usage` (pool, histogram), `report` (config);
//! 6. `alerts`: config, clock, usage (usage never calls alerts: the sampler
//!    takes a callback);
//! 7. `admin`: alerts, usage, pool, config, clock, histogram;
//! 8. `app`: admin, proxy, pool, secrets, config. `main.rs` sits on top.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod clock;
pub mod command;
pub mod config;
pub mod histogram;
pub mod logging;
pub mod pool;
pub mod proxy;
pub mod report;
pub mod resp;
pub mod secrets;
pub mod usage;
