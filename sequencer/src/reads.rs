//! Where reads go: the primary (`DATABASE_URL`), or a PostgreSQL streaming standby of it
//! (`READ_DATABASE_URL`) while the standby is fresh enough.
//!
//! **Which reads.** The event log's reads (a stream's range and head, an entity's history), commitments,
//! inclusion and consistency proofs, signed checkpoints, the transparency log's tiles, checkpoint and
//! proofs, and verification (`/api/v1/admin/verify` and its jobs). Everything else stays on the
//! primary: writes and the sequencing path, API-key and agent-key lookups (a key just created or
//! revoked must count at once), cursors (an agent reads back what it acknowledged), dead letters, the
//! admin status and mutations, and the worker's leader duties.
//!
//! **Fresh enough.** A background task samples, every `READ_REPLICA_CHECK_INTERVAL_MS`, the primary's
//! flushed WAL position (`pg_current_wal_flush_lsn()`) and then the standby's replayed position
//! (`pg_last_wal_replay_lsn()`). The standby holds everything the primary had flushed at the newest
//! sample whose position it has replayed: that sample's time is when the standby was last known
//! fresh, and the time since then is its lag (`sequencer_read_replica_lag_seconds`). The standby
//! serves reads while it is reachable, in recovery, and that lag is at most
//! `READ_REPLICA_MAX_LAG_MS`; otherwise reads go to the primary. Positions are compared rather than
//! `now() - pg_last_xact_replay_timestamp()`, because the latter grows without bound on an idle
//! primary (no new transaction to replay) although the standby is fully caught up; an idle primary
//! keeps its position, so a caught-up standby has lag of about one interval at most.
//!
//! **Read-your-writes.** A read on the standby may miss up to `READ_REPLICA_MAX_LAG_MS` of the newest
//! writes: a client that just got a receipt may not find its event yet, and a proof of a just-sequenced
//! event (or a just-created commitment) may answer 404 until the standby replays it. Clients that need
//! their own write back at once should retry a 404 for that long.
//!
//! **Failure.** A read that fails on the standby because it is unreachable (or a recovery conflict
//! cancelled the query) is run again on the primary, and the standby is not used again until the next
//! check reaches it: stopping the standby costs no request an error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::config::ReadReplicaConfig;
use crate::error::{Error, Result};
use crate::metrics::{Metrics, ReadTarget};
use crate::store::Store;
use crate::store::replica::{Lsn, primary_flush_lsn, standby_replay_lsn};

/// Hands each read the store to run on, and runs it again on the primary when the replica fails.
pub struct ReadRouter {
    primary: Store,
    replica: Option<Arc<Replica>>,
    served_by_replica: Counter,
    served_by_primary: Counter,
    fallbacks: Counter,
}

struct Replica {
    store: Store,
    config: ReadReplicaConfig,
    health: Mutex<Health>,
}

/// What the checks found out about the replica.
struct Health {
    /// The last check reached it (and no read has failed on it since).
    reachable: bool,
    /// The last check found it in recovery: a standby, whose replay position means something.
    standby: bool,
    /// It holds everything the primary had flushed at this instant (`None`: not known).
    fresh_as_of: Option<Instant>,
    /// When checking started: the lag is counted from here while `fresh_as_of` is unknown.
    since: Instant,
    /// The primary's recent positions.
    history: History,
    /// What the last check concluded (its changes are logged).
    said: Option<Verdict>,
}

/// Where reads go, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Replica,
    Unreachable,
    NotStandby,
    Lags,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Replica => "fresh",
            Verdict::Unreachable => "unreachable",
            Verdict::NotStandby => "not_standby",
            Verdict::Lags => "lags",
        }
    }
}

impl Health {
    fn new(now: Instant) -> Self {
        Health {
            reachable: false,
            standby: false,
            fresh_as_of: None,
            since: now,
            history: History::default(),
            said: None,
        }
    }

