//! Event ids are unique per tenant (migration 0008): an id another tenant used is answered exactly like
//! a fresh one (no existence oracle, no squatting), while replays and reuses inside a tenant keep their
//! answers.

mod common;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

/// `event` of `agent` re-signed under `event_id`.
fn with_id(agent: &Agent, event_id: Uuid, n: u64) -> VesEventEnvelope {
    agent.builder().event_id(event_id).payload(json!({"delta": n})).sign(&agent.key)
}

/// The answer without what differs between any two streams (receipts carry their own stream's hashes).
fn shape(body: &Value) -> Value {
    json!({
        "eventsAccepted": body["eventsAccepted"],
        "eventsRejected": body["eventsRejected"],
        "sequenceStart": body["sequenceStart"],
        "sequenceEnd": body["sequenceEnd"],
        "rejections": body["rejections"],
        "receiptSequenceNumbers": body["receipts"].as_array().map(|r| r.iter().map(|r| r["sequenceNumber"].clone()).collect::<Vec<_>>()),
    })
}

#[tokio::test]
async fn another_tenant_can_ingest_an_event_id_a_tenant_already_used_and_each_replay_answers_its_own_receipt() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let (a, b, fresh) = (Agent::random(), Agent::random(), Agent::random());
    for agent in [&a, &b, &fresh] {
        api.register_key(agent).await;
    }
    let shared = Uuid::new_v4();
    let a_event = with_id(&a, shared, 1);
    let (status, a_first) = api.ingest(a.agent_id, std::slice::from_ref(&a_event)).await;
    assert_eq!(status, 200, "{a_first}");
    assert_eq!(a_first["eventsAccepted"], 1, "{a_first}");

    // Tenant B's event under the same id is sequenced, and answered exactly like an event of a tenant
    // whose ids have never been used anywhere.
    let b_event = with_id(&b, shared, 2);
    let (status, b_body) = api.ingest(b.agent_id, std::slice::from_ref(&b_event)).await;
    assert_eq!(status, 200, "{b_body}");
    let (_, fresh_body) = api.ingest(fresh.agent_id, &[with_id(&fresh, Uuid::new_v4(), 2)]).await;
    assert_eq!(shape(&b_body), shape(&fresh_body), "B: {b_body}\nfresh: {fresh_body}");
    assert_eq!(b_body["receipts"][0]["eventId"], json!(shared));
    assert_ne!(b_body["receipts"][0]["receiptHash"], a_first["receipts"][0]["receiptHash"]);

    // Each tenant's replay answers its own original receipt; nothing new is stored.
    let (_, a_again) = api.ingest(a.agent_id, std::slice::from_ref(&a_event)).await;
    assert_eq!(a_again["eventsAccepted"], 0, "{a_again}");
    assert_eq!(a_again["receipts"][0], a_first["receipts"][0], "{a_again}");
    let (_, b_again) = api.ingest(b.agent_id, std::slice::from_ref(&b_event)).await;
    assert_eq!(b_again["eventsAccepted"], 0, "{b_again}");
    assert_eq!(b_again["receipts"][0], b_body["receipts"][0], "{b_again}");

    // Both streams read back their own event under that id.
    for (agent, event) in [(&a, &a_event), (&b, &b_event)] {
        let pool = sqlx::PgPool::connect(&server.db.url).await.unwrap();
        let stored: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT sequence_number, agent_signature FROM events WHERE tenant_id = $1 AND event_id = $2",
        )
        .bind(agent.tenant_id)
        .bind(shared)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(stored, vec![(1, event.agent_signature.0.to_vec())]);
        pool.close().await;
    }
}

#[tokio::test]
async fn an_id_used_in_another_store_of_the_same_tenant_is_still_refused() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let one = Agent::random();
    let mut other_store = one.clone();
    other_store.store_id = Uuid::new_v4();
    api.register_key(&one).await;
    let id = Uuid::new_v4();
    let (status, body) = api.ingest(one.agent_id, &[with_id(&one, id, 1)]).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = api.ingest(other_store.agent_id, &[with_id(&other_store, id, 1)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 0, "{body}");
    assert_eq!(body["rejections"][0]["reason"], "duplicate_event_id", "{body}");
    assert_eq!(body["rejections"][0]["message"], "Event ID already exists", "{body}");
}

#[tokio::test]
async fn a_legacy_event_may_reuse_an_id_of_another_tenant_but_not_its_own() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let (a, b) = (Agent::random(), Agent::random());
    api.register_key(&a).await;
    let id = Uuid::new_v4();
    let (status, body) = api.ingest(a.agent_id, &[with_id(&a, id, 1)]).await;
    assert_eq!(status, 200, "{body}");

    let legacy = |agent: &Agent| {
        let payload = json!({"delta": 1});
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(serde_json::to_vec(&payload).unwrap()));
        json!({"agent_id": agent.agent_id, "events": [{
            "event_id": id, "tenant_id": agent.tenant_id, "store_id": agent.store_id,
            "entity_type": "InventoryItem", "entity_id": "WIDGET-001", "event_type": "Adjusted",
            "payload": payload, "payload_hash": hash, "created_at": "2025-06-01T12:00:00Z",
            "source_agent": agent.agent_id,
        }]})
    };
    let (status, body) = api.post("/api/v1/events/ingest", legacy(&b)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events_accepted"], 1, "{body}");
    let (_, body) = api.post("/api/v1/events/ingest", legacy(&a)).await;
    assert_eq!(body["events_accepted"], 0, "{body}");
    assert_eq!(body["rejections"][0]["reason"], "DuplicateEventId", "{body}");
}
