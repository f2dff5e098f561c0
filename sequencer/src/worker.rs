//! Background work: the leader-elected commitment and anchoring worker, and per-replica housekeeping
//! (dead-letter retention, rate-limiter memory).
//!
//! Leadership is a PostgreSQL session advisory lock held on a dedicated connection (taken out of the
//! pool): exactly one replica per database holds it, and it passes to another replica as soon as the
//! holder's connection ends (crash, network loss), with no lease to tune. NB: hand-written because
//! no well-kept crate offers leader election over PostgreSQL advisory locks; it is a few lines.

use std::time::Duration;

use sqlx::PgConnection;
use sqlx::pool::PoolConnection;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};

use crate::api::SharedState;
use crate::error::Error;
use crate::store::events::StreamKey;

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
    if state.config.worker.enabled {
        if state.config.tlog.enabled && state.checkpoints.is_some() {
            tasks.push(tokio::spawn(crate::tlog::service::run(state.clone())));
        }
        tasks.push(tokio::spawn(lead(state)));
    }
    Background { tasks }
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
}

impl Leadership {
    pub(crate) fn new(key: i64, duty: &'static str) -> Self {
        Leadership { conn: None, key, duty }
    }

    /// Whether this replica leads now: keeps the lock while its connection lives, else tries to take it.
    pub(crate) async fn check(&mut self, state: &SharedState) -> bool {
        if let Some(conn) = &mut self.conn {
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return true;
            }
            tracing::warn!("lost the worker leadership connection");
            self.conn = None;
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
                self.conn = Some(conn);
                true
            }
            _ => false,
        }
    }
}

async fn lead(state: SharedState) {
    let worker = state.config.worker;
    let mut commit_tick = interval(worker.commit_interval);
    let mut anchor_tick = interval(worker.anchor_interval);
    commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    anchor_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leadership = Leadership::new(LEADER_LOCK_KEY, "commitment and anchoring worker");
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
