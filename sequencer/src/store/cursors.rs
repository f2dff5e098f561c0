//! Agent cursors (`agent_cursors`): the highest sequence number an agent acknowledged in a stream.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;
use crate::store::events::StreamKey;

/// A stored cursor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentCursor {
    pub acknowledged_sequence: i64,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    pub async fn agent_cursor(&self, stream: StreamKey, agent_id: Uuid) -> Result<Option<AgentCursor>> {
        Ok(sqlx::query_as(
            "SELECT acknowledged_sequence, updated_at FROM agent_cursors \
             WHERE tenant_id = $1 AND store_id = $2 AND agent_id = $3",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(agent_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Raises the cursor to `sequence` (never lowers it) and returns it as stored. An acknowledgement
    /// that does not move the cursor leaves `updated_at` too.
    pub async fn acknowledge_agent_cursor(
        &self,
        stream: StreamKey,
        agent_id: Uuid,
        sequence: i64,
    ) -> Result<AgentCursor> {
        let moved: Option<AgentCursor> = sqlx::query_as(
            "INSERT INTO agent_cursors AS c (tenant_id, store_id, agent_id, acknowledged_sequence) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, store_id, agent_id) DO UPDATE \
               SET acknowledged_sequence = EXCLUDED.acknowledged_sequence, updated_at = now() \
               WHERE c.acknowledged_sequence < EXCLUDED.acknowledged_sequence \
             RETURNING acknowledged_sequence, updated_at",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(agent_id)
        .bind(sequence)
        .fetch_optional(self.pool())
        .await?;
        match moved {
            Some(cursor) => Ok(cursor),
            None => Ok(self
                .agent_cursor(stream, agent_id)
                .await?
                .ok_or_else(|| crate::Error::Internal("agent cursor vanished after an upsert".into()))?),
        }
    }
}
