//! The one HTTP client of the tests: GET from poolside's admin listener.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::metrics::Metrics;
use super::WAIT;

/// A GET answer: status code, content type, every header, body.
pub struct Got {
    pub code: u16,
    pub content_type: String,
    /// `name: value` lines, as received.
    pub headers: String,
    pub body: String,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The body as Prometheus text.
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.body)
    }

    /// Headers and body, for checks that nothing in the response shows a value.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.headers, self.body)
    }
}

/// GET `path` from `admin`; panics unless an answer arrives within [`WAIT`].
pub async fn get(admin: SocketAddr, path: &str) -> Got {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{admin}{path}").parse().expect("uri");
    let fetch = async {
        let response = client
            .get(uri)
            .await
            .unwrap_or_else(|e| panic!("admin answers GET {path}: {e}"));
        let code = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let content_type = header(hyper::header::CONTENT_TYPE);
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
            .collect::<Vec<_>>()
            .join("\n");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Got {
            code,
            content_type,
            headers,
            body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
        }
    };
    tokio::time::timeout(WAIT, fetch)
        .await
        .unwrap_or_else(|_| panic!("admin answers GET {path} within {WAIT:?}"))
}

/// GET `/metrics` from `admin`, parsed; panics unless it is a 200.
pub async fn metrics(admin: SocketAddr) -> Metrics {
    let got = get(admin, "/metrics").await;
    assert_eq!(got.code, 200, "GET /metrics:\n{}", got.body);
    got.metrics()
}
