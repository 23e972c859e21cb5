//! The pool's bounds: never more upstream connections than its max, a
//! checkout that waits too long is an exhaustion error, not a hang, and
//! health checks neither grow the pool nor keep it from shrinking back to
//! `min_idle`.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    both_modes, client_list_on, connect, last_command, ok, query, start_poolside, wait_until,
    RedisServer,
};
use poolside::config::{Config, PoolMode, Profile};
use tokio::sync::{Barrier, Mutex};

const WAIT: Duration = Duration::from_secs(10);

/// What the sampler saw on Redis's side, not counting itself.
#[derive(Debug, Default)]
struct Seen {
    samples: usize,
    /// Most of poolside's connections (pool and control plane) present in
    /// two consecutive samples. A connection
    /// poolside closed and replaced can linger in one sample (Redis has not
    /// read its EOF yet); one really open stays in both.
    most_stable: usize,
    /// Most pool connections in a single sample.
    most_raw: usize,
    /// Most connections in a single sample.
    most_all: usize,
}

fn client_id(client_list_line: &str) -> &str {
    client_list_line
        .split(' ')
        .find_map(|field| field.strip_prefix("id="))
        .unwrap_or("")
}

/// One of poolside's connections: each is named `poolside:<instance>:<profile>`.
fn is_poolside(client_list_line: &str) -> bool {
    client_list_line.contains(" name=poolside:")
}

/// A connection the control plane used last: the data path here sends no
/// INFO or CLIENT LIST.
fn is_control_plane(client_list_line: &str) -> bool {
    is_poolside(client_list_line)
        && matches!(
            last_command(client_list_line),
            "info" | "config|get" | "client|list"
        )
}

