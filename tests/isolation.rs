//! Reply isolation: many clients share a small pool, and every reply still
//! reaches the client that asked, in the order it asked (DESIGN.md, rules of
//! the data path).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{both_modes, connect, start_poolside, RedisServer};
use poolside::config::PoolMode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;
use tokio::sync::Barrier;

const CLIENTS: usize = 200;
const MAX_CONNECTIONS: u32 = 20;
const PIPELINES_PER_CLIENT: usize = 10;
const MAX_PIPELINE: usize = 50;
const SEED: u64 = 0x9001_5eed;

/// What one client's keys hold, as far as its own commands say.
#[derive(Default)]
struct Model {
    strings: HashMap<String, String>,
    counters: HashMap<String, i64>,
    /// Newest element first, as LPUSH leaves it.
    lists: HashMap<String, Vec<String>>,
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

/// A random pipeline over client `id`'s keys and the replies the model predicts.
fn random_pipeline(
    rng: &mut StdRng,
    id: usize,
    round: usize,
    model: &mut Model,
) -> (redis::Pipeline, Vec<Value>) {
    let len = rng.gen_range(1..=MAX_PIPELINE);
    let mut pipe = redis::pipe();
    let mut want = Vec::with_capacity(len);
    for j in 0..len {
        match rng.gen_range(0..5) {
            0 => {
                let key = format!("c{id}:s{}", rng.gen_range(0..4));
                let value = format!("c{id}-r{round}-{j}-{}", rng.gen::<u32>());
                pipe.cmd("SET").arg(&key).arg(&value);
                model.strings.insert(key, value);
                want.push(Value::Okay);
            }
            1 => {
                // GET reads strings and counters alike (a counter is a string to Redis).
                let want_value = if rng.gen_bool(0.7) {
                    let key = format!("c{id}:s{}", rng.gen_range(0..5));
                    pipe.cmd("GET").arg(&key);
                    model.strings.get(&key).map(|v| bulk(v))
                } else {
                    let key = format!("c{id}:n{}", rng.gen_range(0..3));
                    pipe.cmd("GET").arg(&key);
                    model.counters.get(&key).map(|n| bulk(&n.to_string()))
                };
                want.push(want_value.unwrap_or(Value::Nil));
            }
            2 => {
                let key = format!("c{id}:n{}", rng.gen_range(0..3));
                pipe.cmd("INCR").arg(&key);
                let n = model.counters.entry(key).or_insert(0);
                *n += 1;
                want.push(Value::Int(*n));
            }
            3 => {
                let key = format!("c{id}:l{}", rng.gen_range(0..3));
                let value = format!("c{id}-r{round}-{j}");
                pipe.cmd("LPUSH").arg(&key).arg(&value);
                let list = model.lists.entry(key).or_default();
                list.insert(0, value);
                want.push(Value::Int(list.len() as i64));
            }
            _ => {
                let key = format!("c{id}:l{}", rng.gen_range(0..3));
                pipe.cmd("LRANGE").arg(&key).arg(0).arg(9);
                let list = model.lists.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                want.push(Value::Array(
                    list.iter().take(10).map(|v| bulk(v)).collect(),
                ));
            }
        }
    }
    (pipe, want)
}

#[derive(Default)]
struct Outcome {
    replies_checked: AtomicUsize,
    mismatches: AtomicUsize,
    errors: AtomicUsize,
    first_problems: Mutex<Vec<String>>,
}

impl Outcome {
    fn note(&self, problem: String) {
        let mut problems = self.first_problems.lock().expect("problems lock");
        if problems.len() < 10 {
            problems.push(problem);
        }
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pipelines_get_their_own_replies(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside =
            start_poolside(&redis, mode, |c| c.pool.max_connections = MAX_CONNECTIONS).await;
        let outcome = Arc::new(Outcome::default());
        let start = Arc::new(Barrier::new(CLIENTS));

        let mut tasks = Vec::with_capacity(CLIENTS);
        for id in 0..CLIENTS {
            let addr = poolside.client_addr;
            let (outcome, start) = (outcome.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                let mut con = connect(addr).await;
                let mut rng = StdRng::seed_from_u64(SEED + id as u64);
                let mut model = Model::default();
                start.wait().await;
                for round in 0..PIPELINES_PER_CLIENT {
                    let (pipe, want) = random_pipeline(&mut rng, id, round, &mut model);
                    let got: Vec<Value> = match pipe.query_async(&mut con).await {
                        Ok(got) => got,
                        Err(e) => {
                            outcome.errors.fetch_add(1, Ordering::Relaxed);
                            outcome.note(format!("client {id} round {round}: error {e}"));
                            return;
                        }
                    };
                    outcome.replies_checked.fetch_add(got.len(), Ordering::Relaxed);
                    if got != want {
                        outcome.mismatches.fetch_add(1, Ordering::Relaxed);
                        let at = got.iter().zip(&want).position(|(g, w)| g != w);
                        outcome.note(format!(
                            "client {id} round {round}: {} replies for {} commands, first difference at {at:?}: got {:?}, want {:?}",
                            got.len(),
                            want.len(),
                            at.map(|i| &got[i]),
                            at.map(|i| &want[i]),
                        ));
                        return;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }

        let problems = outcome
            .first_problems
            .lock()
            .expect("problems lock")
            .clone();
        assert_eq!(
            outcome.errors.load(Ordering::Relaxed),
            0,
            "errors: {problems:#?}"
        );
        assert_eq!(
            outcome.mismatches.load(Ordering::Relaxed),
            0,
            "mismatches: {problems:#?}"
        );
        assert!(outcome.replies_checked.load(Ordering::Relaxed) >= CLIENTS * PIPELINES_PER_CLIENT);

        let snapshot = poolside.pool_snapshot();
        assert!(
            snapshot.connections <= MAX_CONNECTIONS && snapshot.created_total >= 1,
            "pool stayed within its max: {} connections, {} created",
            snapshot.connections,
            snapshot.created_total
        );
        poolside.shutdown().await;
    }
}
