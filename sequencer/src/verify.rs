//! Stream verification: reads a stream's log and commitments back and checks everything that can be
//! recomputed. Used by `POST /api/v1/admin/verify`, `stateset-sequencer-admin verify` and the operator's
//! `VerifyStream` action.
//!
//! Findings:
//! - `gap`: a number between 1 and the head is missing;
//! - `duplicate`: a number is stored twice;
//! - `duplicate_event_id`: a signed event's id is stored more than once in its tenant, in different id
//!   epochs (migration 0024: the database's index keeps an id unique only within its epoch; the
//!   sequencer's filters keep it unique across them, and this checks that from the index);
//! - `bad_hash`: a stored hash (payload, signing, leaf, receipt) differs from its recomputation;
//! - `bad_signature`: the agent signature does not verify against the agent's registered key;
//! - `bad_receipt_signature`: the stored sequencer signature does not verify, over the event's receipt
//!   hash, against any receipt key its sequencer recorded (migration 0023). An event whose sequencer id
//!   has no key on record (sequenced by a release before 0023, or with no receipt key) is counted in
//!   `receiptSignaturesUnchecked`, not reported. With keys pinned ([`ReceiptKeyTrust::Pinned`]: keys the
//!   verifier holds from outside the database) every stored sequencer signature must verify under one of
//!   those, whatever the database recorded: a key added to `receipt_keys` by someone who can write to the
//!   database vouches for nothing;
//! - `commitment_mismatch`: a commitment's Merkle root, state root or chain link differs from what the
//!   events give;
//! - `log_modified`: a row of the log was deleted or updated (or the log truncated) with its
//!   append-only triggers bypassed (`session_replication_role = replica`), as recorded by the
//!   database;
//! - `leaf_run_mismatch`: a leaf run (the per-transaction copy of the leaves that commitments read,
//!   and of the transparency log leaves the integrator reads) differs from the leaves the events give;
//! - `version_mark_mismatch`: an entity's version mark (migration 0022, what `base_version` checks count
//!   from) differs from the number of the entity's events up to the mark's position.

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

use crate::error::Result;
use crate::store::Store;
use crate::store::commitments::{CommitmentRow, ListFilter};
use crate::store::events::{StoredEvent, StreamKey, StreamStatus, scan_stream};

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: &'static str,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    pub detail: String,
}

/// What a verification run saw.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub ok: bool,
    pub streams_checked: u64,
    pub events_checked: u64,
    pub commitments_checked: u64,
    /// Stored sequencer signatures checked, against their sequencer's recorded receipt keys or the
    /// pinned ones.
    pub receipt_signatures_checked: u64,
    /// Stored sequencer signatures whose sequencer recorded no key (sequenced before migration 0023).
    /// Always 0 with pinned keys.
    pub receipt_signatures_unchecked: u64,
    /// Whether sequencer signatures were checked against pinned keys instead of the recorded ones.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub receipt_keys_pinned: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    /// An empty report of a verification that checks sequencer signatures as `trust` says.
    fn checking(trust: &ReceiptKeyTrust) -> Self {
        Report { receipt_keys_pinned: matches!(trust, ReceiptKeyTrust::Pinned(_)), ..Report::default() }
    }
}

/// Findings past this many are counted but not listed.
const MAX_FINDINGS: usize = 1000;
const CHUNK: i64 = 5000;

/// Which keys a stored sequencer signature must verify under.
#[derive(Debug, Clone, Default)]
pub enum ReceiptKeyTrust {
    /// Any key the event's sequencer recorded in `receipt_keys` (migration 0023). This trusts the
    /// database: whoever can write to it can also record a key.
    #[default]
    Recorded,
    /// Only these keys, held by the verifier (from `GET /api/v1/ves/sequencer` when it was trusted, or
    /// from the seed's owner); the database's record is not read.
    Pinned(Arc<[VerifyingKey]>),
}

impl ReceiptKeyTrust {
    /// Pinned keys from their hex encoding (`public_key` of `GET /api/v1/ves/sequencer`, with or
    /// without `0x`); none given is [`ReceiptKeyTrust::Recorded`].
    pub fn from_hex<S: AsRef<str>>(keys: &[S]) -> std::result::Result<Self, String> {
        let keys = keys.iter().map(|k| parse_receipt_key(k.as_ref())).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self::pinned(keys))
    }

    /// These keys pinned; none is [`ReceiptKeyTrust::Recorded`].
    pub fn pinned(keys: Vec<VerifyingKey>) -> Self {
        if keys.is_empty() { Self::Recorded } else { Self::Pinned(keys.into()) }
    }
}

