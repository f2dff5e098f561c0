//! Per-stream group commit: gives verified events their sequence numbers.
//!
//! Concurrent requests for one stream are queued in this process and sequenced together: a single
//! worker per stream takes everything queued (up to `INGEST_MAX_GROUP_EVENTS`), and in ONE transaction
//! locks the stream's counter row, decides each event (new, exact replay, duplicate, version conflict),
//! writes all new events with one statement and moves the head. The lock is held for one round of
//! statements per group, never per event, and signatures were checked before any of this, outside
//! any lock. Other replicas serialise on the same row lock, so numbers stay gap-free across processes.
//!
//! A receipt is only returned after the transaction that stored its event has committed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::{Signer, SigningKey};
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::dead_letters::{NewDeadLetter, insert_dead_letters};
use crate::store::events::{self, ExistingEvent, StreamKey, VesEventRow};

/// An event that passed every check that needs no lock.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub envelope: Arc<VesEventEnvelope>,
    pub signing_hash: [u8; 32],
    pub created_at: DateTime<Utc>,
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
    fn new(
        sequencer_id: Uuid,
        event_id: Uuid,
        sequence_number: i64,
        sequenced_at: DateTime<Utc>,
        receipt_hash: &[u8],
        signature: Option<&[u8]>,
    ) -> Self {
        Receipt {
            sequencer_id,
            event_id,
            sequence_number: sequence_number as u64,
            sequenced_at: sequenced_at.to_rfc3339(),
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
            e.sequenced_at,
            e.receipt_hash.as_deref()?,
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
    /// Refused, with upstream's reason string and message.
    Rejected { reason: String, message: String },
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

#[derive(Default)]
struct StreamQueue {
    jobs: VecDeque<Job>,
    running: bool,
}

/// Streams whose head this process remembers, at most (a hint; forgetting one costs a lock round trip).
const KNOWN_HEADS_MAX: usize = 100_000;

/// The group-commit sequencer of this process.
pub struct Sequencer {
    store: Store,
    metrics: Arc<Metrics>,
    signer: ReceiptSigner,
    queues: Mutex<HashMap<StreamKey, StreamQueue>>,
    /// The head each stream had when this process last committed to it. Only a guess: another replica
    /// may have moved it since, which [`events::append_at_head`] detects (and then writes nothing).
    known_heads: Mutex<HashMap<StreamKey, i64>>,
    queued_events: AtomicUsize,
    max_queued_events: usize,
    max_group_events: usize,
}

impl Sequencer {
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        signer: ReceiptSigner,
        max_queued_events: usize,
        max_group_events: usize,
    ) -> Arc<Self> {
        Arc::new(Sequencer {
            store,
            metrics,
            signer,
            queues: Mutex::new(HashMap::new()),
            known_heads: Mutex::new(HashMap::new()),
            queued_events: AtomicUsize::new(0),
            max_queued_events,
            max_group_events,
        })
    }

    /// The sequencer's public receipt key, if receipts are signed.
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.signer.key.as_ref().map(|k| k.verifying_key().to_bytes())
    }

    pub fn sequencer_id(&self) -> Uuid {
        self.signer.sequencer_id
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
        let start_worker = {
            let mut queues = self.queues.lock().expect("sequencer queue lock");
            let queue = queues.entry(stream).or_default();
            queue.jobs.push_back(Job { stream, candidates, reply });
            !std::mem::replace(&mut queue.running, true)
        };
        if start_worker {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.drain(stream).await });
        }
        answer.await.unwrap_or_else(|_| Err(Error::Internal("sequencing worker stopped".into())))
    }

    /// Takes the next group of jobs for a stream, or marks the stream idle when there is none.
    fn next_group(&self, stream: StreamKey) -> Vec<Job> {
        let mut queues = self.queues.lock().expect("sequencer queue lock");
        let Some(queue) = queues.get_mut(&stream) else {
            return Vec::new();
        };
        let mut group = Vec::new();
        let mut events = 0;
        while let Some(job) = queue.jobs.front() {
            if !group.is_empty() && events + job.candidates.len() > self.max_group_events {
                break;
            }
            events += job.candidates.len();
            group.push(queue.jobs.pop_front().expect("front exists"));
        }
        if group.is_empty() {
            queues.remove(&stream);
        }
        group
    }

    async fn drain(self: Arc<Self>, stream: StreamKey) {
        loop {
            let group = self.next_group(stream);
            if group.is_empty() {
                return;
            }
            let events: usize = group.iter().map(|j| j.candidates.len()).sum();
            // NB: a panic must not strand the stream with `running = true`; it fails this group only.
            let result = AssertUnwindSafe(self.process(group)).catch_unwind().await;
            if result.is_err() {
                tracing::error!(tenant_id = %stream.tenant_id, store_id = %stream.store_id, "sequencing group panicked");
            }
            let left = self.queued_events.fetch_sub(events, Ordering::AcqRel) - events;
            self.metrics.ingest_queued_events.set(left as i64);
        }
    }

    async fn process(&self, group: Vec<Job>) {
        let stream = group[0].stream;
        let batches: Vec<&[Candidate]> = group.iter().map(|j| j.candidates.as_slice()).collect();
        match self.sequence_group(stream, &batches).await {
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
                        .sequence_group(stream, &[job.candidates.as_slice()])
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

    /// One transaction for a group of requests of one stream. Returns each request's outcomes and the
    /// head after commit.
    async fn sequence_group(&self, stream: StreamKey, batches: &[&[Candidate]]) -> Result<(Vec<Vec<Outcome>>, i64)> {
        let result = self.sequence_group_once(stream, batches).await;
        let mut heads = self.known_heads.lock().expect("known heads lock");
        match &result {
            Ok((_, head)) => {
                if heads.len() >= KNOWN_HEADS_MAX && !heads.contains_key(&stream) {
                    heads.clear();
                }
                heads.insert(stream, *head);
            }
            // NB: the outcome may be unknown (the connection died around COMMIT): look next time.
            Err(_) => {
                heads.remove(&stream);
            }
        }
        result
    }

    async fn sequence_group_once(
        &self,
        stream: StreamKey,
        batches: &[&[Candidate]],
    ) -> Result<(Vec<Vec<Outcome>>, i64)> {
        let all: Vec<&Candidate> = batches.iter().flat_map(|b| b.iter()).collect();
        let has_base_version = all.iter().any(|c| c.envelope.base_version.is_some());
        let sequenced_at = Utc::now().trunc_subsecs(6);
        let mut careful = has_base_version;

        let known_head = self.known_heads.lock().expect("known heads lock").get(&stream).copied();
        if let (false, Some(expected)) = (careful, known_head) {
            // Fastest path: this process wrote the head last, so number (and sign) the events after it
            // outside any lock and append them in one statement that only applies if the head is
            // still that.
            let plan: Vec<Decision> = (0..all.len()).map(|_| Decision::Accept).collect();
            let (rows, head) = self.rows(stream, &all, &plan, expected);
            let mut conn = self.store.pool().acquire().await?;
            match events::append_at_head(
                &mut conn,
                stream,
                &rows,
                sequenced_at,
                self.signer.sequencer_id,
                expected,
                head,
            )
            .await
            {
                Ok(true) => {
                    self.metrics.events_sequenced.inc_by(rows.len() as u64);
                    self.metrics.sequencing_group_events.observe(rows.len() as f64);
                    self.metrics.sequencing_transactions.inc();
                    let outcomes = self.outcomes(batches, &plan, &rows, sequenced_at, &[]);
                    return Ok((outcomes, head));
                }
                // Another replica moved the head, or the stream is paused: lock and look.
                Ok(false) => {}
                // A replayed or reused id or command: nothing was written; decide event by event.
                Err(Error::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => careful = true,
                Err(e) => return Err(e),
            }
        }

        if !careful {
            // Fast path: assume every event is new; the unique indexes tell us if one is not.
            let mut tx = self.store.begin().await?;
            let locked = events::lock_stream(&mut tx, stream).await?;
            ensure_not_paused(stream, locked.paused)?;
            let plan: Vec<Decision> = (0..all.len()).map(|_| Decision::Accept).collect();
            let (rows, head) = self.rows(stream, &all, &plan, locked.head);
            if events::insert_ves_events(&mut tx, stream, &rows, sequenced_at, self.signer.sequencer_id, head, true)
                .await?
            {
                tx.commit().await?;
                self.metrics.events_sequenced.inc_by(rows.len() as u64);
                self.metrics.sequencing_group_events.observe(rows.len() as f64);
                self.metrics.sequencing_transactions.inc();
                let outcomes = self.outcomes(batches, &plan, &rows, sequenced_at, &[]);
                return Ok((outcomes, head));
            }
            tx.rollback().await?;
        }

        // Careful path: look at what is stored before deciding each event.
        let mut tx = self.store.begin().await?;
        let locked = events::lock_stream(&mut tx, stream).await?;
        ensure_not_paused(stream, locked.paused)?;
        let event_ids: Vec<Uuid> = all.iter().map(|c| c.envelope.event_id).collect();
        let existing = events::find_by_event_ids(&mut tx, &event_ids).await?;
        let command_ids: Vec<Uuid> = all.iter().filter_map(|c| c.envelope.command_id).collect();
        let by_command = events::find_by_command_ids(&mut tx, stream, &command_ids).await?;
        let entities: Vec<(String, String)> = all
            .iter()
            .filter(|c| c.envelope.base_version.is_some())
            .map(|c| (c.envelope.entity_type.clone(), c.envelope.entity_id.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let stored_versions = events::entity_versions(&mut tx, stream, &entities).await?;

        let existing: HashMap<Uuid, &ExistingEvent> = existing.iter().map(|e| (e.event_id, e)).collect();
        let stored_commands: HashSet<Uuid> = by_command.iter().filter_map(|e| e.command_id).collect();
        let mut versions: HashMap<(&str, &str), i64> =
            stored_versions.iter().map(|(t, i, v)| ((t.as_str(), i.as_str()), *v)).collect();
        let mut accepted_ids: HashMap<Uuid, usize> = HashMap::new();
        let mut accepted_commands: HashSet<Uuid> = HashSet::new();
        let mut plan = Vec::with_capacity(all.len());
        let mut dead_letters = Vec::new();

        for (i, c) in all.iter().enumerate() {
            let e = &c.envelope;
            let decision = if let Some(stored) = existing.get(&e.event_id) {
                if is_exact_replay(stored, c) {
                    match Receipt::from_stored(stored) {
                        Some(r) => Decision::Replay(r),
                        None => reject("duplicate_event_id", "Event already exists but receipt not found"),
                    }
                } else if stored.tenant_id != e.tenant_id || stored.store_id != e.store_id {
                    reject("duplicate_event_id", "Event ID already exists")
                } else {
                    reject("duplicate_event_id", "Event ID already exists with different contents")
                }
            } else if let Some(&first) = accepted_ids.get(&e.event_id) {
                // The same event id twice in this group (two clients racing, or one retrying).
                if all[first].signing_hash == c.signing_hash
                    && all[first].envelope.agent_signature == e.agent_signature
                    && all[first].envelope.command_id == e.command_id
                    && all[first].envelope.base_version == e.base_version
                {
                    Decision::SameAs(first)
                } else {
                    reject("duplicate_event_id", "Event ID already exists with different contents")
                }
            } else if e.command_id.is_some_and(|cmd| stored_commands.contains(&cmd) || accepted_commands.contains(&cmd))
            {
                let cmd = e.command_id.expect("checked");
                Decision::Reject {
                    reason: "duplicate_command_id".into(),
                    message: format!("Command {cmd} already processed"),
                }
            } else {
                let key = (e.entity_type.as_str(), e.entity_id.as_str());
                let actual = versions.get(&key).copied().unwrap_or(0);
                match e.base_version {
                    Some(expected) if expected as i64 != actual => {
                        let reason = format!("version_conflict: expected {expected}, actual {actual}");
                        let message = format!("Version conflict: expected {expected}, actual {actual}");
                        dead_letters.push(NewDeadLetter {
                            event_id: e.event_id,
                            tenant_id: e.tenant_id,
                            store_id: e.store_id,
                            agent_id: Some(e.source_agent_id),
                            event_type: Some(e.event_type.clone()),
                            source: "ves",
                            reason: "version_conflict".into(),
                            error_message: format!("{reason}: {message}"),
                            payload: serde_json::to_value(e.as_ref()).unwrap_or_default(),
                        });
                        Decision::Reject { reason, message }
                    }
                    _ => {
                        *versions.entry(key).or_insert(0) += 1;
                        accepted_ids.insert(e.event_id, i);
                        if let Some(cmd) = e.command_id {
                            accepted_commands.insert(cmd);
                        }
                        Decision::Accept
                    }
                }
            };
            plan.push(decision);
        }

        let (rows, head) = self.rows(stream, &all, &plan, locked.head);
        if !rows.is_empty() {
            events::insert_ves_events(&mut tx, stream, &rows, sequenced_at, self.signer.sequencer_id, head, false)
                .await?;
        }
        insert_dead_letters(&mut tx, &dead_letters).await?;
        tx.commit().await?;
        if !rows.is_empty() {
            self.metrics.events_sequenced.inc_by(rows.len() as u64);
            self.metrics.sequencing_group_events.observe(rows.len() as f64);
        }
        self.metrics.dead_letters_written.inc_by(dead_letters.len() as u64);
        self.metrics.sequencing_transactions.inc();
        let outcomes = self.outcomes(batches, &plan, &rows, sequenced_at, &all);
        Ok((outcomes, head))
    }

    /// Numbers the accepted events after `head` and computes their receipts.
    fn rows<'a>(
        &self,
        stream: StreamKey,
        all: &[&'a Candidate],
        plan: &[Decision],
        head: i64,
    ) -> (Vec<VesEventRow<'a>>, i64) {
        let mut next = head;
        let mut rows = Vec::new();
        for (c, d) in all.iter().zip(plan) {
            if !matches!(d, Decision::Accept) {
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
            let sequencer_signature = self.signer.key.as_ref().map(|k| k.sign(&receipt_hash).to_bytes());
            let leaf_hash = ves::hash::leaf_hash(
                stream.tenant_id,
                stream.store_id,
                next as u64,
                &c.signing_hash,
                &c.envelope.agent_signature.0,
            );
            rows.push(VesEventRow {
                envelope: c.envelope.as_ref(),
                created_at: c.created_at,
                signing_hash: c.signing_hash,
                sequence_number: next,
                receipt_hash,
                sequencer_signature,
                leaf_hash,
            });
        }
        (rows, next)
    }

    /// Splits the group's decisions back into per-request outcomes.
    fn outcomes(
        &self,
        batches: &[&[Candidate]],
        plan: &[Decision],
        rows: &[VesEventRow<'_>],
        sequenced_at: DateTime<Utc>,
        all: &[&Candidate],
    ) -> Vec<Vec<Outcome>> {
        let mut receipts: HashMap<Uuid, Receipt> = HashMap::with_capacity(rows.len());
        let mut in_order = Vec::with_capacity(plan.len());
        let mut row = rows.iter();
        for d in plan {
            in_order.push(match d {
                Decision::Accept => {
                    let r = row.next().expect("one row per accepted event");
                    let receipt = Receipt::new(
                        self.signer.sequencer_id,
                        r.envelope.event_id,
                        r.sequence_number,
                        sequenced_at,
                        &r.receipt_hash,
                        r.sequencer_signature.as_ref().map(|s| &s[..]),
                    );
                    receipts.insert(r.envelope.event_id, receipt.clone());
                    Outcome::Sequenced(receipt)
                }
                Decision::Replay(r) => Outcome::Replayed(r.clone()),
                // The copy stored earlier in this group: its receipt is already in the map.
                Decision::SameAs(first) => Outcome::Replayed(receipts[&all[*first].envelope.event_id].clone()),
                Decision::Reject { reason, message } => {
                    Outcome::Rejected { reason: reason.clone(), message: message.clone() }
                }
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

enum Decision {
    Accept,
    Replay(Receipt),
    /// Identical to the accepted event at this index of the group.
    SameAs(usize),
    Reject {
        reason: String,
        message: String,
    },
}

fn reject(reason: &str, message: &str) -> Decision {
    Decision::Reject { reason: reason.into(), message: message.into() }
}

/// 503 `STREAM_PAUSED` when an operator paused the stream.
pub fn ensure_not_paused(stream: StreamKey, paused: bool) -> Result<()> {
    if paused {
        return Err(Error::Unavailable {
            code: "STREAM_PAUSED",
            message: format!(
                "Ingestion of stream {}/{} is paused by an operator; events are not accepted until it is resumed",
                stream.tenant_id, stream.store_id
            ),
            retry_after_secs: Some(30),
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests;
