//! The transparency log's read API per stream, under `/api/v1/ves/tlog/{tenant_id}/{store_id}/`:
//! C2SP tlog-tiles (`checkpoint`, `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), proofs and
//! proof bundles. Every route needs read access to the stream, except on a stream listed in
//! `TLOG_PUBLIC_READ`, where anyone reads them without a credential (`routes::Access::PublicIfListed`:
//! the route table decides, not these handlers). They show nothing the stream's tiles, entries and
//! checkpoints do not, apart from an event id's sequence number up to one integration interval early.
//! The reads are served by the read replica while it is fresh enough ([`crate::reads`]).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;
use tlog_tiles::Hash;
use uuid::Uuid;

use super::{ApiPath, ApiQuery, Auth, SharedState};
use crate::error::{Error, Result};
use crate::store::events::StreamKey;
use crate::tlog::reader;

#[derive(Debug, Deserialize)]
pub struct StreamPath {
    tenant_id: Uuid,
    store_id: Uuid,
}

#[derive(Debug, Deserialize)]
pub struct TilePath {
    tenant_id: Uuid,
    store_id: Uuid,
    path: String,
}

#[derive(Debug, Deserialize)]
pub struct EntryQuery {
    sequence_number: Option<i64>,
    event_id: Option<Uuid>,
    leaf_hash: Option<String>,
    tree_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    from_size: u64,
    to_size: Option<u64>,
}

fn stream(caller: &Auth, tenant_id: Uuid, store_id: Uuid) -> Result<StreamKey> {
    let stream = StreamKey { tenant_id, store_id };
    caller.require_read(stream)?;
    Ok(stream)
}

fn text(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response()
}

fn b64(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h.0)).collect()
}

/// `GET .../checkpoint`: the newest signed checkpoint with its witnesses' cosignatures.
pub async fn checkpoint(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(p): ApiPath<StreamPath>,
) -> Result<Response> {
    let stream = stream(&caller, p.tenant_id, p.store_id)?;
    Ok(text(state.reads.read(|store| async move { reader::checkpoint(&store, stream).await }).await?))
}

/// `GET .../tile/{path}`: a hash tile or an entry bundle, full or partial.
pub async fn tile(State(state): State<SharedState>, caller: Auth, ApiPath(p): ApiPath<TilePath>) -> Result<Response> {
    let stream = stream(&caller, p.tenant_id, p.store_id)?;
    let t = crate::tlog::parse_tile_path(&p.path).ok_or_else(|| {
        Error::NotFound(format!("{:?} is not a tile path (<L>/<N>[.p/<W>] or entries/<N>[.p/<W>])", p.path))
    })?;
    let data = state
        .reads
        .read(|store| async move { reader::tile(&store, stream, t).await })
        .await?
        .ok_or_else(|| Error::NotFound(format!("tile {} is not in the integrated tree", p.path)))?;
    // NB: a tile's bytes never change once its width is reached (partial tiles are addressed by
    // width), so every tile is immutable; `private` unless the stream is public, because reads need
    // credentials and a shared cache must not hand them to whoever asks next.
    let cache = if state.config.tlog.public_read.covers(stream) {
        "public, max-age=31536000, immutable"
    } else {
        "private, max-age=31536000, immutable"
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        data,
    )
        .into_response())
}

/// The zero-based index of the entry an [`EntryQuery`] names.
async fn entry_index(store: &crate::store::Store, stream: StreamKey, q: &EntryQuery) -> Result<u64> {
    reader::resolve_index(store, stream, q.sequence_number, q.event_id, q.leaf_hash.as_deref()).await
}

/// `GET .../proof/inclusion?{sequence_number|event_id|leaf_hash}[&tree_size]`.
pub async fn inclusion(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(p): ApiPath<StreamPath>,
    ApiQuery(q): ApiQuery<EntryQuery>,
) -> Result<Response> {
    let stream = stream(&caller, p.tenant_id, p.store_id)?;
    let q = &q;
    let proof = state
        .reads
        .read(|store| async move {
            let index = entry_index(&store, stream, q).await?;
            reader::inclusion(&store, stream, index, q.tree_size).await
        })
        .await?;
    Ok(axum::Json(json!({
        "index": proof.index,
        "sequence_number": proof.index + 1,
        "tree_size": proof.tree_size,
        "leaf_hash": B64.encode(proof.leaf_hash.0),
        "root_hash": B64.encode(proof.root.0),
        "proof": b64(&proof.proof),
    }))
    .into_response())
}

