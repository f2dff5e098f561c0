//! The VES hash functions of ves-wire §2.2, §2.4, §2.5, §2.6 (leaf) and §2.8, and the version-2
//! signing hash of SPEC §2.
//!
//! Every function here is a pure function of its arguments: no I/O, no clock, no allocation
//! beyond what JCS needs. Each hash streams its preimage into an incremental SHA-256; the
//! `*_preimage` helpers write the same bytes into a buffer for diagnostics and tests.

use sha2::Sha256;
use uuid::Uuid;

use crate::Hash32;
use crate::domain;
use crate::encode::{HashWriter, Sink, finish, tagged};

/// RFC 8785 (JCS) canonical bytes of a JSON value, as upstream computes them
/// (`serde_json_canonicalizer` over the parsed `serde_json::Value`; [`crate::jcs`] writes the same
/// bytes without its buffering).
pub fn jcs(payload: &serde_json::Value) -> Vec<u8> {
    crate::jcs::to_vec(payload).expect(JCS_INFALLIBLE)
}

// NB: a `serde_json::Value` has string keys and finite numbers only (serde_json refuses NaN and
// infinities), which are the only ways the canonicalizer can fail.
const JCS_INFALLIBLE: &str = "JCS of a serde_json::Value cannot fail";

/// `SHA256("VES_PAYLOAD_PLAIN_V1" || JCS(payload))`: the `payload_plain_hash` of a plaintext
/// (kind 0) event.
pub fn payload_plain_hash(payload: &serde_json::Value) -> Hash32 {
    let mut h = tagged(domain::PAYLOAD_PLAIN);
    crate::jcs::write(payload, &mut HashWriter(&mut h)).expect(JCS_INFALLIBLE);
    finish(h)
}

/// The [`payload_plain_hash`] of the payload whose JSON text is `text`, when that text is already its
/// canonical (and compact) form ([`crate::jcs::is_canonical`]): hashed as it is, with nothing parsed,
/// encoded or copied. `None` for any other text.
pub fn payload_plain_hash_of_canonical_text(text: &str) -> Option<Hash32> {
    crate::jcs::is_canonical(text).then(|| plain_hash_of_jcs(text.as_bytes()))
}

/// [`payload_plain_hash`] over a payload's JCS bytes, already encoded.
fn plain_hash_of_jcs(jcs: &[u8]) -> Hash32 {
    let mut h = tagged(domain::PAYLOAD_PLAIN);
    h.put(jcs);
    finish(h)
}

/// A plaintext payload's JCS bytes, encoded once for everything a sequencer does with them: measure the
/// payload, check its [`payload_plain_hash`], and store its compact JSON (`serde_json::to_string`), which
/// the canonical bytes are too when every key iterates in UTF-16 order and every number prints alike
/// ([`crate::jcs::to_vec_and_compact`]).
#[derive(Debug, Clone)]
pub struct CanonicalPayload {
    bytes: Vec<u8>,
    compact: bool,
}

impl CanonicalPayload {
    /// Encodes `payload` once.
    pub fn of(payload: &serde_json::Value) -> Self {
        let (bytes, compact) = crate::jcs::to_vec_and_compact(payload).expect(JCS_INFALLIBLE);
        CanonicalPayload { bytes, compact }
    }

    /// The JCS bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The length of the payload's compact JSON, when the canonical bytes are that too.
    pub fn compact_len(&self) -> Option<usize> {
        self.compact.then_some(self.bytes.len())
    }

    /// The payload's [`payload_plain_hash`].
    pub fn plain_hash(&self) -> Hash32 {
        plain_hash_of_jcs(&self.bytes)
    }

    /// The payload's compact JSON, when the canonical bytes are that too.
    pub fn into_compact_json(self) -> Option<String> {
        self.compact.then(|| String::from_utf8(self.bytes).expect("JCS output is UTF-8"))
    }
}

