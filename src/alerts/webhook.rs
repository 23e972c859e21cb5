//! The alert webhook: JSON POSTs from their own task, so a slow or dead
//! receiver never delays the sampler, let alone a client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::url::parse_webhook;

/// Notifications waiting for delivery; more are dropped (and logged).
const QUEUE: usize = 64;

/// Sends notifications to one URL, in order. Dropping it stops the sender task.
pub struct Webhook {
    queue: mpsc::Sender<Value>,
}

impl Webhook {
    /// Spawns the sender task on the current tokio runtime.
    pub fn spawn(url: &str, timeout: Duration) -> Result<Webhook, String> {
        let uri = parse_webhook(url)?;
        let (queue, mut pending) = mpsc::channel::<Value>(QUEUE);
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        tokio::spawn(async move {
            // One POST at a time and never retried, so each level change is
            // delivered at most once and in order.
            while let Some(body) = pending.recv().await {
                match post(&client, &uri, &body, timeout).await {
                    Ok(status) if status.is_success() => {
                        debug!(%status, "alert webhook delivered")
                    }
                    Ok(status) => warn!(%status, "alert webhook answered with an error status"),
                    Err(reason) => warn!(%reason, "alert webhook POST failed"),
                }
            }
        });
        Ok(Webhook { queue })
    }

    /// Queues one notification without waiting.
    pub fn notify(&self, body: Value) {
        if self.queue.try_send(body).is_err() {
            warn!("alert webhook queue full: notification dropped");
        }
    }
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &Uri,
    body: &Value,
    timeout: Duration,
) -> Result<StatusCode, String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("poolside/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response.status()),
        Ok(Err(e)) if e.is_connect() => Err("cannot connect".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}