/// A receipt public key from hex (with or without `0x`).
pub fn parse_receipt_key(key: &str) -> std::result::Result<VerifyingKey, String> {
    let key = key.trim();
    ves::verify::public_key_from_hex(key).map_err(|e| match e {
        ves::verify::PublicKeyHexError::NotAKey => format!("receipt key {key:?} is not an Ed25519 public key"),
        _ => format!("receipt key {key:?} is not 32 bytes of hex"),
    })
}

/// Verifies one stream, or every stream of a tenant, or everything.
pub async fn verify(store: &Store, tenant_id: Option<Uuid>, store_id: Option<Uuid>) -> Result<Report> {
    verify_streams(store, store.streams(tenant_id, store_id, i64::MAX).await?, &ReceiptKeyTrust::Recorded).await
}

/// Verifies the streams given.
pub async fn verify_streams(store: &Store, streams: Vec<StreamStatus>, trust: &ReceiptKeyTrust) -> Result<Report> {
    verify_streams_with(store, streams, trust, |_| {}).await
}

/// Verifies the streams given, handing the report so far to `progress` after each stream (the
/// background jobs publish it; the admin CLI prints it).
pub async fn verify_streams_with(
    store: &Store,
    streams: Vec<StreamStatus>,
    trust: &ReceiptKeyTrust,
    mut progress: impl FnMut(&Report),
) -> Result<Report> {
    let mut report = Report::checking(trust);
    let mut receipt_keys = ReceiptKeys { trust: trust.clone(), recorded: HashMap::new() };
    // The ids stored in more than one epoch, by tenant: read once per tenant, for all its streams.
    let mut reused_ids: HashMap<Uuid, HashMap<Uuid, Vec<i32>>> = HashMap::new();
    for s in streams {
        let stream = StreamKey { tenant_id: s.tenant_id, store_id: s.store_id };
        if let std::collections::hash_map::Entry::Vacant(slot) = reused_ids.entry(s.tenant_id) {
            let mut conn = store.pool().acquire().await?;
            slot.insert(crate::store::epochs::ids_in_several_epochs(&mut conn, s.tenant_id).await?);
        }
        let checks = StreamChecks { receipt_keys: &mut receipt_keys, reused_ids: &reused_ids[&s.tenant_id] };
        verify_stream(store, stream, s.head, checks, &mut report).await?;
        report.streams_checked += 1;
        report.findings.truncate(MAX_FINDINGS);
        report.ok = report.findings.is_empty();
        progress(&report);
    }
    report.findings.truncate(MAX_FINDINGS);
    report.ok = report.findings.is_empty();
    Ok(report)
}

/// A background verification: `POST /api/v1/admin/verify/jobs` starts one over the caller's scope and
/// `GET /api/v1/admin/verify/jobs/{id}` reports its progress and findings, so a tenant with 10^5
/// streams is verified without holding a request open. Jobs live in the memory of the replica that
/// started them (ask the same replica; a restart forgets them).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyJob {
    pub id: Uuid,
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    pub streams_total: u64,
    pub report: Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What the job covers: only callers whose scope covers it may read it.
    #[serde(skip)]
    pub scope: crate::store::scope::Scope,
}

/// Finished jobs kept for reading (the oldest finished are forgotten first).
const KEPT_JOBS: usize = 100;

/// The jobs of this replica.
#[derive(Default)]
pub struct VerifyJobs {
    jobs: std::sync::Arc<std::sync::Mutex<Vec<VerifyJob>>>,
}

