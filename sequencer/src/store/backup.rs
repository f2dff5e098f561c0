//! Reads for backup verification.

use crate::error::Result;
use crate::store::Store;
use crate::store::events::StreamKey;

impl Store {
    /// The sequence numbers a stream holds in `from..=to`, in order, at most `limit`.
    pub async fn sequence_numbers(&self, stream: StreamKey, from: i64, to: i64, limit: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT sequence_number FROM events WHERE tenant_id = $1 AND store_id = $2 \
             AND sequence_number BETWEEN $3 AND $4 ORDER BY sequence_number LIMIT $5",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
