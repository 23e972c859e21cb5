//! deploy/kubernetes: every overlay renders with `kubectl kustomize`, passes
//! `kubernetes-validate`, and configures the sidecar the way poolside reads it:
//! the container's env and args, run through `poolside config`, give the
//! overlay's pool size.

mod deploy_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deploy_support::{deploy, poolside_bin, run, tool, yaml_documents, yaml_file};
use serde_json::Value;

/// Overlay name and the pool size its profile must give.
const OVERLAYS: [(&str, i64); 3] = [("development", 20), ("staging", 60), ("production", 160)];

/// The oldest Kubernetes with native sidecars on by default, and the newest
/// the pinned kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.35.0"];

const TIMEOUT: Duration = Duration::from_secs(60);

/// `kubectl kustomize` of one overlay: its YAML text and documents.
fn render(overlay: &str) -> Option<(String, Vec<Value>)> {
    let kubectl = tool("kubectl", "Debian package kubectl or kubernetes-client")?;
    let dir = deploy("kubernetes/overlays").join(overlay);
    let ran = run(Command::new(kubectl).arg("kustomize").arg(&dir), TIMEOUT);
    ran.assert_success();
    let docs = yaml_documents(&ran.stdout);
    Some((ran.stdout, docs))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn pod_spec(docs: &[Value]) -> &Value {
    &only(docs, "Deployment")["spec"]["template"]["spec"]
}

/// The poolside container: an init container with `restartPolicy: Always`.
fn sidecar(docs: &[Value]) -> &Value {
    let init = pod_spec(docs)["initContainers"]
        .as_array()
        .expect("the pod has initContainers");
    let poolside = init
        .iter()
        .find(|c| c["name"] == "poolside")
        .expect("an init container named poolside");
    assert_eq!(
        poolside["restartPolicy"], "Always",
        "poolside must be a native sidecar"
    );
    poolside
}

fn config_map<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    find(docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name} in the rendered overlay"))
}

/// The container's environment as the kubelet would set it; a Secret's value
/// (never in the manifests) becomes a placeholder.
fn resolve_env(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let name = from["configMapRef"]["name"]
            .as_str()
            .expect("envFrom configMapRef");
        let data = config_map(docs, name)["data"]
            .as_object()
            .expect("ConfigMap data");
        for (key, value) in data {
            env.insert(key.clone(), value.as_str().unwrap_or_default().to_string());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_string();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_string()
        } else if let Some(key_ref) = var["valueFrom"].get("configMapKeyRef") {
            let map = config_map(docs, key_ref["name"].as_str().expect("ConfigMap name"));
            map["data"][key_ref["key"].as_str().expect("key")]
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap lacks the key of {var}"))
                .to_string()
        } else if var["valueFrom"].get("secretKeyRef").is_some() {
            format!("secret-value-of-{name}")
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            // The downward API: a stand-in for the pod's own field.
            format!("downward-{}", field.replace('.', "-"))
        } else {
            panic!("cannot resolve env var {var}");
        };
        env.insert(name, value);
    }
    env
}

/// Writes the ConfigMap files the container mounts under `root`, and returns
/// each mount path with where its files now are.
fn materialize_mounts(docs: &[Value], container: &Value, root: &Path) -> Vec<(String, String)> {
    let volumes = pod_spec(docs)["volumes"].as_array().expect("pod volumes");
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let mount_path = mount["mountPath"].as_str().expect("mountPath");
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("mounted volume exists");
        let map = config_map(
            docs,
            volume["configMap"]["name"]
                .as_str()
                .expect("ConfigMap volume"),
        );
        let dir = root.join(mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("create mount dir");
        for item in volume["configMap"]["items"]
            .as_array()
            .expect("ConfigMap items")
        {
            let data = map["data"][item["key"].as_str().expect("item key")]
                .as_str()
                .expect("item data");
            std::fs::write(dir.join(item["path"].as_str().expect("item path")), data)
                .expect("write mounted file");
        }
        mounts.push((mount_path.to_string(), dir.display().to_string()));
    }
    mounts
}

