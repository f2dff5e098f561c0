//! The operator's own HTTP endpoints: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// What the endpoints report.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the operator reached the API server and found its CRDs. A standby replica (not
    /// leading) is ready too: it serves metrics and takes over when the leader goes.
    pub ready: Arc<AtomicBool>,
}

/// The router of the endpoints.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
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
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Serve { addr: addr.to_string(), source })
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
        let health = Health { metrics: Arc::new(Metrics::default()), ready: Arc::new(AtomicBool::new(false)) };
        assert_eq!(get(router(health.clone()), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(router(health.clone()), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = get(router(health.clone()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("sequencer_operator_leader"));
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(router(health), "/readyz").await.0, StatusCode::OK);
    }
}
