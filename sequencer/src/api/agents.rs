//! Agents as upstream 0.8+ manages them: API keys bound to one agent, and the agent's event policy.
//!
//! - `POST/GET /api/v1/agents/{agent_id}/api-keys`, `DELETE .../{key_prefix}`: keys minted for an
//!   agent. A key bound to an agent ingests only that agent's events and reads only its own cursor.
//!   The agent itself (with its bound key) or an admin of its tenant may mint, list and revoke; a key
//!   never grants more than the credential that minted it.
//! - `GET/PUT /api/v1/agents/{agent_id}/policy`: what the agent may write (see `crate::policy`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiQuery, Auth, SharedState};
use crate::auth::{Caller, generate_api_key, hash_api_key};
use crate::error::{Error, Result};
use crate::policy::{AgentPolicy, MAX_POLICY_PAYLOAD_BYTES, normalise_rules};
use crate::store::api_keys::{ApiKeyRecord, NewApiKey};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAgentKey {
    /// Needed only by the bootstrap admin (every other caller mints in its own tenant).
    tenant_id: Option<Uuid>,
    #[serde(default, alias = "store_ids")]
    store_ids: Option<Vec<Uuid>>,
    #[serde(default, alias = "read_only")]
    read_only: Option<bool>,
    #[serde(default)]
    admin: Option<bool>,
    #[serde(default, alias = "rate_limit")]
    rate_limit: Option<u32>,
    #[serde(default)]
    name: Option<String>,
}

fn permissions_label(r: &ApiKeyRecord) -> &'static str {
    if r.can_admin {
        "admin"
    } else if r.can_write {
        "read_write"
    } else {
        "read"
    }
}

/// The agent itself or an admin (of the agent's tenant, checked by the caller of this).
fn require_agent_or_admin(caller: &Caller, agent_id: Uuid) -> Result<()> {
    if caller.agent_id == Some(agent_id) || caller.can_admin {
        Ok(())
    } else {
        Err(Error::Forbidden("Access denied".into()))
    }
}

/// The keys of this agent the caller may see (its tenant's; every tenant's for the bootstrap admin).
async fn agent_keys(state: &SharedState, caller: &Caller, agent_id: Uuid) -> Result<Vec<ApiKeyRecord>> {
    let keys = state.store.list_api_keys(caller.tenant_filter()).await?;
    Ok(keys.into_iter().filter(|k| k.agent_id == Some(agent_id)).collect())
}

