//! What simulated users send: request shapes taken from how services use
//! Redis for token revocation, rate limiting and sessions.
//!
//! One *request* is what one application request does against Redis: it may
//! be several commands (EVALSHA, INCR+EXPIRE, HSET+EXPIRE), and it is timed
//! and counted as a unit. Every key starts with `plt:` and has a TTL.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script, ServerErrorKind};
use serde::Serialize;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Token revocation checks: EXISTS mostly, SETEX on revocation, some DEL
    JwtBlacklist,
    /// Sliding-window Lua limiter (EVALSHA) and fixed-window INCR+EXPIRE
    RateLimit,
    /// Session hashes: HSET/HGETALL/EXPIRE
    Session,
    /// Weighted mix: 50 % jwt-blacklist, 30 % rate-limit, 20 % session
    Mixed,
}

/// One request shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    JwtCheck,
    JwtRevoke,
    JwtPurge,
    SlidingWindow,
    FixedWindow,
    SessionCreate,
    SessionRead,
    SessionUpdate,
}

/// Relative weights of each workload's requests; `mixed` is 50 % JWT
/// checks, 30 % rate limiting, 20 % sessions, each split as in its own mix.
const JWT: &[(Op, u32)] = &[(Op::JwtCheck, 90), (Op::JwtRevoke, 8), (Op::JwtPurge, 2)];
const RATE: &[(Op, u32)] = &[(Op::SlidingWindow, 50), (Op::FixedWindow, 50)];
const SESSION: &[(Op, u32)] = &[
    (Op::SessionCreate, 20),
    (Op::SessionRead, 60),
    (Op::SessionUpdate, 20),
];
const MIX: &[(&[(Op, u32)], u32)] = &[(JWT, 50), (RATE, 30), (SESSION, 20)];

/// Sliding-window limiter: drop entries older than the window, count, admit
/// when under the limit, refresh the TTL. Returns {allowed, count}.
pub const SLIDING_WINDOW_LUA: &str = r#"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, 0, now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, ARGV[4])
  count = count + 1
  allowed = 1
end
redis.call('EXPIRE', key, math.ceil(window / 1000))
return {allowed, count}
"#;

const JWT_TOKENS: u32 = 100_000;
const JWT_TTL_SECS: u64 = 3600;
const RATE_BUCKETS: usize = 1000;
const RATE_WINDOW_MS: u64 = 60_000;
const RATE_LIMIT: u64 = 100;
const SESSIONS_PER_USER: u32 = 8;
const SESSION_TTL_SECS: u64 = 1800;

impl Workload {
    /// Draws the next request shape.
    pub fn pick(self, rng: &mut impl Rng) -> Op {
        match self {
            Workload::JwtBlacklist => pick_weighted(JWT, rng),
            Workload::RateLimit => pick_weighted(RATE, rng),
            Workload::Session => pick_weighted(SESSION, rng),
            Workload::Mixed => pick_weighted(pick_weighted(MIX, rng), rng),
        }
    }
}

fn pick_weighted<T: Copy>(table: &[(T, u32)], rng: &mut impl Rng) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total);
    for &(item, weight) in table {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    table[table.len() - 1].0
}

/// The sliding-window script with its SHA1, shared by all users.
pub struct Scripts {
    pub sliding_window: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            sliding_window: Script::new(SLIDING_WINDOW_LUA),
        }
    }

    /// SCRIPT LOAD once per target so EVALSHA hits. A proxy that refuses
    /// SCRIPT is not an error: requests fall back to EVAL on NOSCRIPT.
    pub async fn load(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SLIDING_WINDOW_LUA)
            .query_async::<String>(conn)
            .await
            .map(drop)
    }
}

