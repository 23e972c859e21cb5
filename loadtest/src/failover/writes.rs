//! Writes with unique keys, and the check after the run that every
//! acknowledged one is on the new primary.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisResult;
use serde::Serialize;

/// Keys read back per MGET.
const CHECK_BATCH: usize = 500;

/// The key of write `seq` of `user` in run `run`. Every key starts with
/// `plf:` and lives an hour, so a forgotten topology cleans itself.
pub fn key(run: u32, user: usize, seq: u32) -> String {
    format!("plf:{run:08x}:{user}:{seq}")
}

pub const TTL_SECS: u64 = 3600;

/// What one user wrote: acknowledged writes with the moment of their
/// reply, and writes that failed (they may still have run).
#[derive(Default)]
pub struct Ledger {
    pub acked: Vec<(u32, Duration)>,
    pub failed: Vec<u32>,
}

/// Result of reading every write back from the new primary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WriteCheck {
    /// Writes Redis (or the proxy) answered OK.
    pub acknowledged: u64,
    /// Acknowledged writes missing or different on the new primary.
    pub lost: u64,
    /// Reply time of the last lost write, in ms from the forced failover
    /// (negative: before it): until then writes went where they did not
    /// survive.
    pub last_lost_after_ms: Option<f64>,
    /// Writes that failed (error or timeout).
    pub failed: u64,
    /// Failed writes found on the new primary anyway: a write that failed
    /// may have run, which is why it is never re-sent.
    pub failed_but_applied: u64,
}

/// Reads back every write of every user (`ledgers[user]`) with MGET.
pub async fn check(
    conn: &mut MultiplexedConnection,
    run: u32,
    ledgers: &[Ledger],
    forced: Duration,
) -> RedisResult<WriteCheck> {
    let mut out = WriteCheck::default();
    for (user, ledger) in ledgers.iter().enumerate() {
        out.acknowledged += ledger.acked.len() as u64;
        out.failed += ledger.failed.len() as u64;
        for batch in ledger.acked.chunks(CHECK_BATCH) {
            let keys: Vec<String> = batch.iter().map(|(seq, _)| key(run, user, *seq)).collect();
            let values: Vec<Option<String>> = mget(conn, &keys).await?;
            for ((seq, at), value) in batch.iter().zip(values) {
                if value != Some(seq.to_string()) {
                    out.lost += 1;
                    let after = (at.as_secs_f64() - forced.as_secs_f64()) * 1000.0;
                    out.last_lost_after_ms =
                        Some(out.last_lost_after_ms.map_or(after, |m| m.max(after)));
                }
            }
        }
        for batch in ledger.failed.chunks(CHECK_BATCH) {
            let keys: Vec<String> = batch.iter().map(|seq| key(run, user, *seq)).collect();
            let values: Vec<Option<String>> = mget(conn, &keys).await?;
            out.failed_but_applied += values.iter().filter(|v| v.is_some()).count() as u64;
        }
    }
    Ok(out)
}

async fn mget(
    conn: &mut MultiplexedConnection,
    keys: &[String],
) -> RedisResult<Vec<Option<String>>> {
    redis::cmd("MGET").arg(keys).query_async(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_per_run_user_and_write() {
        assert_eq!(key(0xab, 3, 17), "plf:000000ab:3:17");
        assert_ne!(key(1, 1, 11), key(1, 11, 1));
    }
}