/// `count` clients run SET/GET/pipelines while a sampler watches CLIENT
/// LIST from Redis' side: poolside's connections, the control plane's
/// included, never exceed `max_connections`, and every INCR ran once.
async fn clients_never_exceed_max_connections(
    mode: PoolMode,
    count: usize,
    profile: impl FnOnce(&mut poolside::config::Config),
) {
    const ROUNDS: usize = 10;
    let redis = RedisServer::start().await;
    // The control plane refreshes every second, so it runs under the load.
    let poolside = start_poolside(&redis, mode, |c| {
        profile(c);
        c.pool.health_check_interval_secs = 1;
    })
    .await;
    let max = poolside.pool_snapshot().max_connections;

    // The sampler watches from Redis's side on its own direct connection.
    // poolside's control plane (INFO and CLIENT LIST for /pool/status)
    // borrows one of the pool's connections: Redis sees at most max from
    // poolside, its included. It shows by its name and last command once it
    // has run.
    let sampler_con = Mutex::new(redis.direct_raw().await);
    wait_until(
        WAIT,
        "the control plane's connection shows in CLIENT LIST",
        || async {
            client_list_on(&mut *sampler_con.lock().await)
                .await
                .iter()
                .any(|l| is_control_plane(l))
        },
    )
    .await;
    let mut sampler_con = sampler_con.into_inner();
    let done = Arc::new(AtomicBool::new(false));
    let sampler_done = done.clone();
    let sampler = tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut previous = HashSet::new();
        while !sampler_done.load(Ordering::Relaxed) {
            let list = client_list_on(&mut sampler_con).await;
            let pool: HashSet<String> = list
                .iter()
                .filter(|l| is_poolside(l))
                .map(|l| client_id(l).to_string())
                .collect();
            seen.samples += 1;
            seen.most_raw = seen.most_raw.max(pool.len());
            seen.most_all = seen.most_all.max(list.len() - 1);
            seen.most_stable = seen.most_stable.max(pool.intersection(&previous).count());
            previous = pool;
        }
        seen
    });
    let start = Arc::new(Barrier::new(count));
    let mut clients = Vec::with_capacity(count);
    for id in 0..count {
        let (addr, start) = (poolside.client_addr, start.clone());
        clients.push(tokio::spawn(async move {
            let mut con = connect(addr).await;
            let key = format!("client:{id}");
            start.wait().await;
            for round in 0..ROUNDS {
                let value = format!("{id}-{round}");
                ok::<()>(&mut con, &["SET", &key, &value]).await;
                assert_eq!(ok::<String>(&mut con, &["GET", &key]).await, value);
                let (n,): (i64,) = redis::pipe()
                    .cmd("INCR")
                    .arg("shared")
                    .ignore()
                    .cmd("INCR")
                    .arg("shared")
                    .query_async(&mut con)
                    .await
                    .expect("pipeline");
                assert!(n >= 2);
            }
        }));
    }
    let mut most_in_pool = 0;
    for client in clients {
        most_in_pool = most_in_pool.max(poolside.pool_snapshot().connections);
        client.await.expect("client task");
    }
    done.store(true, Ordering::Relaxed);
    let seen = sampler.await.expect("sampler");
    eprintln!("Redis side: {seen:?}");

    assert!(seen.samples > 1, "the sampler took too few samples");
    assert!(
        seen.most_stable <= max as usize,
        "Redis saw more pool connections than the max {max}: {seen:?}"
    );
    assert!(seen.most_stable >= 1, "Redis never saw a pool connection");
    assert!(
        most_in_pool <= max,
        "pool reported {most_in_pool} connections"
    );

    let mut direct = redis.direct().await;
    let total: i64 = ok(&mut direct, &["GET", "shared"]).await;
    assert_eq!(
        total,
        (count * ROUNDS * 2) as i64,
        "every INCR ran exactly once"
    );
    poolside.shutdown().await;
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn five_hundred_clients_never_exceed_max_connections(mode: PoolMode) {
        clients_never_exceed_max_connections(mode, 500, |c| c.pool.max_connections = 20).await;
    }

    /// What operators budget `maxclients` with: pods x max_connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn production_profile_under_400_clients_stays_within_160(mode: PoolMode) {
        clients_never_exceed_max_connections(mode, 400, |c| {
            let production = Config::for_profile(Profile::Production);
            c.profile = production.profile;
            c.pool = production.pool;
            c.pool.mode = mode;
            c.limits = production.limits;
            c.policy = production.policy;
            assert_eq!(c.pool.max_connections, 160);
        })
        .await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exhausted_pool_answers_with_an_error_after_the_checkout_timeout(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.pool.max_connections = 2;
            c.pool.checkout_timeout_ms = 300;
        })
        .await;
        let mut third = connect(poolside.client_addr).await;

        let mut blockers = Vec::new();
        for _ in 0..2 {
            let mut con = connect(poolside.client_addr).await;
            blockers.push(tokio::spawn(async move {
                ok::<(String, String)>(&mut con, &["BLPOP", "nokey", "0"]).await
            }));
        }
        wait_until(WAIT, "both BLPOPs hold a pooled connection", || async {
            poolside.pool_snapshot().in_use == 2
        })
        .await;
        wait_until(WAIT, "Redis sees two blocked clients", || async {
            redis.blocked_clients().await == 2
        })
        .await;

        let before = poolside.pool_snapshot().exhausted_total;
        let asked = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(3),
            query::<Option<String>>(&mut third, &["GET", "k"]),
        )
        .await
        .expect("an exhausted pool answers, it does not hang");
        let waited = asked.elapsed();
        let err = reply.expect_err("GET on an exhausted pool fails");
        assert!(
            err.to_string().contains("pool exhausted"),
            "error was: {err}"
        );
        assert!(
            waited >= Duration::from_millis(250),
            "the error came after {waited:?}, before the 300 ms checkout timeout"
        );
        assert!(
            poolside.pool_snapshot().exhausted_total > before,
            "exhausted_total did not move from {before}"
        );

        // Poolside has no free connection: unblock both BLPOPs from Redis's side.
        let mut direct = redis.direct().await;
        assert_eq!(
            ok::<i64>(&mut direct, &["RPUSH", "nokey", "a", "b"]).await,
            2
        );
        let mut popped = HashSet::new();
        for blocker in blockers {
            let (key, value) = tokio::time::timeout(WAIT, blocker)
                .await
                .expect("BLPOP returns after the push")
                .expect("BLPOP task");
            assert_eq!(key, "nokey");
            popped.insert(value);
        }
        assert_eq!(popped, HashSet::from(["a".to_string(), "b".to_string()]));

        wait_until(WAIT, "both connections are checked in", || async {
            poolside.pool_snapshot().in_use == 0
        })
        .await;
        ok::<()>(&mut third, &["SET", "k", "v"]).await;
        assert_eq!(ok::<String>(&mut third, &["GET", "k"]).await, "v");
        poolside.shutdown().await;
    }
}

/// Poolside's connections as Redis lists them, on the asking connection.
async fn poolside_connections_on(sampler: &mut common::raw::RawClient) -> usize {
    client_list_on(sampler)
        .await
        .iter()
        .filter(|l| is_poolside(l))
        .count()
}

