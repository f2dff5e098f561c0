//! The operator's own HTTP endpoints: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`.
//!
//! Liveness reflects controller progress: a watch that has failed for [`WATCH_FAILURE_LIMIT`]
//! without recovering makes `/healthz` answer 503, so the kubelet restarts a stuck process.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// How long a watch may keep failing before the process reports itself unhealthy.
pub const WATCH_FAILURE_LIMIT: Duration = Duration::from_secs(180);

/// Since when each failing watch has failed (watches that work are absent).
#[derive(Debug, Default)]
pub struct Liveness {
    failing_since: Mutex<HashMap<&'static str, Instant>>,
}

impl Liveness {
    /// Records one event of `watch`: an error starts (or continues) its failure, anything else
    /// ends it.
    pub fn observe(&self, watch: &'static str, ok: bool) {
        self.observe_at(watch, ok, Instant::now());
    }

    pub fn observe_at(&self, watch: &'static str, ok: bool, now: Instant) {
        let mut failing = self.failing_since.lock().expect("liveness lock");
        if ok {
            failing.remove(watch);
        } else {
            failing.entry(watch).or_insert(now);
        }
    }

    /// Forgets every watch (the controllers stopped: a standby has none).
    pub fn clear(&self) {
        self.failing_since.lock().expect("liveness lock").clear();
    }

    /// The watches failing for longer than `limit` at `now`, sorted.
    pub fn stuck(&self, now: Instant, limit: Duration) -> Vec<&'static str> {
        let failing = self.failing_since.lock().expect("liveness lock");
        let mut stuck: Vec<_> = failing
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) > limit)
            .map(|(w, _)| *w)
            .collect();
        stuck.sort_unstable();
        stuck
    }
}

/// What the endpoints report.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// The watches' health (see [`Liveness`]).
    pub liveness: Arc<Liveness>,
    /// Set once the operator reached the API server and found its CRDs. A standby replica (not
    /// leading) is ready too: it serves metrics and takes over when the leader goes.
    pub ready: Arc<AtomicBool>,
}

/// The router of the endpoints.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn healthz(State(health): State<Health>) -> impl IntoResponse {
    let stuck = health.liveness.stuck(Instant::now(), WATCH_FAILURE_LIMIT);
    if stuck.is_empty() {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("watches failing for more than {}s: {}", WATCH_FAILURE_LIMIT.as_secs(), stuck.join(", ")),
        )
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], health.metrics.encode())
}

/// Binds the endpoints' address, so a taken port fails start-up instead of a background task.
/// `[::]` listens dual-stack (IPv6 and, on Linux, IPv4-mapped); on a node without IPv6 it falls
/// back to `0.0.0.0` on the same port.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(error) if addr.ip().is_unspecified() && addr.is_ipv6() && error.kind() != std::io::ErrorKind::AddrInUse => {
            tracing::warn!(%error, "IPv6 is unavailable; listening on IPv4 only");
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tokio::net::TcpListener::bind(v4).await.map_err(|source| Error::Serve { addr: v4.to_string(), source })
        }
        Err(source) => Err(Error::Serve { addr: addr.to_string(), source }),
    }
}

/// Serves the endpoints on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) {
    if let Err(error) = axum::serve(listener, router(health)).await {
        tracing::error!(%error, "the health and metrics endpoints stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (StatusCode::from_u16(response.status().as_u16()).unwrap(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn readiness_waits_for_start_up_while_liveness_and_metrics_answer_at_once() {
        let health = Health {
            metrics: Arc::new(Metrics::default()),
            liveness: Arc::new(Liveness::default()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        assert_eq!(get(router(health.clone()), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(router(health.clone()), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = get(router(health.clone()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("sequencer_operator_leader"));
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(router(health), "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_watch_failing_for_minutes_makes_liveness_fail_until_it_recovers() {
        let liveness = Arc::new(Liveness::default());
        let health = Health {
            metrics: Arc::new(Metrics::default()),
            liveness: liveness.clone(),
            ready: Arc::new(AtomicBool::new(true)),
        };
        let long_ago = Instant::now() - WATCH_FAILURE_LIMIT - Duration::from_secs(1);
        liveness.observe_at("deployments", false, long_ago);
        liveness.observe("deployments", false); // a later error keeps the first failure time
        liveness.observe("jobs", false); // failing, but only just
        let (status, body) = get(router(health.clone()), "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("deployments") && !body.contains("jobs"), "{body}");
        liveness.observe("deployments", true);
        assert_eq!(get(router(health), "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_unspecified_ipv6_address_listens_for_ipv4_clients_too() {
        let listener = bind("[::]:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let health = Health {
            metrics: Arc::new(Metrics::default()),
            liveness: Arc::new(Liveness::default()),
            ready: Arc::new(AtomicBool::new(true)),
        };
        tokio::spawn(serve(listener, health));
        let response = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
}
