//! Prometheus metrics: one typed struct, registered once; the hot path calls methods on fields and
//! never looks series up by string.
//!
//! Names are the ones the runbook greps for (`db_pool`, `ratelimit`, `cache`, `circuit`) and SPEC §6.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Labels of the per-route HTTP series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route template (e.g. `/api/v1/ves/proofs/{sequence_number}`), never the raw path.
    pub route: String,
    pub status: u16,
}

/// Labels of the per-route HTTP latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// Why an event was rejected: [`crate::reason::Reason::label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Which limit refused a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: String,
}

/// Which in-memory cache.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CacheName {
    AgentKey,
    ApiKey,
    /// Precomputed signature verification tables of busy agent keys.
    VerifyTable,
}

impl EncodeLabelValue for CacheName {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            CacheName::AgentKey => "agent_key",
            CacheName::ApiKey => "api_key",
            CacheName::VerifyTable => "verify_table",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: CacheName,
}

/// Why a commitment could not be created (label `reason` of `sequencer_commitment_failures_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CommitmentFailure {
    /// The range has a gap or runs past the head: the runbook's "Sequence Gap Detected".
    NonContiguous,
    Database,
    Unavailable,
    Other,
}

impl CommitmentFailure {
    pub const ALL: [CommitmentFailure; 4] = [Self::NonContiguous, Self::Database, Self::Unavailable, Self::Other];

    pub fn of(error: &crate::Error) -> Self {
        match error {
            crate::Error::Invalid { code: "NON_CONTIGUOUS_SEQUENCE", .. } | crate::Error::SequenceGap(_) => {
                Self::NonContiguous
            }
            crate::Error::Database(_) => Self::Database,
            crate::Error::Unavailable { .. } => Self::Unavailable,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonContiguous => "non_contiguous",
            Self::Database => "database",
            Self::Unavailable => "unavailable",
            Self::Other => "other",
        }
    }
}

/// Why `/ready` answered 503: its `database` field and label `reason` of
/// `sequencer_ready_failures_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReadyFailure {
    Unreachable,
    Error,
    Timeout,
}

