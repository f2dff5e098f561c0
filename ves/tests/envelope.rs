//! The wire envelope: serde rules of ves-wire §1.5, the builder, and signature checks.

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::{EventBuilder, Hex32, Sig64, VesEventEnvelope};
use ves::{ZERO_HASH, hash, verify};

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn builder() -> EventBuilder {
    EventBuilder::new(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(0x2222), 1)
        .entity("InventoryItem", "WIDGET-001")
        .event_type("Adjusted")
        .payload(json!({"delta": 100, "reason": "test"}))
        .created_at("2025-01-01T00:00:00Z")
        .event_id(Uuid::from_u128(0x1111))
}

fn signed_json() -> Value {
    serde_json::to_value(builder().sign(&key())).unwrap()
}

fn parse(json: Value) -> Result<VesEventEnvelope, serde_json::Error> {
    serde_json::from_value(json)
}

#[test]
fn hex_fields_accept_0x_bare_and_uppercase_hex() {
    let original = parse(signed_json()).unwrap();
    let mut json = signed_json();
    let plain = json["payload_plain_hash"].as_str().unwrap().to_owned();
    let signature = json["agent_signature"].as_str().unwrap().to_owned();
    for (plain, signature) in [
        (plain.trim_start_matches("0x").to_owned(), signature.trim_start_matches("0x").to_owned()),
        (plain.to_uppercase().replacen("0X", "0x", 1), signature.to_uppercase()),
        (plain.trim_start_matches("0x").to_uppercase(), format!("0x{}", &signature[2..].to_uppercase())),
    ] {
        json["payload_plain_hash"] = json!(plain);
        json["agent_signature"] = json!(signature);
        assert_eq!(parse(json.clone()).unwrap(), original, "{plain} {signature}");
    }
}

#[test]
fn hex_fields_of_the_wrong_length_are_rejected_with_a_clear_error() {
    let mut json = signed_json();
    json["payload_cipher_hash"] = json!(format!("0x{}", "00".repeat(31)));
    let error = parse(json).unwrap_err().to_string();
    assert!(error.contains("expected 32 bytes as 64 hex digits"), "{error}");
    assert!(error.contains("got 62 digits"), "{error}");

    let mut json = signed_json();
    json["agent_signature"] = json!("ab".repeat(65));
    let error = parse(json).unwrap_err().to_string();
    assert!(error.contains("expected 64 bytes as 128 hex digits"), "{error}");

    let mut json = signed_json();
    json["payload_plain_hash"] = json!("zz".repeat(32));
    assert!(parse(json).unwrap_err().to_string().contains("not hex"));

    let mut json = signed_json();
    json["payload_plain_hash"] = json!([1, 2, 3]);
    assert!(parse(json).is_err(), "hex fields are strings");
}

#[test]
fn hex_newtypes_parse_and_print_like_the_wire() {
    let h: Hex32 = format!("0X{}", "AB".repeat(32)).parse().unwrap();
    assert_eq!(h, Hex32([0xab; 32]));
    assert_eq!(h.to_string(), format!("0x{}", "ab".repeat(32)));
    assert_eq!(format!("{:?}", Sig64([1; 64])), format!("0x{}", "01".repeat(64)));
    assert!("0x".parse::<Hex32>().is_err());
}

#[test]
fn payload_null_reads_as_absent() {
    let mut json = signed_json();
    json["payload"] = Value::Null;
    json["payload_encrypted"] = Value::Null;
    json["command_id"] = Value::Null;
    let env = parse(json).unwrap();
    assert_eq!(env.payload, None);
    assert_eq!(env.payload_encrypted, None);
    assert_eq!(env.command_id, None);
}

#[test]
fn serialization_emits_0x_lowercase_hex_and_omits_absent_options() {
    let json = signed_json();
    for field in ["payload_plain_hash", "payload_cipher_hash", "agent_signature"] {
        let s = json[field].as_str().unwrap();
        assert!(s.starts_with("0x"), "{field}");
        assert_eq!(s, s.to_lowercase(), "{field}");
    }
    assert_eq!(json["payload_cipher_hash"], json!(format!("0x{}", "00".repeat(32))));
    let object = json.as_object().unwrap();
    for absent in ["payload_encrypted", "agent_signature_scheme", "command_id", "base_version"] {
        assert!(!object.contains_key(absent), "{absent}");
    }
}

#[test]
fn server_assigned_and_unknown_fields_are_ignored() {
    let mut json = signed_json();
    json["sequence_number"] = json!(7);
    json["sequenced_at"] = json!("2025-01-01T00:00:01+00:00");
    json["agent_signature_bundle"] = json!({"ed25519_signature": [1, 2, 3]});
    json["something_new"] = json!({"nested": true});
    assert_eq!(parse(json).unwrap(), parse(signed_json()).unwrap());
}

#[test]
fn payload_kind_is_read_as_any_u32_for_the_server_to_judge() {
    let mut json = signed_json();
    json["payload_kind"] = json!(2);
    assert_eq!(parse(json.clone()).unwrap().payload_kind, 2);
    json["payload_kind"] = json!(-1);
    assert!(parse(json).is_err());
}

