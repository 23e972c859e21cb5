//! poolside in front of a real Redis Cluster (three primaries, three
//! replicas on loopback): a plain client's commands are routed by slot,
//! batches split over the nodes come back in order, refusals are the nodes'
//! own bytes, and slots migrated under load (ASK, then MOVED) lose nothing.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::cluster::{run_redis_cli, RedisCluster};
use common::raw::RawClient;
use common::writers::Writers;
use common::{both_modes, connect, wait_until, WAIT};
use poolside::app::Running;
use poolside::config::{Config, PoolMode};
use poolside::error::Side;

async fn poolside_for(cluster: &RedisCluster, mode: PoolMode) -> Running {
    let mut config = Config::for_tests(&cluster.url());
    config.pool.mode = mode;
    poolside::app::start(config).await.expect("poolside starts")
}

/// The raw reply bytes of `args`, sent on `client`.
async fn raw(client: &mut RawClient, args: &[&str]) -> Vec<u8> {
    client.send(&common::raw::encode(args)).await.expect("sent");
    client.raw_reply().await
}

both_modes! {
    /// One pipeline of SETs and GETs over 300 keys: every reply in the
    /// client's order, every primary holding some of the keys, no errors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_clients_keys_spread_over_every_primary(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let mut con = connect(poolside.client_addr).await;
        let mut pipe = redis::pipe();
        for i in 0..300 {
            pipe.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
        }
        for i in 0..300 {
            pipe.cmd("GET").arg(format!("key:{i}"));
        }
        pipe.cmd("PING");
        let (values, pong): (Vec<String>, String) = {
            let mut all: Vec<redis::Value> = pipe.query_async(&mut con).await.expect("pipeline");
            let pong = redis::from_redis_value(all.pop().expect("PONG")).expect("PONG text");
            (redis::from_redis_value(redis::Value::Array(all)).expect("values"), pong)
        };
        assert_eq!(values, (0..300).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(pong, "PONG");
        let sizes = cluster.dbsizes().await;
        assert!(sizes.iter().all(|&n| n > 0), "every primary has keys: {sizes:?}");
        assert_eq!(sizes.iter().sum::<i64>(), 300, "{sizes:?}");
        assert_eq!(poolside.stats().failed_total(Side::Upstream), 0);
        // /pool/status and /metrics show each node's pool and its slots.
        let status = common::get(poolside.admin_addr, "/pool/status").await.json();
        let nodes = status["upstream"]["cluster"]["nodes"].as_array().expect("nodes").clone();
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        let slots: u64 = nodes.iter().map(|n| n["slots"].as_u64().unwrap()).sum();
        assert_eq!(slots, 16384);
        for n in &nodes {
            assert!(n["connections"].as_u64().unwrap() >= 1, "{n}");
            assert!(n["connections"].as_u64() <= n["max_connections"].as_u64(), "{n}");
        }
        let metrics = common::http::metrics(poolside.admin_addr).await;
        let node = cluster.nodes[0].addr();
        let owned = metrics.value(&format!("poolside_cluster_node_slots{{node=\"{node}\"}}"));
        assert_eq!(owned, 5461.0);
        assert!(metrics.has_family("poolside_cluster_redirects_total"));
        poolside.shutdown().await;
    }

    /// 200 clients at once, each pipelining writes and reads of its own
    /// keys over many slots: each gets its own values back, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_stay_with_their_client_across_nodes(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let addr = poolside.client_addr;
        let clients: Vec<_> = (0..200)
            .map(|c| {
                tokio::spawn(async move {
                    let mut con = connect(addr).await;
                    for round in 0..5 {
                        let mut pipe = redis::pipe();
                        for k in 0..10 {
                            let key = format!("iso:{c}:{round}:{k}");
                            pipe.cmd("SET").arg(&key).arg(format!("{c}/{round}/{k}")).ignore();
                            pipe.cmd("GET").arg(&key);
                        }
                        let got: Vec<String> = pipe.query_async(&mut con).await.expect("pipeline");
                        let want: Vec<String> =
                            (0..10).map(|k| format!("{c}/{round}/{k}")).collect();
                        assert_eq!(got, want, "client {c} round {round}");
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client task");
        }
        assert_eq!(poolside.stats().failed_total(Side::Upstream), 0);
        poolside.shutdown().await;
    }

    /// Keys in different slots get a node's own CROSSSLOT (commands that
    /// are not split); a hash tag keeps
    /// keys in one slot, so the same command runs; SELECT is refused as a
    /// node refuses it; a transaction on one slot runs on its node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_are_the_nodes_own_and_hash_tags_keep_keys_together(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let mut node = RawClient::connect(cluster.nodes[0].addr()).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        for args in [
            &["MSETNX", "a", "1", "b", "2"][..],
            &["RENAME", "a", "b"],
            &["SUNIONSTORE", "x", "y", "z"],
            &["SELECT", "1"],
        ] {
            let direct = raw(&mut node, args).await;
            assert!(direct.starts_with(b"-"), "{args:?} is refused by a node");
            assert_eq!(
                String::from_utf8_lossy(&raw(&mut client, args).await),
                String::from_utf8_lossy(&direct),
                "{args:?}"
            );
        }
        let ok = raw(&mut client, &["MSET", "{user:1}:name", "ann", "{user:1}:mail", "a@x"]).await;
        assert_eq!(ok, b"+OK\r\n");
        let both = raw(&mut client, &["MGET", "{user:1}:name", "{user:1}:mail"]).await;
        assert_eq!(both, b"*2\r\n$3\r\nann\r\n$3\r\na@x\r\n");
        let mut con = connect(poolside.client_addr).await;
        let (n, m): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("{tx}:a")
            .cmd("INCRBY")
            .arg("{tx}:b")
            .arg(5)
            .query_async(&mut con)
            .await
            .expect("MULTI/EXEC on one slot");
        assert_eq!((n, m), (1, 5));
        poolside.shutdown().await;
    }

    /// Slots move from one primary to another (`redis-cli --cluster
    /// reshard`, keys migrated with MIGRATE) while writers write: no
    /// request fails, every acknowledged write reads back, and poolside
    /// followed the new owners (MOVED seen, the map read again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_resharded_under_load_lose_no_write(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let writers = Writers::start(poolside.client_addr, 8);
        writers.wait_for_acks(400, "writes before the reshard").await;
        let from = cluster.id_of(0).await;
        let to = cluster.id_of(1).await;
        let args: Vec<String> = [
            "--cluster",
            "reshard",
            &cluster.nodes[0].addr().to_string(),
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "1500",
            "--cluster-yes",
        ]
        .map(String::from)
        .into();
        let (resharded, output) = run_redis_cli(args).await;
        assert!(resharded, "reshard failed:\n{output}");
        writers.wait_for_acks(400, "writes after the reshard").await;
        let load = writers.stop().await;
        assert!(load.failures().is_empty(), "failed: {:?}", load.failures());
        let lost = load.lost_through(poolside.client_addr).await;
        assert!(lost.is_empty(), "lost or misplaced: {lost:?}");
        let c = poolside.cluster().expect("a cluster upstream");
        let moved = c.counters.moved.load(Ordering::Relaxed);
        let ask = c.counters.ask.load(Ordering::Relaxed);
        eprintln!("reshard: {} acked, MOVED {moved}, ASK {ask}", load.acked());
        assert!(moved > 0, "the writers' keys met moved slots");
        let first = cluster.nodes[0].addr().to_string();
        wait_until(WAIT, "the slot map shows the reshard", || async {
            c.request_refresh();
            c.topology_now().is_some_and(|t| {
                let i = t.primaries.iter().position(|p| *p == first);
                i.map(|i| t.slots_owned()[i]) == Some(5461 - 1500)
            })
        })
        .await;
        poolside.shutdown().await;
    }
}

