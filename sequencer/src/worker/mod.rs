//! Background work: the leader-elected commitment and anchoring worker, the transparency log's
//! integrator and witness client ([`tlog`], each with its own leadership), and per-replica
//! housekeeping (dead-letter retention, rate-limiter memory).
//!
//! Leadership is a PostgreSQL session advisory lock held on a dedicated connection (taken out of the
//! pool): exactly one replica per database holds it, and it passes to another replica as soon as the
//! holder's connection ends (crash, network loss), with no lease to tune. NB: hand-written because
//! no well-kept crate offers leader election over PostgreSQL advisory locks; it is a few lines.
//!
//! The leader publishes its anchoring view (breaker state) to `worker_status` every
//! [`STATUS_INTERVAL`], so that any replica's admin status reports the leader's breaker, and says
//! the report is stale when it is older than [`STATUS_STALE_AFTER`]. Every [`FIRST_ANALYZE_CHECK`]
//! it analyses, once, a partition of the log that PostgreSQL has no statistics for yet
//! ([`crate::store::Store::analyze_log_if_never_analysed`] says why).

pub mod tlog;

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use sqlx::PgConnection;
use sqlx::pool::PoolConnection;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, interval_at};

use crate::error::Error;
use crate::state::SharedState;
use crate::store::events::StreamKey;
use crate::store::maintenance::{FIRST_ANALYZE_BYTES, WorkerReport, WorkerStatus};

/// How often the leader publishes its anchoring view.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the leader looks for a log partition without statistics, until each has them: a new
/// database's first seconds of checked events run on a poor plan until then (README.md § Performance,
/// "Newer clients' load").
pub const FIRST_ANALYZE_CHECK: Duration = Duration::from_secs(1);
/// How often it looks while this replica sequences nothing.
pub const FIRST_ANALYZE_IDLE_CHECK: Duration = Duration::from_secs(60);
/// How often every replica looks for closed event id epochs it has no filter of, and the leader whether
/// the current one is full.
pub const ID_EPOCH_CHECK: Duration = Duration::from_secs(5);
/// A leader report older than this is stale: no replica leads (or the leader cannot write).
pub const STATUS_STALE_AFTER: Duration = Duration::from_secs(30);

/// Advisory lock key of the worker's leadership ("STSA_wrk").
pub const LEADER_LOCK_KEY: i64 = 0x5354_5341_5f77_726b;

/// Handles of the background tasks.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Stops every task (leadership is released with its connection).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the background tasks of a replica.
pub fn spawn(state: SharedState) -> Background {
    let mut tasks = vec![tokio::spawn(housekeeping(state.clone()))];
    // The backend pid of the leadership connection while this replica leads, else 0.
    let leader_pid = Arc::new(AtomicI32::new(0));
    tasks.push(tokio::spawn(id_epochs(state.clone(), leader_pid.clone())));
    if state.config.worker.enabled {
        if state.config.tlog.enabled && state.checkpoints.is_some() {
            tasks.push(tokio::spawn(tlog::run(state.clone())));
        }
        tasks.push(tokio::spawn(publish_status(state.clone(), leader_pid.clone())));
        tasks.push(tokio::spawn(analyse_new_log(state.clone(), leader_pid.clone())));
        tasks.push(tokio::spawn(lead(state, leader_pid)));
    }
    Background { tasks }
}

/// Every replica keeps a filter of each closed event id epoch (`store::epochs`): it builds them at start
/// and whenever it sees an epoch closed. The worker leader also closes the current epoch once the log has
/// grown by `EVENT_ID_EPOCH_EVENTS` (with the worker disabled everywhere, the epoch never closes and the
/// event id index grows as one region, as before migration 0024).
async fn id_epochs(state: SharedState, leader_pid: Arc<AtomicI32>) {
    let mut tick = interval(ID_EPOCH_CHECK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let epochs = state.store.id_epochs();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = epochs.unfiltered() => {}
        }
        if leader_pid.load(Ordering::Relaxed) != 0
            && let Err(e) = state.store.advance_event_id_epoch(state.config.worker.event_id_epoch_events).await
        {
            tracing::warn!(error = %e, "closing the event id epoch failed; the next check tries again");
        }
        if let Err(e) = state.store.refresh_id_epochs().await {
            tracing::warn!(error = %e, "building the filters of closed event id epochs failed; retrying");
        }
        state.metrics.event_id_epoch.set(i64::from(epochs.current()));
        state.metrics.event_id_filter_bytes.set(epochs.filter_bytes() as i64);
    }
}

async fn housekeeping(state: SharedState) {
    let mut tick = interval(Duration::from_secs(3600));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.store.purge_dead_letters(state.config.dead_letter_retention_days).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(purged = n, days = state.config.dead_letter_retention_days, "old dead letters purged")
            }
            Err(e) => tracing::warn!(error = %e, "dead-letter retention purge failed"),
        }
        state.limits.shrink();
    }
}

