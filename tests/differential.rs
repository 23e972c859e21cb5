//! Differential test: a corpus of commands whose replies cover every RESP2
//! and RESP3 reply type is sent straight to a redis-server and through
//! poolside, in both pool modes and both protocols (RESP2, the default, and
//! RESP3 after `HELLO 3`), and the reply bytes must be the same.
//!
//! Each entry runs on new connections (one, or two for pub/sub) and sets up
//! its own data first, on a server emptied before each run; what differs by
//! design is masked ([`Mask`]): connection ids, addresses, ages and buffer
//! sizes. Every difference is listed, with the command and both replies.
//!
//! The reply types covered: simple strings, errors, integers, bulk strings,
//! nulls (`$-1`, `*-1`, `_`), arrays (empty and nested), maps, sets,
//! doubles, booleans, big numbers, verbatim strings, pushes (pub/sub
//! messages, tracking invalidations, `DEBUG PROTOCOL push`) and attributes:
//! no Redis 7.0 command sends one but `DEBUG PROTOCOL attrib`, so the
//! server runs with `--enable-debug-command yes`. Blob errors (`!`) are
//! the one type no Redis 7.0 reply uses.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use common::raw::{escape, RawClient};
use common::{both_modes, start_poolside, RedisServer};
use poolside::config::PoolMode;

/// How long a reply through poolside may take before it counts as missing.
const REPLY_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Resp2,
    Resp3,
}

/// What of a reply differs by design and is replaced before comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mask {
    None,
    /// The reply is an integer that differs by design (`CLIENT ID`).
    Integer,
    /// `HELLO`'s map (or flat array): the value after `id`.
    HelloId,
    /// `CLIENT INFO` / `CLIENT LIST` text: ids, addresses, ages, buffers.
    ClientInfo,
}

/// One command (or none: only reading) on one of the entry's connections,
/// and how many frames answer it in RESP2 and in RESP3.
struct Step {
    conn: usize,
    args: Vec<String>,
    frames: [usize; 2],
    mask: Mask,
}

struct Entry {
    name: &'static str,
    steps: Vec<Step>,
}

impl Entry {
    fn new(name: &'static str) -> Entry {
        Entry {
            name,
            steps: Vec::new(),
        }
    }

    fn step(mut self, conn: usize, args: &[&str], frames: [usize; 2], mask: Mask) -> Entry {
        self.steps.push(Step {
            conn,
            args: args.iter().map(|a| a.to_string()).collect(),
            frames,
            mask,
        });
        self
    }

    /// A command answered by one frame in both protocols.
    fn cmd(self, args: &[&str]) -> Entry {
        self.step(0, args, [1, 1], Mask::None)
    }

    fn masked(self, args: &[&str], mask: Mask) -> Entry {
        self.step(0, args, [1, 1], mask)
    }

    /// A command answered by `resp2` frames in RESP2 and `resp3` in RESP3.
    fn frames(self, args: &[&str], resp2: usize, resp3: usize) -> Entry {
        self.step(0, args, [resp2, resp3], Mask::None)
    }

    /// A command on the entry's second connection.
    fn on_second(self, args: &[&str]) -> Entry {
        self.step(1, args, [1, 1], Mask::None)
    }

    /// Reads one frame more on the first connection (a pub/sub message).
    fn read(self) -> Entry {
        self.step(0, &[], [1, 1], Mask::None)
    }
}

