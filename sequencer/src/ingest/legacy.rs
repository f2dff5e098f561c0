//! The legacy unsigned ingest (`POST /api/v1/events/ingest`, ves-wire.md §1.6), for clients that have
//! not moved to signed events yet. Its events go into the same streams as signed ones (the
//! `legacy_events` partition of `events`), numbered under the same counter row lock.
//!
//! As upstream: no signatures and no receipts; the payload hash is the plain SHA-256 of the payload's
//! compact JSON with sorted keys (no domain tag), sent as bare hex; a replay is rejected
//! (`DuplicateEventId`), not answered with a receipt. One transaction per request: the legacy path is
//! for compatibility, not throughput.

use std::collections::HashSet;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::reason::{Reason, Refusal};
use crate::sequencing::decide::{Decision, Flavour, Paused, Prior, Proposal, StoreView, decide};
use crate::store::Store;
use crate::store::dead_letters::{NewDeadLetter, insert_dead_letters};
use crate::store::events::{self, LegacyEventRow, StreamKey};

/// One legacy event as clients send it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LegacyEnvelope {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub entity_type: String,
    pub entity_id: String,
    pub event_type: String,
    pub payload: Value,
    /// Bare lowercase or uppercase hex of 32 bytes; `0x` is refused, as upstream.
    pub payload_hash: String,
    pub created_at: DateTime<Utc>,
    pub source_agent: Uuid,
    #[serde(default)]
    pub command_id: Option<Uuid>,
    #[serde(default)]
    pub base_version: Option<u64>,
}

/// `POST /api/v1/events/ingest` body (snake_case).
#[derive(Debug, Deserialize)]
pub struct LegacyRequest {
    pub agent_id: Uuid,
    pub events: Vec<LegacyEnvelope>,
}

#[derive(Debug, Serialize)]
pub struct LegacyRejection {
    pub event_id: Uuid,
    /// Upstream's legacy wire name (`DuplicateEventId`, ...).
    #[serde(serialize_with = "legacy_reason")]
    pub reason: Reason,
    pub message: String,
}

fn legacy_reason<S: serde::Serializer>(reason: &Reason, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(reason.legacy_wire())
}

/// The legacy answer.
#[derive(Debug, Serialize)]
pub struct LegacyResponse {
    pub batch_id: Uuid,
    pub events_accepted: u32,
    pub events_rejected: u32,
    pub assigned_sequence_start: Option<u64>,
    pub assigned_sequence_end: Option<u64>,
    pub head_sequence: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejections: Vec<LegacyRejection>,
}

/// The legacy payload hash: SHA-256 of the compact JSON with object keys sorted.
pub fn legacy_payload_hash(payload: &Value) -> [u8; 32] {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    Sha256::digest(serde_json::to_vec(&sorted(payload)).expect("JSON values serialise")).into()
}

/// The Merkle leaf of a legacy event: the VES leaf layout with the payload hash in place of the
/// signing hash and an all-zero signature (legacy events are unsigned).
pub fn legacy_leaf(stream: StreamKey, sequence_number: u64, payload_hash: &[u8; 32]) -> [u8; 32] {
    ves::hash::leaf_hash(stream.tenant_id, stream.store_id, sequence_number, payload_hash, &[0u8; 64])
}

fn parse_hash(value: &str) -> Option<[u8; 32]> {
    if value.starts_with("0x") || value.starts_with("0X") {
        return None;
    }
    hex::decode(value).ok()?.try_into().ok()
}

