//! Commitments (`commitments`) and their stored tree levels (`commitment_tree_levels`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, FromRow, PgConnection};
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;
use crate::store::events::StreamKey;

/// A stored commitment.
#[derive(Debug, Clone, FromRow)]
pub struct CommitmentRow {
    pub batch_id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub ves_version: i32,
    pub tree_depth: i32,
    pub leaf_count: i32,
    pub padded_leaf_count: i32,
    pub merkle_root: Vec<u8>,
    pub prev_state_root: Vec<u8>,
    pub new_state_root: Vec<u8>,
    pub sequence_start: i64,
    pub sequence_end: i64,
    pub committed_at: DateTime<Utc>,
    pub chain_id: Option<i64>,
    pub chain_tx_hash: Option<Vec<u8>>,
    pub chain_block_number: Option<i64>,
    pub anchored_at: Option<DateTime<Utc>>,
    pub corrects_batch_id: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    pub metadata: Value,
}

impl CommitmentRow {
    pub fn stream(&self) -> StreamKey {
        StreamKey { tenant_id: self.tenant_id, store_id: self.store_id }
    }
}

const COLUMNS: &str = "batch_id, tenant_id, store_id, ves_version, tree_depth, leaf_count, padded_leaf_count, \
     merkle_root, prev_state_root, new_state_root, sequence_start, sequence_end, committed_at, chain_id, \
     chain_tx_hash, chain_block_number, anchored_at, corrects_batch_id, superseded_by, metadata";

/// Serialises commitment creation for one stream across replicas (transaction-scoped advisory lock
/// keyed by the first 8 bytes of the stream id, as the existing service does).
pub async fn lock_stream_commitments(conn: &mut PgConnection, stream: StreamKey) -> Result<()> {
    let id = ves::hash::stream_id(stream.tenant_id, stream.store_id);
    let key = i64::from_be_bytes(id[..8].try_into().expect("8 bytes"));
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(conn).await?;
    Ok(())
}

/// The live commitment of the stream with the greatest end.
pub async fn last_commitment(conn: &mut PgConnection, stream: StreamKey) -> Result<Option<CommitmentRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM commitments WHERE tenant_id = $1 AND store_id = $2 AND superseded_by IS NULL \
         ORDER BY sequence_end DESC LIMIT 1"
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(stream.tenant_id).bind(stream.store_id).fetch_optional(conn).await?)
}

/// The stream's head, read inside the caller's transaction.
pub async fn head(conn: &mut PgConnection, stream: StreamKey) -> Result<i64> {
    let head: Option<i64> =
        sqlx::query_scalar("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .fetch_optional(conn)
            .await?;
    Ok(head.unwrap_or(0))
}

/// `(sequence_number, leaf_hash)` of every stored event in `start..=end`, in order, from the log
/// itself (the authority; one index entry per event).
pub async fn range_leaves(
    conn: &mut PgConnection,
    stream: StreamKey,
    start: i64,
    end: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT sequence_number, leaf_hash FROM events WHERE tenant_id = $1 AND store_id = $2 \
         AND sequence_number BETWEEN $3 AND $4 ORDER BY sequence_number",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .bind(start)
    .bind(end)
    .fetch_all(conn)
    .await?)
}

/// A run of leaves (migration 0004): the leaves of events `first..=last`, 32 bytes each.
#[derive(Debug, Clone, FromRow)]
pub struct LeafRun {
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub leaves: Vec<u8>,
}

/// The condition on `event_leaf_runs r` that selects the runs overlapping `$3..=$4` of stream
/// (`$1`, `$2`): from the run containing `$3` (or the first after it) to the last one starting at or
/// before `$4`, found through the primary key without scanning the stream's earlier runs.
const RUNS_OVERLAPPING: &str = "r.tenant_id = $1 AND r.store_id = $2 AND r.first_sequence <= $4 \
     AND r.first_sequence >= COALESCE((SELECT first_sequence FROM event_leaf_runs \
       WHERE tenant_id = $1 AND store_id = $2 AND first_sequence <= $3 \
       ORDER BY first_sequence DESC LIMIT 1), $3)";