/// The corpus. `{p}` in an argument stands for a key prefix unique to the
/// test run.
fn corpus() -> Vec<Entry> {
    let (s, s2, n, h, z, x, l, w, t, m) = (
        "{p}str",
        "{p}str2",
        "{p}num",
        "{p}hash",
        "{p}zset",
        "{p}stream",
        "{p}list",
        "{p}watched",
        "{p}tracked",
        "{p}missing",
    );
    let (set1, set3, ch, shard, pattern) =
        ("{p}set1", "{p}set3", "{p}channel", "{p}shard", "{p}chan*");
    vec![
        Entry::new("simple strings and bulk strings")
            .cmd(&["PING"])
            .cmd(&["PING", "hello"])
            .cmd(&["SET", s, "value"])
            .cmd(&["GET", s])
            .cmd(&["APPEND", s, "!"])
            .cmd(&["GETRANGE", s, "0", "2"])
            .cmd(&["SET", s2, ""])
            .cmd(&["GET", s2])
            .cmd(&["TYPE", s])
            .cmd(&["OBJECT", "ENCODING", s]),
        Entry::new("integers")
            .cmd(&["INCR", n])
            .cmd(&["INCRBY", n, "41"])
            .cmd(&["DECRBY", n, "-9223372036854775000"])
            .cmd(&["EXISTS", n, m])
            .cmd(&["STRLEN", n])
            .cmd(&["DEL", n]),
        Entry::new("nulls")
            .cmd(&["GET", m])
            .cmd(&["HSET", h, "f", "v"])
            .cmd(&["HGET", h, "nope"])
            .cmd(&["HMGET", h, "f", "nope"])
            .cmd(&["ZSCORE", m, "a"])
            .cmd(&["LPOP", m])
            .cmd(&["LPOP", m, "2"])
            .cmd(&["EVAL", "return nil", "0"])
            .cmd(&["BLPOP", m, "0.01"]),
        Entry::new("nil array: EXEC of a transaction whose watched key changed")
            .cmd(&["WATCH", w])
            .cmd(&["SET", w, "1"])
            .cmd(&["MULTI"])
            .cmd(&["GET", w])
            .cmd(&["EXEC"]),
        Entry::new("transaction replies")
            .cmd(&["MULTI"])
            .cmd(&["SET", s, "1"])
            .cmd(&["INCR", s])
            .cmd(&["HSET", h, "a", "1"])
            .cmd(&["HGETALL", h])
            .cmd(&["ZADD", z, "1.5", "a"])
            .cmd(&["ZSCORE", z, "a"])
            .cmd(&["GET", m])
            .cmd(&["INCR", h])
            .cmd(&["EXEC"]),
        Entry::new("maps: HGETALL")
            .cmd(&["HSET", h, "f1", "v1", "f2", "v2"])
            .cmd(&["HGETALL", h])
            .cmd(&["HGETALL", m]),
        Entry::new("maps: CONFIG GET")
            .cmd(&["CONFIG", "GET", "maxmemory*"])
            .cmd(&["CONFIG", "GET", "maxmemory-policy"])
            .cmd(&["CONFIG", "GET", "no-such-parameter"]),
        Entry::new("sets: SMEMBERS of one element, SORT")
            .cmd(&["SADD", set1, "only"])
            .cmd(&["SMEMBERS", set1])
            .cmd(&["SADD", set3, "c", "a", "b"])
            .cmd(&["SORT", set3, "ALPHA"])
            .cmd(&["SISMEMBER", set3, "a"])
            .cmd(&["SMISMEMBER", set3, "a", "z"])
            .cmd(&["SMEMBERS", m])
            .cmd(&["SINTER", set1, set3]),
        Entry::new("doubles: ZSCORE, ZRANGE WITHSCORES, ZINCRBY")
            .cmd(&["ZADD", z, "1.5", "a", "2", "b", "+inf", "c"])
            .cmd(&["ZSCORE", z, "a"])
            .cmd(&["ZSCORE", z, "c"])
            .cmd(&["ZMSCORE", z, "a", "nope"])
            .cmd(&["ZRANGE", z, "0", "-1", "WITHSCORES"])
            .cmd(&["ZRANGE", z, "0", "-1"])
            .cmd(&["ZINCRBY", z, "0.25", "a"])
            .cmd(&["ZPOPMIN", z])
            .cmd(&["INCRBYFLOAT", s, "0.1"]),
        Entry::new("booleans: EVAL true and false")
            .cmd(&["EVAL", "return true", "0"])
            .cmd(&["EVAL", "return false", "0"])
            .cmd(&["EVAL", "redis.setresp(3); return true", "0"])
            .cmd(&["EVAL", "redis.setresp(3); return false", "0"]),
        Entry::new("doubles and big numbers: EVAL")
            .cmd(&["EVAL", "redis.setresp(3); return {double=3.14}", "0"])
            .cmd(&[
                "EVAL",
                "redis.setresp(3); return {big_number='123456789012345678901234567890'}",
                "0",
            ]),
        Entry::new("maps, sets and verbatim strings: EVAL")
            .cmd(&["EVAL", "redis.setresp(3); return {map={a=1}}", "0"])
            .cmd(&["EVAL", "redis.setresp(3); return {set={a=true}}", "0"])
            .cmd(&[
                "EVAL",
                "redis.setresp(3); return {verbatim_string={format='txt', string='hi'}}",
                "0",
            ]),
        Entry::new("nested and empty arrays: EVAL, XRANGE, XREAD, LRANGE")
            .cmd(&["EVAL", "return {1, {2, {3, 'x'}}, 'y', {}}", "0"])
            .cmd(&["EVAL", "return {}", "0"])
            .cmd(&["XADD", x, "1-1", "f", "v"])
            .cmd(&["XADD", x, "2-1", "a", "b", "c", "d"])
            .cmd(&["XRANGE", x, "-", "+"])
            .cmd(&["XREAD", "COUNT", "2", "STREAMS", x, "0"])
            .cmd(&["XRANGE", m, "-", "+"])
            .cmd(&["LRANGE", m, "0", "-1"])
            .cmd(&["RPUSH", l, "a", "b", "c"])
            .cmd(&["BLPOP", l, "0"])
            .cmd(&["LRANGE", l, "0", "-1"]),
        Entry::new("verbatim strings: LATENCY DOCTOR, MEMORY DOCTOR")
            .cmd(&["LATENCY", "DOCTOR"])
            .cmd(&["MEMORY", "DOCTOR"]),
        Entry::new("verbatim string: CLIENT INFO, masked; client names and ids")
            .masked(&["CLIENT", "INFO"], Mask::ClientInfo)
            .cmd(&["CLIENT", "GETNAME"])
            .cmd(&["CLIENT", "SETNAME", "differential"])
            .cmd(&["CLIENT", "GETNAME"])
            .masked(&["CLIENT", "ID"], Mask::Integer),
        Entry::new("errors")
            .cmd(&["GET"])
            .cmd(&["NO-SUCH-COMMAND", "a", "b"])
            .cmd(&["HSET", h, "f", "v"])
            .cmd(&["GET", h])
            .cmd(&["SET", s, "not a number"])
            .cmd(&["INCR", s])
            .cmd(&["SET", s, "v", "XX", "NX"])
            .cmd(&["EVAL", "return redis.error_reply('MYERR custom')", "0"])
            .cmd(&["EVAL", "return {err='plain'}", "0"])
            .cmd(&["EVAL", "syntax error here", "0"])
            .cmd(&["CONFIG", "GET"]),
        Entry::new("every type: DEBUG PROTOCOL")
            .cmd(&["DEBUG", "PROTOCOL", "string"])
            .cmd(&["DEBUG", "PROTOCOL", "integer"])
            .cmd(&["DEBUG", "PROTOCOL", "double"])
            .cmd(&["DEBUG", "PROTOCOL", "bignum"])
            .cmd(&["DEBUG", "PROTOCOL", "null"])
            .cmd(&["DEBUG", "PROTOCOL", "array"])
            .cmd(&["DEBUG", "PROTOCOL", "set"])
            .cmd(&["DEBUG", "PROTOCOL", "map"])
            .cmd(&["DEBUG", "PROTOCOL", "attrib"])
            .cmd(&["DEBUG", "PROTOCOL", "verbatim"])
            .cmd(&["DEBUG", "PROTOCOL", "true"])
            .cmd(&["DEBUG", "PROTOCOL", "false"])
            // RESP2: an error. RESP3: a push, then the reply.
            .frames(&["DEBUG", "PROTOCOL", "push"], 1, 2)
            .cmd(&["PING"]),
        Entry::new("pushes: SUBSCRIBE, a message, PING while subscribed, UNSUBSCRIBE")
            .cmd(&["SUBSCRIBE", ch])
            .on_second(&["PUBLISH", ch, "hello"])
            .read()
            .cmd(&["PING"])
            .cmd(&["UNSUBSCRIBE", ch])
            .cmd(&["PING"]),
        Entry::new("pushes: PSUBSCRIBE and a pattern message")
            .cmd(&["PSUBSCRIBE", pattern])
            .on_second(&["PUBLISH", ch, "to the pattern"])
            .read()
            .cmd(&["PUNSUBSCRIBE", pattern])
            .cmd(&["PING"]),
        Entry::new("pushes: SSUBSCRIBE and a shard message")
            .cmd(&["SSUBSCRIBE", shard])
            .on_second(&["SPUBLISH", shard, "sharded"])
            .read()
            .cmd(&["SUNSUBSCRIBE", shard])
            .cmd(&["PING"]),
        Entry::new("pushes: CLIENT TRACKING invalidation after the reply")
            .cmd(&["CLIENT", "TRACKING", "on"])
            .cmd(&["GET", t])
            // RESP3: +OK, then the invalidation push for our own write.
            .frames(&["SET", t, "1"], 1, 2)
            .cmd(&["CLIENT", "TRACKING", "off"]),
        Entry::new("RESET: back to RESP2 and no name")
            .cmd(&["CLIENT", "SETNAME", "before-reset"])
            .cmd(&["HSET", h, "f", "v"])
            .cmd(&["RESET"])
            .cmd(&["HGETALL", h])
            .cmd(&["CLIENT", "GETNAME"]),
        Entry::new("errors of the commands poolside answers itself")
            .cmd(&["RESET", "x"])
            .cmd(&["CLIENT", "SETNAME"])
            .cmd(&["CLIENT", "SETNAME", "a b"])
            .cmd(&["CLIENT", "GETNAME", "x"])
            .cmd(&["CLIENT", "REPLY", "bogus"])
            .cmd(&["CLIENT", "REPLY", "ON", "x"])
            .cmd(&["HELLO", "3", "SETNAME", "a b"])
            .cmd(&["HELLO", "2", "bogus"])
            .cmd(&["HELLO", "0"])
            .cmd(&["AUTH"])
            .cmd(&["AUTH", "a", "b", "c"])
            .cmd(&["AUTH", "nopass"])
            .cmd(&["SELECT", "abc"])
            .cmd(&["SELECT", "16"])
            // Refused before it runs: the transaction is discarded.
            .cmd(&["MULTI"])
            .cmd(&["SET", s, "in-multi"])
            .cmd(&["RESET", "x"])
            .cmd(&["EXEC"])
            .cmd(&["GET", s]),
    ]
}

