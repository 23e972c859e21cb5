//! Helpers for the admin-server tests: `/pool/status`, connections held
//! busy with BLPOP, a local webhook receiver, captured logs.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use poolside::app::Running;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::http::get;
use super::raw::{encode, RawClient, Read, Reply};
use super::{query, wait_for, wait_until, RedisServer, WAIT};

pub async fn status(poolside: &Running) -> Value {
    get(poolside.admin_addr, "/pool/status").await.json()
}

/// Waits until `/pool/status` satisfies `cond`; returns that document.
pub async fn wait_for_status(
    poolside: &Running,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(WAIT, what, || async {
        let s = status(poolside).await;
        if cond(&s) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await
}

pub fn recommendations(status: &Value) -> Vec<String> {
    status["recommendations"]
        .as_array()
        .expect("recommendations is a list")
        .iter()
        .map(|r| r.as_str().expect("recommendations are strings").to_string())
        .collect()
}

/// Client connections each blocked in `BLPOP` through poolside, so each holds
/// one pooled connection until its key gets a value. Raw RESP clients: a
/// client library's connect-time commands would take checkouts of their own.
pub struct Blocked {
    tasks: Vec<JoinHandle<()>>,
}

impl Blocked {
    pub fn new() -> Blocked {
        Blocked { tasks: Vec::new() }
    }

    /// Blocks more clients until `n` pool connections are in use.
    pub async fn hold(&mut self, poolside: &Running, n: u32) {
        while self.tasks.len() < n as usize {
            let key = format!("blocked:{}", self.tasks.len());
            let mut client = RawClient::connect(poolside.client_addr).await;
            client
                .send(&encode(&["BLPOP", &key, "0"]))
                .await
                .expect("send BLPOP");
            self.tasks.push(tokio::spawn(async move {
                // No read timeout: the reply comes when the test releases it.
                match client.read().await.expect("BLPOP reply") {
                    Read::Reply(Reply::Array(Some(got))) => assert_eq!(got[0], Reply::bulk(&key)),
                    other => panic!("BLPOP {key}: {other:?}"),
                }
            }));
        }
        wait_until(WAIT, &format!("{n} connections are in use"), || async {
            poolside.pool_snapshot().in_use == n
        })
        .await;
    }

    /// Pushes a value to every blocked key from a direct connection and waits
    /// until every BLPOP has returned.
    pub async fn release(self, redis: &RedisServer) {
        let mut direct = redis.direct().await;
        for i in 0..self.tasks.len() {
            let key = format!("blocked:{i}");
            query::<i64>(&mut direct, &["LPUSH", &key, "done"])
                .await
                .expect("LPUSH");
        }
        for task in self.tasks {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("BLPOP returns once its key has a value")
                .expect("BLPOP got its value");
        }
    }
}

/// A local HTTP server that records every request body it receives.
pub struct Receiver {
    pub url: String,
    bodies: mpsc::UnboundedReceiver<Value>,
    received: Vec<Value>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!(
            "http://{}/hooks/poolside",
            listener.local_addr().expect("addr")
        );
        let (tx, bodies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            let _ = tx.send(serde_json::from_slice(&body).expect("webhook JSON"));
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            url,
            bodies,
            received: Vec::new(),
        }
    }

    /// Waits for the next POST body.
    pub async fn next(&mut self) -> Value {
        let body = tokio::time::timeout(WAIT, self.bodies.recv())
            .await
            .expect("a webhook POST arrives in time")
            .expect("receiver running");
        self.received.push(body.clone());
        body
    }

    /// Every body received so far, including any not yet taken with `next`.
    pub fn all(&mut self) -> &[Value] {
        while let Ok(body) = self.bodies.try_recv() {
            self.received.push(body);
        }
        &self.received
    }
}

/// Log output captured from the current thread's tracing events.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every event (TRACE and up) emitted on this thread until the guard
/// drops. Use with a current-thread runtime so poolside's tasks log here too.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}