/// What a commitment over `start..=end` reads, in one round trip: whether a row of the stream's log
/// was ever removed or changed behind the sequencer's back (see migration 0004), and the leaf runs
/// that overlap the range in order (the one containing `start`, or the first after it, up to the last
/// one starting at or before `end`).
pub async fn damage_and_runs(
    conn: &mut PgConnection,
    stream: StreamKey,
    start: i64,
    end: i64,
) -> Result<(bool, Vec<LeafRun>)> {
    /// `(damaged, first, last, leaves)`; the run columns are NULL when no run overlaps.
    type Row = (bool, Option<i64>, Option<i64>, Option<Vec<u8>>);
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM event_log_damage \
                  WHERE (tenant_id = $1 AND store_id = $2) OR tenant_id IS NULL), \
                r.first_sequence, r.last_sequence, r.leaves \
         FROM (SELECT 1) AS one LEFT JOIN LATERAL ( \
           SELECT first_sequence, last_sequence, leaves FROM event_leaf_runs r WHERE {RUNS_OVERLAPPING}) AS r ON TRUE"
    );
    let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(start)
        .bind(end)
        .fetch_all(conn)
        .await?;
    let damaged = rows.first().is_some_and(|r| r.0);
    let mut runs: Vec<LeafRun> = rows
        .into_iter()
        .filter_map(|(_, first, last, leaves)| {
            Some(LeafRun { first_sequence: first?, last_sequence: last?, leaves: leaves? })
        })
        .collect();
    // NB: ordered here rather than by the query, where the outer join would make PostgreSQL sort
    // rows that the index scan already returns in order.
    runs.sort_unstable_by_key(|r| r.first_sequence);
    Ok((damaged, runs))
}

/// Rows of a stream's log removed or changed behind the sequencer's back, as migration 0004's
/// triggers recorded them (TRUNCATEs, which hit every stream, included).
pub async fn log_damage(
    conn: &mut PgConnection,
    stream: StreamKey,
) -> Result<Vec<(String, Option<i64>, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT operation, sequence_number, recorded_at FROM event_log_damage \
         WHERE (tenant_id = $1 AND store_id = $2) OR tenant_id IS NULL ORDER BY id",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .fetch_all(conn)
    .await?)
}

/// The leaves of `start..=end` cut from `runs`, or `None` unless the runs cover the range without a
/// gap or an overlap.
pub fn leaves_from_runs(runs: &[LeafRun], start: i64, end: i64) -> Option<Vec<[u8; 32]>> {
    let mut leaves = Vec::with_capacity(usize::try_from(end - start + 1).ok()?);
    let mut next = start;
    for run in runs {
        if run.last_sequence < next {
            continue;
        }
        if run.first_sequence > next || run.leaves.len() as i64 != 32 * (run.last_sequence - run.first_sequence + 1) {
            return None;
        }
        let from = (next - run.first_sequence) as usize * 32;
        let to = (run.last_sequence.min(end) - run.first_sequence + 1) as usize * 32;
        leaves.extend(run.leaves[from..to].chunks_exact(32).map(|c| <[u8; 32]>::try_from(c).expect("32 bytes")));
        next = run.last_sequence.min(end) + 1;
        if next > end {
            return Some(leaves);
        }
    }
    None
}

