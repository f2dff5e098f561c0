//! The application state: what the HTTP handlers and the background duties of a replica share.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Authenticator;
use crate::commitments::CommitmentEngine;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::store::Store;

/// Everything a handler or a background duty may use.
pub struct AppState {
    pub config: Config,
    /// The primary: writes, and every read that must see the newest writes.
    pub store: Store,
    /// Where the log's reads, proofs, checkpoints and verification go: a streaming replica while it is
    /// fresh enough (`READ_DATABASE_URL`), else `store`.
    pub reads: crate::reads::ReadRouter,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    pub limits: crate::ratelimit::RateLimiters,
    pub ingest: Ingest,
    pub commitments: CommitmentEngine,
    pub anchor: Option<Arc<crate::anchoring::AnchorService>>,
    /// Signs checkpoints (only when receipts are signed: it uses the receipt key).
    pub checkpoints: Option<crate::checkpoint::CheckpointSigner>,
    pub started: Instant,
    /// Background verifications started through the admin API.
    pub verify_jobs: crate::verify::VerifyJobs,
    /// Request-body bytes held at once (`MAX_INFLIGHT_BODY_BYTES`).
    pub body_budget: crate::limits::BodyBudget,
    /// Whether the database answers at all.
    pub db_watch: crate::limits::DbWatch,
}

pub type SharedState = Arc<AppState>;
