//! Signed VES ingest: the checks of ves-wire.md §1.5 and §3, in an order that keeps work out of any lock.
//!
//! 1. Whole-request checks (shape, scope, limits) fail the request with a 4xx and store nothing.
//! 2. Per-event checks that need no database (version, structure, timestamps, payload and cipher
//!    hashes), then the agent key (cached) and the Ed25519 signatures (a large batch's on the compute
//!    pool). A failing event becomes a rejection inside a 200, as upstream.
//! 3. Rejections a fix could cure are written to the dead-letter queue before anything is answered.
//! 4. The rest go to the stream's group-commit [`Sequencer`].

pub mod keys;
pub mod legacy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use ves::envelope::{RawPayload, VesEventEnvelope};
use ves::hash::CanonicalPayload;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::ingest::keys::{AgentKeyCache, SignatureCheck};
use crate::json_out::Object;
use crate::metrics::Metrics;
use crate::reason::{Reason, Refusal};
use crate::sequencing::{Candidate, Outcome, Receipt, Sequencer, dead_letter_of, is_exact_replay};
use crate::store::Store;
use crate::store::dead_letters::NewDeadLetter;
use crate::store::events::StreamKey;

/// `POST /api/v1/ves/events/ingest` body (wrapper camelCase, envelopes snake_case).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestRequest {
    pub agent_id: Uuid,
    pub events: Vec<IngestEnvelope>,
}

/// An event as ingest reads it: its plaintext payload kept as the JSON text it arrived as, which is
/// hashed, stored and served as it is when it is already canonical (nearly every payload), so no
/// `serde_json::Value` is built for it ([`CheckedPayload::of`]).
pub type IngestEnvelope = VesEventEnvelope<RawPayload>;

/// What the per-event checks and the row need of a plaintext payload, worked out once by the
/// whole-request check (which measures the payload by it).
#[derive(Debug)]
pub struct CheckedPayload {
    /// Its `payload_plain_hash` (over its JCS bytes).
    plain_hash: ves::Hash32,
    /// Its compact JSON (`serde_json::to_string` of its parse): the `payload_text` column's value and
    /// the transparency log entry's payload.
    compact: Arc<str>,
    /// Whether a string of it holds U+0000, which PostgreSQL's text cannot.
    contains_nul: bool,
    /// [`crate::store::events::survives_jsonb`] of it.
    survives_jsonb: bool,
}

impl CheckedPayload {
    /// `payload` (that of event `index` of the request) checked: taken as it is when its text is
    /// already canonical; otherwise parsed once, within the nesting the whole request's parse used to
    /// allow, for everything else.
    fn of(payload: &RawPayload, index: usize) -> Result<Self> {
        let text = payload.get();
        if let Some(plain_hash) = ves::hash::payload_plain_hash_of_canonical_text(text) {
            // NB: a canonical text writes U+0000 as `\u0000`, which `is_canonical` declines, and holds no
            // float in exponent form or negative zero, which are what does not survive jsonb.
            return Ok(CheckedPayload {
                plain_hash,
                compact: Arc::from(text),
                contains_nul: false,
                survives_jsonb: true,
            });
        }
        // NB: the request's parse checked this text's syntax only (serde_json's `RawValue`); what the
        // parse of a `Value` refuses besides (a number beyond a double's range, too deep a nesting) is
        // refused here as the whole request's parse used to refuse it: a 400 naming the payload.
        let unreadable = |detail: &dyn std::fmt::Display| Error::UnprocessableBody {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: format!("Failed to deserialize the JSON body at events[{index}].payload: {detail}"),
        };
        if nesting(text) > ves::jcs::MAX_CANONICAL_NESTING {
            return Err(unreadable(&"recursion limit exceeded"));
        }
        let value = payload.to_value().map_err(|e| unreadable(&e))?;
        let canonical = CanonicalPayload::of(&value);
        let plain_hash = canonical.plain_hash();
        let compact: Arc<str> = match canonical.into_compact_json() {
            Some(json) => Arc::from(json),
            None => Arc::from(serde_json::to_string(&value).expect("a Value serializes")),
        };
        Ok(CheckedPayload {
            plain_hash,
            compact,
            contains_nul: json_contains_nul(&value),
            survives_jsonb: crate::store::events::survives_jsonb(&value),
        })
    }
}

