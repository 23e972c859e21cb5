//! The `poolside` binary: `config`, exit codes, `--version`, `--help`.
//! Each child gets a cleared environment and its own working directory.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn poolside_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_poolside"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("poolside runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs in an empty directory, so no `profiles/` file is picked up.
fn poolside(args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    poolside_in(dir.path(), args, env)
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"))
}

#[test]
fn config_never_prints_secrets() {
    let run = poolside(
        &["config", "--upstream", "redis://u:pw-in-url@127.0.0.1:6379"],
        &[
            ("REDIS_PASSWORD", "hunter2-secret"),
            ("POOLSIDE_CLIENT_PASSWORD", "client-secret"),
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for secret in ["hunter2-secret", "pw-in-url", "client-secret"] {
        assert!(
            !run.stdout.contains(secret),
            "{secret} in stdout:\n{}",
            run.stdout
        );
        assert!(
            !run.stderr.contains(secret),
            "{secret} in stderr:\n{}",
            run.stderr
        );
    }
    let password = line(&run.stdout, "password = ");
    assert!(password.contains("\"<redacted>\"") && password.contains("# REDIS_PASSWORD"));
    let url = line(&run.stdout, "url = ");
    assert!(url.contains("redis://u:<redacted>@127.0.0.1:6379") && url.contains("# --upstream"));
}

#[test]
fn config_shows_the_profile_sizes_and_sources() {
    let run = poolside(&["config", "--profile", "prod"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let max = line(&run.stdout, "max_connections = ");
    assert!(max.starts_with("max_connections = 160 "), "{max}");
    assert!(max.ends_with("# defaults (production)"), "{max}");
    assert!(line(&run.stdout, "profile = ").ends_with("# --profile"));
    assert!(run.stdout.contains("[pool]") && run.stdout.contains("[upstream]"));
}

#[test]
fn config_names_poolside_env_vars_as_sources() {
    let run = poolside(
        &["config"],
        &[
            ("POOLSIDE_POOL__MAX_CONNECTIONS", "7"),
            ("DEPLOYMENT_ENV", "staging"),
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let max = line(&run.stdout, "max_connections = ");
    assert!(max.starts_with("max_connections = 7 "), "{max}");
    assert!(max.ends_with("# POOLSIDE_POOL__MAX_CONNECTIONS"), "{max}");
    assert!(line(&run.stdout, "max_clients = ").contains("5000"));
}

#[test]
fn config_reads_the_shipped_profile_file() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = poolside_in(repo, &["config"], &[("DEPLOYMENT_ENV", "production")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let max = line(&run.stdout, "max_connections = ");
    assert!(max.contains("160") && max.ends_with("# profiles/production.toml"));
}

#[test]
fn bad_value_exits_2_naming_key_and_source() {
    // Both `config` and the default `run` reject it before doing anything else.
    for args in [&["config"][..], &[][..]] {
        let run = poolside(args, &[("POOLSIDE_POOL__MAX_CONNECTIONS", "0")]);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("poolside: "), "{}", run.stderr);
        assert!(
            run.stderr.contains("pool.max_connections"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("POOLSIDE_POOL__MAX_CONNECTIONS"));
        assert!(run.stdout.is_empty());
    }
    let run = poolside(&["config"], &[("DEPLOYMENT_ENV", "qa")]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("DEPLOYMENT_ENV"), "{}", run.stderr);
}

#[test]
fn kubernetes_service_links_start_with_warnings() {
    let links = [
        ("POOLSIDE_PORT", "tcp://10.0.0.7:6380"),
        ("POOLSIDE_SERVICE_HOST", "10.0.0.7"),
        ("REDIS_PORT", "tcp://10.0.0.5:6390"),
    ];
    let run = poolside(&["config"], &links);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let url = line(&run.stdout, "url = ");
    assert!(url.contains("redis://10.0.0.5:6390"), "{url}");
    for (var, _) in links {
        let warned = run
            .stderr
            .lines()
            .any(|l| l.starts_with("poolside: warning: ") && l.contains(var));
        assert!(warned, "no warning naming {var}:\n{}", run.stderr);
    }
}

#[test]
fn run_logs_the_warnings_once_logging_has_started() {
    // A taken port makes `run` fail right after start, once warnings are logged.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let listen = taken.local_addr().expect("address").to_string();
    let run = poolside(
        &["--listen", &listen],
        &[("POOLSIDE_SERVICE_HOST", "10.0.0.7")],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("POOLSIDE_SERVICE_HOST"))
        .collect();
    assert_eq!(warnings.len(), 1, "logged once:\n{}", run.stderr);
    assert!(run.stderr.contains("cannot listen on"), "{}", run.stderr);
}

#[test]
fn misspelled_key_exits_2_despite_service_links() {
    let run = poolside(
        &["config"],
        &[
            ("POOLSIDE_PORT", "tcp://10.0.0.7:6380"),
            ("POOLSIDE_POOL__MAX_CONECTIONS", "1"),
        ],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("POOLSIDE_POOL__MAX_CONECTIONS"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn rejected_url_is_reported_without_its_password() {
    let run = poolside(
        &["config", "--upstream", "redis://u:pw-in-url@h:99999"],
        &[],
    );
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("upstream.url") && run.stderr.contains("--upstream"));
    assert!(!run.stderr.contains("pw-in-url"), "{}", run.stderr);
}

#[test]
fn version_and_help() {
    let run = poolside(&["--version"], &[]);
    assert_eq!(run.code, Some(0));
    let version = format!("poolside {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(run.stdout.trim(), version);

    let run = poolside(&["--help"], &[]);
    assert_eq!(run.code, Some(0));
    for word in [
        "run",
        "config",
        "--profile",
        "--config",
        "--listen",
        "--admin-listen",
        "--upstream",
        "--unix-socket",
        "--log-format",
        "--worker-threads",
        "DEPLOYMENT_ENV",
        "REDIS_URL",
    ] {
        assert!(
            run.stdout.contains(word),
            "--help lacks {word}:\n{}",
            run.stdout
        );
    }
    let run = poolside(&["config", "--help"], &[]);
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("--profile"));

    let run = poolside(&["--log-format", "xml"], &[]);
    assert_eq!(run.code, Some(2), "clap rejects it as a usage error");
}
