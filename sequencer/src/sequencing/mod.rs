//! Per-stream group commit: gives verified events their sequence numbers.
//!
//! Three parts:
//! - [`queue`]: concurrent requests for one stream wait in this process while the stream's single
//!   worker sequences the group before them, and are then taken together (up to
//!   `INGEST_MAX_GROUP_EVENTS`);
//! - [`decide`]: a pure function that decides every event of a group (new, exact replay, duplicate
//!   id, duplicate command, version conflict, paused) from what the store returned;
//! - the write paths, below, whose SQL is in [`crate::store::events`]: one autocommit statement at a
//!   remembered head, shared with other streams' groups that became ready while the statement before
//!   it ran ([`combine`]), or one transaction under the stream's counter row lock.
//!
//! The lock is held for one round of statements per group, never per event, and signatures were
//! checked before any of this, outside any lock. Other replicas serialise on the same row lock, so
//! numbers stay gap-free across processes. A receipt is only returned after the statement or
//! transaction that stored its event has committed.

mod combine;
pub mod decide;
pub mod queue;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::{Signer, SigningKey};
use futures::FutureExt;
use serde::Serialize;
use sqlx::Acquire;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, Postgres};
use tokio::sync::oneshot;
use uuid::Uuid;
use ves::envelope::{RawPayload, VesEventEnvelope};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::reason::Refusal;
use crate::store::Store;
use crate::store::dead_letters::{NewDeadLetter, insert_dead_letters};
use crate::store::epochs::{self, Screen};
use crate::store::events::{self, ExistingEvent, StreamKey, VersionChecks, VesEventRow};
use combine::{Combined, Combiner};
use decide::{Decision, Flavour, Paused, Prior, Proposal, StoreView, decide, implied_versions};
use queue::StreamQueues;

/// An event that passed every check that needs no lock.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub envelope: Arc<VesEventEnvelope<RawPayload>>,
    pub signing_hash: [u8; 32],
    pub created_at: DateTime<Utc>,
    /// The plaintext payload's compact JSON, from its check (`crate::ingest::CheckedPayload`); the row
    /// encodes it when this is `None`.
    pub payload_json: Option<Arc<str>>,
    /// Whether the plaintext payload reads back from jsonb as it is (`store::events::survives_jsonb`).
    pub payload_survives_jsonb: bool,
}

/// A sequencer receipt, in the wire shape of ves-wire.md §1.5.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub sequencer_id: Uuid,
    pub event_id: Uuid,
    pub sequence_number: u64,
    pub sequenced_at: String,
    pub receipt_hash: String,
    pub signature_alg: &'static str,
    pub sequencer_signature: String,
    pub sequencer_key_version: u32,
}

impl Receipt {
    /// `sequenced_at` as `DateTime::to_rfc3339` prints it (a group's receipts share one).
    fn new(
        sequencer_id: Uuid,
        event_id: Uuid,
        sequence_number: i64,
        sequenced_at: &str,
        receipt_hash: &[u8],
        signature: Option<&[u8]>,
    ) -> Self {
        Receipt {
            sequencer_id,
            event_id,
            sequence_number: sequence_number as u64,
            sequenced_at: sequenced_at.to_owned(),
            receipt_hash: hex::encode(receipt_hash),
            signature_alg: if signature.is_some() { "ed25519" } else { "none" },
            sequencer_signature: signature.map(hex::encode).unwrap_or_default(),
            sequencer_key_version: 0,
        }
    }

    fn from_stored(e: &ExistingEvent) -> Option<Self> {
        Some(Receipt::new(
            e.sequencer_id?,
            e.event_id,
            e.sequence_number,
            &e.sequenced_at.to_rfc3339(),
            &e.receipt_hash()?,
            e.sequencer_signature.as_deref(),
        ))
    }
}

/// What became of one candidate.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Newly sequenced.
    Sequenced(Receipt),
    /// An exact replay of a stored event: its original receipt.
    Replayed(Receipt),
    /// Refused.
    Rejected(Refusal),
}

/// The answer for one submitted request.
#[derive(Debug)]
pub struct Sequenced {
    pub outcomes: Vec<Outcome>,
    /// The stream's head when the group committed.
    pub head: i64,
}