impl ReadyFailure {
    pub const ALL: [ReadyFailure; 3] = [Self::Unreachable, Self::Error, Self::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

impl EncodeLabelValue for CommitmentFailure {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

impl EncodeLabelValue for ReadyFailure {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Where a read was served (label `target` of `sequencer_reads_routed_total`): see [`crate::reads`].
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReadTarget {
    Primary,
    Replica,
}

impl EncodeLabelValue for ReadTarget {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(
            encoder,
            match self {
                ReadTarget::Primary => "primary",
                ReadTarget::Replica => "replica",
            },
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadTargetLabels {
    pub target: ReadTarget,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitmentFailureLabels {
    pub reason: CommitmentFailure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyFailureLabels {
    pub reason: ReadyFailure,
}

/// Every series the sequencer exports.
pub struct Metrics {
    registry: Registry,
    pub ingest_latency: Histogram,
    pub events_rejected: Family<ReasonLabels, Counter>,
    pub events_sequenced: Counter,
    pub events_replayed: Counter,
    pub sequencing_group_events: Histogram,
    pub sequencing_statement_groups: Histogram,
    pub sequencing_transactions: Counter,
    pub ingest_overloaded: Counter,
    pub ingest_queued_events: Gauge,
    pub event_id_epoch: Gauge,
    pub event_id_filter_bytes: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram>,
    pub db_pool_size: Gauge,
    pub db_pool_idle: Gauge,
    pub db_pool_in_use: Gauge,
    pub db_pool_waiting: Gauge,
    pub db_pool_max: Gauge,
    pub cache_hits: Family<CacheLabels, Counter>,
    pub cache_misses: Family<CacheLabels, Counter>,
    pub cache_size: Family<CacheLabels, Gauge>,
    pub dead_letter_events: Gauge,
    /// Bytes of the log's indexes whose keys are random within a stream (sampled): see
    /// [`crate::store::maintenance::IndexPressure`].
    pub log_random_key_index_bytes: Gauge,
    /// PostgreSQL's `shared_buffers` in bytes (sampled).
    pub database_shared_buffers_bytes: Gauge,
    pub dead_letters_written: Counter,
    pub ratelimit_rejected: Family<ScopeLabels, Counter>,
    pub ingest_paused_rejections: Counter,
    pub anchor_circuit_state: Gauge,
    pub anchor_circuit_transitions: Counter,
    pub anchor_circuit_opened: Counter,
    pub anchor_circuit_rejected: Counter,
    pub commitments_created: Counter,
    pub commitments_anchored: Counter,
    pub anchor_failures: Counter,
    /// The transparency log's series (`sequencer_tlog_*`).
    pub tlog: crate::tlog::metrics::TlogMetrics,
    /// 1 while this replica holds the background worker's leadership.
    pub worker_leader: Gauge,
    pub commitment_failures: Family<CommitmentFailureLabels, Counter>,
    pub ready: Gauge,
    pub ready_failures: Family<ReadyFailureLabels, Counter>,
    pub unanchored_commitments: Gauge,
    pub oldest_unanchored_commitment_age: Gauge,
    pub anchor_interval: Gauge,
    /// Reads by the database that served them (`READ_DATABASE_URL`).
    pub reads_routed: Family<ReadTargetLabels, Counter>,
    /// Reads that failed on the read replica and were served by the primary instead.
    pub read_replica_fallbacks: Counter,
    /// Seconds since the read replica was last known to hold everything the primary had committed.
    pub read_replica_lag: Gauge<f64, AtomicU64>,
    /// 1 while reads go to the read replica.
    pub read_replica_in_use: Gauge,
    /// Tasks waiting for a database connection right now (sampled into `db_pool_waiting`).
    pub db_waiting: Arc<AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sequencer");
        let ingest_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "ingest_latency_seconds",
            "Time to answer an ingest request, from receipt to response",
            ingest_latency.clone(),
        );
        let events_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register("events_rejected", "Events rejected by ingest, by reason", events_rejected.clone());
        let events_sequenced = Counter::default();
        registry.register("events_sequenced", "Events given a sequence number", events_sequenced.clone());
        let events_replayed = Counter::default();
        registry.register(
            "events_replayed",
            "Exact replays answered with their original receipt",
            events_replayed.clone(),
        );
        let sequencing_group_events =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0]);
        registry.register(
            "sequencing_group_events",
            "Events sequenced per transaction (group commit size)",
            sequencing_group_events.clone(),
        );
        let sequencing_statement_groups = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]);
        registry.register(
            "sequencing_statement_groups",
            "Streams' groups written by one statement at a remembered head (several when they were ready together)",
            sequencing_statement_groups.clone(),
        );
        let sequencing_transactions = Counter::default();
        registry.register(
            "sequencing_transactions",
            "Sequencing transactions committed",
            sequencing_transactions.clone(),
        );
        let ingest_overloaded = Counter::default();
        registry.register(
            "ingest_overloaded",
            "Ingest requests refused with 503 because the sequencing queue was full",
            ingest_overloaded.clone(),
        );
        let ingest_queued_events = Gauge::default();
        registry.register(
            "ingest_queued_events",
            "Events waiting for a sequencing transaction in this process",
            ingest_queued_events.clone(),
        );
        let event_id_epoch = Gauge::default();
        registry.register(
            "event_id_epoch",
            "The current event id epoch as this process last saw it (migration 0024)",
            event_id_epoch.clone(),
        );
        let event_id_filter_bytes = Gauge::default();
        registry.register(
            "event_id_filter_bytes",
            "Memory held by this process's filters of closed event id epochs",
            event_id_filter_bytes.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by method, route and status", http_requests.clone());
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            http_latency.clone(),
        );
        let db_pool_size = Gauge::default();
        registry.register("db_pool_size", "Open database connections", db_pool_size.clone());
        let db_pool_idle = Gauge::default();
        registry.register("db_pool_idle", "Idle database connections", db_pool_idle.clone());
        let db_pool_in_use = Gauge::default();
        registry.register("db_pool_in_use", "Database connections in use", db_pool_in_use.clone());
        let db_pool_waiting = Gauge::default();
        registry.register("db_pool_waiting", "Tasks waiting for a database connection", db_pool_waiting.clone());
        let db_pool_max = Gauge::default();
        registry.register("db_pool_max", "MAX_DB_CONNECTIONS", db_pool_max.clone());
        let cache_hits = Family::<CacheLabels, Counter>::default();
        registry.register("cache_hits", "Cache hits by cache", cache_hits.clone());
        let cache_misses = Family::<CacheLabels, Counter>::default();
        registry.register("cache_misses", "Cache misses by cache", cache_misses.clone());
        let cache_size = Family::<CacheLabels, Gauge>::default();
        registry.register("cache_size", "Entries held by each cache", cache_size.clone());
        let dead_letter_events = Gauge::default();
        registry.register(
            "dead_letter_events",
            "Pending entries in the dead-letter queue (sampled)",
            dead_letter_events.clone(),
        );
        let log_random_key_index_bytes = Gauge::default();
        registry.register(
            "log_random_key_index_bytes",
            "Bytes of the log's indexes whose keys are random within a stream, the legacy events' event id and entity indexes (sampled)",
            log_random_key_index_bytes.clone(),
        );
        let database_shared_buffers_bytes = Gauge::default();
        registry.register(
            "database_shared_buffers_bytes",
            "PostgreSQL's shared_buffers, in bytes (sampled)",
            database_shared_buffers_bytes.clone(),
        );
        let dead_letters_written = Counter::default();
        registry.register(
            "dead_letters_written",
            "Rejected events written to the dead-letter queue",
            dead_letters_written.clone(),
        );
        let ratelimit_rejected = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "ratelimit_rejected",
            "Requests refused with 429, by the limit that refused them (tenant or api_key)",
            ratelimit_rejected.clone(),
        );
        let ingest_paused_rejections = Counter::default();
        registry.register(
            "ingest_paused_rejections",
            "Ingest requests refused because their stream is paused",
            ingest_paused_rejections.clone(),
        );
        let anchor_circuit_state = Gauge::default();
        registry.register(
            "anchor_circuit_state",
            "Anchor RPC circuit breaker: 0 closed, 1 half_open, 2 open",
            anchor_circuit_state.clone(),
        );
        let anchor_circuit_transitions = Counter::default();
        registry.register(
            "anchor_circuit_transitions",
            "State changes of the anchor circuit breaker",
            anchor_circuit_transitions.clone(),
        );
        let anchor_circuit_opened = Counter::default();
        registry.register(
            "anchor_circuit_opened",
            "Times the anchor circuit breaker opened",
            anchor_circuit_opened.clone(),
        );
        let anchor_circuit_rejected = Counter::default();
        registry.register(
            "anchor_circuit_rejected",
            "Anchor calls refused at once because the circuit was open",
            anchor_circuit_rejected.clone(),
        );
        let commitments_created = Counter::default();
        registry.register(
            "commitments_created",
            "Commitments created by the background worker",
            commitments_created.clone(),
        );
        let commitments_anchored = Counter::default();
        registry.register("commitments_anchored", "Commitments anchored on the L2", commitments_anchored.clone());
        let anchor_failures = Counter::default();
        registry.register("anchor_failures", "Failed anchoring attempts", anchor_failures.clone());
        let worker_leader = Gauge::default();
        registry.register(
            "worker_leader",
            "1 while this replica leads the commitment and anchoring worker",
            worker_leader.clone(),
        );
        let tlog = crate::tlog::metrics::TlogMetrics::register(&mut registry);
        // The series the runbook's alerts need (monitoring/sequencer-rules.yaml).
        let commitment_failures = Family::<CommitmentFailureLabels, Counter>::default();
        registry.register(
            "commitment_failures",
            "Commitment creations that failed, by reason (non_contiguous, database, other)",
            commitment_failures.clone(),
        );
        // NB: the server starts only after the database answered, so it starts ready.
        let ready = Gauge::default();
        ready.set(1);
        registry.register("ready", "1 when the last /ready check passed, 0 when it failed", ready.clone());
        let ready_failures = Family::<ReadyFailureLabels, Counter>::default();
        registry.register(
            "ready_failures",
            "/ready checks that answered 503, by reason (unreachable, error, timeout)",
            ready_failures.clone(),
        );
        let unanchored_commitments = Gauge::default();
        registry.register(
            "unanchored_commitments",
            "Live commitments not yet anchored on the L2 (sampled)",
            unanchored_commitments.clone(),
        );
        let oldest_unanchored_commitment_age = Gauge::default();
        registry.register(
            "oldest_unanchored_commitment_age_seconds",
            "Age of the oldest live unanchored commitment, 0 when none (sampled)",
            oldest_unanchored_commitment_age.clone(),
        );
        let anchor_interval = Gauge::default();
        registry.register(
            "anchor_interval_seconds",
            "ANCHOR_INTERVAL_SECS when anchoring is configured, else 0",
            anchor_interval.clone(),
        );
        let reads_routed = Family::<ReadTargetLabels, Counter>::default();
        registry.register(
            "reads_routed",
            "Reads (log, proofs, checkpoints, transparency log, verification) by the database that served them (primary or replica)",
            reads_routed.clone(),
        );
        let read_replica_fallbacks = Counter::default();
        registry.register(
            "read_replica_fallbacks",
            "Reads that failed on the read replica (unreachable, recovery conflict) and were served by the primary",
            read_replica_fallbacks.clone(),
        );
        let read_replica_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "read_replica_lag_seconds",
            "Seconds since the read replica was last known to hold everything the primary had committed (0 without a replica)",
            read_replica_lag.clone(),
        );
        let read_replica_in_use = Gauge::default();
        registry.register(
            "read_replica_in_use",
            "1 while reads go to the read replica, 0 while they go to the primary",
            read_replica_in_use.clone(),
        );
        for target in [ReadTarget::Primary, ReadTarget::Replica] {
            let _ = reads_routed.get_or_create(&ReadTargetLabels { target });
        }
        // NB: the series the alerts watch exist from the start at 0, so that `increase()` and `rate()`
        // see their first change (a counter born at 1 shows no increase).
        for reason in CommitmentFailure::ALL {
            let _ = commitment_failures.get_or_create(&CommitmentFailureLabels { reason });
        }
        for reason in ["invalid_signature", "agent_key_invalid"] {
            let _ = events_rejected.get_or_create(&ReasonLabels { reason: reason.into() });
        }
        for scope in ["tenant", "api_key", "public_read"] {
            let _ = ratelimit_rejected.get_or_create(&ScopeLabels { scope: scope.into() });
        }
        for reason in ReadyFailure::ALL {
            let _ = ready_failures.get_or_create(&ReadyFailureLabels { reason });
        }
        Metrics {
            tlog,
            registry,
            commitment_failures,
            ready,
            ready_failures,
            unanchored_commitments,
            oldest_unanchored_commitment_age,
            anchor_interval,
            reads_routed,
            read_replica_fallbacks,
            read_replica_lag,
            read_replica_in_use,
            ingest_latency,
            events_rejected,
            events_sequenced,
            events_replayed,
            sequencing_group_events,
            sequencing_statement_groups,
            sequencing_transactions,
            ingest_overloaded,
            ingest_queued_events,
            event_id_epoch,
            event_id_filter_bytes,
            http_requests,
            http_latency,
            db_pool_size,
            db_pool_idle,
            db_pool_in_use,
            db_pool_waiting,
            db_pool_max,
            cache_hits,
            cache_misses,
            cache_size,
            dead_letter_events,
            log_random_key_index_bytes,
            database_shared_buffers_bytes,
            dead_letters_written,
            ratelimit_rejected,
            ingest_paused_rejections,
            anchor_circuit_state,
            anchor_circuit_transitions,
            anchor_circuit_opened,
            anchor_circuit_rejected,
            commitments_created,
            commitments_anchored,
            anchor_failures,
            worker_leader,
            db_waiting: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Counts one rejected event under its reason's label.
    pub fn reject(&self, reason: &crate::reason::Reason) {
        self.events_rejected.get_or_create(&ReasonLabels { reason: reason.label().to_owned() }).inc();
    }

    /// Counts a failed commitment creation under its reason; `non_contiguous` is the runbook's
    /// "Sequence Gap Detected" incident.
    pub fn commitment_failed(&self, error: &crate::Error) {
        self.commitment_failures.get_or_create(&CommitmentFailureLabels { reason: CommitmentFailure::of(error) }).inc();
    }

    /// Counts an ingest request refused as a whole (today: its stream is paused).
    pub fn ingest_failed(&self, error: &crate::Error) {
        if matches!(error, crate::Error::Unavailable { code: "STREAM_PAUSED", .. }) {
            self.ingest_paused_rejections.inc();
        }
    }

    /// Records a cache lookup.
    pub fn cache_lookup(&self, cache: CacheName, hit: bool) {
        let labels = CacheLabels { cache };
        if hit {
            self.cache_hits.get_or_create(&labels).inc();
        } else {
            self.cache_misses.get_or_create(&labels).inc();
        }
    }

    /// Samples the pool figures and encodes every series in the Prometheus text format.
    pub fn render(&self, pool: &sqlx::PgPool, max_connections: u32) -> String {
        let size = i64::from(pool.size());
        let idle = pool.num_idle() as i64;
        self.db_pool_size.set(size);
        self.db_pool_idle.set(idle);
        self.db_pool_in_use.set((size - idle).max(0));
        self.db_pool_waiting.set(self.db_waiting.load(Ordering::Relaxed).max(0));
        self.db_pool_max.set(i64::from(max_connections));
        let mut out = String::new();
        // NB: encoding into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode metrics");
        out
    }
}

/// Observes the elapsed time into a histogram when dropped (RAII timer).
pub struct Timer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl<'a> Timer<'a> {
    pub fn start(histogram: &'a Histogram) -> Self {
        Timer { histogram, start: Instant::now() }
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_reasons_are_counted_by_category() {
        let m = Metrics::new();
        use crate::reason::Reason;
        m.reject(&Reason::AgentKeyInvalid("Agent key not found".into()));
        m.reject(&Reason::AgentKeyInvalid("Agent key has been revoked".into()));
        m.reject(&Reason::InvalidSignature);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(out.contains("sequencer_events_rejected_total{reason=\"agent_key_invalid\"} 2"), "{out}");
        assert!(out.contains("sequencer_events_rejected_total{reason=\"invalid_signature\"} 1"), "{out}");
        assert!(out.contains("sequencer_ingest_latency_seconds_bucket"), "{out}");
    }
}
