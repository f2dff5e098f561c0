//! Database-wide maintenance the runbook does by hand (VACUUM ANALYZE of its tables, terminating
//! idle connections), and the worker leader's published status (`worker_status`, migration 0006).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow};

use crate::error::{Error, Result};
use crate::store::Store;

/// The tables maintenance may vacuum: the sequencer's own. Names are checked against this list, so
/// no caller text ever reaches the SQL.
pub const MAINTAINED_TABLES: &[&str] = &[
    "events",
    "ves_events",
    "commitments",
    "dead_letter_events",
    "event_leaf_runs",
    "sequence_counters",
    "agent_keys",
    "api_keys",
];

/// The runbook's "Vacuum and Analyze" tables, the default.
pub const RUNBOOK_VACUUM_TABLES: &[&str] = &["events", "ves_events", "commitments"];

/// The tables `names` asks for (the runbook's when empty), or a 400 naming the unknown one.
pub fn vacuum_tables(names: Option<&[String]>) -> Result<Vec<&'static str>> {
    let Some(names) = names.filter(|n| !n.is_empty()) else {
        return Ok(RUNBOOK_VACUUM_TABLES.to_vec());
    };
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let table = MAINTAINED_TABLES.iter().find(|t| **t == name.as_str()).ok_or_else(|| {
            Error::BadRequest(format!("unknown table {name:?}: use one of {}", MAINTAINED_TABLES.join(", ")))
        })?;
        if !tables.contains(table) {
            tables.push(*table);
        }
    }
    Ok(tables)
}

/// A connection `terminate_idle_connections` ended.
#[derive(Debug, Clone, FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminatedConnection {
    pub pid: i32,
    pub application_name: Option<String>,
    pub idle_seconds: f64,
}

/// The worker leader's last report.
#[derive(Debug, Clone, FromRow)]
pub struct WorkerStatus {
    pub instance: String,
    pub anchoring_enabled: bool,
    pub circuit_state: String,
    pub circuit_opened: i64,
    pub leader_since: DateTime<Utc>,
    pub reported_at: DateTime<Utc>,
    /// Seconds since `reported_at`, by the database's clock.
    pub age_seconds: f64,
}

/// The log's indexes whose keys are random within a stream, against the buffers PostgreSQL has for them.
///
/// The legacy events' entity index (each event goes to the end of its own entity's entries) and event id
/// index (agents choose random ids) take a key from anywhere in their range with nearly every event. Once
/// they outgrow `shared_buffers`, ingest into streams that keep growing slows down as the log grows
/// (README, § Storage, "PostgreSQL settings for a large log"); the alert
/// `SequencerLogIndexesOutgrowSharedBuffers` compares the two. The signed events' indexes of event ids
/// and of entities are keyed by epoch since migrations 0024 and 0028 (`store::epochs`): their new keys go
/// into the current epoch's region, so they are not counted (the old indexes' names still are, for a
/// schema before 0026 or 0030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct IndexPressure {
    /// Those indexes, every partition of the log (`ves_events` and `legacy_events`).
    pub random_key_index_bytes: i64,
    pub shared_buffers_bytes: i64,
}

/// What the leader publishes.
#[derive(Debug, Clone)]
pub struct WorkerReport<'a> {
    pub instance: &'a str,
    pub anchoring_enabled: bool,
    pub circuit_state: &'a str,
    pub circuit_opened: i64,
    pub leader_since: DateTime<Utc>,
}

/// The log's partitions, which [`Store::analyze_log_if_never_analysed`] looks at.
pub const LOG_PARTITIONS: &[&str] = &["ves_events", "legacy_events"];

/// What [`Store::analyze_log_if_never_analysed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstAnalyse {
    /// The partitions it analysed.
    pub analysed: Vec<&'static str>,
    /// The partitions (not skipped) still without statistics: too small yet.
    pub waiting: usize,
}

/// How much a log partition holds before a first `ANALYZE` of it is worth running (about 1,500 events).
pub const FIRST_ANALYZE_BYTES: i64 = 1 << 20;

impl Store {
    /// Analyses each partition of the log ([`LOG_PARTITIONS`], except those in `skip`) that PostgreSQL has
    /// never analysed nor vacuumed (`pg_class.reltuples` stays -1 until then) once it holds `min_bytes`,
    /// and says which it analysed and how many others still have no statistics.
    ///
    /// Why: without any statistics PostgreSQL takes `tenant_id = .. AND store_id = ..` for a single row,
    /// and plans the count of an entity's events since its version mark
    /// (`store::events::entity_versions`, and the fast path's statement) through the sequence index: it
    /// then reads the whole stream since the mark for every entity a group checks. That happens on a new
    /// database until autovacuum's first pass over the log (a minute or more, however fast the log
    /// grows), and for good on a server with autovacuum off: `loadgen --base-version`, one stream, ran at
    /// 1,627-3,590 events/s without statistics and at 9,000-10,000 with them. One `ANALYZE` is enough:
    /// with statistics that say the stream is all of the table, the sequence index is no longer a cheap
    /// guess, however stale they become, and autovacuum keeps them from then on. A partition this user
    /// does not own is skipped by PostgreSQL with a warning (the caller tries each partition once).
    pub async fn analyze_log_if_never_analysed(&self, min_bytes: i64, skip: &[&str]) -> Result<FirstAnalyse> {
        let never: Vec<(String, bool)> = sqlx::query_as(
            "SELECT relname::text, pg_relation_size(oid) >= $2 FROM pg_class \
             WHERE relname = ANY($1) AND relkind = 'r' AND reltuples < 0",
        )
        .bind(LOG_PARTITIONS)
        .bind(min_bytes)
        .fetch_all(self.pool())
        .await?;
        let mut first = FirstAnalyse { analysed: Vec::new(), waiting: 0 };
        for table in LOG_PARTITIONS.iter().filter(|t| !skip.contains(t)) {
            match never.iter().find(|(n, _)| n == *table) {
                Some((_, true)) => {
                    sqlx::raw_sql(AssertSqlSafe(format!("ANALYZE {table}"))).execute(self.pool()).await?;
                    first.analysed.push(*table);
                }
                Some((_, false)) => first.waiting += 1,
                None => {}
            }
        }
        Ok(first)
    }

