//! The transparency log's tables (migration 0009): each stream's tree head and signed checkpoint,
//! its hash tiles (entry bundles are encoded from the events on request), checkpoints sent to witnesses and their cosignatures.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Store;
use super::events::StreamKey;
use crate::error::Result;

/// A stream's integrated tree.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TreeHead {
    pub size: i64,
    pub root: Vec<u8>,
    pub checkpoint: Vec<u8>,
    pub integrated_at: DateTime<Utc>,
}

/// One witness's record for one stream.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WitnessRow {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub witness: String,
    pub cosigned_size: i64,
    pub last_error: Option<String>,
    pub last_attempt_at: DateTime<Utc>,
    pub cosigned_at: Option<DateTime<Utc>>,
}

/// What one integration writes.
pub struct Integration<'a> {
    pub old_size: i64,
    pub new_size: i64,
    pub root: &'a [u8],
    pub checkpoint: &'a [u8],
    pub tiles: Vec<(i16, i64, i32, Vec<u8>)>,
}

/// Full hash tiles (256 hashes) recently read, by stream, level and index. A full tile never changes
/// once written, so it can be served from memory for as long as it is held; partial tiles are never
/// cached. Bounded by bytes (moka evicts the least useful first).
pub struct TileCache(moka::sync::Cache<(StreamKey, i16, i64), std::sync::Arc<[u8]>>);

/// Bytes of tiles the cache holds at most: 8,192 full tiles, the level-0 tiles of 2M entries.
pub const TILE_CACHE_BYTES: u64 = 64 << 20;

const FULL_TILE_BYTES: usize = 256 * 32;

impl TileCache {
    pub fn new(max_bytes: u64) -> Self {
        TileCache(
            moka::sync::Cache::builder()
                .weigher(|_, v: &std::sync::Arc<[u8]>| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .max_capacity(max_bytes)
                .build(),
        )
    }

    fn get(&self, stream: StreamKey, level: i16, idx: i64) -> Option<std::sync::Arc<[u8]>> {
        self.0.get(&(stream, level, idx))
    }

    /// Keeps a tile read from the database if it is full.
    fn offer(&self, stream: StreamKey, level: i16, idx: i64, data: &[u8]) {
        if data.len() == FULL_TILE_BYTES {
            self.0.insert((stream, level, idx), data.into());
        }
    }
}

/// A leaf run as the integrator reads it (migrations 0004 and 0012).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TlogRun {
    pub first_sequence: i64,
    pub last_sequence: i64,
    /// The transparency log leaves of events `first_sequence..=last_sequence`, 32 bytes each; NULL
    /// when the sequencer did not know them (the integrator then reads the events back).
    pub tlog_leaves: Option<Vec<u8>>,
    pub sequenced_at: Option<DateTime<Utc>>,
}

