//! The legacy unsigned ingest, into the same streams as signed events.

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn legacy_event(agent: &Agent, payload: Value) -> Value {
    // The client computes the hash over compact JSON with sorted keys, as upstream clients do.
    let hash = hex::encode(Sha256::digest(serde_json::to_vec(&payload).unwrap()));
    json!({
        "event_id": Uuid::new_v4(), "tenant_id": agent.tenant_id, "store_id": agent.store_id,
        "entity_type": "InventoryItem", "entity_id": "WIDGET-001", "event_type": "Adjusted",
        "payload": payload, "payload_hash": hash, "created_at": "2025-06-01T12:00:00Z",
        "source_agent": agent.agent_id,
    })
}

#[tokio::test]
async fn legacy_events_share_the_stream_with_signed_ones_gap_free() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    api.ingest(agent.agent_id, &[agent.event(1)]).await;
    let a = legacy_event(&agent, json!({"delta": 1}));
    let b = legacy_event(&agent, json!({"delta": 2}));
    let (status, body) = api.post("/api/v1/events/ingest", json!({"agent_id": agent.agent_id, "events": [a, b]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events_accepted"], 2);
    assert_eq!(body["assigned_sequence_start"], 2);
    assert_eq!(body["assigned_sequence_end"], 3);
    assert_eq!(body["head_sequence"], 3);
    let (_, signed) = api.ingest(agent.agent_id, &[agent.event(4)]).await;
    assert_eq!(signed["receipts"][0]["sequenceNumber"], 4);

    // Replays are rejected (not idempotent), bad hashes and 0x hashes too.
    let mut bad_hash = legacy_event(&agent, json!({"delta": 3}));
    bad_hash["payload"] = json!({"delta": 4});
    let mut prefixed = legacy_event(&agent, json!({"delta": 5}));
    prefixed["payload_hash"] = json!(format!("0x{}", prefixed["payload_hash"].as_str().unwrap()));
    let (_, body) =
        api.post("/api/v1/events/ingest", json!({"agent_id": agent.agent_id, "events": [a, bad_hash, prefixed]})).await;
    let reasons: Vec<&str> =
        body["rejections"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["DuplicateEventId", "InvalidPayloadHash", "SchemaValidation"], "{body}");
    assert_eq!(body["events_accepted"], 0);

    // A version conflict is dead-lettered.
    let mut stale = legacy_event(&agent, json!({"delta": 6}));
    stale["base_version"] = json!(0);
    let (_, body) = api.post("/api/v1/events/ingest", json!({"agent_id": agent.agent_id, "events": [stale]})).await;
    assert_eq!(body["rejections"][0]["reason"], "VersionConflict", "{body}");
    let letter =
        server.state.store.dead_letter_by_event_id(stale["event_id"].as_str().unwrap().parse().unwrap()).await.unwrap();
    assert_eq!(letter.unwrap().source, "legacy");

    // The stream reads back 1..4, commits, and verifies.
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    let (_, read) = api.get(&format!("/api/v1/ves/events?{q}")).await;
    let numbers: Vec<i64> =
        read["events"].as_array().unwrap().iter().map(|e| e["sequence_number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    assert_eq!(read["events"][1]["payload_hash"], a["payload_hash"]);
    let (status, c) = api
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": 1, "sequence_end": 4}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    // Each transaction, signed or legacy, wrote the leaf run of the events it numbered.
    let runs: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT first_sequence, last_sequence FROM event_leaf_runs WHERE tenant_id = $1 AND store_id = $2 \
         ORDER BY first_sequence",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .fetch_all(server.state.store.pool())
    .await
    .unwrap();
    assert_eq!(runs, vec![(1, 1), (2, 3), (4, 4)]);
    // verify recomputes every leaf and checks the commitment and the runs against them.
    let (_, report) = api.post("/api/v1/admin/verify", json!({"tenantId": agent.tenant_id})).await;
    assert_eq!(report["ok"], true, "{report}");
    // An empty legacy batch is fine, as upstream.
    let (status, body) = api.post("/api/v1/events/ingest", json!({"agent_id": agent.agent_id, "events": []})).await;
    assert_eq!(status, 200);
    assert_eq!(body["events_accepted"], 0);
}