/// `SHA256("VES_PAYLOAD_PLAIN_V1" || salt(16) || JCS(payload))`: the `payload_plain_hash` an
/// agent computes for an encrypted (kind 1) event. The sequencer never sees the salt, so it
/// cannot check this value; it is bound into the payload AAD and the signing hash instead.
pub fn payload_plain_hash_salted(salt: &[u8; 16], payload: &serde_json::Value) -> Hash32 {
    let mut h = tagged(domain::PAYLOAD_PLAIN);
    h.put(salt);
    crate::jcs::write(payload, &mut HashWriter(&mut h)).expect(JCS_INFALLIBLE);
    finish(h)
}

/// Every input of an event signing hash, borrowed from an envelope or supplied directly.
///
/// `command_id` and `base_version` are signed only when `ves_version` is 2; version 1 ignores
/// them (upstream v1 treats them as unsigned request metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningInput<'a> {
    /// The signing layout: 1 (ves-wire §2.4) or 2 (SPEC §2); written into the preimage.
    pub ves_version: u32,
    /// The tenant half of the stream.
    pub tenant_id: Uuid,
    /// The store half of the stream.
    pub store_id: Uuid,
    /// The event's globally unique id.
    pub event_id: Uuid,
    /// The agent that signed the event.
    pub source_agent_id: Uuid,
    /// Which of the agent's registered keys signed it.
    pub agent_key_id: u32,
    /// The entity type, exactly as sent.
    pub entity_type: &'a str,
    /// The entity id, exactly as sent.
    pub entity_id: &'a str,
    /// The event type, exactly as sent.
    pub event_type: &'a str,
    /// The creation timestamp string, exactly as sent (it is signed byte for byte).
    pub created_at: &'a str,
    /// 0 plaintext, 1 encrypted.
    pub payload_kind: u32,
    /// The plaintext payload hash (salted for encrypted events).
    pub payload_plain_hash: Hash32,
    /// The cipher hash; all zeroes for plaintext events.
    pub payload_cipher_hash: Hash32,
    /// Intent id for deduplication; signed by version 2 only.
    pub command_id: Option<Uuid>,
    /// Optimistic-concurrency base version of the entity; signed by version 2 only.
    pub base_version: Option<u64>,
}

/// The hash an agent signs with Ed25519.
///
/// * `ves_version == 2`: `SHA256("VES_EVENTSIG_V2" || V1 || U8(command_id present) ||
///   [UUID(command_id)] || U8(base_version present) || [U64_BE(base_version)])`, where `V1` is
///   the version-1 hash computed with the version field set to 2 (SPEC §2).
/// * any other version: the version-1 layout of ves-wire §2.4 with that version number written
///   into it. Only 1 is valid on the wire; the server rejects other versions before signatures
///   matter.
pub fn event_signing_hash(input: &SigningInput) -> Hash32 {
    let mut h = Sha256::default();
    write_signing_preimage(&mut h, input);
    finish(h)
}

/// The exact bytes [`event_signing_hash`] hashes: for version 2 the outer preimage (tag, inner
/// hash, controls), otherwise the version-1 preimage of
/// `171 + |entity_type| + |entity_id| + |event_type| + |created_at|` bytes.
///
/// For diagnosing signature mismatches between implementations; hashing does not use it.
pub fn event_signing_preimage(input: &SigningInput) -> Vec<u8> {
    let mut buf = Vec::with_capacity(
        171 + input.entity_type.len() + input.entity_id.len() + input.event_type.len() + input.created_at.len(),
    );
    write_signing_preimage(&mut buf, input);
    buf
}

fn write_signing_preimage(sink: &mut impl Sink, input: &SigningInput) {
    if input.ves_version == 2 {
        let mut inner = Sha256::default();
        write_v1_preimage(&mut inner, input);
        sink.put(domain::EVENTSIG_V2);
        sink.put(&finish(inner));
        match input.command_id {
            Some(id) => {
                sink.put_u8(1);
                sink.put_uuid(&id);
            }
            None => sink.put_u8(0),
        }
        match input.base_version {
            Some(v) => {
                sink.put_u8(1);
                sink.put_u64(v);
            }
            None => sink.put_u8(0),
        }
    } else {
        write_v1_preimage(sink, input);
    }
}