/// What an inclusion proof reads, in one round trip: the parts of the leaf runs that hold events
/// `lo..=hi` (as [`ProofRead::Run`], clipped to that range), and the node at each `(level, index)`
/// of `wanted` from the commitment's stored levels (`None` past a level's real nodes, where only
/// padding is).
pub async fn proof_reads(
    conn: &mut PgConnection,
    stream: StreamKey,
    (lo, hi): (i64, i64),
    batch_id: Uuid,
    wanted: &[(i32, i64)],
) -> Result<Vec<ProofRead>> {
    let levels: Vec<i32> = wanted.iter().map(|w| w.0).collect();
    let indices: Vec<i64> = wanted.iter().map(|w| w.1).collect();
    let sql = format!(
        "SELECT 0, GREATEST(r.first_sequence, $3), LEAST(r.last_sequence, $4), \
           substring(r.leaves FROM ((GREATEST(r.first_sequence, $3) - r.first_sequence) * 32 + 1)::int \
             FOR ((LEAST(r.last_sequence, $4) - GREATEST(r.first_sequence, $3) + 1) * 32)::int) \
         FROM event_leaf_runs r WHERE {RUNS_OVERLAPPING} AND r.last_sequence >= $3 \
         UNION ALL \
         SELECT w.level, w.idx, 0, CASE WHEN (w.idx + 1) * 32 <= length(t.nodes) \
           THEN substring(t.nodes FROM (w.idx * 32 + 1)::int FOR 32) END \
         FROM UNNEST($6::int[], $7::bigint[]) AS w(level, idx) \
         LEFT JOIN commitment_tree_levels t ON t.batch_id = $5 AND t.level = w.level"
    );
    let rows: Vec<(i32, i64, i64, Option<Vec<u8>>)> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(lo)
        .bind(hi)
        .bind(batch_id)
        .bind(&levels)
        .bind(&indices)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, a, b, bytes)| match kind {
            0 => ProofRead::Run(LeafRun { first_sequence: a, last_sequence: b, leaves: bytes.unwrap_or_default() }),
            level => ProofRead::Node { level, index: a, node: bytes },
        })
        .collect())
}

/// One row of [`proof_reads`].
#[derive(Debug, Clone)]
pub enum ProofRead {
    Run(LeafRun),
    Node { level: i32, index: i64, node: Option<Vec<u8>> },
}

