//! Replaying dead letters: an entry's stored envelope goes through the full ingest checks again, so
//! an event whose agent key has since been registered (or whose conflict has been resolved) is
//! sequenced. A success resolves the entry (it stays, marked `resolved`, with its sequence number);
//! a failure records the new reason and counts the attempt.

use serde::Serialize;
use uuid::Uuid;
use ves::envelope::{RawPayload, VesEventEnvelope};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::ingest::{Ingest, IngestRequest};
use crate::reason::Reason;
use crate::store::Store;
use crate::store::dead_letters::DeadLetter;
use crate::store::events::StreamKey;

/// What became of one retried entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryResult {
    pub id: Uuid,
    pub event_id: Uuid,
    /// `sequenced`, `replayed` (it had been stored meanwhile) or `rejected`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
}

/// Totals of a bulk retry.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrySummary {
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub results: Vec<RetryResult>,
}

impl RetrySummary {
    pub fn push(&mut self, r: RetryResult) {
        self.attempted += 1;
        if r.outcome == "rejected" {
            self.failed += 1;
        } else {
            self.succeeded += 1;
        }
        self.results.push(r);
    }
}

/// Retries one entry.
pub async fn retry(store: &Store, ingest: &Ingest, letter: &DeadLetter) -> Result<RetryResult> {
    let rejected = |reason: &Reason| RetryResult {
        id: letter.id,
        event_id: letter.event_id,
        outcome: "rejected",
        reason: Some(reason.wire()),
        sequence_number: None,
    };
    if letter.source != "ves" {
        return Err(Error::BadRequest(format!("dead letters from the {} ingest cannot be replayed", letter.source)));
    }
    let envelope: VesEventEnvelope<RawPayload> = match serde_json::from_value(letter.payload.clone()) {
        Ok(e) => e,
        Err(e) => {
            let reason = Reason::SchemaValidation(Some("payload".into()));
            store.record_failed_retry(letter.id, reason.label(), &reason.dead_letter_message(&e.to_string())).await?;
            return Ok(rejected(&reason));
        }
    };
    // A retry writes only into the stream its entry belongs to: the envelope must name that stream,
    // and the replay runs with a credential limited to it.
    if envelope.tenant_id != letter.tenant_id || envelope.store_id != letter.store_id {
        let reason = Reason::InvalidRequest("the stored envelope names another stream than its dead letter".into());
        store.record_failed_retry(letter.id, reason.label(), &reason.wire()).await?;
        return Ok(rejected(&reason));
    }
    let request = IngestRequest { agent_id: envelope.source_agent_id, events: vec![envelope] };
    let caller = Caller::writer_of(StreamKey { tenant_id: letter.tenant_id, store_id: letter.store_id });
    let response = match ingest.ingest(&caller, request).await {
        Ok(r) => r,
        Err(e) if e.status().is_client_error() => {
            let reason = Reason::InvalidRequest(e.to_string());
            store.record_failed_retry(letter.id, reason.label(), &reason.wire()).await?;
            return Ok(rejected(&reason));
        }
        Err(e) => return Err(e),
    };
    if let Some(receipt) = response.receipts.first() {
        store.resolve_dead_letter(letter.id, Some(receipt.sequence_number as i64)).await?;
        return Ok(RetryResult {
            id: letter.id,
            event_id: letter.event_id,
            outcome: if response.events_accepted == 1 { "sequenced" } else { "replayed" },
            reason: None,
            sequence_number: Some(receipt.sequence_number),
        });
    }
    let rejection = response.rejections.first().ok_or_else(|| Error::Internal("ingest answered nothing".into()))?;
    // Fixable causes were recorded on the entry by the ingest path itself; record the others here.
    if store.dead_letter(letter.id).await?.is_some_and(|l| l.retry_count == letter.retry_count) {
        let reason = &rejection.reason;
        store.record_failed_retry(letter.id, reason.label(), &reason.dead_letter_message(&rejection.message)).await?;
    }
    Ok(rejected(&rejection.reason))
}