both_modes! {
    /// MGET, MSET, DEL, UNLINK, EXISTS and TOUCH over keys in many slots
    /// are split by slot and answered as one node holding every key would
    /// answer; a wrong number of arguments is the node's own error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_key_commands_are_split_by_slot_and_merged(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        let keys: Vec<String> = (0..40).map(|i| format!("multi:{i}")).collect();
        let mut mset = vec!["MSET".to_string()];
        for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 4 != 3) {
            mset.push(key.clone());
            mset.push(format!("v{i}"));
        }
        let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
        assert_eq!(raw(&mut client, &mset).await, b"+OK\r\n");
        let mut mget = vec!["MGET"];
        mget.extend(keys.iter().map(String::as_str));
        let mut want = format!("*{}\r\n", keys.len());
        for i in 0..keys.len() {
            match i % 4 {
                3 => want.push_str("$-1\r\n"),
                _ => {
                    let v = format!("v{i}");
                    want.push_str(&format!("${}\r\n{v}\r\n", v.len()));
                }
            }
        }
        assert_eq!(String::from_utf8_lossy(&raw(&mut client, &mget).await), want);
        let present = keys.len() - keys.len() / 4;
        let mut exists = vec!["EXISTS", "multi:0", "multi:0"];
        exists.extend(keys.iter().map(String::as_str));
        let counted = format!(":{}\r\n", present + 2);
        assert_eq!(String::from_utf8_lossy(&raw(&mut client, &exists).await), counted);
        let mut touch = vec!["TOUCH"];
        touch.extend(keys.iter().map(String::as_str));
        assert_eq!(raw(&mut client, &touch).await, format!(":{present}\r\n").as_bytes());
        let mut unlink = vec!["UNLINK"];
        unlink.extend(keys[..20].iter().map(String::as_str));
        assert_eq!(raw(&mut client, &unlink).await, b":15\r\n");
        let mut del = vec!["DEL"];
        del.extend(keys.iter().map(String::as_str));
        let left = format!(":{}\r\n", present - 15);
        assert_eq!(String::from_utf8_lossy(&raw(&mut client, &del).await), left);
        assert_eq!(cluster.dbsizes().await.iter().sum::<i64>(), 0);
        let mut node = RawClient::connect(cluster.nodes[0].addr()).await;
        let odd = ["MSET", "multi:1", "x", "multi:2"];
        assert_eq!(raw(&mut client, &odd).await, raw(&mut node, &odd).await);
        poolside.shutdown().await;
    }

    /// DBSIZE is the cluster's; SCRIPT LOAD reaches every primary, so the
    /// script runs by its SHA whichever node a key is on; FLUSHALL empties
    /// every primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_cluster_commands_reach_every_primary(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let mut con = connect(poolside.client_addr).await;
        let mut pipe = redis::pipe();
        for i in 0..60 {
            pipe.cmd("SET").arg(format!("all:{i}")).arg(i).ignore();
        }
        let () = pipe.query_async(&mut con).await.expect("SETs");
        let total: i64 = common::ok(&mut con, &["DBSIZE"]).await;
        assert_eq!(total, 60);
        assert_eq!(cluster.dbsizes().await.iter().sum::<i64>(), 60);
        let sha: String = common::ok(&mut con, &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"]).await;
        for i in 0..60 {
            let key = format!("all:{i}");
            let got: String = common::ok(&mut con, &["EVALSHA", &sha, "1", &key]).await;
            assert_eq!(got, i.to_string());
        }
        // SCRIPT EXISTS: 1 only where every primary has the script.
        let only_one = "return 1";
        let mut first = RawClient::connect(cluster.nodes[0].addr()).await;
        let one_sha = String::from_utf8(raw(&mut first, &["SCRIPT", "LOAD", only_one]).await).unwrap();
        let one_sha = one_sha.trim_end().rsplit('\n').next().unwrap().to_string();
        let exists: Vec<i64> = common::ok(&mut con, &["SCRIPT", "EXISTS", &sha, &one_sha, "0"]).await;
        assert_eq!(exists, [1, 0, 0]);
        // KEYS: every primary's keys.
        let mut keys: Vec<String> = common::ok(&mut con, &["KEYS", "all:*"]).await;
        keys.sort_by_key(|k| k[4..].parse::<u32>().unwrap());
        assert_eq!(keys, (0..60).map(|i| format!("all:{i}")).collect::<Vec<_>>());
        // SCAN walks every primary, the node in the cursor; COUNT and MATCH
        // pass through; a cursor poolside never gave is refused as Redis does.
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = "0".to_string();
        let mut rounds = 0;
        loop {
            let (next, batch): (String, Vec<String>) =
                common::ok(&mut con, &["SCAN", &cursor, "MATCH", "all:*", "COUNT", "7"]).await;
            seen.extend(batch);
            rounds += 1;
            cursor = next;
            if cursor == "0" {
                break;
            }
            assert!(rounds < 1000, "SCAN never ends");
        }
        assert_eq!(seen.len(), 60, "SCAN saw {seen:?}");
        assert!(rounds >= 3, "one round per primary at least: {rounds}");
        let mut raw_client = RawClient::connect(poolside.client_addr).await;
        assert_eq!(raw(&mut raw_client, &["SCAN", "x"]).await, b"-ERR invalid cursor\r\n");
        assert_eq!(raw(&mut raw_client, &["SCAN", "1023"]).await, b"-ERR invalid cursor\r\n");
        let () = common::ok(&mut con, &["FLUSHALL"]).await;
        assert_eq!(cluster.dbsizes().await, [0, 0, 0]);
        poolside.shutdown().await;
    }
}

