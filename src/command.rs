//! The command table: what poolside must do with each command name.

/// How the router treats a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any pooled connection will do; one reply.
    Stateless,
    /// May wait for data (BLPOP, WAIT, XREAD BLOCK): holds its connection
    /// until Redis answers, so it never shares a multiplexed one.
    Blocking,
    /// SELECT: forwarded, and on `+OK` the client's database changes.
    Select,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    /// SUBSCRIBE family and MONITOR: replies no longer pair with commands, so
    /// the session streams bytes both ways on a dedicated connection.
    Stream,
    /// Ties the client to one upstream connection for the rest of its session
    /// (CLIENT ID and CLIENT TRACKING name that connection).
    PinSession,
    /// Changes connection state poolside does not track; the connection is
    /// closed rather than returned to the pool.
    Dirty,
    /// CLIENT INFO: forwarded; the reply is rewritten to describe the client.
    ClientInfo,
    /// Answered by poolside itself.
    Local(Local),
    /// Cannot work through a pool; answered with this error.
    Unsupported(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Auth,
    Hello,
    Quit,
    Reset,
    ClientSetName,
    ClientGetName,
    /// CLIENT SETINFO LIB-NAME|LIB-VER: every modern client library sends it
    /// on connect; it describes this client, not a pooled connection.
    ClientSetInfo,
    /// CLIENT REPLY ON|OFF|SKIP: kept per client; poolside still reads every
    /// upstream reply and drops those the client asked not to get.
    ClientReply,
    /// CLUSTER SLOTS, SHARDS, NODES, INFO, MYID: poolside is a one-node
    /// cluster to its clients (`proxy/cluster_face.rs`).
    Cluster(ClusterAsk),
}

/// The `CLUSTER` subcommands poolside answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterAsk {
    Slots,
    Shards,
    Nodes,
    Info,
    MyId,
}

impl ClusterAsk {
    pub fn of(sub: &[u8]) -> Option<ClusterAsk> {
        let is = |n: &str| sub.eq_ignore_ascii_case(n.as_bytes());
        Some(if is("SLOTS") {
            ClusterAsk::Slots
        } else if is("SHARDS") {
            ClusterAsk::Shards
        } else if is("NODES") {
            ClusterAsk::Nodes
        } else if is("INFO") {
            ClusterAsk::Info
        } else if is("MYID") {
            ClusterAsk::MyId
        } else {
            return None;
        })
    }

    /// The name Redis' arity errors give it (`cluster|slots`).
    pub fn name(self) -> &'static str {
        match self {
            ClusterAsk::Slots => "cluster|slots",
            ClusterAsk::Shards => "cluster|shards",
            ClusterAsk::Nodes => "cluster|nodes",
            ClusterAsk::Info => "cluster|info",
            ClusterAsk::MyId => "cluster|myid",
        }
    }
}

impl Local {
    /// The command as a client wrote it, for poolside's own errors.
    pub fn name(self) -> &'static str {
        match self {
            Local::Auth => "AUTH",
            Local::Hello => "HELLO",
            Local::Quit => "QUIT",
            Local::Reset => "RESET",
            Local::ClientSetName => "CLIENT SETNAME",
            Local::ClientGetName => "CLIENT GETNAME",
            Local::ClientSetInfo => "CLIENT SETINFO",
            Local::ClientReply => "CLIENT REPLY",
            Local::Cluster(_) => "CLUSTER",
        }
    }
}

/// Longest command name in the table; longer names are plain `Stateless`.
const MAX_NAME: usize = 24;

/// Upper-cases `name` into `buf`; `None` when longer than any table entry.
fn upper<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME]) -> Option<&'b [u8]> {
    if name.len() > MAX_NAME {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    Some(&buf[..name.len()])
}