/// The deepest nesting of arrays and objects in a JSON text, counted without recursion.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// One refused event, keys snake_case as upstream (`reason` as its wire string).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    pub event_id: Uuid,
    pub reason: Reason,
    pub message: String,
}

/// The ingest answer (ves-wire.md §1.5).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestResponse {
    pub batch_id: Uuid,
    pub events_accepted: u32,
    pub events_rejected: u32,
    pub sequence_start: Option<u64>,
    pub sequence_end: Option<u64>,
    pub head_sequence: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejections: Vec<Rejection>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<Receipt>,
}

impl IngestResponse {
    /// The answer's JSON, the bytes `serde_json::to_vec` gives, written by hand ([`crate::json_out`]):
    /// every accepted event has a receipt, and serde_json's escape scan of its ids, time and hex was most
    /// of the answer's 0.6 µs per event (`scripts/cpu-areas`, 64 streams x 100).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 330 * self.receipts.len());
        let mut o = Object::start(&mut out);
        o.uuid("batchId", self.batch_id);
        o.int("eventsAccepted", self.events_accepted);
        o.int("eventsRejected", self.events_rejected);
        o.int_or_null("sequenceStart", self.sequence_start);
        o.int_or_null("sequenceEnd", self.sequence_end);
        o.int("headSequence", self.head_sequence);
        if !self.rejections.is_empty() {
            serde_json::to_writer(o.key("rejections"), &self.rejections).expect("writing to a Vec cannot fail");
        }
        if !self.receipts.is_empty() {
            let list = o.key("receipts");
            list.push(b'[');
            for (i, r) in self.receipts.iter().enumerate() {
                if i > 0 {
                    list.push(b',');
                }
                let mut receipt = Object::start(list);
                receipt.uuid("sequencerId", r.sequencer_id);
                receipt.uuid("eventId", r.event_id);
                receipt.int("sequenceNumber", r.sequence_number);
                receipt.text("sequencedAt", &r.sequenced_at);
                receipt.text("receiptHash", &r.receipt_hash);
                receipt.text("signatureAlg", r.signature_alg);
                receipt.text("sequencerSignature", &r.sequencer_signature);
                receipt.int("sequencerKeyVersion", r.sequencer_key_version);
                receipt.end();
            }
            list.push(b']');
        }
        o.end();
        out
    }
}

/// Limits that apply to a request as a whole.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    pub max_events_per_batch: usize,
    pub max_event_payload_size: usize,
    pub require_signed_execution_controls: bool,
    /// `MAX_CLOCK_SKEW_SECS`: refuse events whose `created_at` is further than this from server time.
    pub max_clock_skew: Option<std::time::Duration>,
}

/// The ingest domain service.
pub struct Ingest {
    store: Store,
    keys: AgentKeyCache,
    sequencer: Arc<Sequencer>,
    metrics: Arc<Metrics>,
    limits: IngestLimits,
    policies: crate::policy::PolicyCache,
}

enum Verdict {
    Valid(Candidate),
    /// Refused before sequencing.
    Rejected(Refusal),
}

fn rejected(reason: Reason, message: impl Into<String>) -> Verdict {
    Verdict::Rejected(Refusal::new(reason, message))
}

impl Ingest {
    pub fn new(
        store: Store,
        keys: AgentKeyCache,
        sequencer: Arc<Sequencer>,
        metrics: Arc<Metrics>,
        limits: IngestLimits,
    ) -> Self {
        let policies = crate::policy::PolicyCache::new(store.clone());
        Ingest { store, keys, sequencer, metrics, limits, policies }
    }