/// Inserts a commitment and its stored tree levels, `(level number, nodes)`.
pub async fn insert_commitment(conn: &mut PgConnection, c: &CommitmentRow, levels: &[(i32, Vec<u8>)]) -> Result<()> {
    sqlx::query(
        "INSERT INTO commitments (batch_id, tenant_id, store_id, ves_version, tree_depth, leaf_count, \
         padded_leaf_count, merkle_root, prev_state_root, new_state_root, sequence_start, sequence_end, \
         committed_at, corrects_batch_id, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(c.batch_id)
    .bind(c.tenant_id)
    .bind(c.store_id)
    .bind(c.ves_version)
    .bind(c.tree_depth)
    .bind(c.leaf_count)
    .bind(c.padded_leaf_count)
    .bind(&c.merkle_root)
    .bind(&c.prev_state_root)
    .bind(&c.new_state_root)
    .bind(c.sequence_start)
    .bind(c.sequence_end)
    .bind(c.committed_at)
    .bind(c.corrects_batch_id)
    .bind(&c.metadata)
    .execute(&mut *conn)
    .await?;
    if !levels.is_empty() {
        let (numbers, levels): (Vec<i32>, Vec<&[u8]>) = levels.iter().map(|(n, l)| (*n, l.as_slice())).unzip();
        sqlx::query(
            "INSERT INTO commitment_tree_levels (batch_id, level, nodes) \
             SELECT $1, l.level, l.nodes FROM UNNEST($2::int[], $3::bytea[]) AS l(level, nodes)",
        )
        .bind(c.batch_id)
        .bind(&numbers)
        .bind(&levels)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Marks `bad` superseded by `correction` and records why in its metadata.
pub async fn mark_superseded(conn: &mut PgConnection, bad: Uuid, correction: Uuid, reason: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE commitments SET superseded_by = $2, metadata = metadata || jsonb_build_object( \
           'superseded_by', $2::text, 'correction_reason', $3::text, 'corrected_at', NOW()) \
         WHERE batch_id = $1 AND superseded_by IS NULL",
    )
    .bind(bad)
    .bind(correction)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Filter for listing commitments.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter {
    pub anchored: Option<bool>,
    pub include_superseded: bool,
}

impl Store {
    pub async fn commitment(&self, batch_id: Uuid) -> Result<Option<CommitmentRow>> {
        let sql = format!("SELECT {COLUMNS} FROM commitments WHERE batch_id = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(batch_id).fetch_optional(self.pool()).await?)
    }

    /// The live commitment of the stream whose range covers `sequence_number`.
    pub async fn commitment_covering(&self, stream: StreamKey, sequence_number: i64) -> Result<Option<CommitmentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commitments WHERE tenant_id = $1 AND store_id = $2 AND superseded_by IS NULL \
             AND sequence_start <= $3 AND sequence_end >= $3 ORDER BY sequence_start DESC LIMIT 1"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(sequence_number)
            .fetch_optional(self.pool())
            .await?)
    }

    /// The live commitments of a stream ending in `after+1..=up_to`, in sequence order, at most `limit`.
    pub async fn commitments_between(
        &self,
        stream: StreamKey,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<CommitmentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commitments WHERE tenant_id = $1 AND store_id = $2 AND superseded_by IS NULL \
             AND sequence_end > $3 AND sequence_end <= $4 ORDER BY sequence_end LIMIT $5"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(after)
            .bind(up_to)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// The live commitment of a stream ending exactly at `sequence_end`, or the last one.
    pub async fn commitment_ending(
        &self,
        stream: StreamKey,
        sequence_end: Option<i64>,
    ) -> Result<Option<CommitmentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commitments WHERE tenant_id = $1 AND store_id = $2 AND superseded_by IS NULL \
             AND ($3::bigint IS NULL OR sequence_end = $3) ORDER BY sequence_end DESC LIMIT 1"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(sequence_end)
            .fetch_optional(self.pool())
            .await?)
    }

    /// A stream's commitments in sequence order.
    pub async fn list_commitments(
        &self,
        stream: StreamKey,
        filter: ListFilter,
        limit: i64,
    ) -> Result<Vec<CommitmentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commitments WHERE tenant_id = $1 AND store_id = $2 \
             AND ($3::bool IS NULL OR (chain_tx_hash IS NOT NULL) = $3) AND ($4 OR superseded_by IS NULL) \
             ORDER BY sequence_start, committed_at LIMIT $5"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(filter.anchored)
            .bind(filter.include_superseded)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Live commitments not yet anchored, oldest first (across streams).
    pub async fn unanchored_commitments(&self, limit: i64) -> Result<Vec<CommitmentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commitments WHERE chain_tx_hash IS NULL AND superseded_by IS NULL \
             ORDER BY committed_at LIMIT $1"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(limit).fetch_all(self.pool()).await?)
    }

    /// Count and age in seconds of the oldest live unanchored commitment.
    pub async fn unanchored_summary(&self) -> Result<(i64, Option<f64>)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), EXTRACT(EPOCH FROM NOW() - MIN(committed_at))::float8 FROM commitments \
             WHERE chain_tx_hash IS NULL AND superseded_by IS NULL",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// Records where a commitment was anchored; `false` when it was already anchored.
    pub async fn mark_anchored(&self, batch_id: Uuid, chain_id: i64, tx_hash: &[u8], block: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE commitments SET chain_id = $2, chain_tx_hash = $3, chain_block_number = $4, anchored_at = NOW() \
             WHERE batch_id = $1 AND chain_tx_hash IS NULL",
        )
        .bind(batch_id)
        .bind(chain_id)
        .bind(tx_hash)
        .bind(block)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Streams whose head is past their last live commitment: `(stream, next start, head)`.
    pub async fn streams_with_uncommitted_events(&self, limit: i64) -> Result<Vec<(Uuid, Uuid, i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT s.tenant_id, s.store_id, COALESCE(c.last_end, 0) + 1, s.current_sequence \
             FROM sequence_counters s \
             LEFT JOIN LATERAL (SELECT MAX(sequence_end) AS last_end FROM commitments c \
               WHERE c.tenant_id = s.tenant_id AND c.store_id = s.store_id AND c.superseded_by IS NULL) c ON TRUE \
             WHERE s.current_sequence > COALESCE(c.last_end, 0) ORDER BY s.updated_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
