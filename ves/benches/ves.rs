//! Hot paths of the sequencer: reading an envelope, payload hashing, signing hashes, signature
//! checks and Merkle trees. Run with `cargo bench -p stateset-ves -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use uuid::Uuid;
use ves::hash::{self, SigningInput};
use ves::{EventBuilder, Hash32, VesEventEnvelope, merkle, verify};

fn small_payload() -> serde_json::Value {
    serde_json::json!({"delta": 100, "location_bin": "A-12", "reason": "shipment_receive"})
}

/// About 1 KiB of JCS output, nested and with unsorted keys, like a real order event.
fn kib_payload() -> serde_json::Value {
    let lines: Vec<_> = (0..8)
        .map(|i| {
            serde_json::json!({
                "sku": format!("SKU-{i:05}"), "qty": i * 3 + 1, "unit_price": 19.99 + f64::from(i),
                "description": "Stainless steel widget, medium", "warehouse": "EU-WEST-2"
            })
        })
        .collect();
    serde_json::json!({"order_id": "ORD-000123", "customer": {"id": 42, "tier": "gold"}, "lines": lines})
}

fn signing_input() -> SigningInput<'static> {
    SigningInput {
        ves_version: 1,
        tenant_id: Uuid::from_u128(1),
        store_id: Uuid::from_u128(2),
        event_id: Uuid::from_u128(0x1111),
        source_agent_id: Uuid::from_u128(0x2222),
        agent_key_id: 1,
        entity_type: "InventoryItem",
        entity_id: "WIDGET-001",
        event_type: "Adjusted",
        created_at: "2025-01-01T00:00:00Z",
        payload_kind: 0,
        payload_plain_hash: [7; 32],
        payload_cipher_hash: [0; 32],
        command_id: None,
        base_version: None,
    }
}

fn leaves(n: u64) -> Vec<Hash32> {
    (0..n).map(|i| hash::leaf_hash(Uuid::from_u128(1), Uuid::from_u128(2), i + 1, &[3; 32], &[4; 64])).collect()
}

/// Reading a signed envelope from JSON as the ingest endpoint does (most of it is the hex of the
/// hashes and the signature, and the payload), with a payload like the load generator's default.
fn envelope_parse(c: &mut Criterion) {
    let payload = serde_json::json!({
        "sku": "SKU-004217", "location": "WH-03/A17-05", "delta": -12, "reason": "receiving",
        "unit_cost": {"amount": "41.17", "currency": "USD"}, "reference": "PO-00001405",
        "counted_by": "associate-0117",
    });
    let event = EventBuilder::new(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 1)
        .entity("InventoryItem", "SKU-004217")
        .event_type("InventoryAdjusted")
        .payload(payload)
        .sign(&SigningKey::from_bytes(&[9; 32]));
    let json = serde_json::to_vec(&event).expect("serializes");
    c.bench_function("envelope/parse", |b| {
        b.iter(|| serde_json::from_slice::<VesEventEnvelope>(black_box(&json)).expect("parses"))
    });
    c.bench_function("envelope/serialize", |b| b.iter(|| serde_json::to_vec(black_box(&event)).expect("serializes")));
}

fn payload_hashes(c: &mut Criterion) {
    let small = small_payload();
    let kib = kib_payload();
    assert!((900..1300).contains(&hash::jcs(&kib).len()), "{}", hash::jcs(&kib).len());
    c.bench_function("payload_plain_hash/small", |b| b.iter(|| hash::payload_plain_hash(black_box(&small))));
    c.bench_function("payload_plain_hash/1KiB", |b| b.iter(|| hash::payload_plain_hash(black_box(&kib))));
}

fn signing_hash(c: &mut Criterion) {
    let input = signing_input();
    c.bench_function("event_signing_hash/v1", |b| b.iter(|| hash::event_signing_hash(black_box(&input))));
    let v2 = SigningInput { ves_version: 2, command_id: Some(Uuid::from_u128(6)), base_version: Some(3), ..input };
    c.bench_function("event_signing_hash/v2", |b| b.iter(|| hash::event_signing_hash(black_box(&v2))));
    // What the sequencer spends deriving a receipt hash it no longer stores (migration 0021).
    let (ids, signing) = ([Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)], [7u8; 32]);
    c.bench_function("receipt_hash", |b| {
        b.iter(|| hash::receipt_hash(black_box(ids[0]), ids[1], ids[2], black_box(42), &signing))
    });
}

fn signatures(c: &mut Criterion) {
    let items: Vec<_> = (0..64u8)
        .map(|i| {
            let key = SigningKey::from_bytes(&[i; 32]);
            let msg: Hash32 = [i.wrapping_mul(31); 32];
            (msg, key.sign(&msg).to_bytes(), key.verifying_key())
        })
        .collect();
    let (msg, sig, key) = &items[0];
    c.bench_function("ed25519/verify_one", |b| b.iter(|| verify::verify_one(black_box(sig), msg, key)));
    c.bench_function("ed25519/verify_batch_64", |b| b.iter(|| verify::verify_batch(black_box(&items))));
    let prepared = verify::PreparedKey::new(key);
    c.bench_function("ed25519/verify_prepared_key", |b| b.iter(|| prepared.verify(black_box(sig), msg)));
    c.bench_function("ed25519/prepare_key", |b| b.iter(|| verify::PreparedKey::new(black_box(key))));
    let signer = SigningKey::from_bytes(&[0; 32]);
    c.bench_function("ed25519/sign", |b| b.iter(|| signer.sign(black_box(msg))));
}

fn merkle_trees(c: &mut Criterion) {
    for n in [1_000, 10_000] {
        let ls = leaves(n);
        c.bench_function(&format!("merkle_root/{n}"), |b| b.iter(|| merkle::merkle_root(black_box(&ls))));
    }
    let ls = leaves(10_000);
    c.bench_function("merkle_tree_new_and_proof/10000", |b| {
        b.iter_batched(|| ls.clone(), |ls| merkle::MerkleTree::new(ls).proof(black_box(7_777)), BatchSize::LargeInput)
    });
    let tree = merkle::MerkleTree::new(ls);
    c.bench_function("merkle_proof_lookup/10000", |b| b.iter(|| tree.proof(black_box(7_777))));
}

criterion_group!(benches, envelope_parse, payload_hashes, signing_hash, signatures, merkle_trees);
criterion_main!(benches);