    pub fn keys(&self) -> &AgentKeyCache {
        &self.keys
    }

    /// Per-agent event policies (crate::policy).
    pub fn policies(&self) -> &crate::policy::PolicyCache {
        &self.policies
    }

    pub fn sequencer(&self) -> &Arc<Sequencer> {
        &self.sequencer
    }

    /// Checks that fail the whole request (ves-wire.md §1.5 handler order).
    ///
    /// Returns the stream and, for each event with a plaintext payload, the payload checked
    /// ([`CheckedPayload`]): the size check measures the payload by it and [`Self::validate`] hashes it,
    /// so that each payload is worked on once.
    fn check_request(&self, caller: &Caller, req: &IngestRequest) -> Result<(StreamKey, Vec<Option<CheckedPayload>>)> {
        let first = req.events.first().ok_or_else(|| Error::BadRequest("events must not be empty".into()))?;
        let stream = StreamKey { tenant_id: first.tenant_id, store_id: first.store_id };
        if req.events.iter().any(|e| e.tenant_id != stream.tenant_id || e.store_id != stream.store_id) {
            return Err(Error::BadRequest("All events in a batch must share the same tenantId and storeId".into()));
        }
        if caller.agent_id.is_some_and(|a| a != req.agent_id) {
            return Err(Error::Forbidden("Agent mismatch".into()));
        }
        if req.events.iter().any(|e| e.source_agent_id != req.agent_id) {
            return Err(Error::BadRequest("event source_agent_id must match request agent_id".into()));
        }
        caller.require_write(stream)?;
        let (n, max) = (req.events.len(), self.limits.max_events_per_batch);
        if n > max {
            return Err(Error::PayloadTooLarge(format!("Batch exceeds max_events_per_batch ({n} > {max})")));
        }
        let mut canonical = Vec::with_capacity(n);
        for (i, e) in req.events.iter().enumerate() {
            check_len("entity_type", &e.entity_type, 128)?;
            check_len("entity_id", &e.entity_id, 512)?;
            check_len("event_type", &e.event_type, 256)?;
            let plain = e.payload.as_ref().map(|p| CheckedPayload::of(p, i)).transpose()?;
            let size = match (&plain, &e.payload_encrypted) {
                (Some(p), _) => p.compact.len(),
                (None, Some(p)) => json_len(p),
                (None, None) => 0,
            };
            let max = self.limits.max_event_payload_size;
            if size > max {
                return Err(Error::PayloadTooLarge(format!(
                    "Event {} payload exceeds max_event_payload_size ({size} > {max})",
                    e.event_id
                )));
            }
            canonical.push(plain);
        }
        Ok((stream, canonical))
    }

