//! `GET /health`, `GET /ready`, `GET /metrics`.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SharedState;
use crate::metrics::{CacheLabels, CacheName, ReadyFailure, ReadyFailureLabels};

/// Liveness: answers without touching the database.
pub async fn health() -> Response {
    axum::Json(json!({
        "status": "healthy",
        "service": "stateset-sequencer",
        "version": crate::VERSION,
    }))
    .into_response()
}

fn pool_figures(state: &SharedState) -> serde_json::Value {
    let pool = state.store.pool();
    let size = pool.size();
    let idle = pool.num_idle() as u32;
    json!({
        "size": size,
        "idle": idle,
        "inUse": size.saturating_sub(idle),
        "waiting": state.metrics.db_waiting.load(std::sync::atomic::Ordering::Relaxed).max(0),
        "max": state.store.max_connections(),
    })
}

/// Readiness: one database round trip within `DB_ACQUIRE_TIMEOUT_MS`; 503 with a JSON body when the
/// database is unreachable or the pool is exhausted.
pub async fn ready(State(state): State<SharedState>) -> Response {
    let start = Instant::now();
    let budget = state.config.db_acquire_timeout + Duration::from_millis(500);
    let result = tokio::time::timeout(budget, state.store.ping()).await;
    let elapsed_ms = start.elapsed().as_millis() as u64;
    match result {
        Ok(Ok(())) => {
            state.metrics.ready.set(1);
            axum::Json(json!({
                "status": "ready",
                "database": "connected",
                "responseTimeMs": elapsed_ms,
                "pool": pool_figures(&state),
            }))
            .into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            not_ready(&state, if e.is_database_unavailable() { ReadyFailure::Unreachable } else { ReadyFailure::Error })
        }
        Err(_) => not_ready(&state, ReadyFailure::Timeout),
    }
}

fn not_ready(state: &SharedState, reason: ReadyFailure) -> Response {
    state.metrics.ready.set(0);
    state.metrics.ready_failures.get_or_create(&ReadyFailureLabels { reason }).inc();
    let database = reason.as_str();
    let body = json!({
        "status": "not_ready",
        "database": database,
        "pool": pool_figures(state),
        "error": {"code": "DATABASE_UNAVAILABLE", "numeric_code": 8002, "message": "The database is not reachable"},
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, 1.into());
    response
}

/// Prometheus text exposition; no authentication, as the runbook curls it.
pub async fn metrics(State(state): State<SharedState>) -> Response {
    let m = &state.metrics;
    let (agent_keys, api_keys) = (state.ingest.keys().size().await, state.auth.cache_size().await);
    m.cache_size.get_or_create(&CacheLabels { cache: CacheName::AgentKey }).set(agent_keys as i64);
    m.cache_size.get_or_create(&CacheLabels { cache: CacheName::ApiKey }).set(api_keys as i64);
    let tables = state.ingest.keys().prepared_tables();
    m.cache_size.get_or_create(&CacheLabels { cache: CacheName::VerifyTable }).set(tables as i64);
    // The dead-letter depth is sampled here, cheaply and never blocking the scrape for long.
    if let Ok(Ok(depth)) = tokio::time::timeout(Duration::from_millis(500), state.store.dead_letter_depth()).await {
        m.dead_letter_events.set(depth);
    }
    if let Ok(Ok(pressure)) = tokio::time::timeout(Duration::from_millis(500), state.store.index_pressure()).await {
        m.log_random_key_index_bytes.set(pressure.random_key_index_bytes);
        m.database_shared_buffers_bytes.set(pressure.shared_buffers_bytes);
    }
    state.reads.export_metrics(m);
    if let Some(anchor) = &state.anchor {
        anchor.export_metrics(m);
        m.anchor_interval.set(state.config.worker.anchor_interval.as_secs() as i64);
        if let Ok(Ok((count, oldest))) =
            tokio::time::timeout(Duration::from_millis(500), state.store.unanchored_summary()).await
        {
            m.unanchored_commitments.set(count);
            m.oldest_unanchored_commitment_age.set(oldest.unwrap_or(0.0) as i64);
        }
    }
    let body = m.render(state.store.pool(), state.store.max_connections());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