/// Ingests a legacy batch.
pub async fn ingest(
    store: &Store,
    caller: &Caller,
    req: LegacyRequest,
    max_events_per_batch: usize,
    max_event_payload_size: usize,
) -> Result<LegacyResponse> {
    let mut response = LegacyResponse {
        batch_id: Uuid::new_v4(),
        events_accepted: 0,
        events_rejected: 0,
        assigned_sequence_start: None,
        assigned_sequence_end: None,
        head_sequence: 0,
        rejections: Vec::new(),
    };
    let Some(first) = req.events.first() else {
        return Ok(response);
    };
    let stream = StreamKey { tenant_id: first.tenant_id, store_id: first.store_id };
    if req.events.iter().any(|e| e.tenant_id != stream.tenant_id || e.store_id != stream.store_id) {
        return Err(Error::BadRequest("All events in a batch must share the same tenant_id and store_id".into()));
    }
    if caller.agent_id.is_some_and(|a| a != req.agent_id) {
        return Err(Error::Forbidden("Agent mismatch".into()));
    }
    if req.events.iter().any(|e| e.source_agent != req.agent_id) {
        return Err(Error::BadRequest("event source_agent must match request agent_id".into()));
    }
    caller.require_write(stream)?;
    if req.events.len() > max_events_per_batch {
        return Err(Error::PayloadTooLarge(format!(
            "Batch exceeds max_events_per_batch ({} > {max_events_per_batch})",
            req.events.len()
        )));
    }
    for e in &req.events {
        for (field, value, max) in
            [("entity_type", &e.entity_type, 128), ("entity_id", &e.entity_id, 512), ("event_type", &e.event_type, 256)]
        {
            if value.is_empty() || value.len() > max || value.contains('\0') {
                return Err(Error::BadRequest(format!("{field} must be between 1 and {max} bytes without NUL")));
            }
        }
        let size = serde_json::to_vec(&e.payload).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > max_event_payload_size {
            return Err(Error::PayloadTooLarge(format!(
                "Event {} payload exceeds max_event_payload_size ({size} > {max_event_payload_size})",
                e.event_id
            )));
        }
    }

    // Checks that need no database (after the duplicate checks, as upstream orders them).
    let hashes: Vec<std::result::Result<[u8; 32], Refusal>> = req
        .events
        .iter()
        .map(|e| match parse_hash(&e.payload_hash) {
            None => Err(Refusal::new(
                Reason::SchemaValidation(Some("payload_hash".into())),
                "payload_hash must be 64 hex characters without 0x",
            )),
            Some(h) if h != legacy_payload_hash(&e.payload) => {
                Err(Refusal::new(Reason::InvalidPayloadHash, "Payload hash verification failed"))
            }
            Some(h) => Ok(h),
        })
        .collect();

    let mut tx = store.begin().await?;
    let locked = events::lock_stream(&mut tx, stream).await?;
    let view = if locked.paused {
        StoreView { paused: true, ..Default::default() }
    } else {
        let commands: Vec<Uuid> = req.events.iter().filter_map(|e| e.command_id).collect();
        let entities: Vec<(String, String)> = req
            .events
            .iter()
            .filter(|e| e.base_version.is_some())
            .map(|e| (e.entity_type.clone(), e.entity_id.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        StoreView {
            paused: false,
            commands: events::find_by_command_ids(&mut tx, stream, &commands)
                .await?
                .into_iter()
                .filter_map(|e| e.command_id)
                .collect(),
            versions: events::entity_versions(&mut tx, stream, locked.head, &entities)
                .await?
                .into_iter()
                .map(|(t, i, v)| ((t, i), v))
                .collect(),
        }
    };
    let ids: Vec<Uuid> = req.events.iter().map(|e| e.event_id).collect();
    let existing: HashSet<Uuid> = if locked.paused {
        HashSet::new()
    } else {
        events::find_by_event_ids(&mut tx, store.id_epochs(), stream.tenant_id, &ids)
            .await?
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    };
    const NO_SIGNATURE: [u8; 64] = [0; 64];
    let proposals: Vec<Proposal> = req
        .events
        .iter()
        .zip(&hashes)
        .map(|(e, hash)| Proposal {
            event_id: e.event_id,
            command_id: e.command_id,
            entity_type: &e.entity_type,
            entity_id: &e.entity_id,
            base_version: e.base_version,
            content: (hash.as_ref().unwrap_or(&[0; 32]), &NO_SIGNATURE),
            // NB: legacy ingest refuses every reuse of an id alike, so how it differs does not matter.
            prior: if existing.contains(&e.event_id) { Prior::Different } else { Prior::Fresh },
            refused: hash.as_ref().err().cloned(),
        })
        .collect();
    let plan = decide(Flavour::Legacy, &view, &proposals).map_err(|Paused| crate::sequencing::paused(stream))?;

    let sequenced_at = Utc::now().trunc_subsecs(6);
    let mut head = locked.head;
    let mut rows = Vec::new();
    let mut dead_letters = Vec::new();
    for ((e, d), hash) in req.events.iter().zip(&plan).zip(&hashes) {
        match d {
            Decision::Accept => {
                head += 1;
                let payload_hash = *hash.as_ref().expect("accepted events have a valid hash");
                rows.push(LegacyEventRow {
                    sequence_number: head,
                    event_id: e.event_id,
                    entity_type: &e.entity_type,
                    entity_id: &e.entity_id,
                    event_type: &e.event_type,
                    created_at: e.created_at,
                    source_agent_id: e.source_agent,
                    command_id: e.command_id,
                    base_version: e.base_version.map(|v| v as i64),
                    payload: &e.payload,
                    payload_hash,
                    leaf_hash: legacy_leaf(stream, head as u64, &payload_hash),
                });
            }
            Decision::Refuse(r) => {
                if r.reason.dead_letter() {
                    dead_letters.push(NewDeadLetter {
                        event_id: e.event_id,
                        tenant_id: e.tenant_id,
                        store_id: e.store_id,
                        agent_id: Some(e.source_agent),
                        event_type: Some(e.event_type.clone()),
                        source: "legacy",
                        reason: r.reason.label().to_owned(),
                        error_message: r.reason.dead_letter_message(&r.message),
                        payload: serde_json::to_value(e).unwrap_or_default(),
                    });
                }
                response.rejections.push(LegacyRejection {
                    event_id: e.event_id,
                    reason: r.reason.clone(),
                    message: r.message.clone(),
                });
            }
            Decision::Replay(_) | Decision::SameAs(_) => unreachable!("legacy ingest answers no receipts"),
        }
    }
    events::insert_legacy_events(&mut tx, stream, &rows, sequenced_at).await?;
    insert_dead_letters(&mut tx, &dead_letters).await?;
    tx.commit().await?;
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        response.assigned_sequence_start = Some(first.sequence_number as u64);
        response.assigned_sequence_end = Some(last.sequence_number as u64);
    }
    response.events_accepted = rows.len() as u32;
    response.events_rejected = response.rejections.len() as u32;
    response.head_sequence = head as u64;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_hash_is_sha256_of_compact_json_with_sorted_keys() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":"x"}}"#).unwrap();
        let want: [u8; 32] = Sha256::digest(br#"{"a":{"c":"x","d":[1,2]},"b":1}"#).into();
        assert_eq!(legacy_payload_hash(&v), want);
        assert!(parse_hash(&format!("0x{}", hex::encode(want))).is_none(), "0x is refused as upstream");
        assert_eq!(parse_hash(&hex::encode(want)), Some(want));
    }
}