/// ves-wire §2.4, with `input.ves_version` as the version field.
fn write_v1_preimage(sink: &mut impl Sink, input: &SigningInput) {
    sink.put(domain::EVENTSIG);
    sink.put_u32(input.ves_version);
    sink.put_uuid(&input.tenant_id);
    sink.put_uuid(&input.store_id);
    sink.put_uuid(&input.event_id);
    sink.put_uuid(&input.source_agent_id);
    sink.put_u32(input.agent_key_id);
    sink.put_str(input.entity_type);
    sink.put_str(input.entity_id);
    sink.put_str(input.event_type);
    sink.put_str(input.created_at);
    sink.put_u32(input.payload_kind);
    sink.put(&input.payload_plain_hash);
    sink.put(&input.payload_cipher_hash);
}

/// `SHA256("VES_RECEIPT_V1" || UUID(T) || UUID(S) || UUID(event_id) || U64_BE(seq) ||
/// signing_hash)`: what the sequencer signs when it accepts an event (ves-wire §2.5).
pub fn receipt_hash(
    tenant_id: Uuid,
    store_id: Uuid,
    event_id: Uuid,
    sequence_number: u64,
    signing_hash: &Hash32,
) -> Hash32 {
    let mut h = tagged(domain::RECEIPT);
    h.put_uuid(&tenant_id);
    h.put_uuid(&store_id);
    h.put_uuid(&event_id);
    h.put_u64(sequence_number);
    h.put(signing_hash);
    finish(h)
}

/// `SHA256("VES_LEAF_V1" || UUID(T) || UUID(S) || U64_BE(seq) || signing_hash ||
/// agent_signature(64))`: a Merkle leaf, 147-byte preimage (ves-wire §2.6). The signature is
/// always the 64-byte Ed25519 `agent_signature`, whatever signature scheme the event declares.
pub fn leaf_hash(
    tenant_id: Uuid,
    store_id: Uuid,
    sequence_number: u64,
    signing_hash: &Hash32,
    agent_signature: &[u8; 64],
) -> Hash32 {
    let mut h = tagged(domain::LEAF);
    h.put_uuid(&tenant_id);
    h.put_uuid(&store_id);
    h.put_u64(sequence_number);
    h.put(signing_hash);
    h.put(agent_signature);
    finish(h)
}

/// `SHA256("VES_STREAM_V1" || UUID(T) || UUID(S))`: the id of a (tenant, store) stream
/// (ves-wire §2.8). Its first 8 bytes (big-endian) key the commitment advisory lock upstream.
pub fn stream_id(tenant_id: Uuid, store_id: Uuid) -> Hash32 {
    let mut h = tagged(domain::STREAM);
    h.put_uuid(&tenant_id);
    h.put_uuid(&store_id);
    finish(h)
}