    /// Time since the replica was last known fresh (since checking started when never).
    fn lag(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fresh_as_of.unwrap_or(self.since))
    }

    fn verdict(&self, now: Instant, max_lag: Duration) -> Verdict {
        if !self.reachable {
            Verdict::Unreachable
        } else if !self.standby {
            Verdict::NotStandby
        } else if self.fresh_as_of.is_none() || self.lag(now) > max_lag {
            Verdict::Lags
        } else {
            Verdict::Replica
        }
    }

    fn serves(&self, now: Instant, max_lag: Duration) -> bool {
        self.verdict(now, max_lag) == Verdict::Replica
    }
}

/// The primary's flushed WAL positions at recent instants, oldest first; positions only grow.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<(Instant, Lsn)>,
}

/// Samples kept at most, whatever the interval (a bound on memory, not on correctness: a replica
/// behind every kept sample is simply not used).
const MAX_SAMPLES: usize = 4096;

impl History {
    /// Records that the primary had flushed up to `lsn` at `at`, forgetting samples older than `keep`
    /// (the newest is always kept).
    pub fn record(&mut self, at: Instant, lsn: Lsn, keep: Duration) {
        // NB: for "the newest sample at or below a position" only the newest of equal positions counts.
        if self.samples.back().is_some_and(|&(_, last)| last == lsn) {
            self.samples.pop_back();
        }
        self.samples.push_back((at, lsn));
        while self.samples.len() > 1
            && (self.samples.len() > MAX_SAMPLES
                || self.samples.front().is_some_and(|&(t, _)| at.saturating_duration_since(t) > keep))
        {
            self.samples.pop_front();
        }
    }

    /// The newest instant at which the primary had flushed no more than `replayed`: a standby that
    /// replayed up to `replayed` holds everything committed on the primary before then. `None` when
    /// the standby is behind every kept sample.
    pub fn fresh_as_of(&self, replayed: Lsn) -> Option<Instant> {
        self.samples.iter().rev().find(|&&(_, lsn)| lsn <= replayed).map(|&(at, _)| at)
    }

    /// The oldest kept sample's instant.
    pub fn oldest(&self) -> Option<Instant> {
        self.samples.front().map(|&(at, _)| at)
    }
}

/// Errors of a read on the replica that the primary may not have: no usable connection (or a session
/// guard's timeout), and a query cancelled by a recovery conflict (SQLSTATE class 40 on a standby).
fn replica_failed(e: &Error) -> bool {
    let Error::Database(e) = e else { return false };
    crate::error::database_unavailable(e)
        || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("40")))
}

impl ReadRouter {
    /// Reads on `replica` while it is fresh enough (once [`ReadRouter::spawn_checks`] says so), else on
    /// `primary`.
    pub fn new(primary: Store, replica: Option<Store>, config: ReadReplicaConfig, metrics: &Metrics) -> Self {
        let counter = |target| metrics.reads_routed.get_or_create(&crate::metrics::ReadTargetLabels { target }).clone();
        ReadRouter {
            primary,
            replica: replica
                .map(|store| Arc::new(Replica { store, config, health: Mutex::new(Health::new(Instant::now())) })),
            served_by_replica: counter(ReadTarget::Replica),
            served_by_primary: counter(ReadTarget::Primary),
            fallbacks: metrics.read_replica_fallbacks.clone(),
        }
    }

    /// Whether a read replica is configured at all.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// The replica, when reads go there now.
    fn replica_now(&self) -> Option<&Replica> {
        let replica = self.replica.as_deref()?;
        let health = replica.health.lock().unwrap_or_else(|e| e.into_inner());
        health.serves(Instant::now(), replica.config.max_lag).then_some(replica)
    }

    /// Whether reads go to the replica now.
    pub fn replica_in_use(&self) -> bool {
        self.replica_now().is_some()
    }

