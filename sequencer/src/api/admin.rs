//! The admin surface the operator (human or Kubernetes) reads and drives: status, dead letters,
//! stream verification, pausing a stream.
//!
//! `GET /api/v1/admin/status` answers (tenant admins see their tenant's figures only):
//! ```json
//! {"version": "0.1.0", "schemaVersion": 2,
//!  "database": {"connected": true, "pool": {"size": 10, "idle": 8, "inUse": 2, "waiting": 0, "max": 20},
//!               "readReplica": {"configured": true, "inUse": true, "state": "fresh", "reachable": true,
//!                               "standby": true, "lagSeconds": 0.4, "maxLagSeconds": 5.0,
//!                               "pool": {"size", "idle", "max"}}},
//!  "deadLetters": {"pending": 5, "byReason": {"invalid_signature": 3, "agent_key_invalid": 2}},
//!  "anchoring": {"enabled": true, "circuitState": "closed", "unanchoredCommitments": 2, "oldestUnanchoredAgeSeconds": 120},
//!  "ingestion": {"pausedStreams": 0},
//!  "streams": [{"tenantId", "storeId", "head", "paused", "pausedReason", "lastCommittedSequence", "updatedAt"}]}
//! ```
//! `database.readReplica` is `{"configured": false, "inUse": false}` without `READ_DATABASE_URL`; with
//! it, `inUse` says whether reads go to the replica now, `state` why (`fresh`, `lags`, `unreachable`,
//! `not_standby`) and `lagSeconds` how long ago it was last known to hold everything the primary had
//! committed ([`crate::reads`]).
//! `streams` is present only with `?streams=true` (optionally narrowed by `tenant_id` / `store_id`).
//! `anchoring.circuitState` is the worker leader's breaker, whichever replica answers
//! (`reportedBy: "leader"`, with `leader: {instance, reportedAt, ageSeconds}` and `stale: true` once
//! the leader's report is old); `reportedBy: "local"` when no leader ever reported (worker off).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiQuery, Auth, SharedState};
use crate::dead_letter::{self, RetrySummary};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dead_letters::{DeadLetter, DeadLetterFilter};
use crate::store::events::StreamKey;

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    streams: bool,
    tenant_id: Option<Uuid>,
    store_id: Option<Uuid>,
}