/// The original receipt of a stored event (`None` for an unsigned legacy event).
pub fn receipt_of(stored: &ExistingEvent) -> Option<Receipt> {
    Receipt::from_stored(stored)
}

/// Whether `candidate` is byte for byte the event already stored as `stored`.
///
/// The signing hash covers every signed field (ids, strings, created_at, kind, both payload hashes),
/// so equal hashes and signatures plus equal unsigned extras mean an exact replay.
pub fn is_exact_replay(stored: &ExistingEvent, candidate: &Candidate) -> bool {
    let e = &candidate.envelope;
    let encrypted = e.payload_encrypted.as_ref().map(|p| serde_json::to_value(p).unwrap_or_default());
    stored.signed
        && stored.tenant_id == e.tenant_id
        && stored.store_id == e.store_id
        && stored.event_signing_hash.as_deref() == Some(&candidate.signing_hash[..])
        && stored.agent_signature.as_deref() == Some(&e.agent_signature.0[..])
        && stored.command_id == e.command_id
        && stored.base_version == e.base_version.map(|v| v as i64)
        && stored.payload_encrypted == encrypted
}

/// What the store holds under a candidate's event id, for [`decide`].
pub fn prior_of(stored: Option<&ExistingEvent>, candidate: &Candidate) -> Prior {
    let e = &candidate.envelope;
    match stored {
        None => Prior::Fresh,
        Some(s) if is_exact_replay(s, candidate) => Prior::ExactReplay(Receipt::from_stored(s)),
        Some(s) if s.tenant_id != e.tenant_id || s.store_id != e.store_id => Prior::OtherStream,
        Some(_) => Prior::Different,
    }
}

fn proposal(c: &Candidate, prior: Prior) -> Proposal<'_> {
    let e = &c.envelope;
    Proposal {
        event_id: e.event_id,
        command_id: e.command_id,
        entity_type: &e.entity_type,
        entity_id: &e.entity_id,
        base_version: e.base_version,
        content: (&c.signing_hash, &e.agent_signature.0),
        prior,
        refused: None,
    }
}

/// The dead-letter record of a refused signed event.
pub fn dead_letter_of(e: &VesEventEnvelope<RawPayload>, refusal: &Refusal) -> NewDeadLetter {
    NewDeadLetter {
        event_id: e.event_id,
        tenant_id: e.tenant_id,
        store_id: e.store_id,
        agent_id: Some(e.source_agent_id),
        event_type: Some(e.event_type.clone()),
        source: "ves",
        reason: refusal.reason.label().to_owned(),
        error_message: refusal.reason.dead_letter_message(&refusal.message),
        payload: serde_json::to_value(e).unwrap_or_default(),
    }
}

/// Signs receipts with `VES_SEQUENCER_SIGNING_KEY` (or leaves them unsigned without one).
pub struct ReceiptSigner {
    pub sequencer_id: Uuid,
    pub key: Option<SigningKey>,
}

struct Job {
    stream: StreamKey,
    candidates: Vec<Candidate>,
    reply: oneshot::Sender<Result<Sequenced>>,
}

/// Streams whose head this process remembers, at most: a hint (forgetting one costs one read of the
/// head), so it is bounded rather than exact. About 150 bytes each, so at most ~15 MB.
pub const KNOWN_HEADS_MAX: u64 = 100_000;
/// A stream quiet for this long is forgotten (its remembered head is dropped).
pub const KNOWN_HEADS_IDLE: Duration = Duration::from_secs(600);

/// How long a stream's worker keeps one pool connection from group to group, however busy the stream
/// stays, before returning it (and with it the pool's lifetime and health checks) to the pool.
pub const HOLD_CONNECTION_MAX: Duration = Duration::from_secs(1);

/// The pool connection a stream's worker keeps across the groups of one busy spell.
///
/// sqlx pings a connection, one round trip each, when it leaves an idle pool (`test_before_acquire`,
/// which notices a connection that died while the database was down) and when it is returned. Taken
/// per group, that made three round trips of every group's one statement; kept across a busy spell,
/// the pings are paid once per spell. A connection is kept only while another caller could still get
/// one without waiting, for at most [`HOLD_CONNECTION_MAX`], and never after its group failed.
#[derive(Default)]
struct HeldConnection(Option<(PoolConnection<Postgres>, Instant)>);