/// Holds the leadership connection while this replica leads (one advisory lock key per duty).
pub(crate) struct Leadership {
    conn: Option<PgConnection>,
    key: i64,
    duty: &'static str,
    /// The connection's backend pid while it holds the lock, else 0 (the status publisher reads it).
    pid: Arc<AtomicI32>,
}

impl Leadership {
    pub(crate) fn new(key: i64, duty: &'static str) -> Self {
        Leadership { conn: None, key, duty, pid: Arc::new(AtomicI32::new(0)) }
    }

    /// Whether this replica leads now: keeps the lock while its connection lives, else tries to take it.
    pub(crate) async fn check(&mut self, state: &SharedState) -> bool {
        if let Some(conn) = &mut self.conn {
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return true;
            }
            tracing::warn!("lost the worker leadership connection");
            self.conn = None;
            self.pid.store(0, Ordering::Relaxed);
        }
        let conn: PoolConnection<sqlx::Postgres> = match state.store.pool().acquire().await {
            Ok(c) => c,
            Err(_) => return false,
        };
        // NB: detached so that the lock's connection does not count against (or return to) the pool.
        let mut conn = conn.detach();
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(self.key).fetch_one(&mut conn).await
        {
            Ok(true) => {
                tracing::info!(duty = self.duty, "this replica now leads");
                let pid =
                    sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(&mut conn).await.unwrap_or(0);
                self.pid.store(pid, Ordering::Relaxed);
                self.conn = Some(conn);
                true
            }
            _ => false,
        }
    }
}

async fn lead(state: SharedState, leader_pid: Arc<AtomicI32>) {
    let worker = state.config.worker;
    // NB: the first commitment round comes one interval after start-up, not at once: a round that runs
    // late (a slow leadership check) would otherwise commit what a client is about to commit itself.
    let mut commit_tick = interval_at(Instant::now() + worker.commit_interval, worker.commit_interval);
    let mut anchor_tick = interval(worker.anchor_interval);
    commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    anchor_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leadership = Leadership::new(LEADER_LOCK_KEY, "commitment and anchoring worker");
    leadership.pid = leader_pid;
    loop {
        let commit = tokio::select! {
            _ = commit_tick.tick() => true,
            _ = anchor_tick.tick() => false,
        };
        let leading = leadership.check(&state).await;
        state.metrics.worker_leader.set(i64::from(leading));
        if !leading {
            continue;
        }
        if commit {
            commit_round(&state).await;
        } else if state.anchor.is_some() {
            anchor_round(&state).await;
        }
    }
}

/// While this replica leads, publishes its anchoring view every [`STATUS_INTERVAL`]. The write
/// succeeds only while the leadership connection still holds the lock (checked in SQL).
async fn publish_status(state: SharedState, leader_pid: Arc<AtomicI32>) {
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| format!("sequencer-{}", uuid::Uuid::new_v4()));
    let mut tick = interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut since: Option<(i32, DateTime<Utc>)> = None;
    loop {
        tick.tick().await;
        let pid = leader_pid.load(Ordering::Relaxed);
        if pid == 0 {
            since = None;
            continue;
        }
        let leader_since = match since {
            Some((p, at)) if p == pid => at,
            _ => since.insert((pid, Utc::now())).1,
        };
        let circuit = state.anchor.as_ref().map(|a| a.circuit());
        let report = WorkerReport {
            instance: &instance,
            anchoring_enabled: circuit.is_some(),
            circuit_state: circuit.as_ref().map_or("disabled", |c| c.state.as_str()),
            circuit_opened: circuit.as_ref().map_or(0, |c| c.opened_total as i64),
            leader_since,
        };
        match state.store.publish_worker_status(pid, LEADER_LOCK_KEY, &report).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("not publishing the worker status: the leadership lock is not held"),
            Err(e) => tracing::warn!(error = %e, "publishing the worker status failed"),
        }
    }
}

