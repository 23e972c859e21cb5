//! `poolside status` and `poolside recommend`, run as the real binary.

mod common;

use std::process::{Command, Output};

use common::admin::wait_for_status;
use common::{start_poolside, RedisServer};
use poolside::config::PoolMode;

/// Runs the binary with a clean environment (no REDIS_* or POOLSIDE_* from the caller).
async fn poolside(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_poolside"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .expect("run poolside")
    })
    .await
    .expect("join")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_a_table_and_fails_when_unhealthy() {
    let mut redis = RedisServer::start().await;
    let running = start_poolside(&redis, PoolMode::Transaction, |c| {
        c.pool.max_connections = 10;
        c.pool.health_check_interval_secs = 1;
    })
    .await;
    wait_for_status(&running, "healthy", |s| s["status"] == "healthy").await;
    let args = vec![
        "status".to_string(),
        "--admin".to_string(),
        running.admin_addr.to_string(),
    ];

    let out = poolside(args.clone()).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("HEALTHY (development)"), "{text}");
    assert!(
        text.contains(&format!("[{}] 0.0 %  0 of 10 in use", "-".repeat(40))),
        "{text}"
    );
    assert!(text.contains("alert       OK since"), "{text}");
    assert!(text.contains("  - Pool operating optimally"), "{text}");

    redis.stop();
    wait_for_status(&running, "unhealthy", |s| s["status"] == "unhealthy").await;
    let out = poolside(args).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("UNHEALTHY") && text.contains("UNREACHABLE"),
        "{text}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn status_without_an_answer_exits_2() {
    let port = common::free_port();
    let out = poolside(vec![
        "status".into(),
        "--admin".into(),
        format!("127.0.0.1:{port}"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{out:?}"
    );
}

#[tokio::test]
async fn recommend_applies_the_static_formula() {
    let args = |w: &str, u: &str| {
        vec![
            "recommend".into(),
            "--workers".into(),
            w.into(),
            "--users".into(),
            u.into(),
        ]
    };
    let out = poolside(args("4", "500")).await;
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("4 workers x 15 = 60"), "{text}");
    assert!(text.contains("4 workers x 25 = 100"), "{text}");
    assert!(text.contains("max_connections   160"), "{text}");
    assert!(text.contains("profile           production"), "{text}");

    let text = stdout(&poolside(args("1", "10")).await);
    assert!(
        text.contains("max_connections   15") && text.contains("development"),
        "{text}"
    );

    let bad = poolside(args("0", "10")).await;
    assert_eq!(bad.status.code(), Some(2), "clap rejects 0 workers");
}
