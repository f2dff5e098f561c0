//! Anchoring endpoints (ves-wire.md §1.11): the runbook's retry, commit-and-anchor, and reading the
//! chain back.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::commitments::readable;
use super::{ApiJson, ApiPath, Auth, SharedState};
use crate::anchoring::AnchorService;
use crate::error::{Error, Result};
use crate::store::events::StreamKey;

/// The answer of both anchoring calls.
fn anchored_json(row: &crate::store::commitments::CommitmentRow, newly: bool) -> serde_json::Value {
    json!({
        "batch_id": row.batch_id,
        "status": if newly { "anchored" } else { "already_anchored" },
        "chain_id": row.chain_id,
        "chain_tx_hash": row.chain_tx_hash.as_deref().map(hex::encode),
        "chain_block_number": row.chain_block_number,
        "merkle_root": hex::encode(&row.merkle_root),
        "prev_state_root": hex::encode(&row.prev_state_root),
        "new_state_root": hex::encode(&row.new_state_root),
        "sequence_start": row.sequence_start,
        "sequence_end": row.sequence_end,
    })
}

fn service(state: &SharedState) -> Result<&AnchorService> {
    state.anchor.as_deref().ok_or_else(|| Error::Unavailable {
        code: "ANCHORING_NOT_CONFIGURED",
        message: "Anchor service not configured: set L2_RPC_URL, SET_REGISTRY_ADDRESS and SEQUENCER_PRIVATE_KEY".into(),
        retry_after_secs: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct AnchorBody {
    batch_id: Uuid,
}

/// `POST /api/v1/ves/anchor {"batch_id"}`: anchors (or re-sends) one commitment.
pub async fn anchor(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(body): ApiJson<AnchorBody>,
) -> Result<Response> {
    caller.require_admin()?;
    let service = service(&state)?;
    let row = readable(&state.store, &caller, body.batch_id).await?;
    caller.require_admin_of_stream(row.stream())?;
    let (row, newly) = service.anchor_row(row).await?;
    Ok(axum::Json(anchored_json(&row, newly)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CommitAndAnchor {
    tenant_id: Uuid,
    store_id: Uuid,
    sequence_start: Option<i64>,
    sequence_end: Option<i64>,
    max_events: Option<i64>,
}

/// `POST /api/v1/ves/commitments/anchor`: commits a range (default: the next one, at most
/// `max_events`, default 1024) and anchors it.
pub async fn commit_and_anchor(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(body): ApiJson<CommitAndAnchor>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: body.tenant_id, store_id: body.store_id };
    caller.require_admin_of_stream(stream)?;
    let service = service(&state)?;
    let row = match (body.sequence_start, body.sequence_end) {
        (Some(start), Some(end)) => state.commitments.create(stream, start, end).await?.0,
        (None, None) => {
            let max = body.max_events.unwrap_or(1024).clamp(1, crate::commitments::MAX_COMMITMENT_EVENTS);
            let head = state.store.head(stream).await?;
            state.commitments.create_next(stream, max).await?.ok_or_else(|| Error::Invalid {
                code: "NO_NEW_EVENTS",
                message: format!("no new events to commit (head_sequence={head})"),
            })?
        }
        _ => return Err(Error::BadRequest("give both sequence_start and sequence_end, or neither".into())),
    };
    let (row, newly) = service.anchor_row(row).await?;
    Ok(axum::Json(anchored_json(&row, newly)).into_response())
}

/// `GET /api/v1/ves/anchor/{batch_id}/verify`: reads the registry.
pub async fn verify(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(batch_id): ApiPath<Uuid>,
) -> Result<Response> {
    let caller = &caller;
    let row = state.reads.read(|store| async move { readable(&store, caller, batch_id).await }).await?;
    let service = service(&state)?;
    let (anchored, roots_match) = service.verify_on_chain(&row).await?;
    Ok(axum::Json(json!({
        "batch_id": batch_id,
        "anchored_on_chain": anchored,
        "roots_match": roots_match,
        "chain_tx_hash": row.chain_tx_hash.as_deref().map(hex::encode),
    }))
    .into_response())
}
