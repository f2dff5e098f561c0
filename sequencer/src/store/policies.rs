//! Per-agent event policies (`agent_event_policies`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;

/// An agent's policy within a tenant, as stored and as answered (camelCase, as upstream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AgentPolicy {
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub allowed_event_types: Vec<String>,
    pub allowed_entity_types: Vec<String>,
    pub require_base_version: bool,
    pub max_payload_bytes: Option<i32>,
    pub enabled: bool,
}

const COLUMNS: &str =
    "tenant_id, agent_id, allowed_event_types, allowed_entity_types, require_base_version, max_payload_bytes, enabled";

impl Store {
    pub async fn agent_policy(&self, tenant_id: Uuid, agent_id: Uuid) -> Result<Option<AgentPolicy>> {
        let sql = format!("SELECT {COLUMNS} FROM agent_event_policies WHERE tenant_id = $1 AND agent_id = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant_id).bind(agent_id).fetch_optional(self.pool()).await?)
    }

    /// Creates or replaces an agent's policy and returns it as stored.
    pub async fn upsert_agent_policy(&self, p: &AgentPolicy) -> Result<AgentPolicy> {
        let sql = format!(
            "INSERT INTO agent_event_policies ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, agent_id) DO UPDATE SET \
               allowed_event_types = EXCLUDED.allowed_event_types, \
               allowed_entity_types = EXCLUDED.allowed_entity_types, \
               require_base_version = EXCLUDED.require_base_version, \
               max_payload_bytes = EXCLUDED.max_payload_bytes, \
               enabled = EXCLUDED.enabled, updated_at = now() \
             RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(p.tenant_id)
            .bind(p.agent_id)
            .bind(&p.allowed_event_types)
            .bind(&p.allowed_entity_types)
            .bind(p.require_base_version)
            .bind(p.max_payload_bytes)
            .bind(p.enabled)
            .fetch_one(self.pool())
            .await?)
    }
}
