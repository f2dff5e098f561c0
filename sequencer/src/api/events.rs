//! Reads over the signed log: a stream's range, its head, an entity's history.
//!
//! Every signed field comes back byte-identical to what was signed (the `created_at` string as sent,
//! hashes and signature as `0x` hex), so a client can re-verify each signature. Served by the read
//! replica while it is fresh enough ([`crate::reads`]).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiPath, ApiQuery, Auth, SharedState};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::events::{StoredEvent, StreamKey, event_json};

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    tenant_id: Uuid,
    store_id: Uuid,
    from: Option<i64>,
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    tenant_id: Uuid,
    store_id: Uuid,
}

#[derive(Debug, Deserialize)]
pub struct EntityQuery {
    tenant_id: Uuid,
    store_id: Uuid,
    from: Option<i64>,
    limit: Option<i64>,
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

fn range(from: Option<i64>, limit: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit <= 0 {
        return Err(Error::BadRequest("limit must be greater than 0".into()));
    }
    let from = from.unwrap_or(1);
    if from < 0 {
        return Err(Error::BadRequest("from must not be negative".into()));
    }
    Ok((from.max(1), limit.min(MAX_LIMIT)))
}

/// The stream's head and the events `from..` (at most `limit`) up to it, from one database.
async fn range_and_head(store: Store, stream: StreamKey, from: i64, limit: i64) -> Result<(i64, Vec<StoredEvent>)> {
    let head = store.head(stream).await?;
    Ok((head, store.read_range(stream, from, limit, head).await?))
}

/// `GET /api/v1/ves/events`: `{"events","count","next_sequence","head_sequence","has_more"}`.
pub async fn ves_events(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    let (from, limit) = range(q.from, q.limit)?;
    let (head, events) = state.reads.read(|store| range_and_head(store, stream, from, limit)).await?;
    let next = events.last().map_or(from, |e| e.sequence_number + 1);
    let events = events.iter().map(event_json).collect::<Result<Vec<_>>>()?;
    Ok(axum::Json(json!({
        "events": events,
        "count": events.len(),
        "next_sequence": next,
        "head_sequence": head,
        "has_more": next <= head,
    }))
    .into_response())
}

/// `GET /api/v1/events`: the existing service's shape, `{"events":[{"envelope","sequenced_at"}],"count"}`.
pub async fn events(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    let (from, limit) = range(q.from, q.limit)?;
    let (_, events) = state.reads.read(|store| range_and_head(store, stream, from, limit)).await?;
    let events = events
        .iter()
        .map(|e| Ok(json!({"envelope": event_json(e)?, "sequenced_at": e.sequenced_at.to_rfc3339()})))
        .collect::<Result<Vec<_>>>()?;
    Ok(axum::Json(json!({"events": events, "count": events.len()})).into_response())
}

/// `GET /api/v1/head` and `GET /api/v1/ves/head`: `{"head_sequence": N}`.
pub async fn head(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    let head = state.reads.read(|store| async move { store.head(stream).await }).await?;
    Ok(axum::Json(json!({"head_sequence": head, "tenant_id": q.tenant_id, "store_id": q.store_id})).into_response())
}

async fn entity_history(
    state: &SharedState,
    caller: &Auth,
    entity_type: String,
    entity_id: String,
    q: EntityQuery,
) -> Result<Value> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    caller.require_read(stream)?;
    if entity_type.is_empty() || entity_type.len() > 128 || entity_id.is_empty() || entity_id.len() > 512 {
        return Err(Error::BadRequest("entity_type must be 1..128 bytes and entity_id 1..512 bytes".into()));
    }
    let offset = q.from.unwrap_or(0).max(0);
    let limit = match q.limit {
        None | Some(0) => 100,
        Some(l) if l < 0 => return Err(Error::BadRequest("limit must not be negative".into())),
        Some(l) => l.min(100),
    };
    let (et, eid) = (entity_type.as_str(), entity_id.as_str());
    let (events, total) =
        state.reads.read(|store| async move { store.entity_history(stream, et, eid, offset, limit).await }).await?;
    let count = events.len() as i64;
    let events = events.iter().map(event_json).collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "entity_type": entity_type,
        "entity_id": entity_id,
        "events": events,
        "count": count,
        "total": total,
        "has_more": offset + count < total,
    }))
}

/// `GET /api/v1/ves/entities/{entity_type}/{entity_id}`.
pub async fn ves_entity(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath((entity_type, entity_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<EntityQuery>,
) -> Result<Response> {
    Ok(axum::Json(entity_history(&state, &caller, entity_type, entity_id, q).await?).into_response())
}

/// `GET /api/v1/entities/{entity_type}/{entity_id}`: events as `{"envelope","sequenced_at"}`.
pub async fn entity(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath((entity_type, entity_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<EntityQuery>,
) -> Result<Response> {
    let mut v = entity_history(&state, &caller, entity_type, entity_id, q).await?;
    if let Some(events) = v["events"].as_array_mut() {
        for e in events.iter_mut() {
            let sequenced_at = e["sequenced_at"].clone();
            *e = json!({"envelope": e.take(), "sequenced_at": sequenced_at});
        }
    }
    Ok(axum::Json(v).into_response())
}
