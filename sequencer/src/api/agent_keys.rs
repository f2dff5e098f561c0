//! Agent signing keys: register (upstream's body), list, revoke, rotate.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiQuery, Auth, SharedState};
use crate::error::{Error, Result};
use crate::store::keys::NewAgentKey;

/// `POST /api/v1/agents/keys` body, as the existing service takes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterKey {
    tenant_id: Uuid,
    agent_id: Uuid,
    key_id: u32,
    public_key: String,
    valid_from: Option<String>,
    valid_to: Option<String>,
    key_algorithm: Option<i32>,
}

fn parse_public_key(value: &str) -> Result<[u8; 32]> {
    use ves::verify::PublicKeyHexError as E;
    let message = |e| match e {
        E::NotHex => "publicKey must be hex",
        E::NotThirtyTwoBytes => "Public key must be 32 bytes",
        E::NotAKey => "publicKey is not a valid Ed25519 public key",
    };
    ves::verify::public_key_from_hex(value).map(|k| k.to_bytes()).map_err(|e| Error::BadRequest(message(e).into()))
}

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| Error::BadRequest(format!("{field} must be an RFC 3339 timestamp")))
        })
        .transpose()
}

fn algorithm(value: Option<i32>) -> Result<i16> {
    match value.unwrap_or(1) {
        // 0 is the existing service's "unspecified", which means Ed25519.
        0 | 1 => Ok(1),
        other => Err(Error::BadRequest(format!(
            "keyAlgorithm {other} is not supported: this sequencer verifies Ed25519 (1) only"
        ))),
    }
}

fn new_key(tenant_id: Uuid, agent_id: Uuid, key_id: u32, body: &KeyMaterial<'_>) -> Result<NewAgentKey> {
    let valid_from = parse_time("validFrom", body.valid_from)?;
    let valid_to = parse_time("validTo", body.valid_to)?;
    if let (Some(f), Some(t)) = (valid_from, valid_to)
        && t <= f
    {
        return Err(Error::BadRequest("validTo must be later than validFrom".into()));
    }
    Ok(NewAgentKey {
        tenant_id,
        agent_id,
        key_id,
        public_key: parse_public_key(body.public_key)?,
        key_algorithm: algorithm(body.key_algorithm)?,
        valid_from,
        valid_to,
    })
}

struct KeyMaterial<'a> {
    public_key: &'a str,
    valid_from: Option<&'a str>,
    valid_to: Option<&'a str>,
    key_algorithm: Option<i32>,
}

pub async fn register(
    State(state): State<SharedState>,
    caller: Auth,
    ApiJson(body): ApiJson<RegisterKey>,
) -> Result<Response> {
    caller.require_admin_of(body.tenant_id)?;
    let key = new_key(
        body.tenant_id,
        body.agent_id,
        body.key_id,
        &KeyMaterial {
            public_key: &body.public_key,
            valid_from: body.valid_from.as_deref(),
            valid_to: body.valid_to.as_deref(),
            key_algorithm: body.key_algorithm,
        },
    )?;
    let stored = state.store.insert_agent_key(&key).await?;
    state.ingest.keys().invalidate(key.tenant_id, key.agent_id, key.key_id).await;
    tracing::info!(tenant_id = %key.tenant_id, agent_id = %key.agent_id, key_id = key.key_id, "agent key registered");
    Ok(axum::Json(json!({
        "success": true,
        "tenantId": stored.tenant_id,
        "agentId": stored.agent_id,
        "keyId": stored.key_id,
        "keyAlgorithm": body.key_algorithm.unwrap_or(0),
        "message": "Agent key registered successfully",
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(alias = "tenantId")]
    tenant_id: Uuid,
    #[serde(alias = "agentId")]
    agent_id: Option<Uuid>,
}

/// `GET /api/v1/agents/keys?tenant_id=..[&agent_id=..]`.
pub async fn list(
    State(state): State<SharedState>,
    caller: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response> {
    if !(caller.can_read || caller.can_admin) {
        return Err(Error::Forbidden("Read permission required".into()));
    }
    if !caller.is_bootstrap_admin() && caller.tenant_id != q.tenant_id {
        return Err(Error::Forbidden("Tenant access denied".into()));
    }
    let keys = state.store.list_agent_keys(q.tenant_id, q.agent_id).await?;
    Ok(axum::Json(json!({"count": keys.len(), "keys": keys})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeBody {
    reason: Option<String>,
}

/// `POST /api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/revoke`.
pub async fn revoke(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath((tenant_id, agent_id, key_id)): ApiPath<(Uuid, Uuid, u32)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    caller.require_admin_of(tenant_id)?;
    // The body is optional: `{"reason": "..."}` or nothing.
    let reason = super::optional_json::<RevokeBody>(&body)?.reason;
    let key = state
        .store
        .revoke_agent_key(tenant_id, agent_id, key_id, reason.as_deref())
        .await?
        .ok_or_else(|| Error::NotFound("Agent key not found".into()))?;
    state.ingest.keys().invalidate(tenant_id, agent_id, key_id).await;
    tracing::info!(%tenant_id, %agent_id, key_id, "agent key revoked");
    Ok(axum::Json(json!({"success": true, "key": key})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateBody {
    new_key_id: u32,
    public_key: String,
    valid_from: Option<String>,
    valid_to: Option<String>,
    key_algorithm: Option<i32>,
    /// How long the old key keeps verifying events after the rotation (default 0: it stops now).
    #[serde(default)]
    grace_seconds: u32,
}

/// `POST /api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/rotate`: registers the new key and
/// retires the old one (after `graceSeconds`), atomically.
pub async fn rotate(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath((tenant_id, agent_id, key_id)): ApiPath<(Uuid, Uuid, u32)>,
    ApiJson(body): ApiJson<RotateBody>,
) -> Result<Response> {
    caller.require_admin_of(tenant_id)?;
    if body.new_key_id == key_id {
        return Err(Error::BadRequest("newKeyId must differ from the key being rotated".into()));
    }
    let key = new_key(
        tenant_id,
        agent_id,
        body.new_key_id,
        &KeyMaterial {
            public_key: &body.public_key,
            valid_from: body.valid_from.as_deref(),
            valid_to: body.valid_to.as_deref(),
            key_algorithm: body.key_algorithm,
        },
    )?;
    let old_valid_to = Utc::now() + Duration::seconds(i64::from(body.grace_seconds));
    let (old, new) = state
        .store
        .rotate_agent_key(key_id, &key, old_valid_to)
        .await?
        .ok_or_else(|| Error::NotFound("Active agent key not found".into()))?;
    state.ingest.keys().invalidate(tenant_id, agent_id, key_id).await;
    state.ingest.keys().invalidate(tenant_id, agent_id, body.new_key_id).await;
    tracing::info!(%tenant_id, %agent_id, old_key_id = key_id, new_key_id = body.new_key_id, "agent key rotated");
    Ok(axum::Json(json!({"success": true, "oldKey": old, "newKey": new})).into_response())
}