both_modes! {
    /// `CLUSTER FAILOVER` on a replica under load: the old primary answers
    /// MOVED, poolside follows it; no request fails, nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manual_failover_under_load_fails_nothing(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let mut config = Config::for_tests(&cluster.url());
        config.pool.mode = mode;
        // A manual failover pauses the primary's clients until its replica
        // caught up, up to Redis' 5 s limit per attempt (longer when asked
        // again): a wait, not a failure, so the response timeout is above it.
        config.pool.response_timeout_ms = 30_000;
        let poolside = poolside::app::start(config).await.expect("poolside starts");
        let writers = Writers::start(poolside.client_addr, 8);
        writers.wait_for_acks(400, "writes before the failover").await;
        let replica = cluster.replica_of(0).await;
        cluster.manual_failover(replica, &[1, 2]).await;
        writers.wait_for_acks(400, "writes after the failover").await;
        let load = writers.stop().await;
        assert!(load.failures().is_empty(), "failed: {:?}", load.failures());
        let lost = load.lost_through(poolside.client_addr).await;
        assert!(lost.is_empty(), "lost: {lost:?}");
        let c = poolside.cluster().expect("a cluster upstream");
        let moved = c.counters.moved.load(Ordering::Relaxed);
        eprintln!("manual failover: {} acked, MOVED {moved}", load.acked());
        poolside.shutdown().await;
    }

    /// `kill -9` of a primary under load: only requests in flight on it may
    /// fail; the others wait (upstream.cluster.failover_hold_ms) for its
    /// replica to be promoted and then succeed there. Every write
    /// acknowledged before the replica was seen to have it is kept (what
    /// Redis' asynchronous replication had not sent yet may be lost: that
    /// is Redis', and counted, not asserted).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_primary_killed_under_load_fails_only_what_was_in_flight(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let writers = Writers::start(poolside.client_addr, 8);
        writers.wait_for_acks(400, "writes before the kill").await;
        let replica = cluster.replica_of(0).await;
        // Redis replicates asynchronously: what the replica has not got
        // when its primary dies is lost whatever the proxy does. Every
        // write acknowledged before `synced` is on the replica.
        let synced = std::time::Instant::now();
        let offset = repl_offset(&cluster, 0, "master_repl_offset").await;
        wait_until(WAIT, "the replica has the primary's writes", || async {
            repl_offset(&cluster, replica, "slave_repl_offset").await >= offset
        })
        .await;
        cluster.nodes[0].signal("KILL");
        cluster.wait_primary(replica, &[1, 2]).await;
        writers.wait_for_acks(400, "writes after the failover").await;
        let load = writers.stop().await;
        let failures = load.failures();
        eprintln!("kill -9: {} acked, {} failed: {failures:?}", load.acked(), failures.len());
        assert!(failures.len() <= 8, "more failures than requests in flight: {failures:?}");
        let lost = load.lost_through(poolside.client_addr).await;
        let before: std::collections::HashSet<String> = load
            .logs
            .iter()
            .enumerate()
            .flat_map(|(id, log)| {
                let sent_before = log.sets.iter().zip(&log.sets_sent);
                sent_before
                    .filter(|(_, sent)| **sent < synced)
                    .map(move |(n, _)| format!("k:{id}:{n}"))
            })
            .collect();
        let lost_before: Vec<&String> = lost
            .iter()
            .filter(|l| before.contains(l.split(' ').next().unwrap_or_default()))
            .collect();
        eprintln!("kill -9: {} lost, none of them before the replica had it", lost.len());
        assert!(lost_before.is_empty(), "lost, though replicated: {lost_before:?}");
        poolside.shutdown().await;
    }
}

