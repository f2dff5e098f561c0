//! Durable agent cursors (upstream 0.8+, used by the Node `VesClient` and the Python SDK): the highest
//! sequence number an agent has acknowledged in a stream, so a consumer resumes where it stopped.
//!
//! An agent-bound credential reaches only its own agent's cursor; admins reach every cursor of their
//! tenant. Acknowledgements are monotonic (an older one never moves a cursor back) and cannot go
//! beyond the stream's head (400).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiQuery, Auth, SharedState};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::cursors::AgentCursor;
use crate::store::events::StreamKey;

#[derive(Debug, Deserialize)]
pub struct CursorQuery {
    tenant_id: Uuid,
    store_id: Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acknowledge {
    tenant_id: Uuid,
    store_id: Uuid,
    sequence_number: u64,
}

/// Read access to the stream, and either admin or the agent's own credential.
pub fn authorize(caller: &Caller, agent_id: Uuid, stream: StreamKey) -> Result<()> {
    caller.require_read(stream)?;
    if !caller.can_admin && caller.agent_id != Some(agent_id) {
        return Err(Error::Forbidden("Agent access denied".into()));
    }
    Ok(())
}

fn answer(stream: StreamKey, agent_id: Uuid, head: i64, cursor: Option<&AgentCursor>) -> Value {
    let acknowledged = cursor.map_or(0, |c| c.acknowledged_sequence);
    json!({
        "tenantId": stream.tenant_id,
        "storeId": stream.store_id,
        "agentId": agent_id,
        "acknowledgedSequence": acknowledged,
        "headSequence": head,
        "lag": (head - acknowledged).max(0),
        "updatedAt": cursor.map(|c| c.updated_at.to_rfc3339()),
    })
}

/// `GET /api/v1/ves/cursors/{agent_id}?tenant_id&store_id`.
pub async fn get(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(agent_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<CursorQuery>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: q.tenant_id, store_id: q.store_id };
    authorize(&caller, agent_id, stream)?;
    let cursor = state.store.agent_cursor(stream, agent_id).await?;
    let head = state.store.head(stream).await?;
    Ok(axum::Json(answer(stream, agent_id, head, cursor.as_ref())).into_response())
}

/// `PUT /api/v1/ves/cursors/{agent_id}` `{"tenantId","storeId","sequenceNumber"}`.
pub async fn acknowledge(
    State(state): State<SharedState>,
    caller: Auth,
    ApiPath(agent_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Acknowledge>,
) -> Result<Response> {
    let stream = StreamKey { tenant_id: body.tenant_id, store_id: body.store_id };
    authorize(&caller, agent_id, stream)?;
    let head = state.store.head(stream).await?;
    let sequence = i64::try_from(body.sequence_number).unwrap_or(i64::MAX);
    if sequence > head {
        return Err(Error::BadRequest(format!("sequenceNumber cannot exceed the stream head ({sequence} > {head})")));
    }
    let cursor = state.store.acknowledge_agent_cursor(stream, agent_id, sequence).await?;
    Ok(axum::Json(answer(stream, agent_id, head, Some(&cursor))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_caller(tenant: Uuid, store: Uuid, agent: Uuid) -> Caller {
        Caller {
            tenant_id: tenant,
            store_ids: vec![store],
            can_read: true,
            can_write: true,
            can_admin: false,
            agent_id: Some(agent),
            rate_limit: None,
            api_key_id: None,
        }
    }

    #[test]
    fn an_agent_reaches_only_its_own_cursor_and_an_admin_reaches_any() {
        let (t, s, a) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let stream = StreamKey { tenant_id: t, store_id: s };
        assert!(authorize(&agent_caller(t, s, a), a, stream).is_ok());
        assert!(authorize(&agent_caller(t, s, a), Uuid::new_v4(), stream).is_err());
        let reader = Caller { agent_id: None, ..agent_caller(t, s, a) };
        assert!(authorize(&reader, a, stream).is_err());
        let bootstrap =
            Caller { tenant_id: Uuid::nil(), store_ids: Vec::new(), can_admin: true, agent_id: None, ..reader.clone() };
        assert!(authorize(&bootstrap, Uuid::new_v4(), stream).is_ok());
        // An admin of another tenant does not.
        let other_admin = Caller { tenant_id: Uuid::new_v4(), can_admin: true, ..reader };
        assert!(authorize(&other_admin, a, stream).is_err());
    }
}
