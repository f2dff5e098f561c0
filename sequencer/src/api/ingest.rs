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
    let response = state.ingest.ingest(&caller, req).await?;
    Ok(axum::Json(response).into_response())
}

/// The id and public key that sign receipts, so clients can verify them.
pub async fn sequencer_info(State(state): State<SharedState>, _caller: Auth) -> Response {
    let sequencer = state.ingest.sequencer();
    axum::Json(json!({
        "sequencer_id": sequencer.sequencer_id(),
        "signature_alg": if sequencer.public_key().is_some() { "ed25519" } else { "none" },
        "public_key": sequencer.public_key().map(hex::encode),
        "version": crate::VERSION,
    }))
    .into_response()
}