both_modes! {
    /// A slot mid-migration: the source node answers `-ASK` for a key it
    /// no longer holds (and for a new key), and poolside sends `ASKING` and
    /// the command to the target; the slot map is not read again for it.
    /// Once the slot is the target's, its keys are read there (MOVED).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_migrating_slot_is_followed_with_asking(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 0).await;
        let poolside = poolside_for(&cluster, mode).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        assert_eq!(raw(&mut client, &["SET", "{ask}:old", "v1"]).await, b"+OK\r\n");
        let c = poolside.cluster().expect("a cluster upstream");
        let slot = poolside::cluster::slot::key_slot(b"ask");
        let owner = c.topology_now().expect("a slot map").primaries
            [c.topology_now().unwrap().owner(slot).expect("owned")]
        .clone();
        let source = (0..3)
            .find(|&i| cluster.nodes[i].addr().to_string() == owner)
            .expect("the owner is a primary");
        let target = (source + 1) % 3;
        let (source_id, target_id) = (cluster.id_of(source).await, cluster.id_of(target).await);
        let slot_text = slot.to_string();
        let setslot = |node: usize, how: &'static str, id: String| {
            let slot_text = slot_text.clone();
            let node = &cluster.nodes[node];
            async move {
                let args = ["CLUSTER", "SETSLOT", &slot_text, how, &id];
                let reply = common::cluster::node_text(node, &args).await;
                assert_eq!(reply, "OK", "CLUSTER SETSLOT {how}");
            }
        };
        setslot(target, "IMPORTING", source_id.clone()).await;
        setslot(source, "MIGRATING", target_id.clone()).await;
        let to = cluster.nodes[target].addr();
        let (host, port) = (to.ip().to_string(), to.port().to_string());
        let migrate = ["MIGRATE", &host, &port, "{ask}:old", "0", "5000"];
        let migrated = common::cluster::node_text(&cluster.nodes[source], &migrate).await;
        assert_eq!(migrated, "OK");
        let reads = c.counters.refreshes.load(Ordering::Relaxed);
        // The key is on the target now, the slot still the source's.
        assert_eq!(raw(&mut client, &["GET", "{ask}:old"]).await, b"$2\r\nv1\r\n");
        assert_eq!(raw(&mut client, &["SET", "{ask}:new", "v2"]).await, b"+OK\r\n");
        let pipeline = [
            common::raw::encode(&["GET", "{ask}:old"]),
            common::raw::encode(&["GET", "{ask}:new"]),
            common::raw::encode(&["GET", "unrelated"]),
        ]
        .concat();
        client.send(&pipeline).await.expect("sent");
        assert_eq!(client.raw_reply().await, b"$2\r\nv1\r\n");
        assert_eq!(client.raw_reply().await, b"$2\r\nv2\r\n");
        assert_eq!(client.raw_reply().await, b"$-1\r\n");
        let asks = c.counters.ask.load(Ordering::Relaxed);
        assert!(asks >= 4, "ASK followed {asks} times");
        assert_eq!(c.counters.moved.load(Ordering::Relaxed), 0);
        assert!(
            c.counters.refreshes.load(Ordering::Relaxed) <= reads + 1,
            "ASK read the slot map again"
        );
        let held = common::cluster::node_text(&cluster.nodes[target], &["DBSIZE"]).await;
        assert_eq!(held, "Int(2)", "the target holds both keys");
        // The migration ends: the slot is the target's everywhere.
        for node in 0..3 {
            setslot(node, "NODE", target_id.clone()).await;
        }
        assert_eq!(raw(&mut client, &["GET", "{ask}:new"]).await, b"$2\r\nv2\r\n");
        poolside.shutdown().await;
    }
}

/// A hash tag whose slot `primary` (an index into the slot map's
/// primaries) owns.
fn tag_on(poolside: &Running, primary: usize) -> String {
    let topology = poolside
        .cluster()
        .unwrap()
        .topology_now()
        .expect("a slot map");
    (0..)
        .map(|i| format!("t{i}"))
        .find(|tag| {
            let slot = poolside::cluster::slot::key_slot(tag.as_bytes());
            topology.owner(slot) == Some(primary)
        })
        .unwrap()
}