/// The development profile's sizes (max 20, min_idle 2) with a health check
/// every second and the given idle timeout.
fn development_sizes(idle_timeout_secs: u64) -> impl FnOnce(&mut Config) {
    move |c| {
        c.pool.max_connections = 20;
        c.pool.min_idle = 2;
        c.pool.health_check_interval_secs = 1;
        c.pool.idle_timeout_secs = idle_timeout_secs;
    }
}

/// With no client traffic, health-check rounds (and the control plane's
/// refresh at the same interval) never open a connection beyond `min_idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_alone_never_grow_the_pool() {
    const ROUNDS: u64 = 5;
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, development_sizes(600)).await;
    let sampler = Mutex::new(redis.direct_raw().await);
    wait_until(WAIT, "min_idle connections are open", || async {
        poolside.pool_snapshot().connections == 2
    })
    .await;
    let first = poolside.pool_snapshot().health_check_runs_total;
    let mut counts = Vec::new();
    for round in 1..=ROUNDS {
        wait_until(WAIT, &format!("health round {round} ran"), || async {
            poolside.pool_snapshot().health_check_runs_total >= first + round
        })
        .await;
        let snapshot = poolside.pool_snapshot();
        counts.push((
            snapshot.connections,
            poolside_connections_on(&mut *sampler.lock().await).await,
        ));
    }
    eprintln!("(pool, Redis) connections after each round: {counts:?}");
    assert!(
        counts.iter().all(|(pool, redis)| *pool <= 2 && *redis <= 2),
        "health checks grew the pool past min_idle 2: {counts:?}"
    );
    let snapshot = poolside.pool_snapshot();
    assert_eq!(
        snapshot.created_total, 2,
        "no connection was replaced: {snapshot:?}"
    );
    poolside.shutdown().await;
}

/// A burst opens many connections; once it is over, health checks keep
/// running but the connections beyond `min_idle` close after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_down_to_min_idle_after_a_burst() {
    const BURST: usize = 10;
    let redis = RedisServer::start().await;
    let poolside = start_poolside(&redis, PoolMode::Transaction, development_sizes(2)).await;
    let sampler = Mutex::new(redis.direct_raw().await);

    // BURST clients each hold a connection in BLPOP until it is pushed to.
    let mut blockers = Vec::new();
    for id in 0..BURST {
        let mut con = connect(poolside.client_addr).await;
        blockers.push(tokio::spawn(async move {
            let key = format!("burst:{id}");
            ok::<(String, String)>(&mut con, &["BLPOP", &key, "0"]).await
        }));
    }
    wait_until(WAIT, "every BLPOP holds a connection", || async {
        poolside.pool_snapshot().in_use == BURST as u32
    })
    .await;
    let mut direct = redis.direct().await;
    for id in 0..BURST {
        ok::<i64>(&mut direct, &["RPUSH", &format!("burst:{id}"), "x"]).await;
    }
    for blocker in blockers {
        blocker.await.expect("BLPOP task");
    }
    let after_burst = poolside.pool_snapshot();
    assert!(
        after_burst.connections >= BURST as u32,
        "the burst opened {} connections",
        after_burst.connections
    );

    let started = Instant::now();
    wait_until(WAIT, "the pool is back to min_idle connections", || async {
        let snapshot = poolside.pool_snapshot();
        snapshot.connections == 2 && snapshot.in_use == 0
    })
    .await;
    let shrunk_after = started.elapsed();
    let runs =
        poolside.pool_snapshot().health_check_runs_total - after_burst.health_check_runs_total;
    eprintln!(
        "{} connections after the burst; 2 after {shrunk_after:?} and {runs} health rounds",
        after_burst.connections
    );
    assert!(
        runs >= 2,
        "the pool shrank while health checks ran: {runs} rounds"
    );
    wait_until(WAIT, "Redis sees min_idle connections", || async {
        poolside_connections_on(&mut *sampler.lock().await).await == 2
    })
    .await;
    // Health checks go on at the smaller size without growing it again.
    let now = poolside.pool_snapshot().health_check_runs_total;
    wait_until(WAIT, "two more health rounds ran", || async {
        poolside.pool_snapshot().health_check_runs_total >= now + 2
    })
    .await;
    assert_eq!(poolside.pool_snapshot().connections, 2);
    poolside.shutdown().await;
}