/// `GET .../proof/consistency?from_size[&to_size]`.
pub async fn consistency(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(p): ApiPath<StreamPath>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Response> {
    let stream = stream(&caller, p.tenant_id, p.store_id)?;
    let (from_size, to_size) = (q.from_size, q.to_size);
    let c =
        state.reads.read(|store| async move { reader::consistency(&store, stream, from_size, to_size).await }).await?;
    Ok(axum::Json(json!({
        "from_size": c.from_size,
        "to_size": c.to_size,
        "from_root": B64.encode(c.from_root.0),
        "to_root": B64.encode(c.to_root.0),
        "proof": b64(&c.proof),
    }))
    .into_response())
}

/// `GET .../bundle?{sequence_number|event_id|leaf_hash}`: a C2SP tlog-proof (`text/plain`).
pub async fn bundle(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(p): ApiPath<StreamPath>,
    ApiQuery(q): ApiQuery<EntryQuery>,
) -> Result<Response> {
    let stream = stream(&caller, p.tenant_id, p.store_id)?;
    let q = &q;
    let bundle = state
        .reads
        .read(|store| async move {
            let index = entry_index(&store, stream, q).await?;
            reader::bundle(&store, stream, index).await
        })
        .await?;
    Ok(text(bundle))
}

/// The admin status's `transparencyLog`: whether the log runs, and each configured witness's health
/// over the caller's streams (`failingStreams`: streams whose last attempt it refused or missed).
pub(super) async fn status(state: &SharedState, scope: &crate::store::scope::Scope) -> Result<serde_json::Value> {
    let cfg = &state.config.tlog;
    let mut rows = state.store.tlog_witness_rows(scope.tenant_id).await?;
    rows.retain(|r| scope.store_ids.as_ref().is_none_or(|stores| stores.contains(&r.store_id)));
    let witnesses: Vec<_> = cfg
        .witnesses
        .iter()
        .map(|w| {
            let name = w.key.split('+').next().unwrap_or_default();
            let failing: Vec<_> = rows.iter().filter(|r| r.witness == name && r.last_error.is_some()).collect();
            json!({
                "name": name,
                "url": crate::tlog::redact_url(&w.url),
                "healthy": failing.is_empty(),
                "failingStreams": failing.len(),
                "lastError": failing.iter().max_by_key(|r| r.last_attempt_at).and_then(|r| r.last_error.clone()),
            })
        })
        .collect();
    Ok(json!({
        "enabled": cfg.enabled && state.checkpoints.is_some() && state.config.worker.enabled,
        "integrateIntervalMs": cfg.integrate_interval.as_millis() as u64,
        "witnesses": witnesses,
    }))
}

/// `GET /api/v1/admin/tlog/witnesses`: configured witnesses and what each last did per stream.
pub async fn witnesses(State(state): State<SharedState>, caller: Auth) -> Result<Response> {
    caller.require_admin()?;
    let mut rows = state.store.tlog_witness_rows(caller.tenant_filter()).await?;
    // A store-scoped admin sees its stores' rows only.
    if let Some(stores) = caller.store_filter() {
        rows.retain(|r| stores.contains(&r.store_id));
    }
    let configured: Vec<_> = state
        .config
        .tlog
        .witnesses
        .iter()
        .map(|w| json!({"url": crate::tlog::redact_url(&w.url), "key": w.key, "name": w.key.split('+').next()}))
        .collect();
    let streams: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "tenantId": r.tenant_id, "storeId": r.store_id, "witness": r.witness,
                "cosignedSize": r.cosigned_size, "lastError": r.last_error,
                "lastAttemptAt": r.last_attempt_at, "cosignedAt": r.cosigned_at,
                "healthy": r.last_error.is_none(),
            })
        })
        .collect();
    Ok(axum::Json(json!({"witnesses": configured, "streams": streams})).into_response())
}