    /// Runs `read` on the store reads go to now; when it fails on the replica for a reason the primary
    /// may not share ([`replica_failed`]), runs it again on the primary and stops using the replica
    /// until the next check reaches it.
    pub async fn read<T, F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn(Store) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if let Some(replica) = self.replica_now() {
            self.served_by_replica.inc();
            match read(replica.store.clone()).await {
                Err(e) if replica_failed(&e) => {
                    // NB: the error names no URL; the redacting log writer would scrub a password anyway.
                    tracing::warn!(error = %e, "a read failed on the read replica; served by the primary instead");
                    replica.health.lock().unwrap_or_else(|e| e.into_inner()).reachable = false;
                    self.fallbacks.inc();
                }
                done => return done,
            }
        }
        self.served_by_primary.inc();
        read(self.primary.clone()).await
    }

    /// The store reads go to now, for work that holds one store throughout (a verification job).
    pub fn store(&self) -> Store {
        match self.replica_now() {
            Some(replica) => {
                self.served_by_replica.inc();
                replica.store.clone()
            }
            None => {
                self.served_by_primary.inc();
                self.primary.clone()
            }
        }
    }

    /// The replica as the admin status shows it (`database.readReplica`).
    pub fn status(&self) -> Value {
        let Some(replica) = self.replica.as_deref() else {
            return json!({"configured": false, "inUse": false});
        };
        let now = Instant::now();
        let health = replica.health.lock().unwrap_or_else(|e| e.into_inner());
        let pool = replica.store.pool();
        let verdict = health.verdict(now, replica.config.max_lag);
        json!({
            "configured": true,
            "inUse": verdict == Verdict::Replica,
            "state": verdict.as_str(),
            "reachable": health.reachable,
            "standby": health.standby,
            "lagSeconds": (health.lag(now).as_secs_f64() * 1000.0).round() / 1000.0,
            "maxLagSeconds": replica.config.max_lag.as_secs_f64(),
            "pool": {"size": pool.size(), "idle": pool.num_idle(), "max": replica.store.max_connections()},
        })
    }

    /// Sets the replica's gauges (scraped by `/metrics`).
    pub fn export_metrics(&self, m: &Metrics) {
        let Some(replica) = self.replica.as_deref() else { return };
        let now = Instant::now();
        let health = replica.health.lock().unwrap_or_else(|e| e.into_inner());
        m.read_replica_lag.set(health.lag(now).as_secs_f64());
        m.read_replica_in_use.set(i64::from(health.serves(now, replica.config.max_lag)));
    }

    /// Starts the checks of the replica against `primary_url` every interval, each probe bounded by
    /// `timeout`; `None` when no replica is configured. Until the first check passes, reads go to the
    /// primary.
    pub fn spawn_checks(
        &self,
        primary_url: &SecretString,
        replica_url: &SecretString,
        timeout: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let replica = self.replica.clone()?;
        let (primary_url, replica_url) = (primary_url.clone(), replica_url.clone());
        Some(tokio::spawn(async move {
            let (Ok(primary), Ok(standby)) = (
                crate::store::connect_options(primary_url.expose_secret()),
                crate::store::connect_options(replica_url.expose_secret()),
            ) else {
                tracing::error!("DATABASE_URL or READ_DATABASE_URL does not parse: reads stay on the primary");
                return;
            };
            let mut checks = Checks { primary: Probe::new(primary, timeout), standby: Probe::new(standby, timeout) };
            loop {
                checks.round(&replica).await;
                tokio::time::sleep(replica.config.check_interval).await;
            }
        }))
    }
}

/// One connection of the checks, reopened when it fails.
struct Probe {
    options: sqlx::postgres::PgConnectOptions,
    timeout: Duration,
    conn: Option<sqlx::PgConnection>,
}

impl Probe {
    fn new(options: sqlx::postgres::PgConnectOptions, timeout: Duration) -> Self {
        Probe { options: options.application_name("stateset-sequencer-replica-check"), timeout, conn: None }
    }

    /// The connection, opened first when needed (within the timeout).
    async fn conn(&mut self) -> Option<&mut sqlx::PgConnection> {
        use sqlx::Connection;
        if self.conn.is_none() {
            let fresh = tokio::time::timeout(self.timeout, sqlx::PgConnection::connect_with(&self.options)).await;
            self.conn = fresh.ok().and_then(|c| c.ok());
        }
        self.conn.as_mut()
    }

