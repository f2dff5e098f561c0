//! The legacy unsigned ingest (`POST /api/v1/events/ingest`, ves-wire.md §1.6), for clients that have
//! not moved to signed events yet. Its events go into the same streams as signed ones (the
//! `legacy_events` partition of `events`), numbered under the same counter row lock.
//!
//! As upstream: no signatures and no receipts; the payload hash is the plain SHA-256 of the payload's
//! compact JSON with sorted keys (no domain tag), sent as bare hex; a replay is rejected
//! (`DuplicateEventId`), not answered with a receipt. One transaction per request: the legacy path is
//! for compatibility, not throughput.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dead_letters::{NewDeadLetter, insert_dead_letters};
use crate::store::events::{self, StreamKey};

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
    pub reason: &'static str,
    pub message: String,
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

    let mut tx = store.begin().await?;
    let locked = events::lock_stream(&mut tx, stream).await?;
    crate::sequencing::ensure_not_paused(stream, locked.paused)?;
    let ids: Vec<Uuid> = req.events.iter().map(|e| e.event_id).collect();
    let existing: HashSet<Uuid> =
        events::find_by_event_ids(&mut tx, &ids).await?.into_iter().map(|e| e.event_id).collect();
    let commands: Vec<Uuid> = req.events.iter().filter_map(|e| e.command_id).collect();
    let used: HashSet<Uuid> = events::find_by_command_ids(&mut tx, stream, &commands)
        .await?
        .into_iter()
        .filter_map(|e| e.command_id)
        .collect();
    let entities: Vec<(String, String)> = req
        .events
        .iter()
        .filter(|e| e.base_version.is_some())
        .map(|e| (e.entity_type.clone(), e.entity_id.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut versions: HashMap<(String, String), i64> =
        events::entity_versions(&mut tx, stream, &entities).await?.into_iter().map(|(t, i, v)| ((t, i), v)).collect();

    let sequenced_at = Utc::now().trunc_subsecs(6);
    let mut head = locked.head;
    let mut seen_ids = HashSet::new();
    let mut seen_commands = HashSet::new();
    let mut rows = Vec::new();
    let mut dead_letters = Vec::new();
    for e in &req.events {
        let reject = |reason: &'static str, message: String| LegacyRejection { event_id: e.event_id, reason, message };
        let rejection = if existing.contains(&e.event_id) || !seen_ids.insert(e.event_id) {
            Some(reject("DuplicateEventId", format!("Event {} already exists", e.event_id)))
        } else if e.command_id.is_some_and(|c| used.contains(&c) || !seen_commands.insert(c)) {
            Some(reject("DuplicateCommandId", format!("Command {} already processed", e.command_id.expect("checked"))))
        } else {
            match parse_hash(&e.payload_hash) {
                None => Some(reject("SchemaValidation", "payload_hash must be 64 hex characters without 0x".into())),
                Some(h) if h != legacy_payload_hash(&e.payload) => {
                    Some(reject("InvalidPayloadHash", "Payload hash verification failed".into()))
                }
                Some(h) => {
                    let key = (e.entity_type.clone(), e.entity_id.clone());
                    let actual = versions.get(&key).copied().unwrap_or(0);
                    match e.base_version {
                        Some(expected) if expected as i64 != actual => {
                            let message = format!("Version conflict: expected {expected}, actual {actual}");
                            dead_letters.push(NewDeadLetter {
                                event_id: e.event_id,
                                tenant_id: e.tenant_id,
                                store_id: e.store_id,
                                agent_id: Some(e.source_agent),
                                event_type: Some(e.event_type.clone()),
                                source: "legacy",
                                reason: "version_conflict".into(),
                                error_message: message.clone(),
                                payload: serde_json::to_value(e).unwrap_or_default(),
                            });
                            Some(reject("VersionConflict", message))
                        }
                        _ => {
                            *versions.entry(key).or_insert(0) += 1;
                            head += 1;
                            rows.push((head, e, h));
                            None
                        }
                    }
                }
            }
        };
        if let Some(r) = rejection {
            response.rejections.push(r);
        }
    }
    if !rows.is_empty() {
        let seq: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let event_id: Vec<Uuid> = rows.iter().map(|r| r.1.event_id).collect();
        let entity_type: Vec<&str> = rows.iter().map(|r| r.1.entity_type.as_str()).collect();
        let entity_id: Vec<&str> = rows.iter().map(|r| r.1.entity_id.as_str()).collect();
        let event_type: Vec<&str> = rows.iter().map(|r| r.1.event_type.as_str()).collect();
        let created_at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.1.created_at).collect();
        let source: Vec<Uuid> = rows.iter().map(|r| r.1.source_agent).collect();
        let command_id: Vec<Option<Uuid>> = rows.iter().map(|r| r.1.command_id).collect();
        let base_version: Vec<Option<i64>> = rows.iter().map(|r| r.1.base_version.map(|v| v as i64)).collect();
        let payload: Vec<&Value> = rows.iter().map(|r| &r.1.payload).collect();
        let payload_hash: Vec<Vec<u8>> = rows.iter().map(|r| r.2.to_vec()).collect();
        let leaf: Vec<Vec<u8>> = rows.iter().map(|r| legacy_leaf(stream, r.0 as u64, &r.2).to_vec()).collect();
        sqlx::query(
            "INSERT INTO legacy_events (tenant_id, store_id, sequence_number, event_id, signed, entity_type, entity_id, \
               event_type, created_at, sequenced_at, source_agent_id, command_id, base_version, payload, payload_hash, \
               leaf_hash) \
             SELECT $1, $2, u.seq, u.event_id, FALSE, u.entity_type, u.entity_id, u.event_type, u.created_at, $9, \
               u.source, u.command_id, u.base_version, u.payload, u.payload_hash, u.leaf \
             FROM UNNEST($3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $10::uuid[], \
               $11::uuid[], $12::bigint[], $13::jsonb[], $14::bytea[], $15::bytea[]) \
               AS u(seq, event_id, entity_type, entity_id, event_type, created_at, source, command_id, base_version, \
                 payload, payload_hash, leaf)",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(&seq)
        .bind(&event_id)
        .bind(&entity_type)
        .bind(&entity_id)
        .bind(&event_type)
        .bind(&created_at)
        .bind(sequenced_at)
        .bind(&source)
        .bind(&command_id)
        .bind(&base_version)
        .bind(&payload)
        .bind(&payload_hash)
        .bind(&leaf)
        .execute(&mut *tx)
        .await?;
        crate::store::events::insert_leaf_run(&mut tx, stream, rows[0].0, &leaf).await?;
        sqlx::query("UPDATE sequence_counters SET current_sequence = $3, updated_at = NOW() WHERE tenant_id = $1 AND store_id = $2")
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(head)
            .execute(&mut *tx)
            .await?;
        response.assigned_sequence_start = Some(rows[0].0 as u64);
        response.assigned_sequence_end = Some(head as u64);
    }
    insert_dead_letters(&mut tx, &dead_letters).await?;
    tx.commit().await?;
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