impl HeldConnection {
    async fn get(&mut self, store: &Store) -> Result<&mut PgConnection> {
        if self.0.is_none() {
            self.0 = Some((store.acquire().await?, Instant::now()));
        }
        Ok(&mut self.0.as_mut().expect("acquired above").0)
    }

    /// Returns the connection to the pool (where a broken one is closed).
    fn release(&mut self) {
        self.0 = None;
    }

    /// Keeps the connection for the next group only while that starves nobody.
    fn release_unless_spare(&mut self, store: &Store) {
        if self.0.as_ref().is_some_and(|(_, since)| since.elapsed() >= HOLD_CONNECTION_MAX)
            || !store.has_spare_connection()
        {
            self.release();
        }
    }
}

/// The group-commit sequencer of this process.
pub struct Sequencer {
    store: Store,
    metrics: Arc<Metrics>,
    signer: ReceiptSigner,
    queues: StreamQueues<Job>,
    /// Groups of streams whose head this process remembers, written several to a statement.
    combiner: Combiner,
    /// The head each stream had when this process last committed to it. Only a guess: another replica
    /// may have moved it since, which [`events::append_at_head`] detects (and then writes nothing).
    known_heads: moka::sync::Cache<StreamKey, i64>,
    queued_events: AtomicUsize,
    max_queued_events: usize,
    max_group_events: usize,
    /// Whether to hash each event's transparency log entry as it is numbered (the log is on).
    tlog_leaves: bool,
}

/// How one group ended: each request's outcomes and the head after commit.
type GroupResult = (Vec<Vec<Outcome>>, i64);

