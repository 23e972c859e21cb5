//! poolside: a Redis connection-pool sidecar. See DESIGN.md for the data path.

pub mod admin;
pub mod app;
pub mod command;
pub mod config;
pub mod logging;
pub mod pool;
pub mod proxy;
pub mod resp;
