//! The fleet's view: every upstream connection is named
//! `poolside:<instance>:<profile>`, and `/pool/status`'s `fleet` object,
//! read from `CLIENT LIST`, shows every poolside instance on one Redis, the
//! other clients and what fits under `maxclients`; an ACL that refuses
//! `CLIENT` costs the view, never the connection.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::admin::{recommendations, status, wait_for_status};
use common::raw::{RawClient, Reply};
use common::{both_modes, client_list_on, get, start_poolside, wait_for, RedisServer, WAIT};
use poolside::app::Running;
use poolside::config::PoolMode;
use serde_json::Value;

/// `CLIENT LIST` as this test reads it, independently of poolside: connections
/// per `(instance, profile)` of the `poolside:` names, and the other clients.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    instances: BTreeMap<(String, String), u64>,
    others: u64,
}

fn seen_in(lines: &[String]) -> Seen {
    let mut seen = Seen {
        instances: BTreeMap::new(),
        others: 0,
    };
    for line in lines {
        let name = line
            .split(' ')
            .find_map(|f| f.strip_prefix("name="))
            .unwrap_or("");
        let parts: Vec<&str> = name.split(':').collect();
        match parts.as_slice() {
            ["poolside", instance, profile] => {
                *seen
                    .instances
                    .entry((instance.to_string(), profile.to_string()))
                    .or_default() += 1;
            }
            _ => seen.others += 1,
        }
    }
    seen
}

