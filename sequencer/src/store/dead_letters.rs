//! The dead-letter queue (`dead_letter_events`): events refused for a reason that a fix could remove.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;
use crate::store::events::StreamKey;

/// One refused event to record.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub source: &'static str,
    /// Machine-readable cause (the rejection reason up to its first `:`).
    pub reason: String,
    /// The full rejection reason and message.
    pub error_message: String,
    /// The envelope exactly as received.
    pub payload: Value,
}

/// A stored dead letter.
#[derive(Debug, Clone, FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: Uuid,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub source: String,
    pub reason: String,
    pub error_message: String,
    pub status: String,
    pub retry_count: i32,
    pub last_retry_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_sequence_number: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub payload: Value,
}

/// Records refused events in one statement. An event refused again in the same stream (a client
/// retry) updates its entry: the latest envelope and reason win and `retry_count` counts the repeats.
/// Entries are keyed by (tenant, store, event id), so a refused event never touches another stream's
/// entry, whatever its `event_id`.
pub async fn insert_dead_letters(conn: &mut PgConnection, letters: &[NewDeadLetter]) -> Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = letters.iter().map(|_| Uuid::new_v4()).collect();
    let event_ids: Vec<Uuid> = letters.iter().map(|l| l.event_id).collect();
    let tenants: Vec<Uuid> = letters.iter().map(|l| l.tenant_id).collect();
    let stores: Vec<Uuid> = letters.iter().map(|l| l.store_id).collect();
    let agents: Vec<Option<Uuid>> = letters.iter().map(|l| l.agent_id).collect();
    let event_types: Vec<Option<&str>> = letters.iter().map(|l| l.event_type.as_deref()).collect();
    let sources: Vec<&str> = letters.iter().map(|l| l.source).collect();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    let messages: Vec<&str> = letters.iter().map(|l| l.error_message.as_str()).collect();
    let payloads: Vec<&Value> = letters.iter().map(|l| &l.payload).collect();
    sqlx::query(
        "INSERT INTO dead_letter_events (id, event_id, tenant_id, store_id, agent_id, event_type, source, reason, \
           error_message, payload) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], \
           $8::text[], $9::text[], $10::jsonb[]) \
         ON CONFLICT (tenant_id, store_id, event_id) DO UPDATE SET reason = EXCLUDED.reason, error_message = EXCLUDED.error_message, \
           payload = EXCLUDED.payload, status = 'pending', resolved_at = NULL, resolved_sequence_number = NULL, \
           retry_count = dead_letter_events.retry_count + 1, last_retry_at = NOW(), updated_at = NOW()",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&tenants)
    .bind(&stores)
    .bind(&agents)
    .bind(&event_types)
    .bind(&sources)
    .bind(&reasons)
    .bind(&messages)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, event_id, tenant_id, store_id, agent_id, event_type, source, reason, error_message, \
                       status, retry_count, last_retry_at, resolved_at, resolved_sequence_number, created_at, \
                       updated_at, payload";