both_modes! {
    /// MULTI sent alone names no node: poolside answers it and sends it
    /// ahead of the next batch to that batch's first key's node, so a
    /// transaction sent command by command runs on its keys' node,
    /// whichever it is. A key of another node's slot inside it gets
    /// CROSSSLOT, then EXEC the node's EXECABORT. WATCH pins by its key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_runs_on_its_keys_node(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 0).await;
        let poolside = poolside_for(&cluster, mode).await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        // Answered once the slot map is read.
        assert_eq!(raw(&mut client, &["PING"]).await, b"+PONG\r\n");
        let tags: Vec<String> = (0..3).map(|i| tag_on(&poolside, i)).collect();
        for tag in &tags {
            let key = format!("{{{tag}}}:a");
            assert_eq!(raw(&mut client, &["MULTI"]).await, b"+OK\r\n");
            assert_eq!(raw(&mut client, &["SET", &key, "1"]).await, b"+QUEUED\r\n");
            assert_eq!(raw(&mut client, &["INCR", &key]).await, b"+QUEUED\r\n");
            assert_eq!(raw(&mut client, &["EXEC"]).await, b"*2\r\n+OK\r\n:2\r\n");
        }
        let (x, y) = (format!("{{{}}}:x", tags[0]), format!("{{{}}}:y", tags[1]));
        assert_eq!(raw(&mut client, &["MULTI"]).await, b"+OK\r\n");
        assert_eq!(raw(&mut client, &["SET", &x, "1"]).await, b"+QUEUED\r\n");
        assert_eq!(
            raw(&mut client, &["SET", &y, "1"]).await,
            poolside::backend::cluster::CROSSSLOT
        );
        assert_eq!(
            raw(&mut client, &["EXEC"]).await,
            b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(raw(&mut client, &["MGET", &x, &y]).await, b"*2\r\n$-1\r\n$-1\r\n");
        // A command poolside answers itself cannot be queued: refused, and
        // EXEC is the EXECABORT of a transaction with a refused command,
        // before (the MULTI is still held) or after the first key.
        let refused = b"-ERR Command not allowed inside a transaction (poolside answers CLIENT SETNAME itself)\r\n";
        for setname_first in [true, false] {
            assert_eq!(raw(&mut client, &["MULTI"]).await, b"+OK\r\n");
            if setname_first {
                assert_eq!(raw(&mut client, &["CLIENT", "SETNAME", "a"]).await, refused);
            }
            assert_eq!(raw(&mut client, &["SET", &x, "1"]).await, b"+QUEUED\r\n");
            if !setname_first {
                assert_eq!(raw(&mut client, &["CLIENT", "SETNAME", "a"]).await, refused);
            }
            assert_eq!(
                raw(&mut client, &["EXEC"]).await,
                b"-EXECABORT Transaction discarded because of previous errors.\r\n"
            );
            assert_eq!(raw(&mut client, &["GET", &x]).await, b"$-1\r\n");
        }
        assert_eq!(raw(&mut client, &["CLIENT", "GETNAME"]).await, b"$-1\r\n");
        // Nothing queued: EXEC and DISCARD answer as Redis does.
        assert_eq!(raw(&mut client, &["MULTI"]).await, b"+OK\r\n");
        assert_eq!(raw(&mut client, &["EXEC"]).await, b"*0\r\n");
        assert_eq!(raw(&mut client, &["MULTI"]).await, b"+OK\r\n");
        assert_eq!(raw(&mut client, &["DISCARD"]).await, b"+OK\r\n");
        // WATCH on the key's node: another client's write there aborts EXEC.
        let w = format!("{{{}}}:w", tags[2]);
        let mut other = RawClient::connect(poolside.client_addr).await;
        assert_eq!(raw(&mut client, &["WATCH", &w]).await, b"+OK\r\n");
        assert_eq!(raw(&mut other, &["SET", &w, "theirs"]).await, b"+OK\r\n");
        assert_eq!(raw(&mut client, &["MULTI"]).await, b"+OK\r\n");
        assert_eq!(raw(&mut client, &["SET", &w, "mine"]).await, b"+QUEUED\r\n");
        assert_eq!(raw(&mut client, &["EXEC"]).await, b"*-1\r\n");
        assert_eq!(raw(&mut client, &["GET", &w]).await, b"$6\r\ntheirs\r\n");
        poolside.shutdown().await;
    }
}

both_modes! {
    /// SSUBSCRIBE runs on the owner of its channel's slot, where SPUBLISH
    /// (routed by its channel) delivers: a subscriber per primary gets its
    /// shard message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shard_channels_are_subscribed_on_their_slots_node(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 0).await;
        let poolside = poolside_for(&cluster, mode).await;
        let mut publisher = RawClient::connect(poolside.client_addr).await;
        assert_eq!(raw(&mut publisher, &["PING"]).await, b"+PONG\r\n");
        for primary in 0..3 {
            let channel = format!("{{{}}}:news", tag_on(&poolside, primary));
            let mut subscriber = RawClient::connect(poolside.client_addr).await;
            let subscribed = raw(&mut subscriber, &["SSUBSCRIBE", &channel]).await;
            let want = format!("*3\r\n$10\r\nssubscribe\r\n${}\r\n{channel}\r\n:1\r\n", channel.len());
            assert_eq!(String::from_utf8_lossy(&subscribed), want);
            let receivers = raw(&mut publisher, &["SPUBLISH", &channel, "hello"]).await;
            assert_eq!(receivers, b":1\r\n", "the subscriber is on {channel}'s node");
            let message = subscriber.raw_reply().await;
            let want = format!(
                "*3\r\n$8\r\nsmessage\r\n${}\r\n{channel}\r\n$5\r\nhello\r\n",
                channel.len()
            );
            assert_eq!(String::from_utf8_lossy(&message), want);
        }
        poolside.shutdown().await;
    }
}

/// A MULTI the servers refuse (an ACL without it) is refused to the client
/// with the node's own words when poolside would hold it, so no command
/// the client meant to queue runs on its own unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_multi_is_not_held() {
    let cluster = RedisCluster::start(3, 0).await;
    for node in &cluster.nodes {
        let args = [
            "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-multi",
        ];
        assert_eq!(common::cluster::node_text(node, &args).await, "OK");
    }
    let url = cluster.url().replacen("://", "://app:pw@", 1);
    let poolside = poolside::app::start(Config::for_tests(&url))
        .await
        .expect("poolside starts");
    let mut direct = RawClient::connect(cluster.nodes[0].addr()).await;
    assert_eq!(raw(&mut direct, &["AUTH", "app", "pw"]).await, b"+OK\r\n");
    let refusal = raw(&mut direct, &["MULTI"]).await;
    assert!(
        refusal.starts_with(b"-NOPERM"),
        "{}",
        String::from_utf8_lossy(&refusal)
    );
    let mut client = RawClient::connect(poolside.client_addr).await;
    assert_eq!(raw(&mut client, &["MULTI"]).await, refusal);
    // Not in a transaction: the command runs, EXEC has no MULTI.
    assert_eq!(raw(&mut client, &["SET", "k", "v"]).await, b"+OK\r\n");
    assert_eq!(
        raw(&mut client, &["EXEC"]).await,
        b"-ERR EXEC without MULTI\r\n"
    );
    poolside.shutdown().await;
}

/// `calls` of `INFO commandstats`' line for `command` on `node` (0 when absent).
async fn calls(node: &common::RedisServer, command: &str) -> u64 {
    command_stat(node, command, "calls").await
}

/// A field of `INFO commandstats`' line for `command` on `node` (0 when absent).
async fn command_stat(node: &common::RedisServer, command: &str, field: &str) -> u64 {
    let stats = common::cluster::node_text(node, &["INFO", "commandstats"]).await;
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = stats.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return 0;
    };
    line.split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .map_or(0, |n| n.parse().unwrap())
}

