//! poolside: a Redis connection-pool sidecar. See DESIGN.md for the data path.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod backend;
pub mod clock;
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
pub mod traffic;
pub mod usage;