/// `SHA256("VES_STATE_ROOT_V1" || stream_id(T,S) || prev_state_root || merkle_root ||
/// U64_BE(start) || U64_BE(end) || U32_BE(leaf_count))`: a commitment's `new_state_root`, which
/// chains it to the previous commitment of the stream (ves-wire §2.8).
pub fn state_root(
    tenant_id: Uuid,
    store_id: Uuid,
    prev_state_root: &Hash32,
    merkle_root: &Hash32,
    sequence_start: u64,
    sequence_end: u64,
    leaf_count: u32,
) -> Hash32 {
    let mut h = tagged(domain::STATE_ROOT);
    h.put(&stream_id(tenant_id, store_id));
    h.put(prev_state_root);
    h.put(merkle_root);
    h.put_u64(sequence_start);
    h.put_u64(sequence_end);
    h.put_u32(leaf_count);
    finish(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_canonical_payload_hashes_as_the_payload_and_its_json_is_serde_jsons() {
        for payload in [serde_json::json!({"b": [1, 2.5, "x\u{1}"], "a": {"n": null}}), serde_json::json!({"f": 100.0})]
        {
            let canonical = CanonicalPayload::of(&payload);
            assert_eq!(canonical.plain_hash(), payload_plain_hash(&payload));
            assert_eq!(canonical.as_bytes(), jcs(&payload));
            if let Some(len) = canonical.compact_len() {
                assert_eq!(len, serde_json::to_vec(&payload).unwrap().len());
            }
            if let Some(json) = canonical.into_compact_json() {
                assert_eq!(json, serde_json::to_string(&payload).unwrap());
            }
        }
        assert!(CanonicalPayload::of(&serde_json::json!({"b": 1, "a": "é"})).into_compact_json().is_some());
        // A text that is its canonical form is taken as it is, and hashes as its parse does.
        let text = r#"{"a":"é","b":[1,2.5]}"#;
        let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(payload_plain_hash_of_canonical_text(text), Some(payload_plain_hash(&parsed)));
        assert_eq!(CanonicalPayload::of(&parsed).into_compact_json().as_deref(), Some(text));
        assert_eq!(payload_plain_hash_of_canonical_text(r#"{"b":1,"a":2}"#), None);
        assert!(CanonicalPayload::of(&serde_json::json!({"f": 100.0})).into_compact_json().is_none());
    }

    fn input(version: u32) -> SigningInput<'static> {
        SigningInput {
            ves_version: version,
            tenant_id: Uuid::from_u128(1),
            store_id: Uuid::from_u128(2),
            event_id: Uuid::from_u128(3),
            source_agent_id: Uuid::from_u128(4),
            agent_key_id: 1,
            entity_type: "InventoryItem",
            entity_id: "WIDGET-001",
            event_type: "Adjusted",
            created_at: "2025-01-01T00:00:00Z",
            payload_kind: 0,
            payload_plain_hash: [7; 32],
            payload_cipher_hash: [0; 32],
            command_id: Some(Uuid::from_u128(5)),
            base_version: Some(9),
        }
    }

    #[test]
    fn the_signing_hash_is_the_sha256_of_the_signing_preimage() {
        for version in [1, 2, 3] {
            let i = input(version);
            let digest: Hash32 = Sha256::digest(event_signing_preimage(&i)).into();
            assert_eq!(digest, event_signing_hash(&i), "version {version}");
        }
    }

    #[test]
    fn version_one_ignores_execution_controls_and_version_two_signs_them() {
        let with = input(1);
        let without = SigningInput { command_id: None, base_version: None, ..with };
        assert_eq!(event_signing_hash(&with), event_signing_hash(&without));

        let with = input(2);
        for changed in [
            SigningInput { command_id: None, ..with },
            SigningInput { base_version: None, ..with },
            SigningInput { base_version: Some(10), ..with },
            SigningInput { command_id: Some(Uuid::from_u128(6)), ..with },
        ] {
            assert_ne!(event_signing_hash(&with), event_signing_hash(&changed));
        }
    }

    #[test]
    fn version_two_preimage_lengths_follow_the_presence_flags() {
        let full = input(2);
        assert_eq!(event_signing_preimage(&full).len(), 15 + 32 + 1 + 16 + 1 + 8);
        let bare = SigningInput { command_id: None, base_version: None, ..full };
        assert_eq!(event_signing_preimage(&bare).len(), 15 + 32 + 1 + 1);
    }

    #[test]
    fn version_one_preimage_is_171_bytes_plus_the_strings() {
        let i = input(1);
        assert_eq!(event_signing_preimage(&i).len(), 171 + 13 + 10 + 8 + 20);
    }

    #[test]
    fn salted_and_unsalted_plain_hashes_differ() {
        let p = serde_json::json!({"delta": 100});
        assert_ne!(payload_plain_hash(&p), payload_plain_hash_salted(&[0; 16], &p));
    }
}