    /// Ingests a batch of signed events of one stream.
    pub async fn ingest(&self, caller: &Caller, req: IngestRequest) -> Result<IngestResponse> {
        let (stream, canonical) = self.check_request(caller, &req)?;
        let envelopes: Vec<Arc<IngestEnvelope>> = req.events.into_iter().map(Arc::new).collect();

        // Per-event checks that need no database.
        let mut seen_ids = HashSet::new();
        let mut verdicts: Vec<Verdict> = envelopes
            .iter()
            .zip(canonical)
            .map(|(e, canonical)| {
                if !seen_ids.insert(e.event_id) {
                    return rejected(Reason::DuplicateEventId, format!("Event {} duplicated in batch", e.event_id));
                }
                self.validate(e, canonical)
            })
            .collect();

        // Agent keys, then signatures.
        let now = Utc::now();
        let mut key_ids: Vec<(Uuid, Uuid, u32)> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Valid(c) => Some((c.envelope.tenant_id, c.envelope.source_agent_id, c.envelope.agent_key_id)),
                _ => None,
            })
            .collect();
        key_ids.sort_unstable();
        key_ids.dedup();
        let mut keys = HashMap::with_capacity(key_ids.len());
        for id in key_ids {
            keys.insert(id, self.keys.get(id.0, id.1, id.2).await?);
        }
        let mut signed_with = Vec::new();
        let mut signatures_per_key: HashMap<(Uuid, Uuid, u32), u32> = HashMap::new();
        for (i, v) in verdicts.iter_mut().enumerate() {
            let Verdict::Valid(c) = v else { continue };
            let e = &c.envelope;
            let id = (e.tenant_id, e.source_agent_id, e.agent_key_id);
            match keys[&id].as_ref().map(|k| k.usable_at(now)) {
                None => *v = rejected(Reason::AgentKeyInvalid("Agent key not found".into()), "Agent key not found"),
                Some(Err(problem)) => {
                    *v = rejected(Reason::AgentKeyInvalid(problem.message().into()), problem.message())
                }
                Some(Ok(())) => {
                    *signatures_per_key.entry(id).or_default() += 1;
                    signed_with.push((i, id, c.signing_hash, e.agent_signature.0));
                }
            }
        }
        // How each key checks its signatures, decided once per key and request.
        let checks: HashMap<_, _> = signatures_per_key
            .into_iter()
            .map(|(id, n)| (id, self.keys.signature_check(keys[&id].as_ref().expect("usable"), n)))
            .collect();
        let to_verify: Vec<_> =
            signed_with.into_iter().map(|(i, id, hash, signature)| (i, hash, signature, checks[&id].clone())).collect();
        for (i, ok) in verify_signatures(to_verify).await? {
            if !ok {
                verdicts[i] =
                    rejected(Reason::InvalidSignature, "Agent signature verification failed: VerificationFailed");
            }
        }
        // The agent's policy, judged only on events whose signature proved they are the agent's, with
        // the payload's size their check has measured (its compact JSON).
        let judged = verdicts.iter().enumerate().filter_map(|(i, v)| match v {
            Verdict::Valid(c) => Some((i, &*c.envelope, c.payload_json.as_ref().map(|json| json.len()))),
            Verdict::Rejected(_) => None,
        });
        let violations = self.policies.violations(stream.tenant_id, envelopes[0].source_agent_id, judged).await?;
        for (i, violation) in violations {
            verdicts[i] = rejected(Reason::AgentPolicyViolation, violation.message());
        }

        // A command id may appear once per batch.
        let mut seen_commands = HashSet::new();
        for v in verdicts.iter_mut() {
            if let Verdict::Valid(c) = v
                && let Some(cmd) = c.envelope.command_id
                && !seen_commands.insert(cmd)
            {
                *v = rejected(Reason::DuplicateCommandId, format!("Command {cmd} duplicated in batch"));
            }
        }

        // An event refused here may still be an exact replay of a stored event (e.g. its key was revoked
        // after it was accepted): that answers with the original receipt, as upstream's first pass does.
        let mut receipts_by_index: HashMap<usize, Receipt> = HashMap::new();
        let refused: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Verdict::Rejected(r) if r.reason.dead_letter()))
            .map(|(i, _)| i)
            .collect();
        if !refused.is_empty() {
            let ids: Vec<Uuid> = refused.iter().map(|&i| envelopes[i].event_id).collect();
            let stored = self.store.find_by_event_ids(stream.tenant_id, &ids).await?;
            for &i in &refused {
                let e = &envelopes[i];
                let Some(s) = stored.iter().find(|s| s.event_id == e.event_id) else { continue };
                let candidate = Candidate {
                    envelope: e.clone(),
                    signing_hash: e.signing_hash(),
                    created_at: now,
                    payload_json: None,
                    payload_survives_jsonb: false,
                };
                if is_exact_replay(s, &candidate)
                    && let Some(r) = crate::sequencing::receipt_of(s)
                {
                    receipts_by_index.insert(i, r);
                } else {
                    verdicts[i] = rejected(Reason::DuplicateEventId, "Event ID already exists with different contents");
                }
            }
        }

        // Dead letters are stored before anything is answered, so that nothing refused is lost.
        let dead_letters: Vec<NewDeadLetter> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Verdict::Rejected(r) if r.reason.dead_letter() && !receipts_by_index.contains_key(&i) => {
                    Some(dead_letter_of(&envelopes[i], r))
                }
                _ => None,
            })
            .collect();
        self.store.insert_dead_letters(&dead_letters).await?;
        self.metrics.dead_letters_written.inc_by(dead_letters.len() as u64);

        // Sequencing.
        let (indices, candidates): (Vec<usize>, Vec<Candidate>) = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Verdict::Valid(c) => Some((i, c.clone())),
                _ => None,
            })
            .unzip();
        let mut outcomes: HashMap<usize, Outcome> = HashMap::with_capacity(indices.len());
        let head = if candidates.is_empty() {
            self.store.head(stream).await?
        } else {
            let sequenced = self.sequencer.submit(stream, candidates).await?;
            outcomes.extend(indices.into_iter().zip(sequenced.outcomes));
            sequenced.head
        };

        let mut response = IngestResponse {
            batch_id: Uuid::new_v4(),
            events_accepted: 0,
            events_rejected: 0,
            sequence_start: None,
            sequence_end: None,
            head_sequence: head as u64,
            rejections: Vec::new(),
            receipts: Vec::new(),
        };
        for (i, v) in verdicts.into_iter().enumerate() {
            let event_id = envelopes[i].event_id;
            let outcome = match v {
                Verdict::Valid(_) => outcomes.remove(&i).expect("every candidate has an outcome"),
                Verdict::Rejected(_) if receipts_by_index.contains_key(&i) => {
                    Outcome::Replayed(receipts_by_index.remove(&i).expect("checked"))
                }
                Verdict::Rejected(r) => Outcome::Rejected(r),
            };
            match outcome {
                Outcome::Sequenced(r) => {
                    response.events_accepted += 1;
                    response.sequence_start.get_or_insert(r.sequence_number);
                    response.sequence_end = Some(r.sequence_number);
                    response.receipts.push(r);
                }
                Outcome::Replayed(r) => {
                    self.metrics.events_replayed.inc();
                    response.receipts.push(r);
                }
                Outcome::Rejected(Refusal { reason, message }) => {
                    self.metrics.reject(&reason);
                    response.rejections.push(Rejection { event_id, reason, message });
                }
            }
        }
        response.events_rejected = response.rejections.len() as u32;
        Ok(response)
    }

    /// The per-event checks of ves-wire.md §3.1 pass 2 that need neither a key nor the database;
    /// `checked` is the plaintext payload's, from [`Self::check_request`].
    fn validate(&self, e: &Arc<IngestEnvelope>, checked: Option<CheckedPayload>) -> Verdict {
        let schema = |field: &str, message: String| rejected(Reason::SchemaValidation(Some(field.into())), message);
        match e.ves_version {
            1 if self.limits.require_signed_execution_controls => {
                return rejected(
                    Reason::UnsupportedVersion,
                    "ves_version 1 is not accepted: this sequencer requires signed execution controls (ves_version 2)",
                );
            }
            1 | 2 => {}
            v => return rejected(Reason::UnsupportedVersion, format!("Expected VES version 1 or 2, got {v}")),
        }
        if let Some(scheme) = e.agent_signature_scheme
            && !(0..=1).contains(&scheme)
        {
            return schema("agent_signature_scheme", format!("Unsupported agent signature scheme {scheme}"));
        }
        // NB: PostgreSQL text and jsonb cannot hold NUL; refusing it here keeps one event from failing
        // the whole group transaction it would share with other requests.
        for (field, value) in [
            ("entity_type", &e.entity_type),
            ("entity_id", &e.entity_id),
            ("event_type", &e.event_type),
            ("created_at", &e.created_at),
        ] {
            if value.contains('\0') {
                return schema(field, format!("{field} must not contain NUL characters"));
            }
        }
        let created_at = match DateTime::parse_from_rfc3339(&e.created_at) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) => {
                return schema("created_at", format!("created_at is not an RFC 3339 timestamp: {:?}", e.created_at));
            }
        };
        if let Some(max) = self.limits.max_clock_skew {
            let skew = (Utc::now() - created_at).num_milliseconds().unsigned_abs();
            if u128::from(skew) > max.as_millis() {
                return rejected(
                    Reason::ClockSkew,
                    format!(
                        "created_at {} is {:.1}s from server time, more than MAX_CLOCK_SKEW_SECS ({}s); check the agent's clock",
                        e.created_at,
                        skew as f64 / 1000.0,
                        max.as_secs()
                    ),
                );
            }
        }
        let (mut payload_json, mut payload_survives_jsonb) = (None, false);
        match e.payload_kind {
            0 => {
                let Some(checked) = checked else {
                    return schema("payload", "payload is required when payload_kind is 0".into());
                };
                if e.payload_encrypted.is_some() {
                    return schema(
                        "payload_encrypted",
                        "payload_encrypted must be absent when payload_kind is 0".into(),
                    );
                }
                if e.payload_cipher_hash.0 != [0u8; 32] {
                    return schema(
                        "payload_cipher_hash",
                        "payload_cipher_hash must be zero when payload_kind is 0".into(),
                    );
                }
                if checked.contains_nul {
                    return schema("payload", "payload strings must not contain NUL characters".into());
                }
                if checked.plain_hash != e.payload_plain_hash.0 {
                    return rejected(Reason::InvalidPayloadHash, "Payload hash verification failed");
                }
                payload_json = Some(checked.compact);
                payload_survives_jsonb = checked.survives_jsonb;
            }
            1 => {
                if e.payload.is_some() {
                    return schema("payload", "payload must be absent when payload_kind is 1".into());
                }
                let Some(encrypted) = &e.payload_encrypted else {
                    return schema("payload_encrypted", "payload_encrypted is required when payload_kind is 1".into());
                };
                if let Err(field) = ves::cipher::validate_structure(encrypted) {
                    return schema(&field, format!("{field} is invalid"));
                }
                let input = e.signing_input();
                let aad = ves::cipher::payload_aad(&input);
                match ves::cipher::cipher_hash(encrypted, &aad) {
                    Ok(h) if h == e.payload_cipher_hash.0 => {}
                    _ => return rejected(Reason::InvalidCipherHash, "Cipher hash verification failed"),
                }
            }
            k => return schema("payload_kind", format!("payload_kind must be 0 or 1, got {k}")),
        }
        Verdict::Valid(Candidate {
            envelope: e.clone(),
            signing_hash: e.signing_hash(),
            created_at,
            payload_json,
            payload_survives_jsonb,
        })
    }
}

