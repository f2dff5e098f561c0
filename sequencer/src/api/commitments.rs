//! Commitments and inclusion proofs (ves-wire.md §1.9–1.10). Reads are served by the read replica while
//! it is fresh enough ([`crate::reads`]); creating and correcting a commitment use the primary.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiQuery, Auth, SharedState};
use crate::commitments::{CommitmentEngine, InclusionProof, commitment_json};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::commitments::{CommitmentRow, ListFilter};
use crate::store::events::StreamKey;

#[derive(Debug, Deserialize)]
pub struct CreateCommitment {
    tenant_id: Uuid,
    store_id: Uuid,
    sequence_start: i64,
    sequence_end: i64,
}

/// `POST /api/v1/ves/commitments`: commits a contiguous range (200, idempotent for the same range).
pub async fn create(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(body): ApiJson<CreateCommitment>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: body.tenant_id, store_id: body.store_id };
    caller.require_write(stream)?;
    let (row, _created) = state
        .commitments
        .create(stream, body.sequence_start, body.sequence_end)
        .await
        .inspect_err(|e| state.metrics.commitment_failed(e))?;
    Ok(axum::Json(commitment_json(&row)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    tenant_id: Uuid,
    store_id: Uuid,
    anchored: Option<bool>,
    #[serde(default)]
    include_superseded: bool,
    limit: Option<i64>,
}

/// `GET /api/v1/ves/commitments?tenant_id&store_id[&anchored=true|false][&include_superseded=true]`.
pub async fn list(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let filter = ListFilter { anchored: q.anchored, include_superseded: q.include_superseded };
    let rows = state.reads.read(|store| async move { store.list_commitments(stream, filter, limit).await }).await?;
    let commitments: Vec<_> = rows.iter().map(commitment_json).collect();
    Ok(axum::Json(json!({"count": commitments.len(), "commitments": commitments})).into_response())
}

/// Loads a commitment the caller may read from `store`; another tenant's commitment is "not found".
pub async fn readable(store: &Store, caller: &Auth, batch_id: Uuid) -> Result<CommitmentRow> {
    let not_found = || Error::NotFound("Commitment not found".into());
    let row = store.commitment(batch_id).await?.ok_or_else(not_found)?;
    caller.require_read(row.stream()).map_err(|_| not_found())?;
    Ok(row)
}

/// `GET /api/v1/ves/commitments/{batch_id}`.
pub async fn get_one(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(batch_id): ApiPath<Uuid>,
) -> Result<Response> {
    let caller = &caller;
    let row = state.reads.read(|store| async move { readable(&store, caller, batch_id).await }).await?;
    Ok(axum::Json(commitment_json(&row)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CorrectBody {
    reason: String,
}

/// `POST /api/v1/ves/commitments/{batch_id}/correct` (admin): a correcting commitment over the same
/// range, recomputed from the log; the bad one is marked superseded and stays readable.
pub async fn correct(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(batch_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CorrectBody>,
) -> Result<Response> {
    let row = readable(&state.store, &caller, batch_id).await?;
    caller.require_admin_of_stream(row.stream())?;
    if body.reason.trim().is_empty() {
        return Err(Error::BadRequest("reason must say why the commitment is wrong".into()));
    }
    let correction = state.commitments.correct(batch_id, body.reason.trim()).await?;
    Ok(axum::Json(commitment_json(&correction)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ProofQuery {
    tenant_id: Uuid,
    store_id: Uuid,
    batch_id: Option<Uuid>,
}

/// `GET /api/v1/ves/proofs/{sequence_number}?tenant_id&store_id[&batch_id]`: without `batch_id`, the
/// live commitment covering the sequence number is used.
pub async fn proof(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(sequence_number): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    let batch_id = q.batch_id;
    let proof =
        state.reads.read(|store| async move { proof_from(store, stream, sequence_number, batch_id).await }).await?;
    Ok(axum::Json(proof.to_json()).into_response())
}

/// The inclusion proof of `sequence_number` in commitment `batch_id` (default: the live one covering
/// it), all read from `store`.
async fn proof_from(
    store: Store,
    stream: StreamKey,
    sequence_number: i64,
    batch_id: Option<Uuid>,
) -> Result<InclusionProof> {
    let commitment = match batch_id {
        Some(id) => {
            let row = store.commitment(id).await?.ok_or_else(|| Error::NotFound("Commitment not found".into()))?;
            if row.stream() != stream {
                return Err(Error::Forbidden("Commitment access denied".into()));
            }
            row
        }
        None => store.commitment_covering(stream, sequence_number).await?.ok_or_else(|| {
            Error::NotFound(format!("No commitment covers sequence number {sequence_number} of this stream yet"))
        })?,
    };
    CommitmentEngine::new(store).proof(&commitment, sequence_number).await
}

#[derive(Debug, Deserialize)]
pub struct VerifyBody {
    leaf_hash: String,
    merkle_root: String,
    proof_path: Vec<String>,
    leaf_index: u64,
}

fn hex32(field: &str, value: &str) -> Result<[u8; 32]> {
    let v = value.strip_prefix("0x").unwrap_or(value);
    let bytes = hex::decode(v).map_err(|_| Error::BadRequest(format!("Invalid {field} format: not hex")))?;
    bytes.try_into().map_err(|_| Error::BadRequest(format!("{field} must be 32 bytes")))
}

/// `POST /api/v1/ves/proofs/verify`: checks a proof offline (no database).
pub async fn verify(caller: Auth, ApiJson(body): ApiJson<VerifyBody>) -> Result<Response> {
    if !(caller.can_read || caller.can_admin) {
        return Err(Error::Forbidden("Read permission required".into()));
    }
    if body.proof_path.len() > 64 {
        return Err(Error::BadRequest("proof_path exceeds maximum length of 64".into()));
    }
    let leaf = hex32("leaf_hash", &body.leaf_hash)?;
    let root = hex32("merkle_root", &body.merkle_root)?;
    let path = body.proof_path.iter().map(|p| hex32("proof hash", p)).collect::<Result<Vec<_>>>()?;
    let valid = usize::try_from(body.leaf_index).is_ok_and(|i| ves::merkle::verify_proof(&leaf, i, &path, &root));
    Ok(axum::Json(json!({"valid": valid, "leaf_hash": body.leaf_hash, "merkle_root": body.merkle_root}))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    tenant_id: Uuid,
    store_id: Uuid,
    /// A size the client has a checkpoint for: 0 or the end of a live commitment.
    from_size: i64,
    /// The end of a live commitment (default: the stream's last).
    to_size: Option<i64>,
}

/// `GET /api/v1/ves/commitments/consistency?tenant_id&store_id&from_size[&to_size]`: the commitments
/// that lead the stream's state root at `from_size` to its state root at `to_size` (SPEC §5; verify
/// with `ves::chain::verify_consistency`).
pub async fn consistency(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    let (from_size, to_size) = (q.from_size, q.to_size);
    let proof = state
        .reads
        .read(|store| async move { CommitmentEngine::new(store).consistency(stream, from_size, to_size).await })
        .await?;
    let commitments: Vec<_> = proof.links.iter().map(commitment_json).collect();
    Ok(axum::Json(json!({
        "tenant_id": stream.tenant_id,
        "store_id": stream.store_id,
        "from_size": proof.from_size,
        "from_state_root": hex::encode(proof.from_root),
        "to_size": proof.to_size,
        "to_state_root": hex::encode(proof.to_root),
        "commitments": commitments,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CheckpointQuery {
    tenant_id: Uuid,
    store_id: Uuid,
}

/// `GET /api/v1/ves/checkpoint?tenant_id&store_id`: the stream's signed checkpoint (a C2SP
/// tlog-checkpoint in a C2SP signed note, `text/plain`) at its last commitment.
pub async fn checkpoint(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<CheckpointQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    let signer = state.checkpoints.as_ref().ok_or_else(|| Error::Unavailable {
        code: "CHECKPOINTS_UNSIGNED",
        message: "Checkpoints are signed with VES_SEQUENCER_SIGNING_KEY, which this sequencer does not have".into(),
        retry_after_secs: None,
    })?;
    let note =
        state.reads.read(|store| async move { CommitmentEngine::new(store).checkpoint(signer, stream).await }).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}