impl VerifyJobs {
    /// Starts verifying `streams` in the background; returns the job as it starts.
    pub fn start(
        &self,
        store: Store,
        streams: Vec<StreamStatus>,
        trust: ReceiptKeyTrust,
        scope: crate::store::scope::Scope,
    ) -> VerifyJob {
        let job = VerifyJob {
            id: Uuid::new_v4(),
            state: "running",
            streams_total: streams.len() as u64,
            report: Report { ok: true, ..Report::checking(&trust) },
            error: None,
            started_at: chrono::Utc::now(),
            finished_at: None,
            scope,
        };
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            while jobs.len() >= KEPT_JOBS {
                match jobs.iter().position(|j| j.state != "running") {
                    Some(i) => jobs.remove(i),
                    None => break,
                };
            }
            jobs.push(job.clone());
        }
        let (jobs, id) = (self.jobs.clone(), job.id);
        let update = move |f: &dyn Fn(&mut VerifyJob)| {
            let mut jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(j) = jobs.iter_mut().find(|j| j.id == id) {
                f(j);
            }
        };
        tokio::spawn(async move {
            let result = verify_streams_with(&store, streams, &trust, |r| update(&|j| j.report = r.clone())).await;
            update(&|j| {
                j.finished_at = Some(chrono::Utc::now());
                match &result {
                    Ok(report) => {
                        j.state = "done";
                        j.report = report.clone();
                    }
                    Err(e) => {
                        j.state = "failed";
                        j.error = Some(e.to_string());
                    }
                }
            });
        });
        job
    }

    /// A job by id.
    pub fn get(&self, id: Uuid) -> Option<VerifyJob> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|j| j.id == id).cloned()
    }
}

fn finding(stream: StreamKey, kind: &'static str, seq: Option<i64>, detail: String) -> Finding {
    Finding {
        kind,
        tenant_id: stream.tenant_id,
        store_id: stream.store_id,
        sequence_number: seq,
        batch_id: None,
        detail,
    }
}

/// The keys a sequencer's signatures are checked against: the pinned ones, or those each sequencer id
/// recorded, read once per id and verification run.
struct ReceiptKeys {
    trust: ReceiptKeyTrust,
    recorded: HashMap<Uuid, Arc<[VerifyingKey]>>,
}

impl ReceiptKeys {
    /// The keys for an event signed by `sequencer_id` (none recorded: empty, the signature unchecked).
    async fn of(&mut self, store: &Store, sequencer_id: Option<Uuid>) -> Result<Arc<[VerifyingKey]>> {
        let sequencer_id = match (&self.trust, sequencer_id) {
            (ReceiptKeyTrust::Pinned(keys), _) => return Ok(keys.clone()),
            (ReceiptKeyTrust::Recorded, None) => return Ok(Arc::from([])),
            (ReceiptKeyTrust::Recorded, Some(id)) => id,
        };
        if let Some(keys) = self.recorded.get(&sequencer_id) {
            return Ok(keys.clone());
        }
        let keys: Arc<[VerifyingKey]> = store
            .receipt_keys_of(sequencer_id)
            .await?
            .iter()
            .filter_map(|k| VerifyingKey::from_bytes(k).ok())
            .collect();
        self.recorded.insert(sequencer_id, keys.clone());
        Ok(keys)
    }
}

/// What a stream's checks share with the other streams of a run.
struct StreamChecks<'a> {
    receipt_keys: &'a mut ReceiptKeys,
    /// The stream's tenant's ids stored in more than one epoch ([`crate::store::epochs::ids_in_several_epochs`]).
    reused_ids: &'a HashMap<Uuid, Vec<i32>>,
}