#[test]
fn a_signed_envelope_verifies_and_a_wrong_key_does_not() {
    let env = builder().sign(&key());
    assert!(env.verify_signature(&key().verifying_key()));
    assert!(!env.verify_signature(&SigningKey::from_bytes(&[43; 32]).verifying_key()));
    assert!(verify::verify_one(&env.agent_signature.0, &env.signing_hash(), &key().verifying_key()));
}

#[test]
fn tampering_with_any_signed_field_breaks_the_signature() {
    type Tamper = fn(&mut VesEventEnvelope);
    let tampers: [(&str, Tamper); 15] = [
        ("ves_version", |e| e.ves_version = 3),
        ("event_id", |e| e.event_id = Uuid::from_u128(9)),
        ("tenant_id", |e| e.tenant_id = Uuid::from_u128(9)),
        ("store_id", |e| e.store_id = Uuid::from_u128(9)),
        ("source_agent_id", |e| e.source_agent_id = Uuid::from_u128(9)),
        ("agent_key_id", |e| e.agent_key_id = 2),
        ("entity_type", |e| e.entity_type.push('x')),
        ("entity_id", |e| e.entity_id = "WIDGET-002".into()),
        ("event_type", |e| e.event_type = "Adjusted ".into()),
        ("created_at", |e| e.created_at = "2025-01-01T00:00:00.000Z".into()),
        ("payload_kind", |e| e.payload_kind = 1),
        ("payload_plain_hash", |e| e.payload_plain_hash.0[31] ^= 1),
        ("payload_cipher_hash", |e| e.payload_cipher_hash.0[0] ^= 0x80),
        ("agent_signature", |e| e.agent_signature.0[10] ^= 4),
        ("agent_signature (s half)", |e| e.agent_signature.0[40] ^= 1),
    ];
    let original = builder().sign(&key());
    for (field, tamper) in tampers {
        let mut env = original.clone();
        tamper(&mut env);
        assert!(!env.verify_signature(&key().verifying_key()), "{field}");
    }
}

#[test]
fn version_one_leaves_execution_controls_unsigned_and_version_two_signs_them() {
    let v1 = builder().command_id(Uuid::from_u128(6)).base_version(3).sign(&key());
    let mut changed = v1.clone();
    changed.command_id = None;
    changed.base_version = Some(4);
    changed.agent_signature_scheme = Some(1);
    changed.payload = Some(json!("the payload is signed only through its hash"));
    assert!(changed.verify_signature(&key().verifying_key()));

    let v2 = builder().version(2).command_id(Uuid::from_u128(6)).base_version(3).sign(&key());
    assert_eq!(v2.ves_version, 2);
    assert!(v2.verify_signature(&key().verifying_key()));
    let mut changed = v2.clone();
    changed.command_id = Some(Uuid::from_u128(7));
    assert!(!changed.verify_signature(&key().verifying_key()));
    let mut changed = v2.clone();
    changed.base_version = None;
    assert!(!changed.verify_signature(&key().verifying_key()));
}

#[test]
fn the_builder_fills_hashes_and_sensible_defaults() {
    let env = EventBuilder::new(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 4)
        .entity("Order", "ORD-1")
        .event_type("Created")
        .sign(&key());
    assert_eq!(env.ves_version, 1);
    assert_eq!(env.payload_kind, 0);
    assert_eq!(env.source_agent_id, Uuid::from_u128(3));
    assert_eq!(env.agent_key_id, 4);
    assert_eq!(env.payload, Some(json!({})));
    assert_eq!(env.payload_plain_hash.0, hash::payload_plain_hash(&json!({})));
    assert_eq!(env.payload_cipher_hash.0, ZERO_HASH);
    assert_eq!(env.agent_signature.0, key().sign(&env.signing_hash()).to_bytes());
    assert_eq!(env.event_id.get_version_num(), 4);

    // created_at: RFC 3339, UTC, milliseconds, `Z`.
    let at = env.created_at.as_bytes();
    assert_eq!(at.len(), "2025-01-01T00:00:00.000Z".len(), "{}", env.created_at);
    for (i, c) in at.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-'),
            10 => assert_eq!(*c, b'T'),
            13 | 16 => assert_eq!(*c, b':'),
            19 => assert_eq!(*c, b'.'),
            23 => assert_eq!(*c, b'Z'),
            _ => assert!(c.is_ascii_digit(), "{}", env.created_at),
        }
    }
    assert!(env.created_at.as_str() > "2025-01-01");

    let other = EventBuilder::new(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 4).sign(&key());
    assert_ne!(other.event_id, env.event_id, "event ids are random by default");
}

#[test]
fn build_unsigned_leaves_an_all_zero_signature() {
    let env = builder().build_unsigned();
    assert_eq!(env.agent_signature, Sig64([0; 64]));
    assert!(!env.verify_signature(&key().verifying_key()));
    let mut signed = env.clone();
    signed.sign(&key());
    assert_eq!(signed, builder().sign(&key()));
}
