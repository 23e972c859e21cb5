//! Admin HTTP server: one `match` on the path plus small response helpers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::config::Profile;
use crate::pool::Pool;

/// What the admin server reports on.
pub struct AdminState {
    pub pool: Pool,
    pub profile: Profile,
    pub upstream_address: String,
    pub min_idle: u32,
    /// Set by the app once the client listener accepts.
    pub listening: AtomicBool,
}

/// Serves admin requests until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method not allowed"}));
    }
    match req.uri().path() {
        "/health/live" => json_response(StatusCode::OK, &json!({"status": "live"})),
        "/health/ready" => {
            let ready = is_ready(state);
            let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json_response(code, &json!({"ready": ready}))
        }
        "/pool/status" => json_response(StatusCode::OK, &pool_status(state)),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found", "path": req.uri().path()})),
    }
}

fn is_ready(state: &AdminState) -> bool {
    let snap = state.pool.snapshot();
    state.listening.load(Ordering::Acquire) && !state.pool.health.is_down() && snap.connections >= state.min_idle
}

fn pool_status(state: &AdminState) -> serde_json::Value {
    let s = state.pool.snapshot();
    json!({
        "environment": state.profile.name(),
        "max_connections": s.max_connections,
        "in_use_connections": s.in_use,
        "idle_connections": s.idle,
        "available_connections": s.max_connections.saturating_sub(s.in_use),
        "upstream": { "address": state.upstream_address, "reachable": !state.pool.health.is_down() },
    })
}

fn json_response(code: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