async fn verify_stream(
    store: &Store,
    stream: StreamKey,
    head: i64,
    StreamChecks { receipt_keys, reused_ids }: StreamChecks<'_>,
    report: &mut Report,
) -> Result<()> {
    let mut conn = store.pool().acquire().await?;
    let mut keys: HashMap<(Uuid, i64), Option<VerifyingKey>> = HashMap::new();
    // Recomputed leaves by sequence number, for the commitment checks.
    let mut leaves: HashMap<i64, [u8; 32]> = HashMap::new();
    // The transparency log leaf of each event's entry, as the integrator would compute it reading the
    // event back (`None` when the event cannot be encoded; the log then cannot hold it either).
    let mut log_leaves: LogLeaves = HashMap::new();
    // Each marked entity's events up to its mark's position, counted as the scan passes them: by entity
    // type, then id, (version, at sequence, counted).
    let mut marks: HashMap<String, HashMap<String, (i64, i64, i64)>> = HashMap::new();
    for (entity_type, entity_id, version, at) in crate::store::events::version_marks(&mut conn, stream).await? {
        marks.entry(entity_type).or_default().insert(entity_id, (version, at, 0));
    }
    let mut expected = 1i64;
    let mut after = (0i64, Uuid::nil());
    loop {
        let rows = scan_stream(&mut conn, stream, after, CHUNK).await?;
        let Some(last) = rows.last() else { break };
        after = (last.sequence_number, last.event_id);
        let mut to_verify = Vec::new();
        let mut receipts = Vec::new();
        for e in &rows {
            report.events_checked += 1;
            let seq = e.sequence_number;
            if seq < expected {
                report.findings.push(finding(
                    stream,
                    "duplicate",
                    Some(seq),
                    format!("sequence number {seq} is stored more than once"),
                ));
            } else {
                if seq > expected {
                    report.findings.push(finding(
                        stream,
                        "gap",
                        Some(expected),
                        format!("events {expected}..={} are missing", seq - 1),
                    ));
                }
                expected = seq + 1;
            }
            // The envelope and its signing hash, once per event: the hashes, the agent signature and the
            // receipt signature are all checked from them.
            let envelope = if e.signed { e.envelope().ok().map(|env| (env.signing_hash(), env)) } else { None };
            if let Some(leaf) = check_event(stream, e, envelope.as_ref(), report) {
                leaves.insert(seq, leaf);
            }
            if let Some((_, at, counted)) =
                marks.get_mut(e.entity_type.as_str()).and_then(|ids| ids.get_mut(e.entity_id.as_str()))
                && seq <= *at
            {
                *counted += 1;
            }
            log_leaves.insert(seq, crate::tlog::entry_of(e).ok().map(|entry| crate::tlog::leaf_hash(&entry).0));
            if let (Some(signature), Some((signing_hash, _))) = (e.sequencer_signature.as_deref(), &envelope) {
                let keys = receipt_keys.of(store, e.sequencer_id).await?;
                match <[u8; 64]>::try_from(signature) {
                    _ if keys.is_empty() => report.receipt_signatures_unchecked += 1,
                    Ok(signature) => {
                        let receipt = ves::hash::receipt_hash(
                            stream.tenant_id,
                            stream.store_id,
                            e.event_id,
                            seq as u64,
                            signing_hash,
                        );
                        receipts.push((seq, receipt, signature, keys));
                    }
                    Err(_) => report.findings.push(finding(
                        stream,
                        "bad_receipt_signature",
                        Some(seq),
                        "the stored sequencer signature is not 64 bytes".into(),
                    )),
                }
            }
            if e.signed {
                if let Some(epochs) = reused_ids.get(&e.event_id) {
                    report.findings.push(finding(
                        stream,
                        "duplicate_event_id",
                        Some(seq),
                        format!(
                            "event id {} is stored {} times in the tenant (id epochs {epochs:?})",
                            e.event_id,
                            epochs.len()
                        ),
                    ));
                }
                let agent_key = (e.source_agent_id, e.agent_key_id.unwrap_or(-1));
                if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(agent_key) {
                    let key = store
                        .agent_key(stream.tenant_id, e.source_agent_id, e.agent_key_id.unwrap_or(0) as u32)
                        .await?
                        .and_then(|k| <[u8; 32]>::try_from(k.public_key.as_slice()).ok())
                        .and_then(|b| VerifyingKey::from_bytes(&b).ok());
                    slot.insert(key);
                }
                match (keys[&agent_key], &envelope) {
                    (Some(key), Some((hash, env))) => to_verify.push((seq, *hash, env.agent_signature.0, key)),
                    _ => report.findings.push(finding(
                        stream,
                        "bad_signature",
                        Some(seq),
                        format!("agent key {} of agent {} is not registered", agent_key.1, agent_key.0),
                    )),
                }
            }
        }
        report.receipt_signatures_checked += receipts.len() as u64;
        let (bad_agent, bad_receipt) =
            crate::compute::run("verification", move || bad_signatures(&to_verify, &receipts)).await?;
        for seq in bad_agent {
            report.findings.push(finding(stream, "bad_signature", Some(seq), "agent signature does not verify".into()));
        }
        for seq in bad_receipt {
            let detail = match receipt_keys.trust {
                ReceiptKeyTrust::Pinned(_) => {
                    "the stored sequencer signature does not verify under any pinned receipt key"
                }
                ReceiptKeyTrust::Recorded => {
                    "the stored sequencer signature does not verify under any receipt key its sequencer recorded"
                }
            };
            report.findings.push(finding(stream, "bad_receipt_signature", Some(seq), detail.into()));
        }
    }
    if expected <= head {
        report.findings.push(finding(
            stream,
            "gap",
            Some(expected),
            format!("events {expected}..={head} (up to the head) are missing"),
        ));
    }
    for (operation, seq, at) in crate::store::commitments::log_damage(&mut conn, stream).await? {
        report.findings.push(finding(
            stream,
            "log_modified",
            seq,
            format!("{operation} at {at} bypassed the log's append-only triggers"),
        ));
    }
    for (entity_type, ids) in marks {
        for (entity_id, (version, at, counted)) in ids {
            if counted != version {
                report.findings.push(finding(
                    stream,
                    "version_mark_mismatch",
                    Some(at),
                    format!(
                        "entity {entity_type}/{entity_id} has {counted} events up to {at}, its version mark says {version}"
                    ),
                ));
            }
        }
    }
    check_leaf_runs(&mut conn, stream, (&leaves, &log_leaves), report).await?;
    let commitments = store.list_commitments(stream, ListFilter::default(), i64::MAX).await?;
    check_commitments(stream, &commitments, &leaves, report);
    Ok(())
}