both_modes! {
    /// `read_from = "replica_preferred"`: reads go to the replicas (after
    /// READONLY), writes and keyless commands to the primaries; a replica
    /// that is down leaves its reads to its primary, without an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_go_to_replicas_when_asked(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let mut config = Config::for_tests(&cluster.url());
        config.pool.mode = mode;
        config.pool.health_check_interval_secs = 1;
        config.upstream.cluster.read_from = poolside::config::ReadFrom::ReplicaPreferred;
        config.upstream.cluster.refresh_interval_ms = 200;
        let poolside = poolside::app::start(config).await.expect("poolside starts");
        let c = poolside.cluster().expect("a cluster upstream");
        // Nodes learn of each other's replicas by gossip: the map names them soon.
        wait_until(WAIT, "the slot map names a replica per primary", || async {
            c.topology_now()
                .is_some_and(|t| t.replicas.iter().all(|r| !r.is_empty()))
        })
        .await;
        let mut con = connect(poolside.client_addr).await;
        let keys: Vec<String> = (0..90).map(|i| format!("r:{i}")).collect();
        let mut pipe = redis::pipe();
        for (i, key) in keys.iter().enumerate() {
            pipe.cmd("SET").arg(key).arg(i).ignore();
        }
        let () = pipe.query_async(&mut con).await.expect("SETs");
        let replicas: Vec<usize> = {
            let mut r = Vec::new();
            for primary in 0..3 {
                r.push(cluster.replica_of(primary).await);
            }
            r
        };
        for (primary, &replica) in replicas.iter().enumerate() {
            let offset = repl_offset(&cluster, primary, "master_repl_offset").await;
            wait_until(WAIT, "the replica has its primary's writes", || async {
                repl_offset(&cluster, replica, "slave_repl_offset").await >= offset
            })
            .await;
        }
        for (i, key) in keys.iter().enumerate() {
            let got: String = common::ok(&mut con, &["GET", key]).await;
            assert_eq!(got, i.to_string());
        }
        let mut mget = vec!["MGET"];
        mget.extend(keys.iter().map(String::as_str));
        let all: Vec<String> = common::ok(&mut con, &mget).await;
        assert_eq!(all.len(), 90);
        for (primary, &replica) in replicas.iter().enumerate() {
            let node = |i: usize| &cluster.nodes[i];
            assert!(calls(node(replica), "get").await > 0, "replica {replica} served no GET");
            assert!(calls(node(replica), "mget").await > 0, "replica {replica} served no MGET");
            // A replica runs its primary's SETs (replication); one sent
            // to it would be refused (MOVED).
            let refused = command_stat(node(replica), "set", "rejected_calls").await;
            assert_eq!(refused, 0, "a SET reached replica {replica}");
            assert_eq!(calls(node(primary), "get").await, 0, "primary {primary} served a GET");
            assert!(calls(node(replica), "readonly").await > 0);
        }
        let serving = c.status().nodes.iter().filter(|n| n.replica_of.is_some()).count();
        assert_eq!(serving, 3, "/pool/status names each replica's primary");
        // The first shard's replica goes away: its reads go to the primary.
        cluster.nodes[replicas[0]].signal("KILL");
        let gone = cluster.nodes[replicas[0]].addr().to_string();
        wait_until(WAIT, "poolside sees the replica down", || async {
            c.status().nodes.iter().any(|n| n.address == gone && !n.reachable)
        })
        .await;
        for (i, key) in keys.iter().enumerate() {
            let got: String = common::ok(&mut con, &["GET", key]).await;
            assert_eq!(got, i.to_string());
        }
        assert!(calls(&cluster.nodes[0], "get").await > 0, "the primary took its replica's reads");
        poolside.shutdown().await;
    }
}

/// Each node is sized from its own pool's usage and its own `CLIENT LIST`:
/// with every connection of one node held by blocked clients, that node
/// (and only it) is named over the critical threshold, and every node's
/// fleet view counts this poolside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_is_sized_from_its_own_usage() {
    let cluster = RedisCluster::start(3, 0).await;
    let mut config = Config::for_tests(&cluster.url());
    config.pool.max_connections = 4;
    let poolside = poolside::app::start(config).await.expect("poolside starts");
    let mut client = RawClient::connect(poolside.client_addr).await;
    assert_eq!(raw(&mut client, &["PING"]).await, b"+PONG\r\n");
    wait_for_status(&poolside, "each node's fleet view", |status| {
        status["upstream"]["cluster_sizing"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().all(|n| n["fleet"]["poolside_instances"] == 1))
    })
    .await;
    let tag = tag_on(&poolside, 1);
    let busy = poolside
        .cluster()
        .unwrap()
        .topology_now()
        .unwrap()
        .primaries[1]
        .clone();
    let addr = poolside.client_addr;
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let key = format!("{{{tag}}}:q{i}");
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                raw(&mut c, &["BLPOP", &key, "20"]).await
            })
        })
        .collect();
    let status = wait_for_status(&poolside, "the busy node named critical", |status| {
        let lines = status["recommendations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        lines.iter().any(|l| {
            let l = l.as_str().unwrap_or_default();
            l.starts_with(&format!("Cluster node {busy}: Utilization 100.0 %"))
        })
    })
    .await;
    let sizing = status["upstream"]["cluster_sizing"]
        .as_array()
        .expect("per node")
        .clone();
    assert_eq!(sizing.len(), 3, "{sizing:?}");
    for node in &sizing {
        let critical = node["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("critical"));
        assert_eq!(critical, node["address"] == busy.as_str(), "{node}");
    }
    // Straight to the node: poolside has no connection to it left.
    let node = cluster
        .nodes
        .iter()
        .find(|n| n.addr().to_string() == busy)
        .unwrap();
    let mut pusher = RawClient::connect(node.addr()).await;
    for i in 0..4 {
        let key = format!("{{{tag}}}:q{i}");
        assert_eq!(raw(&mut pusher, &["RPUSH", &key, "x"]).await, b":1\r\n");
    }
    for waiter in waiters {
        assert!(waiter.await.unwrap().starts_with(b"*2\r\n"));
    }
    poolside.shutdown().await;
}