impl Sequencer {
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        signer: ReceiptSigner,
        max_queued_events: usize,
        max_group_events: usize,
        tlog_leaves: bool,
    ) -> Arc<Self> {
        Arc::new(Sequencer {
            combiner: Combiner::new(store.clone(), Arc::clone(&metrics), signer.sequencer_id, max_group_events),
            store,
            metrics,
            signer,
            queues: StreamQueues::default(),
            known_heads: moka::sync::Cache::builder()
                .max_capacity(KNOWN_HEADS_MAX)
                .time_to_idle(KNOWN_HEADS_IDLE)
                .build(),
            queued_events: AtomicUsize::new(0),
            max_queued_events,
            max_group_events,
            tlog_leaves,
        })
    }

    /// The sequencer's public receipt key, if receipts are signed.
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.signer.key.as_ref().map(|k| k.verifying_key().to_bytes())
    }

    pub fn sequencer_id(&self) -> Uuid {
        self.signer.sequencer_id
    }

    /// Groups numbered at a remembered head and waiting for the writer that is busy with the
    /// statement before them (they are then written by one statement).
    pub fn groups_waiting(&self) -> usize {
        self.combiner.waiting()
    }

    /// Sequences the candidates of one request (all of one stream), in order.
    ///
    /// Answers 503 with `Retry-After` at once when this process already has
    /// `INGEST_MAX_QUEUED_EVENTS` events waiting, so that latency stays bounded under overload.
    pub async fn submit(self: &Arc<Self>, stream: StreamKey, candidates: Vec<Candidate>) -> Result<Sequenced> {
        let n = candidates.len();
        let queued = self.queued_events.fetch_add(n, Ordering::AcqRel);
        if queued + n > self.max_queued_events && queued > 0 {
            self.queued_events.fetch_sub(n, Ordering::AcqRel);
            self.metrics.ingest_overloaded.inc();
            return Err(Error::unavailable(
                "INGEST_OVERLOADED",
                "The sequencer is at capacity; retry after the indicated delay",
                1,
            ));
        }
        self.metrics.ingest_queued_events.set((queued + n) as i64);
        let (reply, answer) = oneshot::channel();
        if self.queues.push(stream, Job { stream, candidates, reply }) {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.drain(stream).await });
        }
        answer.await.unwrap_or_else(|_| Err(Error::Internal("sequencing worker stopped".into())))
    }

    async fn drain(self: Arc<Self>, stream: StreamKey) {
        let mut conn = HeldConnection::default();
        loop {
            let group = self.queues.next_group(stream, self.max_group_events, |j| j.candidates.len());
            if group.is_empty() {
                return;
            }
            let events: usize = group.iter().map(|j| j.candidates.len()).sum();
            // NB: a panic must not strand the stream's queue; it fails this group only.
            let result = AssertUnwindSafe(self.process(group, &mut conn)).catch_unwind().await;
            if result.is_err() {
                tracing::error!(tenant_id = %stream.tenant_id, store_id = %stream.store_id, "sequencing group panicked");
                // NB: the connection may be mid-statement.
                conn.release();
            }
            conn.release_unless_spare(&self.store);
            let left = self.queued_events.fetch_sub(events, Ordering::AcqRel) - events;
            self.metrics.ingest_queued_events.set(left as i64);
        }
    }

    async fn process(&self, group: Vec<Job>, conn: &mut HeldConnection) {
        let stream = group[0].stream;
        let batches: Vec<&[Candidate]> = group.iter().map(|j| j.candidates.as_slice()).collect();
        match self.sequence_group(stream, &batches, conn).await {
            Ok((outcomes, head)) => {
                for (job, outcomes) in group.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(Sequenced { outcomes, head }));
                }
            }
            Err(e) if group.len() > 1 && !e.is_database_unavailable() && !matches!(e, Error::Unavailable { .. }) => {
                // One request's data made the shared transaction fail: sequence each request alone so
                // that only the offending one sees the error.
                tracing::warn!(error = %e, requests = group.len(), "group transaction failed; retrying requests one by one");
                for job in group {
                    let result = self
                        .sequence_group(stream, &[job.candidates.as_slice()], conn)
                        .await
                        .map(|(mut outcomes, head)| Sequenced { outcomes: outcomes.remove(0), head });
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in group {
                    let _ = job.reply.send(Err(replicate(&e)));
                }
            }
        }
    }

    /// Sequences a group of requests of one stream and remembers (or forgets) the stream's head.
    async fn sequence_group(
        &self,
        stream: StreamKey,
        batches: &[&[Candidate]],
        conn: &mut HeldConnection,
    ) -> Result<GroupResult> {
        let result = self.sequence_group_once(stream, batches, conn).await;
        match &result {
            Ok((_, head)) => self.known_heads.insert(stream, *head),
            // NB: the outcome may be unknown (the connection died around COMMIT): look next time; and
            // the connection goes back to the pool, which closes it if it is broken.
            Err(_) => {
                self.known_heads.invalidate(&stream);
                conn.release();
            }
        }
        result
    }

    async fn sequence_group_once(
        &self,
        stream: StreamKey,
        batches: &[&[Candidate]],
        conn: &mut HeldConnection,
    ) -> Result<GroupResult> {
        let all: Vec<&Candidate> = batches.iter().flat_map(|b| b.iter()).collect();
        let sequenced_at = Utc::now().trunc_subsecs(6);
        // Optimistic: assume the store holds none of the ids and commands (the unique indexes tell if it
        // does) and, where the group checks versions, that its entities are at the versions its
        // base_versions imply (the statement counts them before it writes). A group that could not be
        // written whole even then goes straight to the careful path.
        let fresh: Vec<Proposal> = all.iter().map(|c| proposal(c, Prior::Fresh)).collect();
        let ids: Vec<Uuid> = all.iter().map(|c| c.envelope.event_id).collect();
        if let Some(epoch) = self.screen(conn, stream.tenant_id, &ids).await?
            && let Some(implied) = implied_versions(&fresh)
        {
            let checks = (!implied.is_empty()).then(|| VersionChecks::new(implied.clone()));
            let view = StoreView { versions: implied, ..Default::default() };
            let plan = decide(Flavour::Signed, &view, &fresh).expect("not paused");
            if plan.iter().all(|d| *d == Decision::Accept) {
                let guessed = match self.known_heads.get(&stream) {
                    Some(head) => {
                        let at = (head, epoch);
                        self.append_shared(conn, stream, batches, &all, &plan, at, sequenced_at, checks.as_ref())
                            .await?
                    }
                    None => {
                        let conn = conn.get(&self.store).await?;
                        let checks = checks.as_ref();
                        self.append_at_peeked_head(conn, stream, batches, &all, &plan, epoch, sequenced_at, checks)
                            .await?
                    }
                };
                match guessed {
                    Attempt::Done(result) => return Ok(result),
                    Attempt::Conflict => {}
                    // The versions must be read under the lock: the careful path does.
                    Attempt::StaleHead if checks.is_some() => {}
                    Attempt::StaleHead => {
                        let locked = self.append_locked(
                            conn.get(&self.store).await?,
                            stream,
                            batches,
                            &all,
                            &fresh,
                            sequenced_at,
                            epoch,
                        );
                        if let Some(result) = locked.await? {
                            return Ok(result);
                        }
                    }
                }
            }
        }
        self.sequence_careful(conn.get(&self.store).await?, stream, batches, &all, sequenced_at).await
    }

    /// The id epoch a group of the tenant may be written into without looking its ids up under the
    /// locks: `None` when one of them is stored in a closed epoch (`store::epochs`: each id a closed
    /// epoch's filter cannot rule out, and every id in a closed epoch without a filter here yet, is
    /// looked up there first).
    ///
    /// NB: the lookup takes a pool connection for itself unless the worker holds one already: a worker
    /// must not keep one while its group waits for a writer of the combiner, which needs one too
    /// ([`combine`]); with every worker holding one, the writers would wait for the pool until it timed
    /// out.
    async fn screen(&self, conn: &mut HeldConnection, tenant_id: Uuid, ids: &[Uuid]) -> Result<Option<i32>> {
        let Screen { epoch, maybe } = self.store.id_epochs().screen(tenant_id, ids);
        if maybe.is_empty() {
            return Ok(Some(epoch));
        }
        let stored = match conn.0.as_mut() {
            Some((held, _)) => epochs::any_stored(held, tenant_id, &maybe).await?,
            None => epochs::any_stored(&mut *self.store.acquire().await?, tenant_id, &maybe).await?,
        };
        Ok((!stored).then_some(epoch))
    }

    /// Fastest path: number the events after the head this process remembers, sign the receipts
    /// outside any lock and append everything in one autocommit statement that applies only if the
    /// head is still that (and the entities of `checks` are at their versions there, and the id epoch
    /// is still the screened one), shared with other streams' groups that are ready at the same time
    /// ([`combine`]). `at`: the remembered head and the screened epoch.
    #[allow(clippy::too_many_arguments)]
    async fn append_shared(
        &self,
        conn: &mut HeldConnection,
        stream: StreamKey,
        batches: &[&[Candidate]],
        all: &[&Candidate],
        plan: &[Decision],
        (expected, epoch): (i64, i32),
        sequenced_at: DateTime<Utc>,
        checks: Option<&VersionChecks>,
    ) -> Result<Attempt> {
        let (rows, head) = self.rows(stream, all, plan, expected, sequenced_at).await?;
        let id = self.signer.sequencer_id;
        let (rows, combined) = self.combiner.append(stream, rows, sequenced_at, expected, checks.cloned(), epoch).await;
        let appended = match combined {
            Combined::Appended => Ok(true),
            Combined::StaleHead => Ok(false),
            Combined::Conflict => return Ok(Attempt::Conflict),
            Combined::Failed(e) => Err(e),
            Combined::Alone => {
                let conn = conn.get(&self.store).await?;
                events::append_at_head(conn, stream, &rows, sequenced_at, id, expected, false, checks, epoch).await
            }
        };
        self.appended(appended, batches, plan, &rows, head, sequenced_at)
    }

    /// The fast path for a stream whose head this process does not remember: read it without a lock
    /// (or find the stream new) and append as [`Self::append_shared`] does, in a statement of its own.
    #[allow(clippy::too_many_arguments)]
    async fn append_at_peeked_head(
        &self,
        conn: &mut PgConnection,
        stream: StreamKey,
        batches: &[&[Candidate]],
        all: &[&Candidate],
        plan: &[Decision],
        epoch: i32,
        sequenced_at: DateTime<Utc>,
        checks: Option<&VersionChecks>,
    ) -> Result<Attempt> {
        let (expected, exists) = match events::peek_stream(conn, stream).await? {
            // Paused: the locked path answers 503.
            Some(s) if s.paused => return Ok(Attempt::StaleHead),
            Some(s) => (s.head, true),
            None => (0, false),
        };
        // A new stream's entities are all at version 0: a group that says otherwise is decided under the
        // lock (where another writer may have created the stream meanwhile).
        let checks = match checks {
            Some(k) if !exists && !k.all_new() => return Ok(Attempt::StaleHead),
            Some(_) if !exists => None,
            checks => checks,
        };
        let (rows, head) = self.rows(stream, all, plan, expected, sequenced_at).await?;
        let id = self.signer.sequencer_id;
        let appended =
            events::append_at_head(conn, stream, &rows, sequenced_at, id, expected, !exists, checks, epoch).await;
        self.appended(appended, batches, plan, &rows, head, sequenced_at)
    }

    /// How an optimistic append at a guessed head ended.
    fn appended(
        &self,
        appended: Result<bool>,
        batches: &[&[Candidate]],
        plan: &[Decision],
        rows: &[VesEventRow],
        head: i64,
        sequenced_at: DateTime<Utc>,
    ) -> Result<Attempt> {
        match appended {
            Ok(true) => {
                self.count_group(rows.len(), 0);
                let outcomes = self.outcomes(batches, plan, rows, sequenced_at);
                Ok(Attempt::Done((outcomes, head)))
            }
            // Another replica moved the head, or the stream is paused: lock and look.
            Ok(false) => Ok(Attempt::StaleHead),
            // A replayed or reused id or command: nothing was written; decide event by event.
            Err(Error::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Under the stream's lock, still assuming every event is new; `None` when the unique indexes say
    /// one is not, or the id epoch is no longer the screened `epoch` (nothing was written).
    #[allow(clippy::too_many_arguments)]
    async fn append_locked(
        &self,
        conn: &mut PgConnection,
        stream: StreamKey,
        batches: &[&[Candidate]],
        all: &[&Candidate],
        fresh: &[Proposal<'_>],
        sequenced_at: DateTime<Utc>,
        epoch: i32,
    ) -> Result<Option<GroupResult>> {
        let mut tx = conn.begin().await?;
        let current = epochs::lock_current(&mut tx).await?;
        if current != epoch {
            self.store.id_epochs().observe(current);
            tx.rollback().await?;
            return Ok(None);
        }
        let locked = events::lock_stream(&mut tx, stream).await?;
        let view = StoreView { paused: locked.paused, ..Default::default() };
        let plan = decide(Flavour::Signed, &view, fresh).map_err(|Paused| paused(stream))?;
        let (rows, head) = self.rows(stream, all, &plan, locked.head, sequenced_at).await?;
        let id = self.signer.sequencer_id;
        if events::insert_ves_events(&mut tx, stream, &rows, sequenced_at, id, head, true, epoch).await? {
            tx.commit().await?;
            self.count_group(rows.len(), 0);
            let outcomes = self.outcomes(batches, &plan, &rows, sequenced_at);
            return Ok(Some((outcomes, head)));
        }
        tx.rollback().await?;
        Ok(None)
    }

    /// Careful path: under the stream's lock (and the id epoch's share lock, taken first), read what
    /// the store holds for the group's ids, commands and entities, and decide each event from that.
    async fn sequence_careful(
        &self,
        conn: &mut PgConnection,
        stream: StreamKey,
        batches: &[&[Candidate]],
        all: &[&Candidate],
        sequenced_at: DateTime<Utc>,
    ) -> Result<GroupResult> {
        let mut tx = conn.begin().await?;
        let epoch = epochs::lock_current(&mut tx).await?;
        self.store.id_epochs().observe(epoch);
        let locked = events::lock_stream(&mut tx, stream).await?;
        let (view, existing) = if locked.paused {
            // Nothing to look up: the decision refuses the whole group.
            (StoreView { paused: true, ..Default::default() }, Vec::new())
        } else {
            let event_ids: Vec<Uuid> = all.iter().map(|c| c.envelope.event_id).collect();
            let existing =
                events::find_by_event_ids(&mut tx, self.store.id_epochs(), stream.tenant_id, &event_ids).await?;
            let command_ids: Vec<Uuid> = all.iter().filter_map(|c| c.envelope.command_id).collect();
            let by_command = events::find_by_command_ids(&mut tx, stream, &command_ids).await?;
            let entities: Vec<(String, String)> = all
                .iter()
                .filter(|c| c.envelope.base_version.is_some())
                .map(|c| (c.envelope.entity_type.clone(), c.envelope.entity_id.clone()))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let versions = events::entity_versions(&mut tx, stream, locked.head, &entities).await?;
            let view = StoreView {
                paused: false,
                commands: by_command.iter().filter_map(|e| e.command_id).collect(),
                versions: versions.into_iter().map(|(t, i, v)| ((t, i), v)).collect(),
            };
            (view, existing)
        };
        let existing: HashMap<Uuid, &ExistingEvent> = existing.iter().map(|e| (e.event_id, e)).collect();
        let proposals: Vec<Proposal> =
            all.iter().map(|c| proposal(c, prior_of(existing.get(&c.envelope.event_id).copied(), c))).collect();
        let plan = decide(Flavour::Signed, &view, &proposals).map_err(|Paused| paused(stream))?;
        let dead_letters: Vec<NewDeadLetter> = all
            .iter()
            .zip(&plan)
            .filter_map(|(c, d)| match d {
                Decision::Refuse(r) if r.reason.dead_letter() => Some(dead_letter_of(&c.envelope, r)),
                _ => None,
            })
            .collect();

        let (rows, head) = self.rows(stream, all, &plan, locked.head, sequenced_at).await?;
        if !rows.is_empty() {
            let id = self.signer.sequencer_id;
            events::insert_ves_events(&mut tx, stream, &rows, sequenced_at, id, head, false, epoch).await?;
        }
        insert_dead_letters(&mut tx, &dead_letters).await?;
        tx.commit().await?;
        self.count_group(rows.len(), dead_letters.len());
        let outcomes = self.outcomes(batches, &plan, &rows, sequenced_at);
        Ok((outcomes, head))
    }

    fn count_group(&self, sequenced: usize, dead_letters: usize) {
        if sequenced > 0 {
            self.metrics.events_sequenced.inc_by(sequenced as u64);
            self.metrics.sequencing_group_events.observe(sequenced as f64);
        }
        self.metrics.dead_letters_written.inc_by(dead_letters as u64);
        self.metrics.sequencing_transactions.inc();
    }

    /// Signs the rows' receipts: a few inline, more on the compute pool (crate::compute).
    async fn sign(&self, rows: &mut [VesEventRow]) -> Result<()> {
        let Some(key) = &self.signer.key else { return Ok(()) };
        if rows.len() <= crate::compute::INLINE_SIGN_MAX {
            for r in rows.iter_mut() {
                r.sequencer_signature = Some(key.sign(&r.receipt_hash).to_bytes());
            }
            return Ok(());
        }
        let hashes: Vec<[u8; 32]> = rows.iter().map(|r| r.receipt_hash).collect();
        let key = key.clone();
        let signatures = crate::compute::run("receipt signing", move || {
            use rayon::prelude::*;
            hashes.par_iter().map(|h| key.sign(h).to_bytes()).collect::<Vec<_>>()
        })
        .await?;
        for (r, s) in rows.iter_mut().zip(signatures) {
            r.sequencer_signature = Some(s);
        }
        Ok(())
    }

    /// Numbers the accepted events after `head` and computes their receipts (signed by [`Self::sign`])
    /// and leaves.
    async fn rows(
        &self,
        stream: StreamKey,
        all: &[&Candidate],
        plan: &[Decision],
        head: i64,
        sequenced_at: DateTime<Utc>,
    ) -> Result<(Vec<VesEventRow>, i64)> {
        let mut next = head;
        let mut rows = Vec::with_capacity(all.len());
        let at = sequenced_at.to_rfc3339();
        // One buffer for every entry of the group: each is hashed and dropped.
        let mut entry = Vec::new();
        for (c, d) in all.iter().zip(plan) {
            if *d != Decision::Accept {
                continue;
            }
            next += 1;
            let receipt_hash = ves::hash::receipt_hash(
                stream.tenant_id,
                stream.store_id,
                c.envelope.event_id,
                next as u64,
                &c.signing_hash,
            );
            let leaf_hash = ves::hash::leaf_hash(
                stream.tenant_id,
                stream.store_id,
                next as u64,
                &c.signing_hash,
                &c.envelope.agent_signature.0,
            );
            let mut row = VesEventRow::new(
                Arc::clone(&c.envelope),
                c.payload_json.clone(),
                c.payload_survives_jsonb,
                c.created_at,
                c.signing_hash,
                next,
                receipt_hash,
                None,
                leaf_hash,
            );
            if self.tlog_leaves {
                row.tlog_leaf = crate::tlog::leaf_before_storing(&row, &at, &mut entry);
            }
            rows.push(row);
        }
        self.sign(&mut rows).await?;
        Ok((rows, next))
    }

    /// Splits the group's decisions back into per-request outcomes.
    fn outcomes(
        &self,
        batches: &[&[Candidate]],
        plan: &[Decision],
        rows: &[VesEventRow],
        sequenced_at: DateTime<Utc>,
    ) -> Vec<Vec<Outcome>> {
        // NB: a receipt is kept for a later copy of its event in the group, when there is one.
        let copies = plan.iter().any(|d| matches!(d, Decision::SameAs(_)));
        let mut receipts: Vec<Option<Receipt>> = if copies { vec![None; plan.len()] } else { Vec::new() };
        let at = sequenced_at.to_rfc3339();
        let mut row = rows.iter();
        let mut in_order = Vec::with_capacity(plan.len());
        for (i, d) in plan.iter().enumerate() {
            in_order.push(match d {
                Decision::Accept => {
                    let r = row.next().expect("one row per accepted event");
                    let receipt = Receipt::new(
                        self.signer.sequencer_id,
                        r.envelope.event_id,
                        r.sequence_number,
                        &at,
                        &r.receipt_hash,
                        r.sequencer_signature.as_ref().map(|s| &s[..]),
                    );
                    if copies {
                        receipts[i] = Some(receipt.clone());
                    }
                    Outcome::Sequenced(receipt)
                }
                Decision::Replay(r) => Outcome::Replayed(r.clone()),
                // The copy stored earlier in this group: its receipt is already known.
                Decision::SameAs(first) => {
                    Outcome::Replayed(receipts[*first].clone().expect("the first copy was accepted"))
                }
                Decision::Refuse(r) => Outcome::Rejected(r.clone()),
            });
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut it = in_order.into_iter();
        for b in batches {
            out.push(it.by_ref().take(b.len()).collect());
        }
        out
    }
}

/// How an optimistic append ended.
enum Attempt {
    Done(GroupResult),
    /// The head was not the one guessed, the stream is paused, or an entity the group checks was not
    /// at the version its `base_version` implies: nothing was written.
    StaleHead,
    /// An id or command is already stored: nothing was written.
    Conflict,
}

/// 503 `STREAM_PAUSED`: an operator paused the stream.
pub fn paused(stream: StreamKey) -> Error {
    Error::Unavailable {
        code: "STREAM_PAUSED",
        message: format!(
            "Ingestion of stream {}/{} is paused by an operator; events are not accepted until it is resumed",
            stream.tenant_id, stream.store_id
        ),
        retry_after_secs: Some(30),
    }
}

/// The same error, for every request of a failed group.
fn replicate(e: &Error) -> Error {
    match e {
        Error::Unavailable { code, message, retry_after_secs } => {
            Error::Unavailable { code, message: message.clone(), retry_after_secs: *retry_after_secs }
        }
        e if e.is_database_unavailable() => {
            Error::unavailable("DATABASE_UNAVAILABLE", "The database is unavailable; retry later", 1)
        }
        other => Error::Internal(other.to_string()),
    }
}