/// Classifies a command from its name and, for container commands, its
/// subcommand. Never allocates.
pub fn classify(name: &[u8], sub: Option<&[u8]>) -> Class {
    let mut buf = [0u8; MAX_NAME];
    let Some(name) = upper(name, &mut buf) else {
        return Class::Stateless;
    };
    match name {
        b"SELECT" => Class::Select,
        b"MULTI" => Class::Multi,
        b"EXEC" => Class::Exec,
        b"DISCARD" => Class::Discard,
        b"WATCH" => Class::Watch,
        b"UNWATCH" => Class::Unwatch,
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE"
        | b"SUNSUBSCRIBE" | b"MONITOR" => Class::Stream,
        b"AUTH" => Class::Local(Local::Auth),
        b"HELLO" => Class::Local(Local::Hello),
        b"QUIT" => Class::Local(Local::Quit),
        b"RESET" => Class::Local(Local::Reset),
        b"READONLY" | b"READWRITE" | b"ASKING" => Class::Dirty,
        b"SYNC" | b"PSYNC" | b"REPLCONF" => {
            Class::Unsupported("replication commands are not supported through poolside")
        }
        b"BLPOP" | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE" | b"BLMPOP" | b"BZPOPMIN" | b"BZPOPMAX"
        | b"BZMPOP" | b"WAIT" | b"WAITAOF" => Class::Blocking,
        // Blocking only with a BLOCK option; treating every XREAD as blocking
        // merely keeps it off shared connections, which is always correct.
        b"XREAD" | b"XREADGROUP" => Class::Blocking,
        b"CLIENT" => classify_client(sub),
        b"CLUSTER" => match sub.and_then(ClusterAsk::of) {
            Some(ask) => Class::Local(Local::Cluster(ask)),
            None => Class::Stateless,
        },
        _ => Class::Stateless,
    }
}

fn classify_client(sub: Option<&[u8]>) -> Class {
    let mut buf = [0u8; MAX_NAME];
    let Some(sub) = sub.and_then(|s| upper(s, &mut buf)) else {
        return Class::Stateless;
    };
    match sub {
        b"SETNAME" => Class::Local(Local::ClientSetName),
        b"GETNAME" => Class::Local(Local::ClientGetName),
        b"ID" | b"TRACKING" | b"CACHING" | b"GETREDIR" | b"TRACKINGINFO" => Class::PinSession,
        b"SETINFO" => Class::Local(Local::ClientSetInfo),
        b"NO-EVICT" | b"NO-TOUCH" => Class::Dirty,
        b"REPLY" => Class::Local(Local::ClientReply),
        b"INFO" => Class::ClientInfo,
        _ => Class::Stateless,
    }
}

/// What an unauthenticated client may still send.
pub fn allowed_before_auth(class: Class) -> bool {
    matches!(
        class,
        Class::Local(Local::Auth | Local::Hello | Local::Quit)
    )
}

/// Command names counted one by one in `poolside_commands_total{command}`;
/// every other name counts as `other`, so the label set stays bounded
/// whatever clients send.
pub const COUNTED: [&str; 64] = [
    "APPEND",
    "AUTH",
    "BLMOVE",
    "BLPOP",
    "BRPOP",
    "BZPOPMIN",
    "CLIENT",
    "DECR",
    "DECRBY",
    "DEL",
    "DISCARD",
    "EVAL",
    "EVALSHA",
    "EXEC",
    "EXISTS",
    "EXPIRE",
    "GET",
    "GETDEL",
    "GETEX",
    "GETSET",
    "HDEL",
    "HELLO",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "HMGET",
    "HSET",
    "INCR",
    "INCRBY",
    "INFO",
    "LLEN",
    "LPOP",
    "LPUSH",
    "LRANGE",
    "MGET",
    "MSET",
    "MULTI",
    "PEXPIRE",
    "PING",
    "PTTL",
    "PUBLISH",
    "RPOP",
    "RPUSH",
    "SADD",
    "SCAN",
    "SELECT",
    "SET",
    "SETEX",
    "SETNX",
    "SISMEMBER",
    "SMEMBERS",
    "SREM",
    "SUBSCRIBE",
    "TTL",
    "UNLINK",
    "WATCH",
    "XADD",
    "XREAD",
    "ZADD",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZREM",
    "ZSCORE",
];

/// A name of at most 16 bytes as one number: its bytes big-endian, zero
/// padded, so numbers sort as the names do (no name holds a NUL byte).
const fn pack(name: &[u8]) -> u128 {
    let mut v = 0u128;
    let mut i = 0;
    while i < name.len() {
        v = (v << 8) | name[i].to_ascii_uppercase() as u128;
        i += 1;
    }
    // Callers keep `name` within 16 bytes; the empty name is 0.
    match v.checked_shl(8 * (16 - name.len() as u32)) {
        Some(v) => v,
        None => 0,
    }
}