/// While this replica leads, analyses each log partition that has no statistics once it holds
/// [`FIRST_ANALYZE_BYTES`], until every partition has statistics or was analysed by this process. It
/// looks (one catalog query) every [`FIRST_ANALYZE_CHECK`] while this process sequences events, and
/// every [`FIRST_ANALYZE_IDLE_CHECK`] otherwise (other replicas' events): a database that never takes
/// legacy events keeps `legacy_events` without statistics for good.
async fn analyse_new_log(state: SharedState, leader_pid: Arc<AtomicI32>) {
    let mut tick = interval(FIRST_ANALYZE_CHECK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The log partitions this process analysed (or tried to) because they had no statistics yet.
    let mut analysed: Vec<&'static str> = Vec::new();
    let mut looked: Option<(u64, Instant)> = None;
    loop {
        tick.tick().await;
        if leader_pid.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let sequenced = state.metrics.events_sequenced.get();
        if looked.is_some_and(|(n, at)| n == sequenced && at.elapsed() < FIRST_ANALYZE_IDLE_CHECK) {
            continue;
        }
        looked = Some((sequenced, Instant::now()));
        match state.store.analyze_log_if_never_analysed(FIRST_ANALYZE_BYTES, &analysed).await {
            Ok(first) => {
                for table in first.analysed {
                    tracing::info!(table, "analysed a log partition that had no statistics yet");
                    analysed.push(table);
                }
                if first.waiting == 0 {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "analysing the log failed"),
        }
    }
}

/// The `anchoring` section of the admin status, the backlog figures excepted: the worker leader's
/// breaker. On the leader itself that is its own, live; on another replica it is the leader's last
/// report, marked stale when old; with no report at all (nobody leads the worker yet, or it is
/// disabled everywhere) the answering replica's own (`local`).
pub fn anchoring_view(enabled_here: bool, local_circuit: &str, leads: bool, leader: Option<&WorkerStatus>) -> Value {
    let mut view = match (leads, leader) {
        (true, _) => {
            json!({"enabled": enabled_here, "circuitState": local_circuit, "reportedBy": "leader", "stale": false})
        }
        (false, Some(l)) => json!({
            "enabled": l.anchoring_enabled,
            "circuitState": l.circuit_state,
            "circuitOpenedTotal": l.circuit_opened,
            "reportedBy": "leader",
            "stale": l.age_seconds > STATUS_STALE_AFTER.as_secs_f64(),
        }),
        (false, None) => return json!({"enabled": enabled_here, "circuitState": local_circuit, "reportedBy": "local"}),
    };
    if let Some(l) = leader {
        view["leader"] = json!({
            "instance": l.instance,
            "since": l.leader_since.to_rfc3339(),
            "reportedAt": l.reported_at.to_rfc3339(),
            "ageSeconds": l.age_seconds.max(0.0).round() as i64,
        });
    }
    view
}

/// Commits every stream with uncommitted events (bounded per round).
pub async fn commit_round(state: &SharedState) {
    let streams = match state.store.streams_with_uncommitted_events(1000).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list streams to commit");
            return;
        }
    };
    for (tenant_id, store_id, _, _) in streams {
        let stream = StreamKey { tenant_id, store_id };
        for _ in 0..100 {
            match state.commitments.create_next(stream, state.config.worker.commit_max_events).await {
                Ok(Some(_)) => {
                    state.metrics.commitments_created.inc();
                }
                Ok(None) => break,
                Err(e) => {
                    state.metrics.commitment_failed(&e);
                    tracing::warn!(error = %e, %tenant_id, %store_id, "automatic commitment failed");
                    break;
                }
            }
        }
    }
}

/// Anchors pending commitments, oldest first; stops early while the circuit is open.
pub async fn anchor_round(state: &SharedState) {
    let Some(anchor) = &state.anchor else { return };
    let pending = match state.store.unanchored_commitments(state.config.worker.anchor_batch_size).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list commitments to anchor");
            return;
        }
    };
    for row in pending {
        let batch_id = row.batch_id;
        match anchor.anchor_row(row).await {
            Ok((_, true)) => {
                state.metrics.commitments_anchored.inc();
            }
            Ok((_, false)) => {}
            Err(Error::Unavailable { code: "ANCHOR_CIRCUIT_OPEN", .. }) => {
                state.metrics.anchor_failures.inc();
                return;
            }
            Err(e) => {
                state.metrics.anchor_failures.inc();
                tracing::warn!(error = %e, %batch_id, "anchoring failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(circuit: &str, age_seconds: f64) -> WorkerStatus {
        WorkerStatus {
            instance: "ledger-7d9f-abcde".into(),
            anchoring_enabled: true,
            circuit_state: circuit.into(),
            circuit_opened: 1,
            leader_since: Utc::now(),
            reported_at: Utc::now(),
            age_seconds,
        }
    }

    #[test]
    fn any_replica_reports_the_leaders_breaker_and_marks_an_old_report_stale() {
        let fresh = anchoring_view(true, "closed", false, Some(&report("open", 3.0)));
        assert_eq!((fresh["circuitState"].as_str(), fresh["reportedBy"].as_str()), (Some("open"), Some("leader")));
        assert_eq!(fresh["stale"], false);
        let old = anchoring_view(true, "closed", false, Some(&report("open", 31.0)));
        assert_eq!(old["stale"], true);
        // The leader answers with its own breaker as it is now, not its last report.
        let itself = anchoring_view(true, "half_open", true, Some(&report("open", 4.0)));
        assert_eq!((itself["circuitState"].as_str(), itself["stale"].as_bool()), (Some("half_open"), Some(false)));
        assert_eq!(itself["leader"]["instance"], "ledger-7d9f-abcde");
        let nobody = anchoring_view(true, "half_open", false, None);
        assert_eq!(
            (nobody["circuitState"].as_str(), nobody["reportedBy"].as_str()),
            (Some("half_open"), Some("local"))
        );
    }
}
