//! The cluster routing tables (`poolside::cluster`) against a real
//! cluster-enabled redis-server: slots as `CLUSTER KEYSLOT` computes them,
//! key positions as `COMMAND GETKEYS` finds them (from the server's own
//! `COMMAND` reply), and the slot map read from a real `CLUSTER SLOTS`.

mod common;

use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{wait_until, RedisServer};
use poolside::cluster::keys::{KeyTable, Keys};
use poolside::cluster::slot::key_slot;
use poolside::cluster::topology::Topology;
use poolside::sentinel::value::parse;

async fn cluster_node() -> (RedisServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let nodes = dir.path().join("nodes.conf");
    let redis = RedisServer::builder()
        .args(["--cluster-enabled", "yes", "--cluster-config-file"])
        .arg(nodes.display().to_string())
        .start()
        .await;
    (redis, dir)
}

async fn command(client: &mut RawClient, args: &[&str]) -> Vec<u8> {
    client.send(&common::raw::encode(args)).await.expect("sent");
    client.raw_reply().await
}

#[tokio::test]
async fn slots_are_the_ones_redis_computes() {
    let (redis, _dir) = cluster_node().await;
    let mut client = RawClient::connect(redis.addr()).await;
    let mut keys: Vec<String> = (0..400).map(|i| format!("key:{i}")).collect();
    keys.extend(
        [
            "",
            "{",
            "}",
            "{}",
            "{}x",
            "x{}",
            "{a}",
            "a{b}c",
            "a{b",
            "a}b{c}",
            "{{a}}",
            "{a}{b}",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "user:{1000}:name",
            "\u{e9}t\u{e9}",
        ]
        .map(String::from),
    );
    for key in &keys {
        let want = match client.command(&["CLUSTER", "KEYSLOT", key]).await {
            Reply::Int(n) => n,
            other => panic!("CLUSTER KEYSLOT {key:?}: {other:?}"),
        };
        assert_eq!(i64::from(key_slot(key.as_bytes())), want, "slot of {key:?}");
    }
}

#[tokio::test]
async fn key_positions_are_the_ones_command_getkeys_finds() {
    let (redis, _dir) = cluster_node().await;
    let mut client = RawClient::connect(redis.addr()).await;
    let reply = command(&mut client, &["COMMAND"]).await;
    let (value, _) = parse(&reply).expect("a COMMAND reply");
    let table = KeyTable::from_command_reply(&value);
    assert!(!table.is_empty());
    let cases: &[&[&str]] = &[
        &["GET", "a"],
        &["SET", "a", "1", "EX", "10"],
        &["MSET", "a", "1", "b", "2", "c", "3"],
        &["MGET", "a", "b", "c"],
        &["DEL", "a", "b"],
        &["RENAME", "a", "b"],
        &["LMOVE", "a", "b", "LEFT", "RIGHT"],
        &["BLPOP", "a", "b", "0"],
        &["EVAL", "return 1", "2", "a", "b", "x"],
        &["EVALSHA", "abc", "1", "a", "x"],
        &["FCALL", "f", "2", "a", "b"],
        &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
        &["ZUNION", "2", "a", "b"],
        &["ZINTERCARD", "2", "a", "b", "LIMIT", "1"],
        &["SINTERCARD", "2", "a", "b"],
        &["LMPOP", "2", "a", "b", "LEFT"],
        &["BLMPOP", "0", "2", "a", "b", "LEFT"],
        &["BZMPOP", "0", "2", "a", "b", "MIN"],
        &["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "a",
            "b",
            ">",
            ">",
        ],
        &["SORT", "a", "STORE", "b"],
        &["SORT_RO", "a"],
        &["GEORADIUS", "a", "0", "0", "1", "km", "STORE", "b"],
        &["OBJECT", "ENCODING", "a"],
        &["MEMORY", "USAGE", "a"],
        &["XINFO", "STREAM", "a"],
        &["HSET", "a", "f", "v"],
        &["SINTERSTORE", "d", "a", "b"],
        &["PFCOUNT", "a", "b"],
        &["COPY", "a", "b"],
        &["PING"],
        &["INFO"],
        &["DBSIZE"],
        &["CLIENT", "LIST"],
        &["PUBLISH", "ch", "m"],
    ];
    for args in cases {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let ours = table.keys(&bytes);
        let mut getkeys = vec!["COMMAND", "GETKEYS"];
        getkeys.extend_from_slice(args);
        let want: Vec<String> = match client.command(&getkeys).await {
            Reply::Array(Some(keys)) => keys.iter().map(Reply::expect_string).collect(),
            // "The command has no key arguments" / "Invalid arguments".
            Reply::Error(_) => Vec::new(),
            other => panic!("COMMAND GETKEYS {args:?}: {other:?}"),
        };
        let got: Vec<String> = match ours {
            Keys::None => Vec::new(),
            Keys::At(at) => at.iter().map(|&i| args[i].to_string()).collect(),
        };
        assert_eq!(got, want, "keys of {args:?}");
    }
}

#[tokio::test]
async fn the_slot_map_is_read_from_cluster_slots() {
    let (redis, _dir) = cluster_node().await;
    let mut client = RawClient::connect(redis.addr()).await;
    client
        .command(&["CLUSTER", "ADDSLOTSRANGE", "0", "8191", "10000", "16383"])
        .await
        .expect_ok();
    let asked = redis.addr().to_string();
    wait_until(Duration::from_secs(10), "the node owns its slots", || {
        let asked = asked.clone();
        let addr = redis.addr();
        async move {
            let mut client = RawClient::connect(addr).await;
            let reply = command(&mut client, &["CLUSTER", "SLOTS"]).await;
            let Some((value, _)) = parse(&reply) else {
                return false;
            };
            let Ok(topology) = Topology::from_cluster_slots(&value, &asked) else {
                return false;
            };
            topology.primaries == [asked.clone()]
                && topology.slots_owned() == [8192 + 6384]
                && topology.owner(0) == Some(0)
                && topology.owner(9000).is_none()
                && topology.unowned() == 10000 - 8192
        }
    })
    .await;
}