/// `poolside config` with exactly the sidecar's env and args, parsed.
fn effective_config(docs: &[Value]) -> toml::Table {
    let container = sidecar(docs);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mounts = materialize_mounts(docs, container, scratch.path());
    let args: Vec<String> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|arg| {
            let arg = arg.as_str().expect("string arg");
            mounts
                .iter()
                .find_map(|(path, local)| {
                    arg.strip_prefix(path.as_str())
                        .map(|rest| format!("{local}{rest}"))
                })
                .unwrap_or_else(|| arg.to_string())
        })
        .collect();
    let ran = run(
        Command::new(poolside_bin())
            .arg("config")
            .args(&args)
            .env_clear()
            .envs(resolve_env(docs, container))
            // No profiles/ directory here, as in the image.
            .current_dir(scratch.path()),
        TIMEOUT,
    );
    ran.assert_success();
    ran.stdout.parse().unwrap_or_else(|e| {
        panic!(
            "`poolside config` printed invalid TOML: {e}\n{}",
            ran.stdout
        )
    })
}

#[test]
fn every_overlay_sets_its_pool_size() {
    for (overlay, max_connections) in OVERLAYS {
        let Some((_, docs)) = render(overlay) else {
            return;
        };
        let config = effective_config(&docs);
        assert_eq!(
            config["profile"].as_str(),
            Some(overlay),
            "{overlay}: profile"
        );
        assert_eq!(
            config["pool"]["max_connections"].as_integer(),
            Some(max_connections),
            "{overlay}: pool.max_connections"
        );
        // The sidecar's clients share the pod's loopback; probes and
        // Prometheus come from outside it.
        assert_eq!(
            config["listen"].as_str(),
            Some("127.0.0.1:6380"),
            "{overlay}"
        );
        assert_eq!(
            config["admin_listen"].as_str(),
            Some("0.0.0.0:9180"),
            "{overlay}"
        );
        assert_eq!(config["log_format"].as_str(), Some("json"), "{overlay}");
        assert_eq!(
            config["limits"]["max_clients"].as_integer(),
            Some(2000),
            "{overlay}"
        );
        assert_eq!(
            config["upstream"]["url"].as_str(),
            Some("redis://redis.redis.svc.cluster.local:6379"),
            "{overlay}"
        );
        assert_eq!(
            config["upstream"]["password"].as_str(),
            Some("<redacted>"),
            "{overlay}: the password comes from the Secret"
        );
        assert_eq!(
            config["fleet"]["instance"].as_str(),
            Some("downward-metadata-name"),
            "{overlay}: connections are named after the pod (POD_NAME)"
        );
    }
}

#[test]
fn every_overlay_disables_service_links() {
    for (overlay, _) in OVERLAYS {
        let Some((_, docs)) = render(overlay) else {
            return;
        };
        // Otherwise a Service named redis or poolside in the namespace sets
        // REDIS_PORT=tcp://... or POOLSIDE_PORT=tcp://... in the sidecar.
        assert_eq!(
            pod_spec(&docs)["enableServiceLinks"],
            false,
            "{overlay}: enableServiceLinks"
        );
    }
}

#[test]
fn rendered_overlays_pass_kubernetes_validate() {
    for (overlay, _) in OVERLAYS {
        let Some((_, docs)) = render(overlay) else {
            return;
        };
        let Some(validate) = tool("kubernetes-validate", "PyPI kubernetes-validate") else {
            return;
        };
        // The Prometheus Operator's kinds have no schema there; they are
        // checked by the tests below instead.
        let (operator, builtin): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| {
            d["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("monitoring.coreos.com/")
        });
        let operator_kinds: Vec<&str> =
            operator.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            operator_kinds,
            ["PodMonitor", "PrometheusRule"],
            "{overlay}"
        );
        let builtin_kinds: Vec<&str> = builtin.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(builtin_kinds, ["ConfigMap", "Deployment"], "{overlay}");

        let scratch = tempfile::tempdir().expect("temp dir");
        let file = scratch.path().join(format!("{overlay}.yaml"));
        let stream: Vec<String> = builtin.iter().map(|d| d.to_string()).collect();
        std::fs::write(&file, stream.join("\n---\n")).expect("write manifests");
        for version in KUBERNETES_VERSIONS {
            let ran = run(
                Command::new(&validate)
                    .args(["--strict", "--quiet", "--kubernetes-version", version])
                    .arg(&file),
                TIMEOUT,
            );
            ran.assert_success();
            assert!(
                !ran.stdout.contains("ERROR") && !ran.stderr.contains("ERROR"),
                "{overlay} on Kubernetes {version}:\n{}",
                ran.both()
            );
        }
    }
}