/// [`COUNTED`] packed, in the same (sorted) order.
const COUNTED_KEYS: [u128; COUNTED.len()] = {
    let mut keys = [0u128; COUNTED.len()];
    let mut i = 0;
    while i < COUNTED.len() {
        assert!(
            COUNTED[i].len() <= 16,
            "a counted name is longer than 16 bytes"
        );
        keys[i] = pack(COUNTED[i].as_bytes());
        assert!(i == 0 || keys[i - 1] < keys[i], "COUNTED is not sorted");
        i += 1;
    }
    keys
};

/// Slots of the direct-mapped table over [`COUNTED_KEYS`]: four per name,
/// so most names have a slot of their own.
const SLOTS: usize = 256;

/// A packed name's slot: its two halves folded, Fibonacci-hashed to 8 bits.
const fn slot_of(key: u128) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
}

/// For each slot, 1 + the index of the first counted name found there, or 0.
/// A name whose slot another took is found by the binary search instead.
const COUNTED_SLOTS: [u8; SLOTS] = {
    assert!(COUNTED.len() < u8::MAX as usize);
    let mut slots = [0u8; SLOTS];
    let mut i = 0;
    while i < COUNTED.len() {
        let slot = slot_of(COUNTED_KEYS[i]);
        if slots[slot] == 0 {
            slots[slot] = (i + 1) as u8;
        }
        i += 1;
    }
    slots
};

/// Index of `name` in [`COUNTED`], or `COUNTED.len()` for `other`. Never
/// allocates; one table probe, a binary search only where two names share
/// a slot (it runs for every command).
pub fn counted_index(name: &[u8]) -> usize {
    // A NUL would pack as the padding ("GET\0" as "GET").
    if name.len() > 16 || name.contains(&0) {
        return COUNTED.len();
    }
    let key = pack(name);
    match COUNTED_SLOTS[slot_of(key)] {
        // No counted name has this slot.
        0 => COUNTED.len(),
        at if COUNTED_KEYS[usize::from(at) - 1] == key => usize::from(at) - 1,
        _ => COUNTED_KEYS.binary_search(&key).unwrap_or(COUNTED.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_case_insensitively() {
        assert_eq!(classify(b"get", None), Class::Stateless);
        assert_eq!(classify(b"SeLeCt", None), Class::Select);
        assert_eq!(classify(b"multi", None), Class::Multi);
        assert_eq!(classify(b"subscribe", None), Class::Stream);
        assert_eq!(classify(b"blpop", None), Class::Blocking);
        assert_eq!(classify(b"auth", None), Class::Local(Local::Auth));
    }

    #[test]
    fn classifies_client_subcommands() {
        assert_eq!(
            classify(b"client", Some(b"setname")),
            Class::Local(Local::ClientSetName)
        );
        assert_eq!(classify(b"CLIENT", Some(b"TRACKING")), Class::PinSession);
        assert_eq!(classify(b"CLIENT", Some(b"LIST")), Class::Stateless);
        assert_eq!(classify(b"CLIENT", None), Class::Stateless);
        assert_eq!(
            classify(b"CLIENT", Some(b"reply")),
            Class::Local(Local::ClientReply)
        );
        assert_eq!(classify(b"client", Some(b"info")), Class::ClientInfo);
    }

    #[test]
    fn counted_names_are_sorted_and_found_in_any_case() {
        assert!(COUNTED.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(COUNTED[counted_index(b"get")], "GET");
        assert_eq!(COUNTED[counted_index(b"zRangeByScore")], "ZRANGEBYSCORE");
        assert_eq!(counted_index(b"NO-SUCH-COMMAND"), COUNTED.len());
        assert_eq!(counted_index(&[b'A'; 100]), COUNTED.len());
        assert_eq!(counted_index(b"GET\0"), COUNTED.len());
        assert_eq!(counted_index(b""), COUNTED.len());
        for (i, name) in COUNTED.iter().enumerate() {
            assert_eq!(counted_index(name.to_lowercase().as_bytes()), i, "{name}");
        }
    }

    #[test]
    fn long_names_are_stateless() {
        assert_eq!(classify(&[b'A'; 100], None), Class::Stateless);
    }
}