/// An agent signature to check: (sequence number, signing hash, signature, the agent's key).
type AgentSignature = (i64, [u8; 32], [u8; 64], VerifyingKey);

/// A sequencer signature to check: (sequence number, receipt hash, signature, its sequencer's keys).
type ReceiptSignature = (i64, [u8; 32], [u8; 64], Arc<[VerifyingKey]>);

/// The sequence numbers whose agent signature, and whose sequencer signature, do not verify; in order.
/// On rayon's pool, where a chunk's signatures are checked in parallel without holding an async worker.
///
/// NB: one by one, as clients verify (batch verification can accept what single verification refuses).
fn bad_signatures(agents: &[AgentSignature], receipts: &[ReceiptSignature]) -> (Vec<i64>, Vec<i64>) {
    use rayon::prelude::*;
    let bad_agent = agents
        .par_iter()
        .filter(|(_, hash, signature, key)| !ves::verify::verify_one(signature, hash, key))
        .map(|(seq, ..)| *seq)
        .collect();
    let bad_receipt = receipts
        .par_iter()
        .filter(|(_, hash, signature, keys)| !keys.iter().any(|key| ves::verify::verify_one(signature, hash, key)))
        .map(|(seq, ..)| *seq)
        .collect();
    (bad_agent, bad_receipt)
}

/// Each event's recomputed transparency log leaf, by number (`None`: the event cannot be encoded).
type LogLeaves = HashMap<i64, Option<[u8; 32]>>;

/// A leaf run as verification reads it: first and last number, VES leaves, transparency log leaves.
type RunRow = (i64, i64, Vec<u8>, Option<Vec<u8>>);