#[test]
fn sidecar_is_probed_bounded_and_locked_down() {
    let Some((_, docs)) = render("production") else {
        return;
    };
    let poolside = sidecar(&docs);
    let ports = poolside["ports"].as_array().expect("ports");
    let admin = ports
        .iter()
        .find(|p| p["name"] == "poolside-admin")
        .expect("admin port");
    assert_eq!(admin["containerPort"], 9180);

    for (probe, path) in [
        ("startupProbe", "/health/live"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ] {
        let get = &poolside[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "poolside-admin", "{probe}");
    }

    for key in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                poolside["resources"][key][resource].is_string(),
                "resources.{key}.{resource} is set"
            );
        }
    }

    let security = &poolside["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let pod_security = &pod_spec(&docs)["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_ne!(pod_security["runAsUser"], 0);

    let password = poolside["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|v| v["name"] == "REDIS_PASSWORD")
        .expect("REDIS_PASSWORD is set");
    assert!(
        password["valueFrom"]["secretKeyRef"].is_object(),
        "REDIS_PASSWORD comes from a Secret"
    );
}

#[test]
fn application_talks_to_the_sidecar() {
    let Some((_, docs)) = render("production") else {
        return;
    };
    let spec = pod_spec(&docs);
    let app = spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "app")
        .expect("the example app container");
    let env = resolve_env(&docs, app);
    assert_eq!(
        env.get("REDIS_URL").map(String::as_str),
        Some("redis://127.0.0.1:6380")
    );
    assert_eq!(
        env.get("DEPLOYMENT_ENV").map(String::as_str),
        Some("production")
    );
}

#[test]
fn prometheus_finds_the_admin_port() {
    let Some((_, docs)) = render("production") else {
        return;
    };
    let template = &only(&docs, "Deployment")["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9180");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let monitor = only(&docs, "PodMonitor");
    let labels = template["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            labels.get(key),
            Some(value),
            "PodMonitor selects the pod by {key}"
        );
    }
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "poolside-admin");
    assert_eq!(endpoint["path"], "/metrics");
}

#[test]
fn prometheus_rule_carries_the_tested_rules_file() {
    let Some((_, docs)) = render("production") else {
        return;
    };
    let rule = only(&docs, "PrometheusRule");
    let file = yaml_file(&deploy("prometheus/poolside-rules.yml"));
    assert_eq!(
        rule["spec"], file,
        "deploy/kubernetes/base/prometheusrule.yaml and deploy/prometheus/poolside-rules.yml differ"
    );
}

#[test]
fn fleet_arithmetic_fits_redis_maxclients() {
    let conf = deploy_support::read(&deploy("redis/production.conf"));
    let maxclients: i64 = conf
        .lines()
        .find_map(|l| l.strip_prefix("maxclients "))
        .and_then(|v| v.trim().parse().ok())
        .expect("production.conf sets maxclients");
    for (overlay, max_connections) in OVERLAYS {
        let Some((_, docs)) = render(overlay) else {
            return;
        };
        let replicas = only(&docs, "Deployment")["spec"]["replicas"]
            .as_i64()
            .expect("replicas");
        assert!(
            replicas * max_connections < maxclients,
            "{overlay}: {replicas} pods x {max_connections} connections exceed maxclients {maxclients}"
        );
    }
}