/// `/pool/status` once `ready` holds for it (or a panic at the deadline).
async fn wait_for_status(
    poolside: &Running,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = common::get(poolside.admin_addr, "/pool/status")
            .await
            .json();
        if ready(&status) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// poolside answers CLUSTER SLOTS, NODES and MYID as a one-node cluster
/// at the address the client connected to (ioredis skips a node with an
/// empty host), in front of a cluster or a standalone Redis.
#[tokio::test]
async fn cluster_slots_name_poolside_as_the_one_node() {
    let redis = common::RedisServer::start().await;
    let poolside = common::start_poolside(&redis, PoolMode::Transaction, |_| {}).await;
    let port = poolside.client_addr.port();
    let mut client = RawClient::connect(poolside.client_addr).await;
    let id = String::from_utf8(raw(&mut client, &["CLUSTER", "MYID"]).await).unwrap();
    let id = id.trim_end().rsplit('\n').next().unwrap().to_string();
    assert_eq!(id.len(), 40, "{id}");
    let slots = raw(&mut client, &["CLUSTER", "SLOTS"]).await;
    let want = format!(
        "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{id}\r\n*0\r\n"
    );
    assert_eq!(String::from_utf8_lossy(&slots), want);
    let nodes = String::from_utf8(raw(&mut client, &["CLUSTER", "NODES"]).await).unwrap();
    assert!(nodes.contains(&format!(
        "{id} 127.0.0.1:{port}@0 myself,master - 0 0 0 connected 0-16383\n"
    )));
    let arity = raw(&mut client, &["CLUSTER", "SLOTS", "x"]).await;
    assert_eq!(
        arity,
        b"-ERR wrong number of arguments for 'cluster|slots' command\r\n"
    );
    poolside.shutdown().await;
}

/// A TLS-only node (`certs`' server certificate, more redis-server `args`)
/// that owns every slot, once its cluster is ok, and poolside's
/// configuration for it (`rediss+cluster://`, trusting `certs`' CA).
async fn tls_one_node_cluster(
    certs: &common::tls::Certs,
    args: &[&str],
) -> (common::RedisServer, Config) {
    let conf = certs.dir.path().join("nodes.conf");
    let node = certs
        .redis_server(false)
        .args(["--cluster-enabled", "yes", "--tls-cluster", "yes"])
        .args(args.iter().copied())
        .arg("--cluster-config-file")
        .arg(conf.display().to_string())
        .start()
        .await;
    let mut direct = node.direct_raw().await;
    let added = raw(&mut direct, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).await;
    assert_eq!(added, b"+OK\r\n");
    let node_ref = &node;
    wait_until(WAIT, "the one-node cluster is ok", || async move {
        let mut c = node_ref.direct_raw().await;
        let info = raw(&mut c, &["CLUSTER", "INFO"]).await;
        String::from_utf8_lossy(&info).contains("cluster_state:ok")
    })
    .await;
    let url = format!("rediss+cluster://127.0.0.1:{}", node.port());
    let mut config = Config::for_tests(&url);
    config.tls.ca_file = Some(certs.ca.clone());
    (node, config)
}

/// Each node is verified by the name the slot map gives it: a node that
/// announces the host name `localhost` with a certificate for 127.0.0.1
/// only is refused, though the seed (127.0.0.1) passed; `tls.server_name`
/// names the one name every node is verified against.
#[tokio::test]
async fn cluster_nodes_are_verified_by_their_own_names() {
    let certs = common::tls::Certs::for_names(&["127.0.0.1"]);
    let announce = [
        "--cluster-announce-hostname",
        "localhost",
        "--cluster-preferred-endpoint-type",
        "hostname",
    ];
    let (node, mut config) = tls_one_node_cluster(&certs, &announce).await;
    config.upstream.cluster.failover_hold_ms = 0;
    let poolside = poolside::app::start(config.clone())
        .await
        .expect("poolside starts");
    let c = poolside.cluster().expect("a cluster upstream");
    wait_until(
        WAIT,
        "the slot map names the node by its host name",
        || async {
            c.topology_now()
                .is_some_and(|t| t.primaries == [format!("localhost:{}", node.port())])
        },
    )
    .await;
    let mut client = RawClient::connect(poolside.client_addr).await;
    let refused = String::from_utf8(raw(&mut client, &["SET", "k", "v"]).await).unwrap();
    assert!(
        refused.starts_with("-ERR poolside:") && refused.contains("TLS handshake failed"),
        "{refused}"
    );
    poolside.shutdown().await;
    config.tls.server_name = Some("127.0.0.1".into());
    let poolside = poolside::app::start(config).await.expect("poolside starts");
    let mut client = RawClient::connect(poolside.client_addr).await;
    assert_eq!(raw(&mut client, &["SET", "k", "v"]).await, b"+OK\r\n");
    poolside.shutdown().await;
}

/// The ElastiCache Serverless shape: one TLS-only node that owns every
/// slot, behind a `rediss+cluster://` URL; commands are verified over TLS
/// to the node the slot map names (itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_over_tls_serves_clients() {
    let certs = common::tls::Certs::generate();
    let (node, config) = tls_one_node_cluster(&certs, &[]).await;
    let mut direct = node.direct_raw().await;
    let poolside = poolside::app::start(config).await.expect("poolside starts");
    let mut client = RawClient::connect(poolside.client_addr).await;
    for i in 0..20 {
        let key = format!("tls:{i}");
        assert_eq!(raw(&mut client, &["SET", &key, "v"]).await, b"+OK\r\n");
    }
    let mut mget = vec!["MGET"];
    let keys: Vec<String> = (0..20).map(|i| format!("tls:{i}")).collect();
    mget.extend(keys.iter().map(String::as_str));
    let reply = raw(&mut client, &mget).await;
    assert!(
        reply.starts_with(b"*20\r\n$1\r\nv\r\n"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(raw(&mut direct, &["DBSIZE"]).await, b":20\r\n");
    poolside.shutdown().await;
}

/// redis-py's `RedisCluster` pointed at poolside (tests/clients/python/
/// cluster_scenario.py), which it sees as one node owning every slot: in
/// front of the three-primary cluster and of a standalone Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_cluster_client_runs_through_poolside() {
    let cluster = RedisCluster::start(3, 0).await;
    let poolside = poolside_for(&cluster, PoolMode::Multiplexed).await;
    run_cluster_scenario(poolside.client_addr.port()).await;
    assert!(cluster.dbsizes().await.iter().all(|&n| n > 0));
    poolside.shutdown().await;
    let redis = common::RedisServer::start().await;
    let standalone = common::start_poolside(&redis, PoolMode::Multiplexed, |_| {}).await;
    run_cluster_scenario(standalone.client_addr.port()).await;
    standalone.shutdown().await;
}

async fn run_cluster_scenario(port: u16) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python");
    let python = dir.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `scripts/install-deps.sh clients`",
        python.display()
    );
    let script = dir.join("cluster_scenario.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args(["127.0.0.1", &port.to_string()])
            .output()
            .expect("run the redis-py cluster scenario")
    })
    .await
    .expect("scenario thread");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.contains("all steps passed"),
        "{report}"
    );
}