/// `GET /api/v1/admin/status`.
pub async fn status(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> Result<Response> {
    caller.require_admin()?;
    let scope = caller.scope();
    let pool = state.store.pool();
    let (size, idle) = (pool.size(), pool.num_idle() as u32);
    // Bounded: a black-holed network must not hold the answer that reports it.
    let connected = state.db_watch.reachable()
        && tokio::time::timeout(state.config.db_acquire_timeout, state.store.ping()).await.is_ok_and(|r| r.is_ok());
    let mut body = json!({
        "version": crate::VERSION,
        "database": {
            "connected": connected,
            "pool": {
                "size": size, "idle": idle, "inUse": size.saturating_sub(idle),
                "waiting": state.metrics.db_waiting.load(std::sync::atomic::Ordering::Relaxed).max(0),
                "max": state.store.max_connections(),
            },
            "readReplica": state.reads.status(),
        },
    });
    if !connected {
        return Ok(axum::Json(body).into_response());
    }
    body["schemaVersion"] = json!(state.store.schema_version().await?);
    let by_reason: BTreeMap<String, i64> =
        state.store.dead_letters_by_reason(scope.tenant_id, scope.store_ids.as_deref()).await?.into_iter().collect();
    body["deadLetters"] = json!({"pending": by_reason.values().sum::<i64>(), "byReason": by_reason});
    let (unanchored, oldest) = state.store.unanchored_summary_in(&scope).await?;
    // The breaker that matters is the worker leader's (it anchors); any replica reports it.
    let local = state.anchor.as_ref().map_or("disabled", |a| a.circuit().state.as_str());
    let leader = state.store.worker_status().await?;
    let leads = state.metrics.worker_leader.get() == 1;
    let mut anchoring = crate::worker::anchoring_view(state.anchor.is_some(), local, leads, leader.as_ref());
    anchoring["unanchoredCommitments"] = json!(unanchored);
    anchoring["oldestUnanchoredAgeSeconds"] = json!(oldest.map(|s| s.round() as i64));
    body["anchoring"] = anchoring;
    body["ingestion"] = json!({"pausedStreams": state.store.paused_streams_in(&scope).await?});
    body["transparencyLog"] = super::tlog::status(&state, &scope).await?;
    if q.streams {
        body["streams"] = json!(state.store.streams_in(&scope, q.tenant_id, q.store_id, 10_000).await?);
    }
    Ok(axum::Json(body).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DeadLetterQuery {
    #[serde(flatten)]
    filter: DeadLetterFilter,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn scoped_filter(caller: &Auth, mut filter: DeadLetterFilter) -> Result<DeadLetterFilter> {
    caller.require_admin()?;
    if let Some(own) = caller.tenant_filter() {
        if filter.tenant_id.is_some_and(|t| t != own) {
            return Err(Error::Forbidden("Tenant access denied".into()));
        }
        filter.tenant_id = Some(own);
    }
    if let Some(stores) = caller.store_filter() {
        if filter.store_id.is_some_and(|s| !stores.contains(&s)) {
            return Err(Error::Forbidden("Store access denied".into()));
        }
        filter.scope_store_ids = Some(stores);
    }
    Ok(filter)
}

/// `GET /api/v1/admin/dead-letters?tenant_id&store_id&reason&status&since&until&limit&offset`.
pub async fn list_dead_letters(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Response> {
    let filter = scoped_filter(&caller, q.filter)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let offset = q.offset.unwrap_or(0).max(0);
    let letters = state.store.list_dead_letters(&filter, limit + 1, offset).await?;
    let has_more = letters.len() as i64 > limit;
    let letters: Vec<&DeadLetter> = letters.iter().take(limit as usize).collect();
    Ok(axum::Json(json!({
        "deadLetters": letters,
        "count": letters.len(),
        "nextOffset": has_more.then_some(offset + limit),
    }))
    .into_response())
}

async fn owned_letter(state: &SharedState, caller: &Auth, id: Uuid) -> Result<DeadLetter> {
    caller.require_admin()?;
    let not_found = || Error::NotFound("Dead letter not found".into());
    let letter = state.store.dead_letter(id).await?.ok_or_else(not_found)?;
    let stream = StreamKey { tenant_id: letter.tenant_id, store_id: letter.store_id };
    caller.require_admin_of_stream(stream).map_err(|_| not_found())?;
    Ok(letter)
}

/// `GET /api/v1/admin/dead-letters/{id}`.
pub async fn get_dead_letter(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response> {
    Ok(axum::Json(owned_letter(&state, &caller, id).await?).into_response())
}

/// `POST /api/v1/admin/dead-letters/{id}/retry`.
pub async fn retry_dead_letter(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response> {
    let letter = owned_letter(&state, &caller, id).await?;
    let result = dead_letter::retry(&state.store, &state.ingest, &letter).await?;
    Ok(axum::Json(result).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRetry {
    ids: Option<Vec<Uuid>>,
    filter: Option<DeadLetterFilter>,
    limit: Option<i64>,
}

/// `POST /api/v1/admin/dead-letters/retry` with `{"ids": [...]}` or `{"filter": {...}}` (pending
/// entries matching it, oldest last, at most `limit`, default 1000).
pub async fn retry_dead_letters(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(body): ApiJson<BulkRetry>,
) -> Result<Response> {
    let letters = match (body.ids, body.filter) {
        (Some(ids), None) => {
            let mut letters = Vec::with_capacity(ids.len());
            for id in ids {
                letters.push(owned_letter(&state, &caller, id).await?);
            }
            letters
        }
        (None, Some(filter)) => {
            let mut filter = scoped_filter(&caller, filter)?;
            filter.status.get_or_insert_with(|| "pending".into());
            let limit = body.limit.unwrap_or(1000).clamp(1, 10_000);
            state.store.list_dead_letters(&filter, limit, 0).await?
        }
        _ => return Err(Error::BadRequest("give exactly one of \"ids\" or \"filter\"".into())),
    };
    let mut summary = RetrySummary::default();
    for letter in &letters {
        summary.push(dead_letter::retry(&state.store, &state.ingest, letter).await?);
    }
    Ok(axum::Json(summary).into_response())
}

/// `DELETE /api/v1/admin/dead-letters/{id}`.
pub async fn delete_dead_letter(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response> {
    let letter = owned_letter(&state, &caller, id).await?;
    state.store.delete_dead_letter(letter.id).await?;
    Ok(axum::Json(json!({"id": id, "deleted": true})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyBody {
    #[serde(alias = "tenant_id")]
    tenant_id: Option<Uuid>,
    #[serde(alias = "store_id")]
    store_id: Option<Uuid>,
    /// Pinned receipt keys (hex): the sequencer signatures must verify under one of these, not under
    /// the keys the database recorded.
    #[serde(default, alias = "receipt_keys")]
    receipt_keys: Option<Vec<String>>,
}

/// More pinned receipt keys than a deployment could have rotated through is a mistake, not a request.
const MAX_PINNED_RECEIPT_KEYS: usize = 64;

impl VerifyBody {
    fn trust(&self) -> Result<crate::verify::ReceiptKeyTrust> {
        let Some(keys) = &self.receipt_keys else { return Ok(crate::verify::ReceiptKeyTrust::Recorded) };
        if keys.is_empty() || keys.len() > MAX_PINNED_RECEIPT_KEYS {
            // NB: an empty list is read neither as "pin nothing" (every signature a finding) nor silently
            // as "not pinned": the caller meant something, and says which by leaving the field out.
            return Err(Error::BadRequest(format!(
                "receiptKeys: give 1 to {MAX_PINNED_RECEIPT_KEYS} keys, or leave it out to use the recorded ones"
            )));
        }
        crate::verify::ReceiptKeyTrust::from_hex(keys).map_err(|e| Error::BadRequest(format!("receiptKeys: {e}")))
    }
}

/// `POST /api/v1/admin/verify` `{"tenantId"?, "storeId"?, "receiptKeys"?}`: gaps, duplicates, stored
/// hashes and signatures, commitments. `ok: false` with findings when anything is wrong.
pub async fn verify(State(state): State<SharedState>, caller: Auth, body: axum::body::Bytes) -> Result<Response> {
    caller.require_admin()?;
    let body: VerifyBody = super::optional_json(&body)?;
    let trust = &body.trust()?;
    let caller = &caller;
    let report = state
        .reads
        .read(|store| async move {
            let streams = scoped_streams(&store, caller, body.tenant_id, body.store_id).await?;
            crate::verify::verify_streams(&store, streams, trust).await
        })
        .await?;
    Ok(axum::Json(report).into_response())
}

/// `POST /api/v1/admin/verify/jobs` `{"tenantId"?, "storeId"?, "receiptKeys"?}` → 202 with the job (`id`, `state`,
/// `streamsTotal`, `report` so far): verifies in the background, for scopes too large for one request.
pub async fn start_verify_job(
    State(state): State<SharedState>,
    caller: Auth,
    body: axum::body::Bytes,
) -> Result<Response> {
    caller.require_admin()?;
    let body: VerifyBody = super::optional_json(&body)?;
    let trust = body.trust()?;
    // NB: the job reads one database throughout, the replica when it is in use now.
    let store = state.reads.store();
    let streams = scoped_streams(&store, &caller, body.tenant_id, body.store_id).await?;
    let own = caller.scope();
    let scope = crate::store::scope::Scope {
        tenant_id: own.tenant_id.or(body.tenant_id),
        store_ids: body.store_id.map(|s| vec![s]).or(own.store_ids),
    };
    let job = state.verify_jobs.start(store, streams, trust, scope);
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(job)).into_response())
}

/// `GET /api/v1/admin/verify/jobs/{id}`: the job's state, progress and findings so far. A job outside
/// the caller's scope is "not found".
pub async fn verify_job(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response> {
    caller.require_admin()?;
    let not_found = || Error::NotFound("Verification job not found".into());
    let job = state.verify_jobs.get(id).ok_or_else(not_found)?;
    let own = caller.scope();
    let tenant_ok = own.tenant_id.is_none() || job.scope.tenant_id == own.tenant_id;
    let stores_ok = match (&own.store_ids, &job.scope.store_ids) {
        (None, _) => true,
        (Some(mine), Some(theirs)) => theirs.iter().all(|s| mine.contains(s)),
        (Some(_), None) => false,
    };
    if !(tenant_ok && stores_ok) {
        return Err(not_found());
    }
    Ok(axum::Json(job).into_response())
}

/// The streams a verification of (`tenant_id`?, `store_id`?) covers for this caller; naming a tenant
/// or store outside the caller's scope is refused.
async fn scoped_streams(
    store: &Store,
    caller: &Auth,
    tenant_id: Option<Uuid>,
    store_id: Option<Uuid>,
) -> Result<Vec<crate::store::events::StreamStatus>> {
    let scope = caller.scope();
    if tenant_id.zip(scope.tenant_id).is_some_and(|(asked, own)| asked != own) {
        return Err(Error::Forbidden("Tenant access denied".into()));
    }
    if let (Some(s), Some(stores)) = (store_id, &scope.store_ids)
        && !stores.contains(&s)
    {
        return Err(Error::Forbidden("Store access denied".into()));
    }
    store.streams_in(&scope, tenant_id, store_id, i64::MAX).await
}

#[derive(Debug, Default, Deserialize)]
pub struct PauseBody {
    reason: Option<String>,
}

async fn set_paused(
    state: &SharedState,
    caller: &Auth,
    stream: StreamKey,
    paused: bool,
    reason: Option<String>,
) -> Result<Value> {
    caller.require_admin_of_stream(stream)?;
    state.store.set_paused(stream, paused, reason.as_deref()).await?;
    tracing::warn!(tenant_id = %stream.tenant_id, store_id = %stream.store_id, paused, "stream ingestion {}", if paused { "paused" } else { "resumed" });
    Ok(json!({"tenantId": stream.tenant_id, "storeId": stream.store_id, "paused": paused, "reason": reason}))
}

/// `POST /api/v1/admin/streams/{tenant_id}/{store_id}/pause` `{"reason"?}`: the stream's ingest
/// answers 503 until it is resumed.
pub async fn pause(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath((tenant_id, store_id)): ApiPath<(Uuid, Uuid)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: PauseBody = super::optional_json(&body)?;
    let stream = StreamKey { tenant_id, store_id };
    Ok(axum::Json(set_paused(&state, &caller, stream, true, body.reason).await?).into_response())
}

/// `POST /api/v1/admin/streams/{tenant_id}/{store_id}/resume`.
pub async fn resume(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath((tenant_id, store_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id, store_id };
    Ok(axum::Json(set_paused(&state, &caller, stream, false, None).await?).into_response())
}

// Runbook steps a SequencerAction runs: purging resolved dead letters, database maintenance.

/// Narrows a caller limited to some stores to one of them.
fn require_store_scope(caller: &Auth, store_id: Option<Uuid>) -> Result<()> {
    if caller.is_bootstrap_admin() || caller.store_ids.is_empty() {
        return Ok(());
    }
    match store_id {
        Some(store) if caller.store_ids.contains(&store) => Ok(()),
        _ => Err(Error::Forbidden("Store access denied: name one of the credential's stores in storeId".into())),
    }
}

/// `POST /api/v1/admin/dead-letters/purge` `{"status"?: "resolved"|"pending", "tenantId"?, "storeId"?,
/// "reason"?, "since"?, "until"?}`: deletes the matching dead letters, by default only the resolved
/// ones (the runbook's last step after a replay). Answers `{"deleted", "status"}`.
pub async fn purge_dead_letters(
    State(state): State<SharedState>,
    caller: Auth,
    body: axum::body::Bytes,
) -> Result<Response> {
    let filter: DeadLetterFilter = super::optional_json(&body)?;
    let mut filter = scoped_filter(&caller, filter)?;
    require_store_scope(&caller, filter.store_id)?;
    let status = filter.status.get_or_insert_with(|| "resolved".into()).clone();
    if status != "resolved" && status != "pending" {
        return Err(Error::BadRequest(format!("status must be resolved or pending, not {status:?}")));
    }
    let deleted = state.store.delete_dead_letters_matching(&filter).await?;
    tracing::warn!(deleted, %status, tenant_id = ?filter.tenant_id, store_id = ?filter.store_id, "dead letters purged");
    Ok(axum::Json(json!({"deleted": deleted, "status": status})).into_response())
}

/// Database-wide maintenance is for the bootstrap (global) admin only.
fn require_global_admin(caller: &Auth) -> Result<()> {
    caller.require_admin()?;
    if !caller.is_bootstrap_admin() {
        return Err(Error::Forbidden("database maintenance is database-wide: it needs the bootstrap admin key".into()));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VacuumBody {
    tables: Option<Vec<String>>,
}

/// `POST /api/v1/admin/maintenance/vacuum` `{"tables"?: [...]}`: VACUUM ANALYZE of the runbook's
/// tables (events, ves_events, commitments) or of the named sequencer tables.
pub async fn vacuum(State(state): State<SharedState>, caller: Auth, body: axum::body::Bytes) -> Result<Response> {
    require_global_admin(&caller)?;
    let body: VacuumBody = super::optional_json(&body)?;
    let tables = crate::store::maintenance::vacuum_tables(body.tables.as_deref())?;
    let started = std::time::Instant::now();
    state.store.vacuum_analyze(&tables).await?;
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(tables = ?tables, ms, "VACUUM ANALYZE done");
    Ok(axum::Json(json!({"tables": tables, "durationMs": ms})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerminateBody {
    idle_longer_than_seconds: u32,
}

/// `POST /api/v1/admin/maintenance/terminate-idle-connections` `{"idleLongerThanSeconds"}` (at least
/// 60): the runbook's "Kill idle connections" on the sequencer's database. Answers `{"terminated",
/// "connections": [{"pid", "applicationName", "idleSeconds"}]}`.
pub async fn terminate_idle_connections(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(body): ApiJson<TerminateBody>,
) -> Result<Response> {
    require_global_admin(&caller)?;
    if body.idle_longer_than_seconds < 60 {
        return Err(Error::BadRequest("idleLongerThanSeconds must be at least 60".into()));
    }
    let ended = state.store.terminate_idle_connections(body.idle_longer_than_seconds).await?;
    tracing::warn!(
        terminated = ended.len(),
        idle_longer_than_seconds = body.idle_longer_than_seconds,
        "idle connections terminated"
    );
    Ok(axum::Json(json!({"terminated": ended.len(), "connections": ended})).into_response())
}
