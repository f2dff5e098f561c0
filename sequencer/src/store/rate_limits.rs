//! Deployment-wide rate-limit windows (`rate_limit_windows`): replicas take tokens from a shared
//! per-minute counter in leases.

use crate::error::Result;
use crate::store::Store;

impl Store {
    /// Takes up to `want` tokens of `limit_key`'s window `window_index`, whose allowance is `limit`, and
    /// returns how many were granted (0 once the window is used up). One statement: it also deletes
    /// the key's windows older than the previous one (kept, so that a replica whose clock is up to a
    /// minute behind does not start that window afresh).
    pub async fn take_rate_limit_tokens(
        &self,
        limit_key: &str,
        window_index: i64,
        limit: i64,
        want: i64,
    ) -> Result<i64> {
        let granted: i64 = sqlx::query_scalar(
            "WITH old AS (DELETE FROM rate_limit_windows WHERE limit_key = $1 AND window_index < $2 - 1) \
             INSERT INTO rate_limit_windows AS w (limit_key, window_index, used, last_grant) \
             VALUES ($1, $2, LEAST($3, $4), LEAST($3, $4)) \
             ON CONFLICT (limit_key, window_index) DO UPDATE SET \
               last_grant = GREATEST(0, LEAST($3, $4 - w.used)), \
               used = w.used + GREATEST(0, LEAST($3, $4 - w.used)) \
             RETURNING last_grant",
        )
        .bind(limit_key)
        .bind(window_index)
        .bind(want)
        .bind(limit)
        .fetch_one(self.pool())
        .await?;
        Ok(granted)
    }
}