/// Two entries that once differed through poolside: CLIENT SETNAME is
/// answered by poolside and CLIENT INFO runs on a pooled connection, so
/// poolside rewrites the line's `name=` (and `id=`); HELLO's reply comes
/// from Redis, with Redis' version.
fn known_differences() -> Vec<Entry> {
    vec![
        Entry::new("CLIENT INFO shows the name set by CLIENT SETNAME")
            .cmd(&["CLIENT", "SETNAME", "differential"])
            .masked(&["CLIENT", "INFO"], Mask::ClientInfo),
        Entry::new("HELLO 2 and HELLO: the server's version")
            .masked(&["HELLO", "2"], Mask::HelloId)
            .masked(&["HELLO"], Mask::HelloId),
    ]
}

/// One reply frame, decoded just enough to mask parts of it and encode it
/// again as the same bytes.
#[derive(Debug, Clone)]
enum Frame {
    /// `+ - : _ , # (` and the line after the type byte.
    Line(u8, Vec<u8>),
    /// `$ ! =` and the data; `None` for `$-1`.
    Blob(u8, Option<Vec<u8>>),
    /// `* ~ > % |` and the elements (keys and values alternating for `%`
    /// and `|`); `None` for `*-1`.
    Aggregate(u8, Option<Vec<Frame>>),
}