/// Which dead letters to list or retry.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterFilter {
    #[serde(alias = "tenant_id")]
    pub tenant_id: Option<Uuid>,
    #[serde(alias = "store_id")]
    pub store_id: Option<Uuid>,
    /// The stores the caller's credential is limited to (never from the request); `None` = all.
    #[serde(skip)]
    pub scope_store_ids: Option<Vec<Uuid>>,
    pub reason: Option<String>,
    /// `pending` (default for retries) or `resolved`.
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Store {
    /// Dead letters matching `filter`, newest first.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DeadLetter>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dead_letter_events WHERE ($1::uuid IS NULL OR tenant_id = $1) \
             AND ($2::uuid IS NULL OR store_id = $2) AND ($3::text IS NULL OR reason = $3) \
             AND ($4::text IS NULL OR status = $4) AND ($5::timestamptz IS NULL OR created_at >= $5) \
             AND ($6::timestamptz IS NULL OR created_at < $6) AND ($9::uuid[] IS NULL OR store_id = ANY($9)) \
             ORDER BY created_at DESC, id LIMIT $7 OFFSET $8"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(filter.tenant_id)
            .bind(filter.store_id)
            .bind(filter.reason.as_deref())
            .bind(filter.status.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .bind(limit)
            .bind(offset)
            .bind(filter.scope_store_ids.as_deref())
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        let sql = format!("SELECT {COLUMNS} FROM dead_letter_events WHERE id = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Removes an entry; `false` when there was none.
    pub async fn delete_dead_letter(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM dead_letter_events WHERE id = $1").bind(id).execute(self.pool()).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks an entry resolved by a successful retry.
    pub async fn resolve_dead_letter(&self, id: Uuid, sequence_number: Option<i64>) -> Result<()> {
        sqlx::query(
            "UPDATE dead_letter_events SET status = 'resolved', resolved_at = NOW(), resolved_sequence_number = $2, \
             last_retry_at = NOW(), updated_at = NOW() WHERE id = $1",
        )
        .bind(id)
        .bind(sequence_number)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed retry whose new cause the ingest path did not record itself.
    pub async fn record_failed_retry(&self, id: Uuid, reason: &str, message: &str) -> Result<()> {
        sqlx::query(
            "UPDATE dead_letter_events SET reason = $2, error_message = $3, retry_count = retry_count + 1, \
             last_retry_at = NOW(), updated_at = NOW() WHERE id = $1",
        )
        .bind(id)
        .bind(reason)
        .bind(message)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Pending entries by reason, within the tenant and stores given (`None` = all).
    pub async fn dead_letters_by_reason(
        &self,
        tenant_id: Option<Uuid>,
        store_ids: Option<&[Uuid]>,
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT reason, COUNT(*) FROM dead_letter_events WHERE status = 'pending' \
             AND ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid[] IS NULL OR store_id = ANY($2)) \
             GROUP BY reason ORDER BY reason",
        )
        .bind(tenant_id)
        .bind(store_ids)
        .fetch_all(self.pool())
        .await?)
    }

    /// Deletes the entries matching `filter` (its status defaults to `resolved`: the runbook's
    /// "Delete from dead letter queue after successful retry"); returns how many.
    pub async fn delete_dead_letters_matching(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM dead_letter_events WHERE ($1::uuid IS NULL OR tenant_id = $1) \
             AND ($2::uuid IS NULL OR store_id = $2) AND ($3::text IS NULL OR reason = $3) AND status = $4 \
             AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at < $6)",
        )
        .bind(filter.tenant_id)
        .bind(filter.store_id)
        .bind(filter.reason.as_deref())
        .bind(filter.status.as_deref().unwrap_or("resolved"))
        .bind(filter.since)
        .bind(filter.until)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes entries older than `days` days; returns how many.
    pub async fn purge_dead_letters(&self, days: u32) -> Result<u64> {
        let done = sqlx::query("DELETE FROM dead_letter_events WHERE created_at < NOW() - make_interval(days => $1)")
            .bind(days as i32)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_dead_letters(&self, letters: &[NewDeadLetter]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool().acquire().await?;
        insert_dead_letters(&mut conn, letters).await
    }

    /// The oldest dead letter with this event id, in any stream (tests).
    pub async fn dead_letter_by_event_id(&self, event_id: Uuid) -> Result<Option<DeadLetter>> {
        let sql = format!("SELECT {COLUMNS} FROM dead_letter_events WHERE event_id = $1 ORDER BY created_at LIMIT 1");
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(event_id).fetch_optional(self.pool()).await?)
    }

    /// The dead letter of this event id in this stream.
    pub async fn dead_letter_in_stream(&self, stream: StreamKey, event_id: Uuid) -> Result<Option<DeadLetter>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dead_letter_events WHERE tenant_id = $1 AND store_id = $2 AND event_id = $3"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(event_id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Pending entries in the queue.
    pub async fn dead_letter_depth(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM dead_letter_events WHERE status = 'pending'")
            .fetch_one(self.pool())
            .await?)
    }
}