/// ioredis `Cluster` and node-redis `createCluster` pointed at poolside
/// (tests/clients/node/cluster_scenario.mjs): in front of the three-primary
/// cluster and of a standalone Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cluster_clients_run_through_poolside() {
    let cluster = RedisCluster::start(3, 0).await;
    let poolside = poolside_for(&cluster, PoolMode::Multiplexed).await;
    let redis = common::RedisServer::start().await;
    let standalone = common::start_poolside(&redis, PoolMode::Transaction, |_| {}).await;
    for library in ["ioredis", "node-redis"] {
        run_node_cluster_scenario(library, poolside.client_addr.port()).await;
        run_node_cluster_scenario(library, standalone.client_addr.port()).await;
    }
    // The scenarios delete their keys: their reads show they reached every primary.
    for node in &cluster.nodes[..3] {
        let stats = common::cluster::node_text(node, &["INFO", "stats"]).await;
        assert!(common::info_field(&stats, "keyspace_hits") > 0, "{stats}");
    }
    poolside.shutdown().await;
    standalone.shutdown().await;
}

async fn run_node_cluster_scenario(library: &'static str, port: u16) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node");
    assert!(
        dir.join("node_modules/ioredis/package.json").is_file(),
        "{} has no node_modules: run `scripts/install-deps.sh clients`",
        dir.display()
    );
    let script = dir.join("cluster_scenario.mjs");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .args([library, "127.0.0.1", &port.to_string()])
            .output()
            .expect("run node (is it on PATH? scripts/install-deps.sh clients)")
    })
    .await
    .expect("scenario thread");
    let report = format!(
        "{library} at port {port}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.contains("all steps passed"),
        "{report}"
    );
}

/// A replication offset field of `node`'s `INFO replication`.
async fn repl_offset(cluster: &RedisCluster, node: usize, field: &str) -> u64 {
    let info = common::cluster::node_text(&cluster.nodes[node], &["INFO", "replication"]).await;
    common::info_field(&info, field)
}

both_modes! {
    /// A blocking command waits on its key's node: a push through poolside
    /// from another client wakes it, for lists on every primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_commands_wait_on_their_keys_node(mode: PoolMode) {
        let cluster = RedisCluster::start(3, 1).await;
        let poolside = poolside_for(&cluster, mode).await;
        let addr = poolside.client_addr;
        for list in ["queue:a", "queue:b", "queue:c", "queue:d"] {
            let waiter = tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                raw(&mut c, &["BLPOP", list, "10"]).await
            });
            let mut pusher = RawClient::connect(addr).await;
            wait_until(WAIT, "the BLPOP waits on a node", || async {
                let mut total = 0;
                for node in cluster.primary_nodes() {
                    let info = common::cluster::node_text(node, &["INFO", "clients"]).await;
                    total += common::info_field(&info, "blocked_clients");
                }
                total == 1
            })
            .await;
            assert_eq!(raw(&mut pusher, &["LPUSH", list, "job"]).await, b":1\r\n");
            let got = waiter.await.expect("waiter");
            let want = format!("*2\r\n${}\r\n{list}\r\n$3\r\njob\r\n", list.len());
            assert_eq!(String::from_utf8_lossy(&got), want);
        }
        poolside.shutdown().await;
    }
}

/// No node answers: a client gets an error naming the missing slot map
/// within the connect timeout, not a hang, and poolside keeps serving.
#[tokio::test]
async fn without_a_slot_map_clients_get_an_error_not_a_hang() {
    let port = common::free_port();
    let mut config = Config::for_tests(&format!("redis+cluster://127.0.0.1:{port}"));
    config.upstream.connect_timeout_ms = 300;
    let poolside = poolside::app::start(config).await.expect("poolside starts");
    let mut client = RawClient::connect(poolside.client_addr).await;
    let started = std::time::Instant::now();
    let reply = raw(&mut client, &["GET", "k"]).await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("-ERR poolside: no cluster slot map"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(raw(&mut client, &["PING"]).await.first(), Some(&b'-'));
    poolside.shutdown().await;
}
