//! Admin: mint, list and revoke API keys. A minted key is shown once; only its hash is stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiJson, ApiPath, Auth, SharedState};
use crate::auth::{generate_api_key, hash_api_key};
use crate::error::{Error, Result};
use crate::store::api_keys::{ApiKeyRecord, NewApiKey};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKey {
    tenant_id: Uuid,
    #[serde(default)]
    store_ids: Vec<Uuid>,
    permissions: Vec<String>,
    rate_limit: Option<u32>,
    agent_id: Option<Uuid>,
    label: Option<String>,
}

fn describe(r: &ApiKeyRecord) -> Value {
    let mut permissions = Vec::new();
    if r.can_read {
        permissions.push("read");
    }
    if r.can_write {
        permissions.push("write");
    }
    if r.can_admin {
        permissions.push("admin");
    }
    json!({
        "id": r.id,
        "keyHashPrefix": r.key_hash_prefix(),
        "tenantId": r.tenant_id,
        "storeIds": r.store_ids,
        "permissions": permissions,
        "agentId": r.agent_id,
        "rateLimit": r.rate_limit,
        "label": r.label,
        "active": r.active,
        "createdAt": r.created_at,
        "revokedAt": r.revoked_at,
    })
}

/// `POST /api/v1/admin/api-keys` → 201 `{"apiKey": "ss_...", ...}`.
pub async fn create(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<Response> {
    caller.require_admin()?;
    if body.permissions.is_empty() {
        return Err(Error::BadRequest("permissions must list at least one of read, write, admin".into()));
    }
    let (mut read, mut write, mut admin) = (false, false, false);
    for p in &body.permissions {
        match p.as_str() {
            "read" => read = true,
            "write" => write = true,
            "admin" => admin = true,
            other => return Err(Error::BadRequest(format!("unknown permission {other:?}: use read, write or admin"))),
        }
    }
    if body.rate_limit == Some(0) {
        return Err(Error::BadRequest("rateLimit must be greater than 0".into()));
    }
    let rate_limit = body
        .rate_limit
        .map(i32::try_from)
        .transpose()
        .map_err(|_| Error::BadRequest("rateLimit is too large".into()))?;
    // Minting can only narrow: the new key grants nothing the caller's own credential lacks.
    let minted = crate::auth::Caller {
        tenant_id: body.tenant_id,
        store_ids: body.store_ids.clone(),
        can_read: read,
        can_write: write,
        can_admin: admin,
        agent_id: body.agent_id,
        rate_limit: body.rate_limit,
        api_key_id: None,
    };
    if caller.tenant_id != body.tenant_id && !caller.is_bootstrap_admin() {
        return Err(Error::Forbidden("Tenant access denied".into()));
    }
    if !caller.covers(&minted) {
        return Err(Error::Forbidden(
            "a key can only be minted within the caller's own stores, permissions, agent and rate limit".into(),
        ));
    }
    let key = generate_api_key(body.tenant_id);
    let record = state
        .store
        .insert_api_key(&NewApiKey {
            key_hash: hash_api_key(&key),
            tenant_id: body.tenant_id,
            store_ids: body.store_ids,
            can_read: read,
            can_write: write,
            can_admin: admin,
            agent_id: body.agent_id,
            rate_limit,
            label: body.label,
        })
        .await?;
    tracing::info!(key_id = %record.id, tenant_id = %record.tenant_id, "API key created");
    let mut out = describe(&record);
    out["apiKey"] = json!(key);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// `GET /api/v1/admin/api-keys`: the keys within the caller's scope (all keys for the bootstrap admin).
pub async fn list(State(state): State<SharedState>, caller: Auth) -> Result<Response> {
    caller.require_admin()?;
    let keys = state.store.list_api_keys(caller.tenant_filter()).await?;
    let keys: Vec<Value> =
        keys.iter().filter(|k| caller.covers(&crate::auth::Caller::from(*k))).map(describe).collect();
    Ok(axum::Json(json!({"count": keys.len(), "keys": keys})).into_response())
}

/// `DELETE /api/v1/admin/api-keys/{id}`: revokes the key at once.
pub async fn revoke(State(state): State<SharedState>, caller: Auth, ApiPath(id): ApiPath<Uuid>) -> Result<Response> {
    caller.require_admin()?;
    let not_found = || Error::NotFound("API key not found".into());
    let existing = state.store.api_key_by_id(id).await?.ok_or_else(not_found)?;
    // NB: a key outside the caller's scope (another tenant's, or wider than the caller's own) answers
    // 404, not 403, so that ids cannot be probed. Revoking can only narrow what exists.
    if !caller.covers(&crate::auth::Caller::from(&existing)) {
        return Err(not_found());
    }
    let revoked = state.store.revoke_api_key(id).await?.ok_or_else(not_found)?;
    state.auth.forget(&revoked.key_hash).await;
    tracing::info!(key_id = %id, "API key revoked");
    Ok(axum::Json(describe(&revoked)).into_response())
}