fn decode(bytes: &[u8]) -> Vec<Frame> {
    let mut at = 0;
    let mut frames = Vec::new();
    while at < bytes.len() {
        frames.push(decode_one(bytes, &mut at));
    }
    frames
}

fn decode_one(bytes: &[u8], at: &mut usize) -> Frame {
    let rest = &bytes[*at..];
    let eol = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or_else(|| panic!("no line end in {}", escape(rest)));
    let kind = rest[0];
    let line = rest[1..eol].to_vec();
    *at += eol + 2;
    let len = || -> i64 {
        std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("bad length in {}", escape(rest)))
    };
    match kind {
        b'$' | b'!' | b'=' => match usize::try_from(len()) {
            Err(_) => Frame::Blob(kind, None),
            Ok(n) => {
                let data = bytes[*at..*at + n].to_vec();
                *at += n + 2;
                Frame::Blob(kind, Some(data))
            }
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => match usize::try_from(len()) {
            Err(_) => Frame::Aggregate(kind, None),
            Ok(n) => {
                let n = if matches!(kind, b'%' | b'|') {
                    2 * n
                } else {
                    n
                };
                let items = (0..n).map(|_| decode_one(bytes, at)).collect();
                Frame::Aggregate(kind, Some(items))
            }
        },
        _ => Frame::Line(kind, line),
    }
}

