//! Admin aggregates limited to what a credential may see: a tenant (or all, for the bootstrap admin)
//! and optionally some of its stores.

use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;
use crate::store::events::StreamStatus;

/// The streams a caller may see: `None` means no limit on that level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub tenant_id: Option<Uuid>,
    pub store_ids: Option<Vec<Uuid>>,
}

impl Store {
    /// The streams in `scope` (narrowed to `tenant_id` / `store_id` when given), in key order.
    pub async fn streams_in(
        &self,
        scope: &Scope,
        tenant_id: Option<Uuid>,
        store_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<StreamStatus>> {
        Ok(sqlx::query_as(
            "SELECT s.tenant_id, s.store_id, s.current_sequence AS head, s.paused, s.paused_reason, \
               (SELECT MAX(c.sequence_end) FROM commitments c WHERE c.tenant_id = s.tenant_id \
                  AND c.store_id = s.store_id AND c.superseded_by IS NULL) AS last_committed_sequence, s.updated_at \
             FROM sequence_counters s WHERE ($1::uuid IS NULL OR s.tenant_id = $1) \
               AND ($2::uuid[] IS NULL OR s.store_id = ANY($2)) \
               AND ($3::uuid IS NULL OR s.tenant_id = $3) AND ($4::uuid IS NULL OR s.store_id = $4) \
             ORDER BY s.tenant_id, s.store_id LIMIT $5",
        )
        .bind(scope.tenant_id)
        .bind(scope.store_ids.as_deref())
        .bind(tenant_id)
        .bind(store_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// How many streams in `scope` are paused.
    pub async fn paused_streams_in(&self, scope: &Scope) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM sequence_counters WHERE paused AND ($1::uuid IS NULL OR tenant_id = $1) \
             AND ($2::uuid[] IS NULL OR store_id = ANY($2))",
        )
        .bind(scope.tenant_id)
        .bind(scope.store_ids.as_deref())
        .fetch_one(self.pool())
        .await?)
    }

    /// Unanchored commitments in `scope` and the age in seconds of the oldest.
    pub async fn unanchored_summary_in(&self, scope: &Scope) -> Result<(i64, Option<f64>)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), EXTRACT(EPOCH FROM NOW() - MIN(committed_at))::float8 FROM commitments \
             WHERE chain_tx_hash IS NULL AND superseded_by IS NULL AND ($1::uuid IS NULL OR tenant_id = $1) \
             AND ($2::uuid[] IS NULL OR store_id = ANY($2))",
        )
        .bind(scope.tenant_id)
        .bind(scope.store_ids.as_deref())
        .fetch_one(self.pool())
        .await?)
    }
}