/// `POST /api/v1/agents/{agent_id}/api-keys` → `{"success","apiKey","keyHashPrefix","permissions","message"}`.
pub async fn create_key(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(agent_id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: CreateAgentKey = super::optional_json(&body)?;
    require_agent_or_admin(&caller, agent_id)?;
    let tenant_id = match (caller.is_bootstrap_admin(), body.tenant_id) {
        (true, Some(t)) => t,
        (true, None) => return Err(Error::BadRequest("tenantId is required".into())),
        (false, Some(t)) if t != caller.tenant_id => return Err(Error::Forbidden("Tenant access denied".into())),
        (false, _) => caller.tenant_id,
    };
    // Scope only narrows: no wider stores, permissions or rate than the minting credential.
    let store_ids = body.store_ids.unwrap_or_else(|| caller.store_ids.clone());
    if !caller.store_ids.is_empty() && (store_ids.is_empty() || store_ids.iter().any(|s| !caller.store_ids.contains(s)))
    {
        return Err(Error::Forbidden("Store access denied".into()));
    }
    let admin = body.admin.unwrap_or(false);
    if admin && !caller.can_admin {
        return Err(Error::Forbidden("Admin permission required".into()));
    }
    let write = !body.read_only.unwrap_or(false);
    if write && !(caller.can_write || caller.can_admin) {
        return Err(Error::Forbidden("Write permission required".into()));
    }
    if body.rate_limit == Some(0) {
        return Err(Error::BadRequest("rateLimit must be greater than 0".into()));
    }
    let rate_limit = match (body.rate_limit, caller.rate_limit) {
        (Some(asked), Some(own)) => Some(asked.min(own)),
        (asked, own) => asked.or(own),
    }
    .map(i32::try_from)
    .transpose()
    .map_err(|_| Error::BadRequest("rateLimit is too large".into()))?;
    let key = generate_api_key(tenant_id);
    let record = state
        .store
        .insert_api_key(&NewApiKey {
            key_hash: hash_api_key(&key),
            tenant_id,
            store_ids,
            can_read: true,
            can_write: write || admin,
            can_admin: admin,
            agent_id: Some(agent_id),
            rate_limit,
            label: body.name,
        })
        .await?;
    tracing::info!(key_id = %record.id, %tenant_id, %agent_id, "agent API key created");
    let answer = json!({
        "success": true,
        "id": record.id,
        "apiKey": key,
        "keyHashPrefix": record.key_hash_prefix(),
        "agentId": agent_id,
        "tenantId": tenant_id,
        "permissions": permissions_label(&record),
        "message": "API key created. Store it securely - it cannot be retrieved later.",
    });
    Ok((StatusCode::OK, axum::Json(answer)).into_response())
}

/// `GET /api/v1/agents/{agent_id}/api-keys` → `{"keys":[{"keyHashPrefix","active","permissions","rateLimit"}],"count"}`.
pub async fn list_keys(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(agent_id): ApiPath<Uuid>,
) -> Result<Response> {
    require_agent_or_admin(&caller, agent_id)?;
    let keys: Vec<Value> = agent_keys(&state, &caller, agent_id)
        .await?
        .iter()
        .map(|k| {
            json!({
                "keyHashPrefix": k.key_hash_prefix(),
                "active": k.active,
                "permissions": permissions_label(k),
                "rateLimit": k.rate_limit,
                "storeIds": k.store_ids,
                "createdAt": k.created_at,
                "revokedAt": k.revoked_at,
            })
        })
        .collect();
    Ok(axum::Json(json!({"count": keys.len(), "keys": keys})).into_response())
}

/// `DELETE /api/v1/agents/{agent_id}/api-keys/{key_prefix}`: revokes the agent's key whose hash starts
/// with the prefix (at least 8 hex characters; an ambiguous prefix is a 400).
pub async fn revoke_key(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath((agent_id, prefix)): ApiPath<(Uuid, String)>,
) -> Result<Response> {
    require_agent_or_admin(&caller, agent_id)?;
    if prefix.len() < 8 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadRequest("key_prefix must be 8 to 64 hex characters of the key's hash".into()));
    }
    let prefix = prefix.to_ascii_lowercase();
    let matching: Vec<ApiKeyRecord> = agent_keys(&state, &caller, agent_id)
        .await?
        .into_iter()
        .filter(|k| k.active && k.key_hash.starts_with(&prefix))
        .collect();
    let key = match matching.as_slice() {
        [] => return Err(Error::NotFound("API key not found".into())),
        [one] => one,
        _ => return Err(Error::BadRequest("key_prefix matches more than one key; give more of it".into())),
    };
    let revoked =
        state.store.revoke_api_key(key.id).await?.ok_or_else(|| Error::NotFound("API key not found".into()))?;
    state.auth.forget(&revoked.key_hash).await;
    tracing::info!(key_id = %revoked.id, %agent_id, "agent API key revoked");
    Ok(axum::Json(json!({"success": true, "message": "API key revoked successfully"})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PolicyQuery {
    tenant_id: Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutPolicy {
    tenant_id: Uuid,
    #[serde(default)]
    allowed_event_types: Vec<String>,
    #[serde(default)]
    allowed_entity_types: Vec<String>,
    #[serde(default = "yes")]
    require_base_version: bool,
    max_payload_bytes: Option<u32>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// `GET /api/v1/agents/{agent_id}/policy?tenant_id`: the policy (404 when the agent has none). The
/// tenant's admins and the agent itself may read it.
pub async fn get_policy(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(agent_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> Result<Response> {
    if caller.agent_id == Some(agent_id) && caller.tenant_id == q.tenant_id {
        // The agent reading its own policy.
    } else {
        caller.require_admin_of(q.tenant_id)?;
    }
    let policy = state
        .store
        .agent_policy(q.tenant_id, agent_id)
        .await?
        .ok_or_else(|| Error::NotFound("Agent policy not found".into()))?;
    Ok(axum::Json(policy).into_response())
}

/// `PUT /api/v1/agents/{agent_id}/policy`: creates or replaces the policy (tenant admins only).
pub async fn put_policy(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(agent_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PutPolicy>,
) -> Result<Response> {
    caller.require_admin_of(body.tenant_id)?;
    let allowed_event_types =
        normalise_rules("allowedEventTypes", body.allowed_event_types, true).map_err(Error::BadRequest)?;
    let allowed_entity_types =
        normalise_rules("allowedEntityTypes", body.allowed_entity_types, false).map_err(Error::BadRequest)?;
    let max_payload_bytes = match body.max_payload_bytes {
        Some(n) if n == 0 || n > MAX_POLICY_PAYLOAD_BYTES => {
            return Err(Error::BadRequest(format!("maxPayloadBytes must be between 1 and {MAX_POLICY_PAYLOAD_BYTES}")));
        }
        Some(n) => Some(n as i32),
        None => None,
    };
    let stored = state
        .store
        .upsert_agent_policy(&AgentPolicy {
            tenant_id: body.tenant_id,
            agent_id,
            allowed_event_types,
            allowed_entity_types,
            require_base_version: body.require_base_version,
            max_payload_bytes,
            enabled: body.enabled,
        })
        .await?;
    state.ingest.policies().forget(body.tenant_id, agent_id).await;
    tracing::info!(tenant_id = %body.tenant_id, %agent_id, enabled = stored.enabled, "agent policy updated");
    Ok(axum::Json(stored).into_response())
}
