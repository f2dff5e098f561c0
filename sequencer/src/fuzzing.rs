//! The fuzz targets: every parser of untrusted bytes, as plain functions that must never panic
//! whatever the input (and that check the round trips they can). `fuzz/` runs them under
//! `cargo fuzz` (nightly); `tests/fuzz_targets.rs` runs the same functions on stable over the
//! corpora in `fuzz/corpus/` and generated inputs, bounded, in CI.

use std::collections::HashMap;

use serde::Deserialize;
use ves::{Hex32, PayloadEncrypted, RawPayload, Sig64, VesEventEnvelope};

/// The ingest body as the API reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngestBody {
    #[allow(dead_code)]
    agent_id: uuid::Uuid,
    events: Vec<VesEventEnvelope<RawPayload>>,
}

/// `POST /api/v1/ves/events/ingest` bodies: JSON, envelopes, their hashes and signature checks, the
/// encrypted payloads they carry, and the hostile-value checks.
pub fn ingest_envelope(data: &[u8]) {
    let _ = crate::validate::check_body(data);
    let Ok(body) = serde_json::from_slice::<IngestBody>(data) else { return };
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    for event in &body.events {
        let _ = event.signing_hash();
        let _ = event.verify_signature(&key);
        if let Some(p) = &event.payload_encrypted {
            encrypted(p);
        }
        if let Some(payload) = &event.payload {
            raw_payload(payload);
        }
    }
}

/// A payload as ingest reads it: a text taken as its own canonical form is the canonical and the
/// compact form of its parse.
fn raw_payload(payload: &RawPayload) {
    let Ok(value) = payload.to_value() else { return };
    let hash = ves::hash::payload_plain_hash(&value);
    if let Some(taken) = ves::hash::payload_plain_hash_of_canonical_text(payload.get()) {
        assert_eq!(payload.get().as_bytes(), ves::hash::jcs(&value), "taken as canonical: {}", payload.get());
        assert_eq!(taken, hash);
        assert_eq!(serde_json::to_string(&value).unwrap(), payload.get(), "taken as compact");
    }
}

/// JCS canonicalisation: any JSON value canonicalises to JSON that parses back to the same value and
/// canonicalises to the same bytes.
pub fn jcs(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let canonical = ves::hash::jcs(&value);
    let reparsed: serde_json::Value = serde_json::from_slice(&canonical).expect("JCS output is JSON");
    assert_eq!(ves::hash::jcs(&reparsed), canonical, "JCS is idempotent");
}

fn encrypted(p: &PayloadEncrypted) {
    let _ = ves::cipher::check_structure(p);
    let _ = ves::cipher::validate_structure(p);
    let _ = ves::cipher::recipients_hash(&p.recipients);
    let _ = ves::cipher::cipher_hash(p, &[0u8; 32]);
}

/// Encrypted payloads (`payload_encrypted`): structure checks and the cipher hash.
pub fn encrypted_payload(data: &[u8]) {
    if let Ok(p) = serde_json::from_slice::<PayloadEncrypted>(data) {
        encrypted(&p);
    }
}

/// Hex (`0x` + 32 or 64 bytes) and base64url fields: parsing, and encoding back round-trips.
pub fn hex_base64(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(bytes) = ves::cipher::base64url_decode(&text) {
        let again = ves::cipher::base64url_decode(&ves::cipher::base64url_encode(&bytes)).expect("round trip");
        assert_eq!(again, bytes);
    }
    let quoted = serde_json::Value::String(text.into_owned());
    if let Ok(h) = serde_json::from_value::<Hex32>(quoted.clone()) {
        assert_eq!(serde_json::from_value::<Hex32>(serde_json::to_value(h).unwrap()).unwrap(), h);
    }
    let _ = serde_json::from_value::<Sig64>(quoted);
}

/// Query strings and paths: the hostile-value checks and the form decoding the extractors use.
pub fn query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::validate::check_query(&text);
    let _ = crate::validate::check_path(Some("/api/v1/ves/entities/{entity_type}/{entity_id}"), &text);
    let _ = serde_urlencoded::from_str::<HashMap<String, String>>(&text);
    let _ = serde_urlencoded::from_str::<Vec<(String, String)>>(&text);
}

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus directory's name).
pub const TARGETS: &[(&str, Target)] = &[
    ("ingest_envelope", ingest_envelope),
    ("jcs", jcs),
    ("encrypted_payload", encrypted_payload),
    ("hex_base64", hex_base64),
    ("query", query),
];
