//! Admin HTTP server: one `match` on the path plus small response helpers.
//!
//! Routes: `/pool/status`, `/health/redis`, `/health/live`, `/health/ready`,
//! `/metrics`; anything else is a JSON 404. No response carries a secret.

mod control;
mod fleet;
mod metrics;
pub mod nodes;
mod recommend;
mod status;

use crate::backend::cluster::Cluster;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

pub use control::{ControlPlane, ServerInfo};
pub use fleet::{connection_name, instance_name, FleetStatus};
pub use metrics::Metrics;
pub use recommend::{Sizing, OPTIMAL};
pub use status::PoolStatus;

use crate::alerts::Alerts;
use crate::config::{Config, PoolMode, Profile};
use crate::pool::{Address, Pool, Target};
use crate::sentinel::Sentinels;
use crate::traffic::Traffic;
use crate::usage::{self, Usage};

/// What the admin server reports on, and the background tasks that feed it.
pub struct AdminState {
    pub pool: Pool,
    /// Client-side counters: clients, commands, failures by side.
    pub traffic: Arc<Traffic>,
    pub profile: Profile,
    /// Where Redis is (`host:port`, or the primary a Sentinel names), without credentials.
    pub upstream: Address,
    /// Sentinel mode: the Sentinels poolside follows.
    pub sentinels: Option<Sentinels>,
    /// Redis Cluster mode.
    pub cluster: Option<Arc<Cluster>>,
    pub min_idle: u32,
    pub pool_mode: PoolMode,
    /// Set by the app once the client listener accepts.
    pub listening: AtomicBool,
    pub alerts: Arc<Alerts>,
    pub usage: Arc<Usage>,
    pub control: Arc<ControlPlane>,
    pub metrics: Metrics,
    pub recommendation_window: Duration,
    /// What this instance names its upstream connections (`fleet.rs`).
    pub connection_name: Option<String>,
    /// Redis Cluster mode: each node's usage and fleet (`nodes.rs`).
    pub cluster_nodes: Option<Arc<nodes::ClusterNodes>>,
    health_interval: Duration,
}

impl AdminState {
    /// Builds the state; needs a tokio runtime (the alert webhook task starts here).
    pub fn new(
        config: &Config,
        pool: Pool,
        traffic: Arc<Traffic>,
        target: &Target,
        sentinels: Option<Sentinels>,
        cluster: Option<Arc<Cluster>>,
    ) -> anyhow::Result<AdminState> {
        let a = &config.alerts;
        let alerts = Arc::new(Alerts::new(a, config.profile.name()));
        let recommendation_window = Duration::from_secs(a.recommendation_window_secs);
        let control = Arc::new(ControlPlane::new(pool.clone()));
        let keep = recommendation_window.max(Duration::from_secs(a.window_secs));
        let health_interval = Duration::from_secs(config.pool.health_check_interval_secs);
        let cluster_nodes = cluster
            .clone()
            .map(|c| Arc::new(nodes::ClusterNodes::new(c, keep, health_interval)));
        Ok(AdminState {
            metrics: Metrics::new(
                pool.clone(),
                traffic.clone(),
                alerts.clone(),
                control.clone(),
                sentinels.clone(),
                cluster.clone(),
            )?,
            pool,
            traffic,
            profile: config.profile,
            upstream: target.address.clone(),
            sentinels,
            cluster,
            min_idle: config.pool.min_idle,
            pool_mode: config.pool.mode,
            listening: AtomicBool::new(false),
            alerts,
            usage: Arc::new(Usage::new(keep)),
            control,
            recommendation_window,
            connection_name: target.client_name.clone(),
            cluster_nodes,
            health_interval,
        })
    }

    /// Starts the usage sampler (which drives the alerts) and the control-plane refresher.
    pub fn spawn_background(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let window = self.alerts.window();
        let alerts = self.alerts.clone();
        let tick = usage::tick_for(window);
        let nodes = self
            .cluster_nodes
            .clone()
            .map(|nodes| nodes::spawn_sampler(nodes, tick, shutdown.clone()));
        let mut tasks = vec![
            usage::spawn_sampler(
                self.pool.clone(),
                self.traffic.clone(),
                self.usage.clone(),
                window,
                tick,
                move |w, in_use, max| alerts.observe(w, in_use, max),
                shutdown.clone(),
            ),
            control::spawn_refresher(self.control.clone(), self.health_interval, shutdown),
        ];
        tasks.extend(nodes);
        tasks
    }
}

/// Serves admin requests until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
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
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        );
    }
    match req.uri().path() {
        "/health/live" => json_response(StatusCode::OK, &json!({"status": "live"})),
        "/health/ready" => ready(state),
        "/health/redis" => {
            let pool_status = status::pool_status(state);
            let healthy = pool_status.upstream.reachable;
            let body = json!({
                "healthy": healthy,
                "recommendations": pool_status.recommendations,
                "pool_status": pool_status,
            });
            json_response(ok_or_unavailable(healthy), &body)
        }
        "/pool/status" => json_response(StatusCode::OK, &status::pool_status(state)),
        "/metrics" => match state.metrics.render() {
            Ok((body, content_type)) => response(StatusCode::OK, body, &content_type),
            Err(e) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("cannot encode metrics: {e}")}),
            ),
        },
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found", "path": req.uri().path()}),
        ),
    }
}

/// Kubernetes readiness: listening, Redis reachable, and min_idle connections open.
fn ready(state: &AdminState) -> Response<Full<Bytes>> {
    let listening = state.listening.load(Ordering::Acquire);
    let reachable = status::reachable(state);
    let connections = state.pool.snapshot().connections;
    let ready = listening && reachable && connections >= state.min_idle;
    let body = json!({
        "ready": ready,
        "listening": listening,
        "upstream_reachable": reachable,
        "connections": connections,
        "min_idle": state.min_idle,
    });
    json_response(ok_or_unavailable(ready), &body)
}

/// A health check has succeeded at least once since start.
fn checked_once(pool: &Pool) -> bool {
    pool.health.last_check_unix_ms.load(Ordering::Relaxed) > 0
}

fn ok_or_unavailable(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn json_response(code: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    response(code, bytes, "application/json")
}

fn response(code: StatusCode, body: Vec<u8>, content_type: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, value);
    }
    resp
}
