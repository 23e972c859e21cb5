//! Log output: a `RUST_LOG`-style filter (default `info`), text or JSON, to stderr.

use std::io::IsTerminal as _;

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use crate::config::LogFormat;

/// Installs the global subscriber. A second call (tests, embedding) is a no-op:
/// the first subscriber stays, nothing panics.
pub fn init(format: LogFormat) {
    // An unparsable RUST_LOG directive is skipped rather than fatal: bad logging
    // settings must not keep the proxy from starting.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or journald.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_does_not_panic() {
        init(LogFormat::Text);
        init(LogFormat::Json);
        tracing::info!("still logging");
    }
}
