//! `POST /api/v1/ves/events/ingest` and the sequencer's public identity.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiJson, Auth, SharedState};
use crate::error::Result;
use crate::ingest::IngestRequest;
use crate::metrics::Timer;

pub async fn ingest_ves(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(req): ApiJson<IngestRequest>,
) -> Result<Response> {
    let _timer = Timer::start(&state.metrics.ingest_latency);
    let response = state.ingest.ingest(&caller, req).await.inspect_err(|e| state.metrics.ingest_failed(e))?;
    // NB: what `axum::Json` answers, with the body written by `IngestResponse::to_json`.
    let json = [(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"))];
    Ok((json, response.to_json()).into_response())
}

/// `POST /api/v1/events/ingest`: the legacy unsigned ingest, into the same streams.
pub async fn ingest_legacy(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(req): ApiJson<crate::ingest::legacy::LegacyRequest>,
) -> Result<Response> {
    let _timer = Timer::start(&state.metrics.ingest_latency);
    let response = crate::ingest::legacy::ingest(
        &state.store,
        &caller,
        req,
        state.config.max_events_per_batch,
        state.config.max_event_payload_size,
    )
    .await
    .inspect_err(|e| state.metrics.ingest_failed(e))?;
    for r in &response.rejections {
        state.metrics.reject(&r.reason);
    }
    state.metrics.events_sequenced.inc_by(u64::from(response.events_accepted));
    Ok(axum::Json(response).into_response())
}

/// The id and public key that sign receipts, so clients can verify them, every public key receipts were
/// signed with since the deployment recorded them (migration 0023: a receipt or checkpoint signed before a
/// key rotation verifies under one of them), and the signed-note verifier key of the stream checkpoints
/// (`<checkpoint_origin>/<tenant_id>/<store_id>`).
pub async fn sequencer_info(State(state): State<SharedState>, _caller: Auth) -> Result<Response> {
    let sequencer = state.ingest.sequencer();
    let receipt_keys = state.reads.read(|store| async move { store.receipt_keys().await }).await?;
    Ok(axum::Json(json!({
        "sequencer_id": sequencer.sequencer_id(),
        "signature_alg": if sequencer.public_key().is_some() { "ed25519" } else { "none" },
        "public_key": sequencer.public_key().map(hex::encode),
        "receipt_keys": receipt_keys,
        "checkpoint_origin": state.config.checkpoint_origin,
        "checkpoint_verifier_key": state.checkpoints.as_ref().map(|c| c.verifier_key()),
        "version": crate::VERSION,
    }))
    .into_response())
}