/// The length of `value`'s compact JSON, counted as it is written rather than built (every event's
/// payload is measured).
fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(Error::BadRequest(format!("{field} must be between 1 and {max} bytes (got {})", value.len())));
    }
    Ok(())
}

fn json_contains_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(json_contains_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || json_contains_nul(v)),
        _ => false,
    }
}

/// Verifies signatures, each with the verdict of `Verifier::verify` as the existing service does (and
/// as clients re-verify); busy keys use their precomputed table, which gives the same verdict
/// faster. Large batches run in parallel on the compute pool (crate::compute).
///
/// NB: not ed25519-dalek's batch verification, although it is about twice as fast: a signer can craft
/// a signature (small-order component in R) that the batch equation accepts and single verification
/// rejects, and the log must never hold an event that a client's own check refuses.
async fn verify_signatures(items: Vec<(usize, [u8; 32], [u8; 64], SignatureCheck)>) -> Result<Vec<(usize, bool)>> {
    if items.len() <= crate::compute::INLINE_VERIFY_MAX {
        return Ok(items.iter().map(|(i, h, s, k)| (*i, k.verify(s, h))).collect());
    }
    crate::compute::run("signature verification", move || {
        use rayon::prelude::*;
        items.par_iter().map(|(i, h, s, k)| (*i, k.verify(s, h))).collect()
    })
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::{CanonicalPayload, IngestResponse, Rejection, json_len};
    use crate::reason::Reason;
    use crate::sequencing::Receipt;

    #[test]
    fn a_payload_is_measured_as_its_compact_json() {
        for v in
            [json!(null), json!({"a": [1, 2.5, "é\u{0}\"x"], "b": {"c": -0.0, "d": 1e300}}), json!("x".repeat(5000))]
        {
            assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len(), "{v}");
        }
    }

    #[test]
    fn canonical_bytes_stand_for_the_compact_json_only_when_they_are_it() {
        // Sorted keys and exact integers: the canonical bytes are the compact JSON, and measure it.
        let same = json!({"a": 1, "b": [true, "x\u{1}"], "c": {"d": null}});
        let c = CanonicalPayload::of(&same);
        assert_eq!(c.compact_len(), Some(serde_json::to_vec(&same).unwrap().len()));
        assert_eq!(c.as_bytes(), serde_json::to_vec(&same).unwrap());
        assert_eq!(c.into_compact_json().as_deref(), Some(serde_json::to_string(&same).unwrap().as_str()));
        // `100.0` is `100` in JCS: not the compact JSON, so the size check measures the payload itself.
        let other = json!({"f": 100.0});
        let c = CanonicalPayload::of(&other);
        assert!(c.compact_len().is_none());
        assert_ne!(c.as_bytes().len(), json_len(&other));
        assert!(c.into_compact_json().is_none());
    }

    fn receipt(n: u64, text: &str) -> Receipt {
        Receipt {
            sequencer_id: Uuid::from_u128(u128::from(n) << 64 | 0xabc),
            event_id: Uuid::from_u128(u128::MAX - u128::from(n)),
            sequence_number: n,
            sequenced_at: format!("2026-12-05T16:00:00.{n:06}+00:00{text}"),
            receipt_hash: hex::encode([n as u8; 32]),
            signature_alg: if n.is_multiple_of(2) { "ed25519" } else { "none" },
            sequencer_signature: if n.is_multiple_of(2) { hex::encode([7u8; 64]) } else { text.to_owned() },
            sequencer_key_version: n as u32,
        }
    }

    proptest::proptest! {
        #[test]
        fn the_answer_written_by_hand_is_serde_jsons_byte_for_byte(
            text in "\\PC{0,6}|[\"\\\\\u{0}-\u{1f}\u{7f}é😀]{0,4}",
            receipts in 0u64..4,
            rejections in 0usize..3,
            start in proptest::option::of(0u64..u64::MAX),
        ) {
            let response = IngestResponse {
                batch_id: Uuid::from_u128(42),
                events_accepted: receipts as u32,
                events_rejected: rejections as u32,
                sequence_start: start,
                sequence_end: start.map(|s| s.saturating_add(receipts)),
                head_sequence: u64::MAX - receipts,
                rejections: (0..rejections)
                    .map(|i| Rejection {
                        event_id: Uuid::from_u128(i as u128),
                        reason: if i == 0 { Reason::InvalidPayloadHash } else { Reason::SchemaValidation(Some(text.clone())) },
                        message: text.repeat(i + 1),
                    })
                    .collect(),
                receipts: (0..receipts).map(|n| receipt(n, &text)).collect(),
            };
            proptest::prop_assert_eq!(
                String::from_utf8(response.to_json()).unwrap(),
                serde_json::to_string(&response).unwrap()
            );
        }
    }
}
