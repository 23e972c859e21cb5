//! poolside's `/pool/status`, fetched once at the end of a run.
//!
//! The endpoint grows over time, so every field is optional: what is there
//! is shown, what is missing is left out. A plain HTTP/1.0 GET is enough for
//! a loopback admin port and keeps an HTTP client library out of the build.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::url::{check_loopback_url, host_port};

/// Largest status body read.
const MAX_BODY: u64 = 1 << 20;

/// The parts of `/pool/status` the report shows, plus the raw document.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolStatus {
    pub utilization_percent: Option<f64>,
    pub in_use_connections: Option<u64>,
    pub max_connections: Option<u64>,
    pub peak_in_use: Option<u64>,
    pub pool_exhausted_count: Option<u64>,
    pub recommendations: Vec<String>,
    pub raw: Value,
}

impl PoolStatus {
    /// Reads what it can from a status document; unknown shapes are skipped.
    pub fn from_json(raw: Value) -> PoolStatus {
        let number = |path: &[&str]| {
            let mut v = &raw;
            for key in path {
                v = v.get(key)?;
            }
            v.as_f64()
        };
        let count = |path: &[&str]| number(path).filter(|n| *n >= 0.0).map(|n| n as u64);
        let recommendations = raw
            .get("recommendations")
            .and_then(Value::as_array)
            .map(|items| items.iter().map(recommendation_text).collect())
            .unwrap_or_default();
        PoolStatus {
            utilization_percent: number(&["utilization_percent"]),
            in_use_connections: count(&["in_use_connections"]),
            max_connections: count(&["max_connections"]),
            peak_in_use: count(&["metrics", "peak_in_use"]),
            pool_exhausted_count: count(&["metrics", "pool_exhausted_count"]),
            recommendations,
            raw,
        }
    }

    /// Human lines for the report.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(u) = self.utilization_percent {
            lines.push(format!("utilization          {u:.1} %"));
        }
        match (self.in_use_connections, self.max_connections) {
            (Some(used), Some(max)) => lines.push(format!("in use / max         {used} / {max}")),
            (None, Some(max)) => lines.push(format!("max connections      {max}")),
            _ => {}
        }
        if let Some(peak) = self.peak_in_use {
            lines.push(format!("peak in use          {peak}"));
        }
        if let Some(n) = self.pool_exhausted_count {
            lines.push(format!("pool exhaustions     {n}"));
        }
        for r in &self.recommendations {
            lines.push(format!("recommendation       {r}"));
        }
        if lines.is_empty() {
            lines.push("(no known fields in /pool/status)".to_string());
        }
        lines
    }
}

/// A recommendation is a string, or an object with a message-like field.
fn recommendation_text(item: &Value) -> String {
    if let Some(s) = item.as_str() {
        return s.to_string();
    }
    ["message", "text", "recommendation", "reason"]
        .iter()
        .find_map(|key| item.get(key).and_then(Value::as_str))
        .map_or_else(|| item.to_string(), str::to_string)
}

/// GETs `url` (http://loopback[:port]/path) and parses the JSON body.
pub async fn fetch(url: &str, limit: Duration) -> anyhow::Result<PoolStatus> {
    check_loopback_url(url, "http")?;
    let (host, port) = host_port(url, "http")?;
    let port = port.unwrap_or(80);
    let after_scheme = &url["http://".len()..];
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let body = timeout(limit, get(host, port, path))
        .await
        .with_context(|| format!("{url}: no answer within {limit:?}"))??;
    let raw: Value =
        serde_json::from_slice(&body).with_context(|| format!("{url}: body is not JSON"))?;
    Ok(PoolStatus::from_json(raw))
}

async fn get(host: &str, port: u16, path: &str) -> anyhow::Result<Vec<u8>> {
    let addr_host = host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = TcpStream::connect((addr_host, port))
        .await
        .with_context(|| format!("connect {host}:{port}"))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_BODY)
        .read_to_end(&mut response)
        .await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("HTTP status: {status_line}");
    }
    Ok(response[split + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_status_is_read() {
        let s = PoolStatus::from_json(json!({
            "utilization_percent": 42.5,
            "in_use_connections": 3,
            "max_connections": 160,
            "metrics": {"peak_in_use": 17, "pool_exhausted_count": 0},
            "recommendations": ["pool is sized well", {"severity": "info", "message": "raise min_idle"}]
        }));
        assert_eq!(s.utilization_percent, Some(42.5));
        assert_eq!(s.peak_in_use, Some(17));
        assert_eq!(s.pool_exhausted_count, Some(0));
        assert_eq!(
            s.recommendations,
            vec!["pool is sized well", "raise min_idle"]
        );
        assert!(s.lines().iter().any(|l| l.contains("3 / 160")));
    }

    #[test]
    fn missing_fields_are_tolerated() {
        let s = PoolStatus::from_json(json!({"environment": "development", "metrics": "soon"}));
        assert_eq!(s.utilization_percent, None);
        assert_eq!(s.peak_in_use, None);
        assert!(s.recommendations.is_empty());
        assert_eq!(s.lines(), vec!["(no known fields in /pool/status)"]);
    }
}