impl Store {
    /// The leaf runs overlapping each `(stream, from, to)`, in order, returned per request in the order
    /// asked: one round trip for many streams.
    pub async fn tlog_runs_many(&self, wanted: &[(StreamKey, i64, i64)]) -> Result<Vec<Vec<TlogRun>>> {
        let tenants: Vec<Uuid> = wanted.iter().map(|w| w.0.tenant_id).collect();
        let stores: Vec<Uuid> = wanted.iter().map(|w| w.0.store_id).collect();
        let froms: Vec<i64> = wanted.iter().map(|w| w.1).collect();
        let tos: Vec<i64> = wanted.iter().map(|w| w.2).collect();
        // NB: `commitments::RUNS_OVERLAPPING`'s range scan (from the run containing `from`, or the first
        // after it, through the primary key), once per stream, with the stream and bounds taken from
        // the arrays.
        /// `(position in wanted, 1-based; first, last, log leaves, numbered at)`
        type Row = (i64, i64, i64, Option<Vec<u8>>, Option<DateTime<Utc>>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT q.i, r.first_sequence, r.last_sequence, r.tlog_leaves, r.sequenced_at \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::int8[]) WITH ORDINALITY AS q(t, s, f, u, i) \
             CROSS JOIN LATERAL ( \
               SELECT r.first_sequence, r.last_sequence, r.tlog_leaves, r.sequenced_at FROM event_leaf_runs r \
               WHERE r.tenant_id = q.t AND r.store_id = q.s AND r.first_sequence <= q.u AND r.last_sequence >= q.f \
                 AND r.first_sequence >= COALESCE((SELECT first_sequence FROM event_leaf_runs \
                   WHERE tenant_id = q.t AND store_id = q.s AND first_sequence <= q.f \
                   ORDER BY first_sequence DESC LIMIT 1), q.f)) AS r \
             ORDER BY q.i, r.first_sequence",
        )
        .bind(&tenants)
        .bind(&stores)
        .bind(&froms)
        .bind(&tos)
        .fetch_all(self.pool())
        .await?;
        let mut runs = vec![Vec::new(); wanted.len()];
        for (i, first_sequence, last_sequence, tlog_leaves, sequenced_at) in rows {
            if let Some(r) = usize::try_from(i - 1).ok().and_then(|i| runs.get_mut(i)) {
                r.push(TlogRun { first_sequence, last_sequence, tlog_leaves, sequenced_at });
            }
        }
        Ok(runs)
    }

    /// Writes integrations of many streams in one statement (one round trip, atomic): each stream's
    /// tree moves only if it still has the size its integration started from (so two integrators never
    /// both append), and its tiles are written only if it moved. Returns, per integration in the order
    /// given, whether it applied (false: another integrator got there first).
    pub async fn tlog_integrate_many(&self, batch: &[(StreamKey, Integration<'_>)]) -> Result<Vec<bool>> {
        let mut tenants = Vec::with_capacity(batch.len());
        let mut stores = Vec::with_capacity(batch.len());
        let mut old_sizes = Vec::with_capacity(batch.len());
        let mut new_sizes = Vec::with_capacity(batch.len());
        let mut roots = Vec::with_capacity(batch.len());
        let mut checkpoints = Vec::with_capacity(batch.len());
        let (mut t_tenants, mut t_stores, mut levels, mut idxs, mut widths, mut datas) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (stream, w) in batch {
            tenants.push(stream.tenant_id);
            stores.push(stream.store_id);
            old_sizes.push(w.old_size);
            new_sizes.push(w.new_size);
            roots.push(w.root);
            checkpoints.push(w.checkpoint);
            for (l, i, wd, d) in &w.tiles {
                t_tenants.push(stream.tenant_id);
                t_stores.push(stream.store_id);
                levels.push(*l);
                idxs.push(*i);
                widths.push(*wd);
                datas.push(d.as_slice());
            }
        }
        // NB: every data-modifying CTE runs exactly once, to completion, whether or not the final
        // SELECT reads it; the tiles' INSERT reads `moved`, so a stream whose tree did not move gets
        // no tile written.
        let moved: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "WITH input AS ( \
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::int8[], $5::bytea[], $6::bytea[]) \
                 AS i(tenant_id, store_id, old_size, new_size, root, checkpoint)), \
             updated AS ( \
               UPDATE tlog_trees t SET size = i.new_size, root = i.root, checkpoint = i.checkpoint, \
                 integrated_at = NOW() \
               FROM input i WHERE i.old_size > 0 AND t.tenant_id = i.tenant_id AND t.store_id = i.store_id \
                 AND t.size = i.old_size \
               RETURNING t.tenant_id, t.store_id), \
             inserted AS ( \
               INSERT INTO tlog_trees (tenant_id, store_id, size, root, checkpoint) \
               SELECT tenant_id, store_id, new_size, root, checkpoint FROM input WHERE old_size = 0 \
               ON CONFLICT (tenant_id, store_id) DO NOTHING RETURNING tenant_id, store_id), \
             moved AS (SELECT * FROM updated UNION ALL SELECT * FROM inserted), \
             tiles AS ( \
               INSERT INTO tlog_tiles (tenant_id, store_id, level, idx, width, data) \
               SELECT k.tenant_id, k.store_id, k.level, k.idx, k.width, k.data \
               FROM UNNEST($7::uuid[], $8::uuid[], $9::int2[], $10::int8[], $11::int4[], $12::bytea[]) \
                 AS k(tenant_id, store_id, level, idx, width, data) \
               WHERE EXISTS (SELECT 1 FROM moved m WHERE m.tenant_id = k.tenant_id AND m.store_id = k.store_id) \
               ON CONFLICT (tenant_id, store_id, level, idx) DO UPDATE SET width = EXCLUDED.width, data = EXCLUDED.data \
               WHERE tlog_tiles.width < EXCLUDED.width RETURNING 1) \
             SELECT tenant_id, store_id FROM moved",
        )
        .bind(&tenants)
        .bind(&stores)
        .bind(&old_sizes)
        .bind(&new_sizes)
        .bind(&roots)
        .bind(&checkpoints)
        .bind(&t_tenants)
        .bind(&t_stores)
        .bind(&levels)
        .bind(&idxs)
        .bind(&widths)
        .bind(&datas)
        .fetch_all(self.pool())
        .await?;
        let moved: std::collections::HashSet<(Uuid, Uuid)> = moved.into_iter().collect();
        Ok(batch.iter().map(|(s, _)| moved.contains(&(s.tenant_id, s.store_id))).collect())
    }

    /// Streams whose head is beyond their integrated tree: `(stream, head, tree size)`, oldest change
    /// first; with `since`, only among the streams whose counter changed at or after it.
    ///
    /// NB: the full form joins every stream's counter to its tree: 55 to 118 ms of PostgreSQL time (a
    /// parallel hash join) at 10^5 streams, which five rounds a second would spend even on an idle
    /// log. With `since`, a scan of the counters alone (6 ms at 10^5) keeps the recently written ones
    /// and probes their trees by primary key. The `LIMIT 1` keeps the probe a nested loop in generic
    /// plans too: as a correlated subquery in the filter the planner costed it for every counter, and
    /// the estimate (8 x 10^5) switched on JIT compilation, 265 ms per execution.
    pub async fn tlog_streams_behind(
        &self,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<(StreamKey, i64, i64)>> {
        let rows: Vec<(Uuid, Uuid, i64, i64)> = match since {
            None => {
                sqlx::query_as(
                    "SELECT c.tenant_id, c.store_id, c.current_sequence, COALESCE(t.size, 0) \
                     FROM sequence_counters c LEFT JOIN tlog_trees t USING (tenant_id, store_id) \
                     WHERE c.current_sequence > COALESCE(t.size, 0) ORDER BY c.updated_at LIMIT $1",
                )
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            Some(since) => {
                sqlx::query_as(
                    "SELECT c.tenant_id, c.store_id, c.current_sequence, COALESCE(t.size, 0) \
                     FROM sequence_counters c LEFT JOIN LATERAL ( \
                       SELECT size FROM tlog_trees t \
                       WHERE t.tenant_id = c.tenant_id AND t.store_id = c.store_id LIMIT 1) AS t ON TRUE \
                     WHERE c.updated_at >= $1 AND c.current_sequence > COALESCE(t.size, 0) \
                     ORDER BY c.updated_at LIMIT $2",
                )
                .bind(since)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        Ok(rows.into_iter().map(|(t, s, head, size)| (StreamKey { tenant_id: t, store_id: s }, head, size)).collect())
    }

    /// A stream's integrated tree (none before its first integration).
    pub async fn tlog_head(&self, stream: StreamKey) -> Result<Option<TreeHead>> {
        Ok(sqlx::query_as(
            "SELECT size, root, checkpoint, integrated_at FROM tlog_trees WHERE tenant_id = $1 AND store_id = $2",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Every stream's tree: `(stream, size, checkpoint)`.
    pub async fn tlog_all_heads(&self) -> Result<Vec<(StreamKey, i64, Vec<u8>)>> {
        let rows: Vec<(Uuid, Uuid, i64, Vec<u8>)> =
            sqlx::query_as("SELECT tenant_id, store_id, size, checkpoint FROM tlog_trees")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(t, s, n, c)| (StreamKey { tenant_id: t, store_id: s }, n, c)).collect())
    }

    /// Hash tiles by key (level and index), with their stored data. Full tiles come from the
    /// store's tile cache when it holds them; the rest in one round trip.
    pub async fn tlog_tiles(&self, stream: StreamKey, keys: &[(i16, i64)]) -> Result<HashMap<(i16, i64), Vec<u8>>> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut levels = Vec::new();
        let mut idxs = Vec::new();
        for &(level, idx) in keys {
            match self.tiles.get(stream, level, idx) {
                Some(data) => {
                    found.insert((level, idx), data.to_vec());
                }
                None if !found.contains_key(&(level, idx)) => {
                    levels.push(level);
                    idxs.push(idx);
                }
                None => {}
            }
        }
        if levels.is_empty() {
            return Ok(found);
        }
        // NB: one primary-key probe per wanted key, in the LATERAL subquery: `level = ANY AND idx = ANY`
        // read (and de-TOASTed, 8 KiB each) every combination, and a plain join against UNNEST let the
        // planner scan every tile of the stream. The `LIMIT 1` (the key is the primary key) keeps the
        // subquery from being flattened into that same join: without it, on a table whose statistics
        // predate its growth, the planner scanned all 3,955 tiles of a 10^6-entry stream (3 ms).
        let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT k.level, k.idx, t.data FROM UNNEST($3::int2[], $4::int8[]) AS k(level, idx) \
             CROSS JOIN LATERAL (SELECT data FROM tlog_tiles \
               WHERE tenant_id = $1 AND store_id = $2 AND level = k.level AND idx = k.idx LIMIT 1) t",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(&levels)
        .bind(&idxs)
        .fetch_all(self.pool())
        .await?;
        for (level, idx, data) in rows {
            self.tiles.offer(stream, level, idx, &data);
            found.insert((level, idx), data);
        }
        Ok(found)
    }

    /// A full tile from the tile cache, without a round trip: it was read from the database before,
    /// so it is part of the integrated tree (heads only grow) and its bytes never change.
    pub fn tlog_cached_full_tile(&self, stream: StreamKey, level: i16, idx: i64) -> Option<std::sync::Arc<[u8]>> {
        self.tiles.get(stream, level, idx)
    }

    /// One tile as stored: `(width, data)`.
    pub async fn tlog_tile(&self, stream: StreamKey, level: i16, idx: i64) -> Result<Option<(i32, Vec<u8>)>> {
        let tile: Option<(i32, Vec<u8>)> = sqlx::query_as(
            "SELECT width, data FROM tlog_tiles WHERE tenant_id = $1 AND store_id = $2 AND level = $3 AND idx = $4",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(level)
        .bind(idx)
        .fetch_optional(self.pool())
        .await?;
        if let Some((_, data)) = &tile {
            self.tiles.offer(stream, level, idx, data);
        }
        Ok(tile)
    }

    /// The first leaf with this hash, as the index of its leaf tile (level 0) and its position in that
    /// tile, found by scanning the stream's leaf tiles in the database (no per-event index is kept: it
    /// would cost every event a write).
    pub async fn tlog_find_leaf(&self, stream: StreamKey, leaf: &[u8; 32]) -> Result<Option<(u64, u64)>> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT idx, data FROM tlog_tiles WHERE tenant_id = $1 AND store_id = $2 AND level = 0 \
             AND position($3::bytea IN data) > 0 ORDER BY idx",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(&leaf[..])
        .fetch_all(self.pool())
        .await?;
        for (idx, data) in rows {
            if let Some(i) = data.chunks_exact(32).position(|h| h == leaf) {
                return Ok(Some((idx as u64, i as u64)));
            }
        }
        Ok(None)
    }

    /// The sequence number of an event of this stream.
    /// A signed event is looked for only in the id epochs this process cannot rule out
    /// ([`crate::store::epochs::IdEpochs::lookup`]).
    pub async fn tlog_sequence_of_event(&self, stream: StreamKey, event_id: Uuid) -> Result<Option<i64>> {
        let (maybe, first) = self.id_epochs().lookup(stream.tenant_id, &[event_id]);
        // NB: the stream as a column (`store::epochs`: "Lookups take the tenant as a column").
        let sql = format!(
            "SELECT sequence_number FROM ves_events WHERE {} \
                AND (tenant_id, store_id, event_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[])) \
             UNION ALL \
             SELECT sequence_number FROM legacy_events \
              WHERE (tenant_id, store_id, event_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]))",
            crate::store::epochs::epochs_condition("$4", "$5")
        );
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(vec![stream.tenant_id])
            .bind(vec![stream.store_id])
            .bind(vec![event_id])
            .bind(maybe)
            .bind(first)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Records a checkpoint about to be sent to witnesses.
    pub async fn tlog_record_checkpoint(&self, stream: StreamKey, size: i64, checkpoint: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO tlog_checkpoints (tenant_id, store_id, size, checkpoint) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(size)
        .bind(checkpoint)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A witness's record for a stream (cosigned size 0 when it never cosigned).
    pub async fn tlog_witness(&self, stream: StreamKey, witness: &str) -> Result<i64> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT cosigned_size FROM tlog_witness_state WHERE tenant_id = $1 AND store_id = $2 AND witness = $3",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(witness)
        .fetch_optional(self.pool())
        .await?;
        Ok(size.unwrap_or(0))
    }

    /// Stores a witness's cosignature of the checkpoint at `size` and moves its record there.
    pub async fn tlog_store_cosignature(&self, stream: StreamKey, witness: &str, size: i64, lines: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO tlog_cosignatures (tenant_id, store_id, size, witness, signature) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, store_id, size, witness) DO UPDATE SET signature = EXCLUDED.signature",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(size)
        .bind(witness)
        .bind(lines)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO tlog_witness_state (tenant_id, store_id, witness, cosigned_size, last_error, cosigned_at) \
             VALUES ($1, $2, $3, $4, NULL, NOW()) ON CONFLICT (tenant_id, store_id, witness) DO UPDATE \
             SET cosigned_size = EXCLUDED.cosigned_size, last_error = NULL, last_attempt_at = NOW(), cosigned_at = NOW()",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(witness)
        .bind(size)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records what a witness said it last cosigned (a 409 answer) or why it refused.
    pub async fn tlog_witness_failed(
        &self,
        stream: StreamKey,
        witness: &str,
        cosigned_size: Option<i64>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tlog_witness_state (tenant_id, store_id, witness, cosigned_size, last_error) \
             VALUES ($1, $2, $3, COALESCE($4, 0), $5) ON CONFLICT (tenant_id, store_id, witness) DO UPDATE \
             SET cosigned_size = COALESCE($4, tlog_witness_state.cosigned_size), last_error = $5, last_attempt_at = NOW()",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(witness)
        .bind(cosigned_size)
        .bind(error)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The cosignature lines of the checkpoint at `size`.
    pub async fn tlog_cosignatures(&self, stream: StreamKey, size: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT signature FROM tlog_cosignatures WHERE tenant_id = $1 AND store_id = $2 AND size = $3 ORDER BY witness",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(size)
        .fetch_all(self.pool())
        .await?)
    }

    /// The newest cosigned checkpoint covering entry `index`: `(size, checkpoint)`.
    pub async fn tlog_newest_cosigned(&self, stream: StreamKey, index: i64) -> Result<Option<(i64, Vec<u8>)>> {
        Ok(sqlx::query_as(
            "SELECT c.size, c.checkpoint FROM tlog_checkpoints c WHERE c.tenant_id = $1 AND c.store_id = $2 \
             AND c.size > $3 AND EXISTS (SELECT 1 FROM tlog_cosignatures s WHERE s.tenant_id = c.tenant_id \
             AND s.store_id = c.store_id AND s.size = c.size) ORDER BY c.size DESC LIMIT 1",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(index)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Every witness record, optionally of one tenant (admin status).
    pub async fn tlog_witness_rows(&self, tenant: Option<Uuid>) -> Result<Vec<WitnessRow>> {
        Ok(sqlx::query_as(
            "SELECT tenant_id, store_id, witness, cosigned_size, last_error, last_attempt_at, cosigned_at \
             FROM tlog_witness_state WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY tenant_id, store_id, witness",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?)
    }
}
