//! A well-behaved client doing SET/GET in a loop, to show that what happens
//! to other clients does not reach it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use super::{ok, wait_until};

pub struct Busy {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    task: JoinHandle<u64>,
}

impl Busy {
    /// Starts SET/GET rounds on key `name`; any failed or wrong reply panics the task.
    pub fn spawn(mut con: MultiplexedConnection, name: &'static str) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let value = format!("{name}-{i}");
                ok::<()>(&mut con, &["SET", name, &value]).await;
                assert_eq!(ok::<String>(&mut con, &["GET", name]).await, value);
                i += 1;
                r.store(i, Ordering::Relaxed);
            }
            i
        });
        Busy { stop, rounds, task }
    }

    /// Waits until the client completed `n` more rounds than it had now.
    pub async fn wait_rounds(&self, n: u64) {
        let start = self.rounds.load(Ordering::Relaxed);
        wait_until(
            Duration::from_secs(10),
            "the busy client makes progress",
            || async {
                assert!(
                    !self.task.is_finished(),
                    "the busy client stopped: a command failed"
                );
                self.rounds.load(Ordering::Relaxed) >= start + n
            },
        )
        .await;
    }

    /// Stops the loop; panics if any of its commands failed. Returns the rounds done.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .expect("the busy client's commands all succeeded")
    }
}