fn encode(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Line(kind, line) => {
            out.push(*kind);
            out.extend_from_slice(line);
        }
        Frame::Blob(kind, None) | Frame::Aggregate(kind, None) => {
            out.push(*kind);
            out.extend_from_slice(b"-1");
        }
        Frame::Blob(kind, Some(data)) => {
            out.push(*kind);
            out.extend_from_slice(format!("{}\r\n", data.len()).as_bytes());
            out.extend_from_slice(data);
        }
        Frame::Aggregate(kind, Some(items)) => {
            let n = if matches!(kind, b'%' | b'|') {
                items.len() / 2
            } else {
                items.len()
            };
            out.push(*kind);
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            for item in items {
                encode(item, out);
            }
            return;
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `CLIENT INFO` fields that differ between any two connections.
const CLIENT_FIELDS_MASKED: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "age",
    "idle",
    "qbuf",
    "qbuf-free",
    "argv-mem",
    "multi-mem",
    "rbs",
    "rbp",
    "obl",
    "oll",
    "omem",
    "tot-mem",
];

/// Replaces what `mask` names in the reply `bytes` (whole frames).
fn apply_mask(mask: Mask, bytes: &[u8]) -> Vec<u8> {
    if mask == Mask::None {
        return bytes.to_vec();
    }
    let mut out = Vec::new();
    for mut frame in decode(bytes) {
        match (mask, &mut frame) {
            (Mask::Integer, Frame::Line(b':', line)) => *line = b"<masked>".to_vec(),
            (Mask::HelloId, Frame::Aggregate(_, Some(items))) => {
                for i in (0..items.len().saturating_sub(1)).step_by(2) {
                    if matches!(&items[i], Frame::Blob(_, Some(k)) if k == b"id") {
                        items[i + 1] = Frame::Line(b':', b"<masked>".to_vec());
                    }
                }
            }
            (Mask::ClientInfo, Frame::Blob(_, Some(text))) => *text = mask_client_info(text),
            _ => {}
        }
        encode(&frame, &mut out);
    }
    out
}

/// `CLIENT INFO` text with the values of [`CLIENT_FIELDS_MASKED`] replaced
/// (the `txt:` of a verbatim string kept).
fn mask_client_info(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let (format, fields) = text.split_at(if text.starts_with("txt:") { 4 } else { 0 });
    let mut out = format.to_string();
    for field in fields.split_inclusive([' ', '\n']) {
        let (body, separator) = field.split_at(field.trim_end_matches([' ', '\n']).len());
        match body.split_once('=') {
            Some((name, _)) if CLIENT_FIELDS_MASKED.contains(&name) => {
                let _ = write!(out, "{name}=<masked>{separator}");
            }
            _ => out.push_str(field),
        }
    }
    out.into_bytes()
}

/// What one step got: its frames (masked) in order, or why a frame is missing.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Frames(Vec<u8>),
    Missing(Vec<u8>, String),
}

impl Got {
    fn show(&self) -> String {
        match self {
            Got::Frames(bytes) => escape(bytes),
            Got::Missing(bytes, why) => format!("{} then no frame: {why}", escape(bytes)),
        }
    }
}

/// Runs `entry` on new connections to `addr` in `protocol`: per step (and
/// per `HELLO 3` on opening a connection), the command shown and what came.
/// A connection that missed a frame is not read any more: it is out of step.
async fn run_entry(
    addr: SocketAddr,
    protocol: Protocol,
    entry: &Entry,
    wait: Duration,
) -> Vec<(String, Got)> {
    let mut conns: Vec<Option<RawClient>> = vec![None, None];
    let mut broken = [false, false];
    let mut results = Vec::new();
    for step in &entry.steps {
        if broken[step.conn] {
            break;
        }
        if conns[step.conn].is_none() {
            let mut client = RawClient::connect(addr).await;
            if protocol == Protocol::Resp3 {
                let hello = Step {
                    conn: step.conn,
                    args: vec!["HELLO".into(), "3".into()],
                    frames: [1, 1],
                    mask: Mask::HelloId,
                };
                let got = exchange(&mut client, &hello, protocol, wait).await;
                broken[step.conn] = matches!(got, Got::Missing(..));
                results.push((shown(&hello), got));
            }
            conns[step.conn] = Some(client);
        }
        let client = conns[step.conn].as_mut().expect("opened above");
        let got = exchange(client, step, protocol, wait).await;
        broken[step.conn] = matches!(got, Got::Missing(..));
        results.push((shown(step), got));
    }
    results
}

fn shown(step: &Step) -> String {
    let command = if step.args.is_empty() {
        "(read the next frame)".to_string()
    } else {
        step.args.join(" ")
    };
    match step.conn {
        0 => command,
        c => format!("[connection {c}] {command}"),
    }
}