/// Every leaf run of the stream must hold the recomputed leaves of its events, and the recomputed
/// transparency log leaves where it holds those. (Events without a run are not a finding: runs are an
/// index, and events stored by a version without them have none.)
async fn check_leaf_runs(
    conn: &mut sqlx::PgConnection,
    stream: StreamKey,
    (leaves, log_leaves): (&HashMap<i64, [u8; 32]>, &LogLeaves),
    report: &mut Report,
) -> Result<()> {
    let mut after = 0i64;
    loop {
        let rows: Vec<RunRow> = sqlx::query_as(
            "SELECT first_sequence, last_sequence, leaves, tlog_leaves FROM event_leaf_runs \
             WHERE tenant_id = $1 AND store_id = $2 AND first_sequence > $3 ORDER BY first_sequence LIMIT 1000",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = last.0;
        for (first, last, run_leaves, tlog_leaves) in rows {
            let ves = |seq: i64| leaves.get(&seq).copied();
            let log = |seq: i64| log_leaves.get(&seq).copied().flatten();
            let kinds: [(&str, &str, Option<Vec<u8>>, Expected); 2] = [
                ("leaves", "leaf", Some(run_leaves), &ves),
                ("transparency log leaves", "transparency log leaf", tlog_leaves, &log),
            ];
            for (plural, singular, stored, expected) in kinds {
                let Some(stored) = stored else { continue };
                if let Some((seq, detail)) = run_mismatch((first, last), &stored, (plural, singular), expected) {
                    report.findings.push(finding(stream, "leaf_run_mismatch", Some(seq), detail));
                }
            }
        }
    }
}

/// The leaf an event gives, by sequence number (`None`: the event is missing or cannot be encoded).
type Expected<'a> = &'a dyn Fn(i64) -> Option<[u8; 32]>;

/// Where the leaves a run stores (32 bytes per event, `first..=last`) first differ from what the
/// events give: `(sequence number, detail)`.
fn run_mismatch(
    (first, last): (i64, i64),
    stored: &[u8],
    (plural, singular): (&str, &str),
    expected: Expected,
) -> Option<(i64, String)> {
    if stored.len() as i64 != 32 * (last - first + 1) {
        return Some((first, format!("the {plural} of the run {first}..={last} have a wrong length")));
    }
    let (i, _) = stored
        .chunks_exact(32)
        .enumerate()
        .find(|(i, leaf)| expected(first + *i as i64).is_none_or(|l| l[..] != **leaf))?;
    let seq = first + i as i64;
    Some((seq, format!("the leaf run starting at {first} holds a {singular} that the event {seq} does not give")))
}

/// Recomputes an event's hashes; returns its recomputed leaf. `signed`: a signed event's signing hash and
/// envelope (`None` where the stored columns do not make one).
fn check_event(
    stream: StreamKey,
    e: &StoredEvent,
    signed: Option<&([u8; 32], VesEventEnvelope)>,
    report: &mut Report,
) -> Option<[u8; 32]> {
    let seq = e.sequence_number;
    let mut bad = |what: &str| {
        report.findings.push(finding(
            stream,
            "bad_hash",
            Some(seq),
            format!("stored {what} does not match its recomputation"),
        ))
    };
    if !e.signed {
        let payload_hash =
            crate::ingest::legacy::legacy_payload_hash(e.payload.as_ref().unwrap_or(&serde_json::Value::Null));
        if e.payload_hash.as_deref() != Some(&payload_hash[..]) {
            bad("payload_hash");
        }
        let leaf = crate::ingest::legacy::legacy_leaf(stream, seq as u64, &payload_hash);
        if e.leaf_hash.as_deref() != Some(&leaf[..]) {
            bad("leaf_hash");
        }
        return Some(leaf);
    }
    let Some((signing_hash, env)) = signed else {
        bad("envelope");
        return None;
    };
    if e.event_signing_hash.as_deref() != Some(&signing_hash[..]) {
        bad("event_signing_hash");
    }
    if env.payload_kind == 0
        && let Some(payload) = &env.payload
        && ves::hash::payload_plain_hash(payload) != env.payload_plain_hash.0
    {
        bad("payload_plain_hash");
    }
    let leaf =
        ves::hash::leaf_hash(stream.tenant_id, stream.store_id, seq as u64, signing_hash, &env.agent_signature.0);
    if e.leaf_hash.as_deref() != Some(&leaf[..]) {
        bad("leaf_hash");
    }
    // A receipt hash stored before migration 0021 must be the event's; since, none is stored (it is derived
    // from the columns checked above wherever a receipt is answered).
    if let Some(stored) = &e.stored_receipt_hash
        && stored[..]
            != ves::hash::receipt_hash(stream.tenant_id, stream.store_id, e.event_id, seq as u64, signing_hash)
    {
        bad("receipt_hash");
    }
    Some(leaf)
}

fn check_commitments(
    stream: StreamKey,
    commitments: &[CommitmentRow],
    leaves: &HashMap<i64, [u8; 32]>,
    report: &mut Report,
) {
    let mut prev = [0u8; 32];
    for c in commitments {
        report.commitments_checked += 1;
        let mut mismatch = |detail: String| {
            report.findings.push(Finding {
                kind: "commitment_mismatch",
                tenant_id: stream.tenant_id,
                store_id: stream.store_id,
                sequence_number: Some(c.sequence_start),
                batch_id: Some(c.batch_id),
                detail,
            })
        };
        let range: Option<Vec<[u8; 32]>> =
            (c.sequence_start..=c.sequence_end).map(|s| leaves.get(&s).copied()).collect();
        let Some(range) = range else {
            mismatch(format!("events of {}..={} are missing", c.sequence_start, c.sequence_end));
            continue;
        };
        let root = ves::merkle::merkle_root(&range);
        if c.merkle_root != root {
            mismatch(format!("merkle_root {} but the events give {}", hex::encode(&c.merkle_root), hex::encode(root)));
        }
        if c.prev_state_root != prev {
            mismatch("prev_state_root does not chain to the previous commitment".into());
        }
        let state = ves::hash::state_root(
            stream.tenant_id,
            stream.store_id,
            &prev,
            &root,
            c.sequence_start as u64,
            c.sequence_end as u64,
            c.leaf_count as u32,
        );
        if c.new_state_root != state {
            mismatch("new_state_root does not match the events".into());
        }
        prev = c.new_state_root.as_slice().try_into().unwrap_or([0u8; 32]);
    }
}
