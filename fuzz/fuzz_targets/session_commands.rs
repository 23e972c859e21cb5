//! A client's arbitrary bytes through a whole in-process poolside: session
//! read loop, scanner, router planning, policy, local answers (AUTH, HELLO,
//! CLIENT SETNAME...), MULTI bookkeeping and the pub/sub pump. Upstream is
//! `POOLSIDE_FUZZ_REDIS` when set (a disposable redis-server: the production
//! deny-list keeps FLUSHALL, SHUTDOWN... away from it), else a closed port,
//! so every upstream command fails fast. Any panic in any task aborts.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use poolside::config::{Config, PolicyConfig, Profile, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

struct Harness {
    runtime: Runtime,
    addr: SocketAddr,
    /// Kept for the whole fuzzing run (and reachable, for LeakSanitizer).
    _running: poolside::app::Running,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // A panic in a session task is caught by tokio; make it fatal.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            std::process::abort();
        }));
        let upstream =
            std::env::var("POOLSIDE_FUZZ_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:1".into());
        let mut config = Config::for_tests(&upstream);
        config.client_password = Some(Secret::new("pw"));
        config
            .client_users
            .insert("app".into(), Secret::new("app-pw"));
        config.policy = PolicyConfig::for_profile(Profile::Production);
        config
            .policy
            .deny_commands
            .extend(["CLIENT PAUSE".into(), "ACL".into()]);
        config.pool.connect_retries = 0;
        config.pool.backoff_max_ms = 10;
        config.limits.max_frame_bytes = 64 * 1024;
        config.limits.max_pipeline_bytes = 4096;
        config.limits.frame_timeout_ms = 100;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let running = runtime
            .block_on(poolside::app::start(config))
            .expect("poolside starts");
        Harness {
            runtime,
            addr: running.client_addr,
            _running: running,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.runtime.block_on(async {
        let Ok(mut client) = tokio::net::TcpStream::connect(h.addr).await else {
            return;
        };
        // Half the inputs run authenticated, so the router sees every class.
        if data.first().is_some_and(|b| b & 1 == 1) {
            let _ = client.write_all(b"AUTH pw\r\n").await;
        }
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        let drain = async { while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {} };
        // Whatever the client sent, once it has closed poolside must answer
        // and close promptly: a session left waiting holds an upstream
        // connection (e.g. for a reply Redis will never send).
        if tokio::time::timeout(Duration::from_secs(2), drain)
            .await
            .is_err()
        {
            panic!("poolside kept the session open after the client closed");
        }
    });
});
