//! Every value of `testdata/ves-golden.json` (computed by upstream's own code), plus the
//! encrypted-payload vector of ves-wire §2.9, recomputed by this crate.

use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;
use ves::hash::{self, SigningInput};
use ves::{Hash32, cipher, merkle};

const GOLDEN: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/ves-golden.json"));

fn golden() -> Value {
    serde_json::from_str(GOLDEN).expect("ves-golden.json is JSON")
}

fn h32(v: &Value) -> Hash32 {
    let s = v.as_str().expect("hex string");
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

fn uuid(v: &Value) -> Uuid {
    v.as_str().expect("uuid string").parse().expect("uuid")
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().expect("unsigned integer")
}

fn signing_key(g: &Value) -> SigningKey {
    let seed: [u8; 32] = hex::decode(g["agent_key"]["ed25519_seed"].as_str().unwrap()).unwrap().try_into().unwrap();
    SigningKey::from_bytes(&seed)
}

/// Every golden event record: the v1 `events` and the v2 `v2_signed_execution_controls.events`.
fn golden_events(g: &Value) -> Vec<Value> {
    let mut events = g["events"].as_array().unwrap().clone();
    events.extend(g["v2_signed_execution_controls"]["events"].as_array().unwrap().iter().cloned());
    assert_eq!(events.len(), 4);
    events
}

fn envelope(record: &Value) -> VesEventEnvelope {
    serde_json::from_value(record["envelope"].clone()).expect("golden envelope deserializes")
}

#[test]
fn golden_payload_plain_hashes_and_jcs_strings_match() {
    let g = golden();
    let cases = g["payload_plain_hash"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let jcs = hash::jcs(&case["payload"]);
        assert_eq!(std::str::from_utf8(&jcs).unwrap(), case["jcs"].as_str().unwrap());
        assert_eq!(hash::payload_plain_hash(&case["payload"]), h32(&case["hash"]), "{}", case["jcs"]);
    }
}

#[test]
fn golden_jcs_note_float_one_point_zero_canonicalizes_to_an_integer() {
    let g = golden();
    assert!(g["jcs_note"].as_str().unwrap().contains(r#"{"value":1.0,"count":100}"#));
    let parsed: Value = serde_json::from_str(r#"{"value":1.0,"count":100}"#).unwrap();
    assert_eq!(hash::jcs(&parsed), br#"{"count":100,"value":1}"#);
    assert_eq!(hash::payload_plain_hash(&parsed), h32(&g["payload_plain_hash"][3]["hash"]));
}

#[test]
fn golden_event_payload_plain_hashes_match_their_payloads() {
    for record in golden_events(&golden()) {
        let env = &record["envelope"];
        assert_eq!(hash::payload_plain_hash(&env["payload"]), h32(&env["payload_plain_hash"]), "{}", env["event_id"]);
    }
}

#[test]
fn golden_event_signing_hashes_match() {
    for record in golden_events(&golden()) {
        let env = envelope(&record);
        assert_eq!(env.signing_hash(), h32(&record["signing_hash"]), "{}", env.event_id);
        assert_eq!(hash::event_signing_hash(&env.signing_input()), h32(&record["signing_hash"]));
    }
}

#[test]
fn golden_event_one_signing_hash_matches() {
    let g = golden();
    let e1 = envelope(&g["events"][0]);
    assert_eq!(e1.event_id, Uuid::from_u128(0x11111111_1111_1111_1111_111111111111));
    assert_eq!(hex::encode(e1.signing_hash()), "4dd87d2bff38574cdc3e61e9aea0cbc4109eaf2962f3894f3d82431082343ff6");
}

#[test]
fn golden_signing_preimage_lengths_match() {
    let g = golden();
    let mut checked = 0;
    for record in golden_events(&g) {
        let env = envelope(&record);
        let preimage = hash::event_signing_preimage(&env.signing_input());
        let digest: Hash32 = <sha2::Sha256 as sha2::Digest>::digest(&preimage).into();
        assert_eq!(digest, h32(&record["signing_hash"]));
        if let Some(len) = record.get("signing_preimage_len") {
            assert_eq!(preimage.len() as u64, u64_of(len), "{}", env.event_id);
            let fixed = 171 + env.entity_type.len() + env.entity_id.len() + env.event_type.len() + env.created_at.len();
            assert_eq!(preimage.len(), fixed);
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}

#[test]
fn golden_signatures_are_reproduced_by_signing_with_the_seed() {
    let g = golden();
    let key = signing_key(&g);
    assert_eq!(hex::encode(key.verifying_key().as_bytes()), g["agent_key"]["public_key"].as_str().unwrap());
    for record in golden_events(&g) {
        let env = envelope(&record);
        let signature = key.sign(&h32(&record["signing_hash"])).to_bytes();
        assert_eq!(signature, env.agent_signature.0, "{}", env.event_id);
        assert!(env.verify_signature(&key.verifying_key()));
        assert!(ves::verify::verify_one(&signature, &env.signing_hash(), &key.verifying_key()));

        let mut resigned = env.clone();
        resigned.agent_signature = Default::default();
        resigned.sign(&key);
        assert_eq!(resigned, env);
    }
}

#[test]
fn golden_leaf_and_receipt_hashes_match() {
    let g = golden();
    let mut checked = 0;
    for record in golden_events(&g) {
        let Some(seq) = record.get("sequence_number") else { continue };
        let env = envelope(&record);
        let signing_hash = env.signing_hash();
        let leaf = hash::leaf_hash(env.tenant_id, env.store_id, u64_of(seq), &signing_hash, &env.agent_signature.0);
        assert_eq!(leaf, h32(&record["leaf_hash"]), "{}", env.event_id);
        let receipt = hash::receipt_hash(env.tenant_id, env.store_id, env.event_id, u64_of(seq), &signing_hash);
        assert_eq!(receipt, h32(&record["receipt_hash"]), "{}", env.event_id);
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn golden_pad_leaf_and_node_of_event_one_with_padding_match() {
    let g = golden();
    assert_eq!(merkle::PAD_LEAF, h32(&g["pad_leaf"]));
    let e1_leaf = h32(&g["events"][0]["leaf_hash"]);
    assert_eq!(merkle::node_hash(&e1_leaf, &merkle::PAD_LEAF), h32(&g["node_e1_pad"]));
}

#[test]
fn golden_merkle_roots_depths_and_proofs_match() {
    let g = golden();
    let cases = g["merkle"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let mut proofs_checked = 0;
    for case in cases {
        let leaves: Vec<Hash32> = case["leaves"].as_array().unwrap().iter().map(h32).collect();
        let root = h32(&case["root"]);
        let tree = merkle::MerkleTree::new(leaves.clone());
        assert_eq!(merkle::merkle_root(&leaves), root);
        assert_eq!(tree.root(), root);
        assert_eq!(u64::from(merkle::tree_depth(leaves.len())), u64_of(&case["tree_depth"]));
        assert_eq!(u64::from(tree.depth()), u64_of(&case["tree_depth"]));
        if let Some(padded) = case.get("padded_leaf_count") {
            assert_eq!(merkle::padded_leaf_count(leaves.len()) as u64, u64_of(padded));
        }
        for proof in case.get("proofs").and_then(Value::as_array).into_iter().flatten() {
            let index = u64_of(&proof["leaf_index"]) as usize;
            let path: Vec<Hash32> = proof["proof_path"].as_array().unwrap().iter().map(h32).collect();
            assert_eq!(tree.proof(index).unwrap(), path, "leaf {index} of {}", leaves.len());
            assert!(merkle::verify_proof(&leaves[index], index, &path, &root));
            proofs_checked += 1;
        }
    }
    assert_eq!(proofs_checked, 5);
}

#[test]
fn golden_stream_id_matches() {
    let g = golden();
    let e1 = &g["events"][0]["envelope"];
    assert_eq!(hash::stream_id(uuid(&e1["tenant_id"]), uuid(&e1["store_id"])), h32(&g["stream_id"]));
}

#[test]
fn golden_state_roots_match() {
    let g = golden();
    let e1 = &g["events"][0]["envelope"];
    let cases = g["state_roots"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let root = hash::state_root(
            uuid(&e1["tenant_id"]),
            uuid(&e1["store_id"]),
            &h32(&case["prev_state_root"]),
            &h32(&case["merkle_root"]),
            u64_of(&case["sequence_start"]),
            u64_of(&case["sequence_end"]),
            u32::try_from(u64_of(&case["leaf_count"])).unwrap(),
        );
        assert_eq!(root, h32(&case["new_state_root"]));
    }
}

#[test]
fn golden_cross_platform_signing_hash_matches() {
    let g = golden();
    let c = &g["cross_platform_signing_hash"];
    let input = SigningInput {
        ves_version: 1,
        tenant_id: uuid(&c["tenant_id"]),
        store_id: uuid(&c["store_id"]),
        event_id: uuid(&c["event_id"]),
        source_agent_id: uuid(&c["source_agent_id"]),
        agent_key_id: u32::try_from(u64_of(&c["agent_key_id"])).unwrap(),
        entity_type: c["entity_type"].as_str().unwrap(),
        entity_id: c["entity_id"].as_str().unwrap(),
        event_type: c["event_type"].as_str().unwrap(),
        created_at: c["created_at"].as_str().unwrap(),
        payload_kind: u32::try_from(u64_of(&c["payload_kind"])).unwrap(),
        payload_plain_hash: h32(&c["payload_plain_hash"]),
        payload_cipher_hash: h32(&c["payload_cipher_hash"]),
        command_id: None,
        base_version: None,
    };
    assert_eq!(hash::event_signing_hash(&input), h32(&c["signing_hash"]));
}

#[test]
fn golden_envelopes_round_trip_through_json_unchanged() {
    let g = golden();
    let key = signing_key(&g).verifying_key();
    for record in golden_events(&g) {
        let first = envelope(&record);
        let json = serde_json::to_value(&first).unwrap();
        // The golden JSON is already canonical for the wire: 0x + lowercase, absent options.
        assert_eq!(json, record["envelope"], "{}", first.event_id);
        let second: VesEventEnvelope = serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
        assert_eq!(second, first);
        assert_eq!(second.signing_hash(), h32(&record["signing_hash"]));
        assert!(second.verify_signature(&key));
    }
}

/// ves-wire §2.9's encrypted vector. The table names only part of its context ("event_type
/// `InventoryAdjusted`, payload inventory, salt `0102…0f10`", plus the common inputs); the rest
/// (event id `1111…`, created_at `2025-01-01T00:00:00Z`, payload keys) is upstream's
/// `tests/vectors/ves_enc_1_test_vectors.json` `full_encryption` section, which §2.9's values
/// reproduce.
mod encrypted_vector {
    use super::*;
    use ves::cipher::{Hpke, PayloadEncrypted, Recipient, base64url_encode};

    const SALT: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    fn hex32(s: &str) -> Hash32 {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn plain_hash() -> Hash32 {
        let payload = serde_json::json!({"delta": 100, "reason": "shipment_receive", "location_bin": "A-12"});
        hash::payload_plain_hash_salted(&SALT, &payload)
    }

    fn context(plain_hash: Hash32) -> SigningInput<'static> {
        SigningInput {
            ves_version: 1,
            tenant_id: "00000000-0000-0000-0000-000000000001".parse().unwrap(),
            store_id: "00000000-0000-0000-0000-000000000002".parse().unwrap(),
            event_id: "11111111-1111-1111-1111-111111111111".parse().unwrap(),
            source_agent_id: "22222222-2222-2222-2222-222222222222".parse().unwrap(),
            agent_key_id: 1,
            entity_type: "InventoryItem",
            entity_id: "WIDGET-001",
            event_type: "InventoryAdjusted",
            created_at: "2025-01-01T00:00:00Z",
            payload_kind: 1,
            payload_plain_hash: plain_hash,
            payload_cipher_hash: [0; 32],
            command_id: None,
            base_version: None,
        }
    }

    fn payload() -> PayloadEncrypted {
        PayloadEncrypted {
            enc_version: 1,
            aead: "AES-256-GCM".into(),
            nonce_b64u: base64url_encode(&std::array::from_fn::<u8, 12, _>(|i| i as u8)),
            ciphertext_b64u: base64url_encode(&[2; 24]),
            tag_b64u: base64url_encode(&[5; 16]),
            hpke: Hpke {
                mode: "base".into(),
                kem: "X25519-HKDF-SHA256".into(),
                kdf: "HKDF-SHA256".into(),
                aead: "AES-256-GCM".into(),
            },
            recipients: vec![Recipient {
                recipient_kid: 1,
                enc_b64u: base64url_encode(&[3; 32]),
                ct_b64u: base64url_encode(&[4; 48]),
            }],
        }
    }

    #[test]
    fn encrypted_vector_salted_plain_hash_matches() {
        assert_eq!(plain_hash(), hex32("fd317f62d6d9a953f7b405776a2061ef400a606c9de38d21c6fe83a500a1f355"));
    }

    #[test]
    fn encrypted_vector_payload_aad_matches() {
        let aad = cipher::payload_aad(&context(plain_hash()));
        assert_eq!(aad, hex32("f7092a50f8f9ec82a0e45778c154fdb0256720e9cf6e3115f8b88c571098f9b1"));
    }

    #[test]
    fn encrypted_vector_recipients_hash_matches() {
        let recipients = cipher::recipients_hash(&payload().recipients).unwrap();
        assert_eq!(recipients, hex32("66c0a0f2d48c66d7cc5e9acecea2e7024f13b3b26d93d2b798e42c39fc6974e7"));
    }

    #[test]
    fn encrypted_vector_cipher_hash_matches_and_its_structure_is_valid() {
        let p = payload();
        assert_eq!(cipher::validate_structure(&p), Ok(()));
        let aad = cipher::payload_aad(&context(plain_hash()));
        let expected = hex32("a36abc27e999f03af5c67b0e9df82d362285b1404a3e32233a79e84d5cad4122");
        assert_eq!(cipher::cipher_hash(&p, &aad).unwrap(), expected);

        // Padded base64url decodes to the same bytes, so the hash does not change.
        let padded_b64u = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, bytes);
        let mut padded = p.clone();
        padded.tag_b64u = padded_b64u(&[5; 16]);
        padded.recipients[0].enc_b64u = padded_b64u(&[3; 32]);
        assert!(padded.tag_b64u.ends_with("==") && padded.recipients[0].enc_b64u.ends_with('='));
        assert_eq!(cipher::cipher_hash(&padded, &aad).unwrap(), expected);
    }
}