/// The fleet as one `/pool/status` shows it, in the same shape.
fn seen_by_poolside(status: &Value) -> Seen {
    let fleet = &status["fleet"];
    let instances = fleet["instances"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| {
                    let key = (
                        i["instance"].as_str().unwrap_or("").to_string(),
                        i["profile"].as_str().unwrap_or("").to_string(),
                    );
                    (key, i["connections"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default();
    Seen {
        instances,
        others: fleet["other_clients"].as_u64().unwrap_or(u64::MAX),
    }
}

/// Waits until `poolside`'s fleet equals what `direct` (a connection kept
/// open, so it is one of the other clients) reads from `CLIENT LIST` itself
/// at the same moment and `extra` holds; returns the status and the list.
async fn wait_for_matching_fleet(
    poolside: SocketAddr,
    direct: &mut RawClient,
    what: &str,
    extra: impl Fn(&Seen) -> bool,
) -> (Value, Seen) {
    let direct = tokio::sync::Mutex::new(direct);
    wait_for(WAIT, what, || async {
        let status = get(poolside, "/pool/status").await.json();
        let mut direct = direct.lock().await;
        let seen = seen_in(&client_list_on(&mut direct).await);
        let by_poolside = seen_by_poolside(&status);
        if status["fleet"]["visible"] == true && by_poolside == seen && extra(&seen) {
            Ok((status, seen))
        } else {
            Err((seen, status["fleet"].clone()))
        }
    })
    .await
}

/// The poolside binary, its stderr (JSON logs) collected line by line.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(redis: &RedisServer, pod: &str, profile: &str, dir: &std::path::Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_poolside"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDIS_URL", redis.url())
            .env("POD_NAME", pod)
            .env("DEPLOYMENT_ENV", profile)
            // The control plane refreshes every health-check interval.
            .env("POOLSIDE_POOL__HEALTH_CHECK_INTERVAL_SECS", "1")
            // No idle connections kept: each pool holds what its traffic
            // needed, so the counts settle and CLIENT LIST can be compared.
            .env("POOLSIDE_POOL__MIN_IDLE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn poolside");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Process { child, log }
    }

    /// The client and admin addresses, once the process logged its start.
    async fn addresses(&self) -> (SocketAddr, SocketAddr) {
        let started = wait_for(WAIT, "poolside logs its start", || async {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["fields"]["message"] == "poolside started")
                .ok_or_else(|| log.clone())
        })
        .await;
        let addr = |field: &str| -> SocketAddr {
            let value = started["fields"][field].as_str().expect("an address");
            value.parse().expect("a socket address")
        };
        (addr("listen"), addr("admin"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn some_traffic(client_addr: SocketAddr, key: &str) {
    let mut client = RawClient::connect(client_addr).await;
    for i in 0..5 {
        client
            .command(&["SET", key, &i.to_string()])
            .await
            .expect_ok();
        assert_eq!(
            client.command(&["GET", key]).await,
            Reply::bulk(&i.to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_poolside_processes_see_one_fleet() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pods = [
        ("fleet-a", "development"),
        ("fleet-b", "development"),
        ("fleet-c", "staging"),
    ];
    let processes: Vec<Process> = pods
        .iter()
        .map(|(pod, profile)| Process::spawn(&redis, pod, profile, dir.path()))
        .collect();
    let mut admins = Vec::new();
    for (process, (pod, _)) in processes.iter().zip(pods) {
        let (client, admin) = process.addresses().await;
        some_traffic(client, pod).await;
        admins.push(admin);
    }
    // Kept open: the one client of this Redis that is no poolside.
    let mut direct = redis.direct_raw().await;

    let (status, seen) = wait_for_matching_fleet(
        admins[0],
        &mut direct,
        "fleet-a's fleet equals CLIENT LIST: three instances, one other client",
        |seen| seen.instances.len() == 3 && seen.others == 1,
    )
    .await;
    let fleet = &status["fleet"];
    let keys: Vec<_> = seen.instances.keys().cloned().collect();
    let want: Vec<_> = pods
        .iter()
        .map(|(pod, profile)| (pod.to_string(), profile.to_string()))
        .collect();
    assert_eq!(keys, want, "{fleet}");
    assert_eq!(fleet["poolside_instances"], 3, "{fleet}");
    let total: u64 = seen.instances.values().sum();
    assert_eq!(fleet["poolside_connections"], total, "{fleet}");
    assert_eq!(fleet["connection_name"], "poolside:fleet-a:development");
    // Development's max_connections 20 for every instance, on maxclients 10000.
    assert_eq!(fleet["maxclients"], 10_000, "{fleet}");
    assert_eq!(fleet["max_connections"], 20, "{fleet}");
    let worst = 1 + seen.instances.values().map(|n| n.max(&20)).sum::<u64>();
    assert_eq!(fleet["worst_case_clients"], worst, "{fleet}");
    assert_eq!(
        fleet["more_instances_fit"],
        (10_000 - worst) / 20,
        "{fleet}"
    );
    assert!(
        !recommendations(&status)
            .iter()
            .any(|r| r.contains("poolside instances")),
        "{status}"
    );

    // Every instance sees the same fleet, under its own name.
    let (c, _) = wait_for_matching_fleet(admins[2], &mut direct, "fleet-c agrees", |seen| {
        seen.instances.len() == 3
    })
    .await;
    assert_eq!(c["fleet"]["connection_name"], "poolside:fleet-c:staging");
    assert_eq!(c["fleet"]["max_connections"], 60);

    let metrics = get(admins[1], "/metrics").await.metrics();
    assert_eq!(metrics.value("poolside_fleet_instances"), 3.0);
    assert!(metrics.value("poolside_fleet_connections") >= 3.0);
}

/// Three instances on one Redis, as `start_poolside` runs them in-process.
async fn start_fleet(redis: &RedisServer, names: [&str; 3], max: u32) -> Vec<Running> {
    let mut fleet = Vec::new();
    for name in names {
        let running = start_poolside(redis, PoolMode::Transaction, |c| {
            c.fleet.instance = Some(name.into());
            c.pool.max_connections = max;
            // As in the processes above: each pool holds what its traffic needed.
            c.pool.min_idle = 0;
            c.pool.health_check_interval_secs = 1;
        })
        .await;
        some_traffic(running.client_addr, name).await;
        fleet.push(running);
    }
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_near_maxclients_is_told_what_fits() {
    let redis = RedisServer::builder()
        .args(["--maxclients", "36"])
        .start()
        .await;
    let fleet = start_fleet(&redis, ["small-a", "small-b", "small-c"], 10).await;
    let mut direct = redis.direct_raw().await;
    let (status, seen) = wait_for_matching_fleet(
        fleet[0].admin_addr,
        &mut direct,
        "the fleet of three equals CLIENT LIST",
        |seen| seen.instances.len() == 3 && seen.others == 1,
    )
    .await;

    // The arithmetic of README "The fleet", from this test's own CLIENT LIST.
    let (maxclients, max, others) = (36u64, 10u64, 1u64);
    let held: Vec<u64> = seen.instances.values().copied().collect();
    let worst = others + held.iter().map(|n| (*n).max(max)).sum::<u64>();
    assert_eq!(worst, 31, "every instance at max_connections 10, one other");
    let busiest = *held.iter().max().unwrap();
    // At the target utilization (critical 80 - hysteresis 5 = 75 %), at least min_idle (0) and 1.
    let suggested = (busiest * 100).div_ceil(75).max(1);
    assert!(
        suggested < max,
        "{held:?}: a pool of 10 is more than the busiest needs"
    );
    let at_suggested =
        (maxclients - others - held.iter().map(|n| (*n).max(suggested)).sum::<u64>()) / suggested;
    let fleet_json = &status["fleet"];
    assert_eq!(fleet_json["worst_case_clients"], 31, "{fleet_json}");
    assert_eq!(fleet_json["worst_case_percent"], 86.1, "{fleet_json}");
    assert_eq!(fleet_json["more_instances_fit"], 0, "{fleet_json}");
    assert_eq!(fleet_json["busiest_instance_connections"], busiest);
    assert_eq!(fleet_json["suggested_max_connections"], suggested);
    assert_eq!(fleet_json["more_instances_fit_at_suggested"], at_suggested);

    let connections: u64 = held.iter().sum();
    let want = format!(
        "3 poolside instances hold {connections} connections and 1 other client is \
         connected: if each instance grows to max_connections 10, Redis reaches 31 of \
         maxclients 36 (86 %); 0 more pods of max_connections 10 fit; the busiest instance \
         holds {busiest} connections: lower max_connections to {suggested} to fit \
         {at_suggested} more"
    );
    assert!(
        recommendations(&status).contains(&want),
        "{want}\nnot in\n{status}"
    );
    for running in fleet {
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_without_client_permission_connects_but_hides_the_fleet() {
    let redis = RedisServer::start().await;
    let mut direct = redis.direct_raw().await;
    // No CLIENT at all (SETNAME refused too), and everything but CLIENT LIST.
    for (user, rule) in [("noclient", "-client"), ("nolist", "-client|list")] {
        direct
            .command(&[
                "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", rule,
            ])
            .await
            .expect_ok();
    }
    let mut fleet = Vec::new();
    for user in ["noclient", "nolist"] {
        let url = format!("redis://{user}:pw@{}", redis.addr());
        let running = start_poolside(&redis, PoolMode::Transaction, |c| {
            c.upstream.url = url;
            c.fleet.instance = Some(format!("acl-{user}"));
            c.pool.health_check_interval_secs = 1;
        })
        .await;
        some_traffic(running.client_addr, user).await;
        let status = wait_for_status(&running, "the fleet is not visible, and says why", |s| {
            s["fleet"]["visible"] == false && !s["fleet"]["refreshed_unix_ms"].is_null()
        })
        .await;
        let reason = status["fleet"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("CLIENT LIST refused: NOPERM") && reason.contains("client|list"),
            "{status}"
        );
        assert_eq!(status["status"], "healthy", "{status}");
        assert!(status["fleet"].get("instances").is_none(), "{status}");
        let metrics = get(running.admin_addr, "/metrics").await.body;
        assert!(!metrics.contains("poolside_fleet_"), "{metrics}");
        fleet.push(running);
    }

    // Redis' own view: the first user's connections are unnamed, the second's named.
    let lines = client_list_on(&mut direct).await;
    let names_of = |user: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.split(' ').any(|f| f == format!("user={user}")))
            .map(|l| {
                let name = l.split(' ').find_map(|f| f.strip_prefix("name="));
                name.unwrap_or("?").to_string()
            })
            .collect()
    };
    let noclient = names_of("noclient");
    assert!(
        !noclient.is_empty() && noclient.iter().all(|n| n.is_empty()),
        "{lines:?}"
    );
    let nolist = names_of("nolist");
    assert!(
        !nolist.is_empty()
            && nolist
                .iter()
                .all(|n| n == "poolside:acl-nolist:development"),
        "{lines:?}"
    );
    for running in fleet {
        running.shutdown().await;
    }
}

both_modes! {
    /// A client's CLIENT SETNAME (or HELLO ... SETNAME) is its own: poolside
    /// answers it, and the pooled connections keep their poolside names.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_names_never_rename_pooled_connections(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.fleet.instance = Some("names".into());
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        client.command(&["CLIENT", "SETNAME", "app-1"]).await.expect_ok();
        client.command(&["SET", "k", "v"]).await.expect_ok();
        let info = client.command(&["CLIENT", "INFO"]).await.expect_string();
        assert!(info.contains(" name=app-1 "), "{info}");
        client.command(&["MULTI"]).await.expect_ok();
        client.command(&["SET", "k", "w"]).await;
        client.command(&["EXEC"]).await.expect_array();
        let hello = client.command(&["HELLO", "2", "SETNAME", "app-2"]).await;
        hello.expect_array();
        assert_eq!(
            client.command(&["CLIENT", "GETNAME"]).await,
            Reply::bulk("app-2")
        );
        // Through poolside, CLIENT LIST is Redis' truth: the pooled names.
        let list = client.command(&["CLIENT", "LIST"]).await.expect_string();
        assert!(list.contains("name=poolside:names:development"), "{list}");

        let mut direct = redis.direct_raw().await;
        let lines = client_list_on(&mut direct).await;
        let pooled: Vec<&String> = lines
            .iter()
            .filter(|l| !l.contains(" cmd=client|list") || l.contains("name=poolside:"))
            .collect();
        assert!(!pooled.is_empty(), "{lines:?}");
        for line in &pooled {
            assert!(line.contains(" name=poolside:names:development "), "{lines:?}");
        }
        drop(client);
        let fleet = &status(&poolside).await["fleet"];
        assert_eq!(fleet["connection_name"], "poolside:names:development");
        poolside.shutdown().await;
    }
}