    /// `VACUUM ANALYZE` of each table, one statement each (VACUUM cannot run in a transaction).
    pub async fn vacuum_analyze(&self, tables: &[&'static str]) -> Result<()> {
        for table in tables {
            debug_assert!(MAINTAINED_TABLES.contains(table));
            sqlx::raw_sql(AssertSqlSafe(format!("VACUUM ANALYZE {table}"))).execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Terminates this database's connections that have been idle longer than `idle_seconds` (the
    /// runbook's "Kill idle connections", measured from when they became idle), except this one and
    /// those of roles this user may not signal.
    pub async fn terminate_idle_connections(&self, idle_seconds: u32) -> Result<Vec<TerminatedConnection>> {
        // NB: the candidates are materialised first, so pg_terminate_backend runs on them alone
        // (PostgreSQL does not promise an evaluation order of the conditions of one WHERE).
        Ok(sqlx::query_as(
            "WITH idle AS MATERIALIZED ( \
               SELECT pid, application_name, \
                 EXTRACT(EPOCH FROM NOW() - COALESCE(state_change, query_start))::float8 AS idle_seconds \
               FROM pg_stat_activity \
               WHERE datname = current_database() AND state = 'idle' AND pid <> pg_backend_pid() \
                 AND COALESCE(state_change, query_start) < NOW() - make_interval(secs => $1) \
                 AND pg_has_role(usesysid, 'MEMBER')) \
             SELECT pid, application_name, idle_seconds FROM idle WHERE pg_terminate_backend(pid)",
        )
        .bind(f64::from(idle_seconds))
        .fetch_all(self.pool())
        .await?)
    }

    /// Publishes the leader's report, but only if the connection `leader_pid` still holds the
    /// worker's advisory lock `lock_key`; returns whether it was written.
    pub async fn publish_worker_status(
        &self,
        leader_pid: i32,
        lock_key: i64,
        report: &WorkerReport<'_>,
    ) -> Result<bool> {
        // NB: pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits).
        let (high, low) = ((lock_key >> 32) & 0xffff_ffff, lock_key & 0xffff_ffff);
        let done = sqlx::query(
            "INSERT INTO worker_status (singleton, instance, anchoring_enabled, circuit_state, circuit_opened, \
               leader_since, reported_at) \
             SELECT TRUE, $1, $2, $3, $4, $5, NOW() WHERE EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
               AND pid = $6 AND granted AND classid::bigint = $7 AND objid::bigint = $8 AND objsubid = 1) \
             ON CONFLICT (singleton) DO UPDATE SET instance = EXCLUDED.instance, \
               anchoring_enabled = EXCLUDED.anchoring_enabled, circuit_state = EXCLUDED.circuit_state, \
               circuit_opened = EXCLUDED.circuit_opened, leader_since = EXCLUDED.leader_since, \
               reported_at = EXCLUDED.reported_at",
        )
        .bind(report.instance)
        .bind(report.anchoring_enabled)
        .bind(report.circuit_state)
        .bind(report.circuit_opened)
        .bind(report.leader_since)
        .bind(leader_pid)
        .bind(high)
        .bind(low)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The sizes [`IndexPressure`] compares: `pg_relation_size` of each index file, so it reads no table.
    pub async fn index_pressure(&self) -> Result<IndexPressure> {
        Ok(sqlx::query_as(
            "SELECT ((SELECT COALESCE(SUM(pg_relation_size(relid)), 0) \
                        FROM pg_partition_tree(to_regclass('idx_events_entity')) WHERE isleaf) \
                     + COALESCE(pg_relation_size(to_regclass('idx_legacy_events_entity')), 0) \
                     + COALESCE(pg_relation_size(to_regclass('uq_ves_events_event_id')), 0) \
                     + COALESCE(pg_relation_size(to_regclass('uq_legacy_events_event_id')), 0))::bigint \
                       AS random_key_index_bytes, \
                    pg_size_bytes(current_setting('shared_buffers')) AS shared_buffers_bytes",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// The leader's last report, if any leader ever published one.
    pub async fn worker_status(&self) -> Result<Option<WorkerStatus>> {
        Ok(sqlx::query_as(
            "SELECT instance, anchoring_enabled, circuit_state, circuit_opened, leader_since, reported_at, \
               EXTRACT(EPOCH FROM NOW() - reported_at)::float8 AS age_seconds FROM worker_status",
        )
        .fetch_optional(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vacuum_defaults_to_the_runbooks_tables_and_refuses_unknown_names() {
        assert_eq!(vacuum_tables(None).unwrap(), vec!["events", "ves_events", "commitments"]);
        let asked = vec!["commitments".to_string(), "commitments".to_string(), "agent_keys".to_string()];
        assert_eq!(vacuum_tables(Some(&asked)).unwrap(), vec!["commitments", "agent_keys"]);
        let bad = vec!["events; DROP TABLE events".to_string()];
        assert!(matches!(vacuum_tables(Some(&bad)), Err(Error::BadRequest(m)) if m.contains("unknown table")));
    }
}
