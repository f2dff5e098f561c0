//! Where a server stands in the write-ahead log: the primary's flushed position and a streaming
//! standby's replayed one, which `reads` compares to decide whether the standby may serve reads.

use sqlx::postgres::PgConnection;

use crate::error::Result;

/// A WAL position (`pg_lsn`) as a byte offset.
pub type Lsn = u64;

/// The primary's WAL position flushed to disk: every transaction committed (synchronously) before
/// this call is at or before it.
pub async fn primary_flush_lsn(conn: &mut PgConnection) -> Result<Lsn> {
    let lsn: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint").fetch_one(conn).await?;
    Ok(lsn as Lsn)
}

/// A standby's WAL position replayed so far (what its queries see), or `None` when the server is not
/// in recovery (a primary, or a promoted standby), where replay positions mean nothing.
pub async fn standby_replay_lsn(conn: &mut PgConnection) -> Result<Option<Lsn>> {
    let lsn: Option<i64> = sqlx::query_scalar(
        "SELECT CASE WHEN pg_is_in_recovery() \
                THEN pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint END",
    )
    .fetch_one(conn)
    .await?;
    Ok(lsn.map(|l| l as Lsn))
}