    /// The primary's flushed position, or `None` (and the connection closed) when it does not answer
    /// within the timeout.
    async fn primary_flush_lsn(&mut self) -> Option<Lsn> {
        let timeout = self.timeout;
        let answer = tokio::time::timeout(timeout, primary_flush_lsn(self.conn().await?)).await;
        self.settle(answer)
    }

    /// The standby's replayed position (`Some(None)`: not in recovery), or `None` (and the connection
    /// closed) when it does not answer within the timeout.
    async fn standby_replay_lsn(&mut self) -> Option<Option<Lsn>> {
        let timeout = self.timeout;
        let answer = tokio::time::timeout(timeout, standby_replay_lsn(self.conn().await?)).await;
        self.settle(answer)
    }

    fn settle<T>(&mut self, answer: std::result::Result<Result<T>, tokio::time::error::Elapsed>) -> Option<T> {
        match answer {
            Ok(Ok(value)) => Some(value),
            _ => {
                self.conn = None;
                None
            }
        }
    }
}

struct Checks {
    primary: Probe,
    standby: Probe,
}

impl Checks {
    /// Samples the primary's position, then the standby's, and updates the replica's health.
    async fn round(&mut self, replica: &Replica) {
        let sampled_at = Instant::now();
        let primary = self.primary.primary_flush_lsn().await;
        let standby = self.standby.standby_replay_lsn().await;
        let now = Instant::now();
        let max_lag = replica.config.max_lag;
        let mut health = replica.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lsn) = primary {
            health.history.record(sampled_at, lsn, max_lag + 2 * replica.config.check_interval);
        }
        health.reachable = standby.is_some();
        health.standby = matches!(standby, Some(Some(_)));
        if let Some(Some(replayed)) = standby {
            health.fresh_as_of = match health.history.fresh_as_of(replayed) {
                Some(at) => Some(at),
                // Behind every kept sample: fresh as of before the oldest, if that much is known.
                None => health.fresh_as_of.filter(|&t| health.history.oldest().is_none_or(|oldest| t < oldest)),
            };
        }
        let verdict = health.verdict(now, max_lag);
        if health.said != Some(verdict) {
            health.said = Some(verdict);
            let lag_ms = health.lag(now).as_millis() as u64;
            match verdict {
                Verdict::Replica => tracing::info!(lag_ms, "reads go to the read replica"),
                Verdict::Unreachable => tracing::warn!("the read replica is unreachable: reads go to the primary"),
                Verdict::NotStandby => tracing::warn!(
                    "READ_DATABASE_URL is not a standby in recovery (a primary, or a promoted standby): reads go to \
                     the primary"
                ),
                Verdict::Lags => tracing::warn!(
                    lag_ms,
                    max_lag_ms = max_lag.as_millis() as u64,
                    "the read replica lags behind the primary: reads go to the primary"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_fresh_as_of_the_newest_primary_position_it_replayed() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = History::default();
        let keep = Duration::from_secs(10);
        h.record(at(0), 100, keep);
        h.record(at(500), 200, keep);
        h.record(at(1000), 300, keep);
        assert_eq!(h.fresh_as_of(300), Some(at(1000)), "caught up");
        assert_eq!(h.fresh_as_of(250), Some(at(500)), "between samples: fresh as of the older one");
        assert_eq!(h.fresh_as_of(99), None, "behind every sample");
        // An idle primary keeps its position: a caught-up standby stays fresh as of the newest sample.
        h.record(at(1500), 300, keep);
        h.record(at(2000), 300, keep);
        assert_eq!(h.fresh_as_of(300), Some(at(2000)));
        assert_eq!(h.samples.len(), 3, "equal positions are kept once");
    }

    #[test]
    fn old_samples_are_forgotten_but_never_the_newest() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = History::default();
        let keep = Duration::from_millis(1000);
        for i in 0..10u64 {
            h.record(at(i * 500), i * 10, keep);
        }
        assert_eq!(h.oldest(), Some(at(3500)));
        assert_eq!(h.fresh_as_of(0), None);
        let mut h = History::default();
        h.record(at(0), 5, keep);
        h.record(at(60_000), 5, keep);
        assert_eq!(h.fresh_as_of(5), Some(at(60_000)));
    }

    #[test]
    fn the_replica_serves_only_while_reachable_a_standby_and_within_the_bound() {
        let t0 = Instant::now();
        let max = Duration::from_secs(5);
        let mut h = Health::new(t0);
        assert!(!h.serves(t0, max), "not before the first check");
        h.reachable = true;
        h.standby = true;
        h.fresh_as_of = Some(t0);
        assert!(h.serves(t0 + Duration::from_secs(5), max));
        assert!(!h.serves(t0 + Duration::from_millis(5001), max), "the lag grows between checks too");
        h.standby = false;
        assert!(!h.serves(t0, max));
        h.standby = true;
        h.reachable = false;
        assert!(!h.serves(t0, max));
        assert_eq!(Health::new(t0).lag(t0 + Duration::from_secs(3)), Duration::from_secs(3));
    }

    /// A pool on a port nothing listens on, told apart from another by its size.
    fn unreachable_store(max_connections: u32) -> Store {
        let settings = crate::store::PoolSettings {
            max_connections,
            min_connections: 0,
            acquire_timeout: Duration::from_millis(200),
            guards: Default::default(),
        };
        Store::connect_lazy("postgres://nobody@127.0.0.1:1/none", settings, Default::default()).unwrap()
    }

    #[tokio::test]
    async fn a_read_that_fails_on_the_replica_is_served_by_the_primary_and_the_replica_is_left() {
        let metrics = Metrics::new();
        let router =
            ReadRouter::new(unreachable_store(7), Some(unreachable_store(3)), ReadReplicaConfig::default(), &metrics);
        assert!(!router.replica_in_use(), "not before a check says the replica is fresh");
        {
            let mut health = router.replica.as_ref().unwrap().health.lock().unwrap();
            (health.reachable, health.standby, health.fresh_as_of) = (true, true, Some(Instant::now()));
        }
        assert!(router.replica_in_use());
        // The "primary" answers without a database; the replica's pool cannot connect.
        let read = |store: Store| async move {
            match store.max_connections() {
                7 => Ok("primary"),
                _ => store.ping().await.map(|()| "replica"),
            }
        };
        assert_eq!(router.read(read).await.unwrap(), "primary");
        assert_eq!(metrics.read_replica_fallbacks.get(), 1);
        assert!(!router.replica_in_use(), "left until the next check reaches it");
        assert_eq!(router.status()["reachable"], false);
        assert_eq!(router.read(read).await.unwrap(), "primary");
        assert_eq!(metrics.read_replica_fallbacks.get(), 1, "the second read went to the primary at once");
        let routed = |target| metrics.reads_routed.get_or_create(&crate::metrics::ReadTargetLabels { target }).get();
        assert_eq!((routed(ReadTarget::Primary), routed(ReadTarget::Replica)), (2, 1));
    }

    #[tokio::test]
    async fn an_error_of_the_read_itself_is_not_retried_on_the_primary() {
        let metrics = Metrics::new();
        let router =
            ReadRouter::new(unreachable_store(7), Some(unreachable_store(3)), ReadReplicaConfig::default(), &metrics);
        {
            let mut health = router.replica.as_ref().unwrap().health.lock().unwrap();
            (health.reachable, health.standby, health.fresh_as_of) = (true, true, Some(Instant::now()));
        }
        let read = |store: Store| async move {
            match store.max_connections() {
                7 => Ok(()),
                _ => Err(Error::NotFound("not replayed yet".into())),
            }
        };
        assert!(matches!(router.read(read).await, Err(Error::NotFound(_))), "a 404 of the replica stands");
        assert_eq!(metrics.read_replica_fallbacks.get(), 0);
        assert!(router.replica_in_use());
        assert_eq!(router.status()["configured"], true);
    }

    #[test]
    fn only_failures_the_primary_may_not_share_are_retried_there() {
        assert!(replica_failed(&Error::Database(sqlx::Error::PoolTimedOut)));
        assert!(!replica_failed(&Error::Database(sqlx::Error::RowNotFound)));
        assert!(!replica_failed(&Error::NotFound("Commitment not found".into())));
    }
}