/// Runs one request for `user` on `conn`.
pub async fn execute(
    op: Op,
    user: usize,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
) -> RedisResult<()> {
    // Draw before the first await: the thread-local generator is not Send.
    let (token, slot, nonce) = {
        let mut rng = rand::thread_rng();
        (
            rng.gen_range(0..JWT_TOKENS),
            rng.gen_range(0..SESSIONS_PER_USER),
            rng.gen::<u64>(),
        )
    };
    match op {
        Op::JwtCheck => {
            let key = jwt_key(token);
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(conn)
                .await
                .map(drop)
        }
        Op::JwtRevoke => {
            let key = jwt_key(token);
            redis::cmd("SETEX")
                .arg(key)
                .arg(JWT_TTL_SECS)
                .arg("revoked")
                .query_async::<()>(conn)
                .await
        }
        Op::JwtPurge => {
            let key = jwt_key(token);
            redis::cmd("DEL")
                .arg(key)
                .query_async::<i64>(conn)
                .await
                .map(drop)
        }
        Op::SlidingWindow => {
            let key = format!("plt:rl:sw:{}", user % RATE_BUCKETS);
            let now = now_ms();
            let member = format!("{now}-{user}-{nonce:x}");
            sliding_window(scripts, conn, &key, now, &member).await
        }
        Op::FixedWindow => {
            let window = now_ms() / RATE_WINDOW_MS;
            let key = format!("plt:rl:fw:{}:{window}", user % RATE_BUCKETS);
            redis::pipe()
                .cmd("INCR")
                .arg(&key)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(RATE_WINDOW_MS / 1000)
                .ignore()
                .query_async::<(i64,)>(conn)
                .await
                .map(drop)
        }
        Op::SessionCreate => {
            let key = session_key(user, slot);
            redis::pipe()
                .cmd("HSET")
                .arg(&key)
                .arg("user_id")
                .arg(user)
                .arg("csrf")
                .arg(format!("{nonce:016x}"))
                .arg("created_at")
                .arg(now_ms())
                .arg("role")
                .arg("member")
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(SESSION_TTL_SECS)
                .ignore()
                .query_async::<()>(conn)
                .await
        }
        Op::SessionRead => {
            let key = session_key(user, slot);
            redis::pipe()
                .cmd("HGETALL")
                .arg(&key)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(SESSION_TTL_SECS)
                .ignore()
                .query_async::<(Vec<(String, String)>,)>(conn)
                .await
                .map(drop)
        }
        Op::SessionUpdate => {
            let key = session_key(user, slot);
            redis::cmd("HSET")
                .arg(&key)
                .arg("last_seen")
                .arg(now_ms())
                .query_async::<i64>(conn)
                .await
                .map(drop)
        }
    }
}

/// EVALSHA, and EVAL when the script cache does not have it (a restarted
/// Redis, or a proxy in front of several).
async fn sliding_window(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    key: &str,
    now: u64,
    member: &str,
) -> RedisResult<()> {
    let script = &scripts.sliding_window;
    let run = |command: &str, body: &str| {
        let mut cmd = redis::cmd(command);
        cmd.arg(body)
            .arg(1)
            .arg(key)
            .arg(now)
            .arg(RATE_WINDOW_MS)
            .arg(RATE_LIMIT)
            .arg(member);
        cmd
    };
    match run("EVALSHA", script.get_hash())
        .query_async::<(i64, i64)>(conn)
        .await
    {
        Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
            run("EVAL", SLIDING_WINDOW_LUA)
                .query_async::<(i64, i64)>(conn)
                .await
                .map(drop)
        }
        other => other.map(drop),
    }
}

fn jwt_key(token: u32) -> String {
    format!("plt:jwt:bl:{token:08x}")
}

fn session_key(user: usize, slot: u32) -> String {
    format!("plt:sess:{user}:{slot}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn share(workload: Workload, ops: &[Op], draws: u32) -> f64 {
        let mut rng = StdRng::seed_from_u64(7);
        let hits = (0..draws)
            .filter(|_| ops.contains(&workload.pick(&mut rng)))
            .count();
        hits as f64 / f64::from(draws)
    }

    #[test]
    fn mixed_follows_its_weights() {
        let n = 200_000;
        let jwt = share(
            Workload::Mixed,
            &[Op::JwtCheck, Op::JwtRevoke, Op::JwtPurge],
            n,
        );
        let rate = share(Workload::Mixed, &[Op::SlidingWindow, Op::FixedWindow], n);
        let session = share(
            Workload::Mixed,
            &[Op::SessionCreate, Op::SessionRead, Op::SessionUpdate],
            n,
        );
        assert!((jwt - 0.50).abs() < 0.01, "jwt {jwt}");
        assert!((rate - 0.30).abs() < 0.01, "rate {rate}");
        assert!((session - 0.20).abs() < 0.01, "session {session}");
        assert!((share(Workload::Mixed, &[Op::JwtCheck], n) - 0.45).abs() < 0.01);
    }

    #[test]
    fn single_workloads_stay_in_their_own_ops() {
        assert_eq!(
            share(
                Workload::JwtBlacklist,
                &[Op::JwtCheck, Op::JwtRevoke, Op::JwtPurge],
                10_000
            ),
            1.0
        );
        assert_eq!(
            share(
                Workload::RateLimit,
                &[Op::SlidingWindow, Op::FixedWindow],
                10_000
            ),
            1.0
        );
        let check = share(Workload::JwtBlacklist, &[Op::JwtCheck], 100_000);
        assert!((check - 0.90).abs() < 0.01, "check {check}");
    }

    #[test]
    fn zero_weight_is_never_drawn() {
        let mut rng = StdRng::seed_from_u64(1);
        let table = [("a", 0), ("b", 1)];
        assert!((0..1000).all(|_| pick_weighted(&table, &mut rng) == "b"));
    }
}
