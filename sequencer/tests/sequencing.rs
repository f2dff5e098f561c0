//! Group commit's fastest path against a real database: the head a process remembers for a stream is
//! only a guess, so a stale guess (another replica wrote since, or an operator paused the stream) and a
//! replay must each fall back to the locked path without writing anything at a wrong number.

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::{EventBuilder, VesEventEnvelope};

use sequencer::store::events::StreamKey;
use sequencer::testing::{ADMIN_KEY, TestDb, TestServer};

struct Writer {
    stream: StreamKey,
    agent_id: Uuid,
    key: SigningKey,
}

impl Writer {
    fn new() -> Self {
        Writer {
            stream: StreamKey { tenant_id: Uuid::new_v4(), store_id: Uuid::new_v4() },
            agent_id: Uuid::new_v4(),
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    fn event(&self, n: u64) -> VesEventEnvelope {
        EventBuilder::new(self.stream.tenant_id, self.stream.store_id, self.agent_id, 1)
            .entity("InventoryItem", "SKU-1")
            .event_type("Adjusted")
            .payload(json!({"n": n}))
            .sign(&self.key)
    }
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn register(base: &str, w: &Writer) {
    let body = json!({
        "tenantId": w.stream.tenant_id,
        "agentId": w.agent_id,
        "keyId": 1,
        "publicKey": format!("0x{}", hex::encode(w.key.verifying_key().to_bytes())),
    });
    let (status, body) = post(base, "/api/v1/agents/keys", body).await;
    assert_eq!(status, 200, "{body}");
}

async fn ingest(base: &str, w: &Writer, events: &[VesEventEnvelope]) -> (u16, Value) {
    post(base, "/api/v1/ves/events/ingest", json!({"agentId": w.agent_id, "events": events})).await
}

/// The stream as stored: (sequence number, event id), in order, and the counter's head.
async fn stored(url: &str, stream: StreamKey) -> (Vec<(i64, Uuid)>, i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let rows = sqlx::query_as(
        "SELECT sequence_number, event_id FROM events WHERE tenant_id = $1 AND store_id = $2 ORDER BY 1",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .fetch_all(&pool)
    .await
    .expect("read the stream");
    let head =
        sqlx::query_scalar("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .fetch_one(&pool)
            .await
            .expect("read the head");
    pool.close().await;
    (rows, head)
}

#[tokio::test]
async fn a_head_moved_by_another_replica_is_noticed_and_nothing_is_written_at_the_stale_number() {
    let a = TestServer::start().await;
    // NB: an empty name: the database belongs to `a`.
    let b = TestServer::start_on(TestDb { url: a.db.url.clone(), name: String::new() }, &[]).await;
    let w = Writer::new();
    register(&a.base_url, &w).await;
    let events: Vec<VesEventEnvelope> = (1..=4).map(|n| w.event(n)).collect();
    // Each process writes after the other did, so each one's remembered head is stale every time.
    for (i, base) in [&a.base_url, &b.base_url, &a.base_url, &b.base_url].into_iter().enumerate() {
        let (status, body) = ingest(base, &w, &events[i..=i]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["receipts"][0]["sequenceNumber"], i as u64 + 1, "{body}");
    }
    let (rows, head) = stored(&a.db.url, w.stream).await;
    let want: Vec<(i64, Uuid)> = events.iter().enumerate().map(|(i, e)| (i as i64 + 1, e.event_id)).collect();
    assert_eq!(rows, want);
    assert_eq!(head, 4);
}

#[tokio::test]
async fn a_stream_paused_after_this_process_wrote_it_takes_no_more_events_until_resumed() {
    let server = TestServer::start().await;
    let w = Writer::new();
    register(&server.base_url, &w).await;
    let (status, body) = ingest(&server.base_url, &w, &[w.event(1)]).await;
    assert_eq!(status, 200, "{body}");

    server.state.store.set_paused(w.stream, true, Some("test")).await.unwrap();
    let (status, body) = ingest(&server.base_url, &w, &[w.event(2)]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STREAM_PAUSED", "{body}");
    assert_eq!(stored(&server.db.url, w.stream).await.1, 1, "nothing was numbered while paused");

    server.state.store.set_paused(w.stream, false, None).await.unwrap();
    let (status, body) = ingest(&server.base_url, &w, &[w.event(3)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["receipts"][0]["sequenceNumber"], 2, "{body}");
}

#[tokio::test]
async fn a_replay_in_a_group_after_the_head_is_known_answers_its_original_receipt() {
    let server = TestServer::start().await;
    let w = Writer::new();
    register(&server.base_url, &w).await;
    let (first, second) = (w.event(1), w.event(2));
    let (status, original) = ingest(&server.base_url, &w, std::slice::from_ref(&first)).await;
    assert_eq!(status, 200, "{original}");

    let (status, body) = ingest(&server.base_url, &w, &[first.clone(), second.clone()]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 1, "{body}");
    assert_eq!(body["receipts"][0], original["receipts"][0], "the replay answers the original receipt");
    assert_eq!(body["receipts"][1]["sequenceNumber"], 2, "{body}");
    let (rows, head) = stored(&server.db.url, w.stream).await;
    assert_eq!(rows, vec![(1, first.event_id), (2, second.event_id)]);
    assert_eq!(head, 2);
}