async fn exchange(client: &mut RawClient, step: &Step, protocol: Protocol, wait: Duration) -> Got {
    if !step.args.is_empty() {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        client
            .send(&common::raw::encode(&args))
            .await
            .expect("send a command");
    }
    let frames = step.frames[(protocol == Protocol::Resp3) as usize];
    let mut got = Vec::new();
    for _ in 0..frames {
        match client.try_raw_reply(wait).await {
            Ok(frame) => got.extend(apply_mask(step.mask, &frame)),
            Err(why) => return Got::Missing(got, why),
        }
    }
    Got::Frames(got)
}

/// Runs `corpus` straight to Redis and through poolside in `mode` and
/// `protocol`; fails listing every step whose replies differ.
async fn compare(mode: PoolMode, protocol: Protocol, corpus: fn() -> Vec<Entry>) {
    let redis = RedisServer::builder()
        .args(["--enable-debug-command", "yes"])
        .start()
        .await;
    let poolside = start_poolside(&redis, mode, |_| {}).await;
    let mut admin = redis.direct_raw().await;
    let prefix = format!("differential:{}:{mode:?}:{protocol:?}:", std::process::id());
    let mut differences = String::new();
    let mut steps = 0;
    for mut entry in corpus() {
        for step in &mut entry.steps {
            for arg in &mut step.args {
                *arg = arg.replace("{p}", &prefix);
            }
        }
        admin.command(&["FLUSHALL"]).await.expect_ok();
        let want = run_entry(redis.addr(), protocol, &entry, common::WAIT).await;
        for (shown, got) in &want {
            assert!(
                matches!(got, Got::Frames(_)),
                "the corpus is wrong: Redis itself did not answer {:?} / {shown}: {}",
                entry.name,
                got.show()
            );
        }
        admin.command(&["FLUSHALL"]).await.expect_ok();
        let got = run_entry(poolside.client_addr, protocol, &entry, REPLY_WAIT).await;
        steps += want.len();
        for (i, (shown, want)) in want.iter().enumerate() {
            let got = got.get(i).map(|(_, g)| g);
            if got == Some(want) {
                continue;
            }
            let got = got.map_or("(not run: an earlier frame was missing)".into(), Got::show);
            let _ = write!(
                differences,
                "\n[{}] {shown}\n    redis:    {}\n    poolside: {got}",
                entry.name,
                want.show(),
            );
        }
    }
    poolside.shutdown().await;
    assert!(
        differences.is_empty(),
        "{mode:?}, {protocol:?}: replies through poolside differ from Redis' \
         ({steps} steps compared):{differences}"
    );
}

both_modes! {
    /// The RESP2 corpus (no HELLO): replies through poolside are Redis' bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resp2_replies_are_redis_bytes(mode: PoolMode) {
        compare(mode, Protocol::Resp2, corpus).await;
    }
}

both_modes! {
    /// The same corpus after `HELLO 3` on each connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resp3_replies_are_redis_bytes(mode: PoolMode) {
        compare(mode, Protocol::Resp3, corpus).await;
    }
}

both_modes! {
    /// [`known_differences`], once different through poolside: CLIENT INFO
    /// names the client after CLIENT SETNAME, HELLO gives Redis' version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resp2_known_differences(mode: PoolMode) {
        compare(mode, Protocol::Resp2, known_differences).await;
    }
}

#[test]
fn masks_keep_everything_else() {
    let info = b"=51\r\ntxt:id=7 addr=127.0.0.1:5 name=x age=3 db=0 resp=3\n\r\n";
    assert_eq!(
        escape(&apply_mask(Mask::ClientInfo, info)),
        escape(b"=62\r\ntxt:id=<masked> addr=<masked> name=x age=<masked> db=0 resp=3\n\r\n")
    );
    let list = b"$28\r\nid=1 name=a\nid=2 name=b\nage=\r\n";
    assert_eq!(
        escape(&apply_mask(Mask::ClientInfo, list)),
        escape(b"$50\r\nid=<masked> name=a\nid=<masked> name=b\nage=<masked>\r\n")
    );
    let hello = b"%2\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:41\r\n";
    assert_eq!(
        escape(&apply_mask(Mask::HelloId, hello)),
        escape(b"%2\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:<masked>\r\n")
    );
    let every = b"|1\r\n+a\r\n*2\r\n$1\r\nb\r\n:1\r\n>2\r\n,1.5\r\n#t\r\n~1\r\n(12\r\n*-1\r\n$-1\r\n_\r\n!3\r\nerr\r\n";
    assert_eq!(escape(&apply_mask(Mask::Integer, every)), escape(every));
}
