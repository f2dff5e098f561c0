//! Signed ingest over HTTP against a real PostgreSQL: golden vectors, receipts, idempotency,
//! deduplication, optimistic concurrency, rejections and the dead-letter queue.

mod common;

use common::*;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sequencer::store::maintenance::{FIRST_ANALYZE_BYTES, FirstAnalyse};
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

fn sequencer_public_key() -> VerifyingKey {
    sequencer::config::parse_signing_key(SEQUENCER_SEED_HEX).unwrap().verifying_key()
}

fn golden_events(g: &Value, path: &[&str]) -> Vec<(VesEventEnvelope, Value)> {
    let mut v = g;
    for p in path {
        v = &v[*p];
    }
    v.as_array().unwrap().iter().map(|e| (serde_json::from_value(e["envelope"].clone()).unwrap(), e.clone())).collect()
}

#[tokio::test]
async fn ingesting_the_golden_events_returns_the_golden_receipt_hashes() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::golden();
    api.register_key(&agent).await;
    let g = golden();
    for (envelope, expected) in golden_events(&g, &["events"]) {
        let (status, body) = api.ingest(agent.agent_id, std::slice::from_ref(&envelope)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["eventsAccepted"], 1, "{body}");
        let receipt = &body["receipts"][0];
        assert_eq!(receipt["sequenceNumber"], expected["sequence_number"]);
        assert_eq!(receipt["receiptHash"], expected["receipt_hash"]);
        assert_eq!(receipt["signatureAlg"], "ed25519");
        // The sequencer's signature verifies over the receipt hash.
        let hash = hex::decode(receipt["receiptHash"].as_str().unwrap()).unwrap();
        let sig: [u8; 64] = hex::decode(receipt["sequencerSignature"].as_str().unwrap()).unwrap().try_into().unwrap();
        sequencer_public_key().verify(&hash, &Signature::from_bytes(&sig)).expect("receipt signature verifies");
    }
    // The stored events read back byte-identical: the golden signing hashes and signatures still verify.
    let (status, body) = api
        .get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}&from=1&limit=10", agent.tenant_id, agent.store_id))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);
    assert_eq!(body["head_sequence"], 2);
    assert_eq!(body["has_more"], false);
    for (stored, (_, expected)) in body["events"].as_array().unwrap().iter().zip(golden_events(&g, &["events"])) {
        let envelope: VesEventEnvelope = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(hex::encode(envelope.signing_hash()), expected["signing_hash"].as_str().unwrap());
        assert!(envelope.verify_signature(&agent.key.verifying_key()));
        assert_eq!(stored["created_at"], expected["envelope"]["created_at"]);
        assert_eq!(stored["agent_signature"], expected["envelope"]["agent_signature"]);
        assert_eq!(stored["payload_plain_hash"], expected["envelope"]["payload_plain_hash"]);
        assert_eq!(stored["sequence_number"], expected["sequence_number"]);
    }
}

/// 40 events: verified, parsed (over 16 KiB) and their receipts signed on the compute pool, not inline.
#[tokio::test]
async fn a_large_batch_gets_every_receipt_signed_in_order() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<_> = (1..=40).map(|i| agent.event(i)).collect();
    assert!(serde_json::to_vec(&events).unwrap().len() > sequencer::compute::INLINE_PARSE_MAX);
    assert!(events.len() > sequencer::compute::INLINE_SIGN_MAX.max(sequencer::compute::INLINE_VERIFY_MAX));
    let (status, body) = api.ingest(agent.agent_id, &events).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 40, "{body}");
    for (i, (receipt, event)) in body["receipts"].as_array().unwrap().iter().zip(&events).enumerate() {
        assert_eq!(receipt["sequenceNumber"], i + 1);
        let want = ves::hash::receipt_hash(
            event.tenant_id,
            event.store_id,
            event.event_id,
            i as u64 + 1,
            &event.signing_hash(),
        );
        assert_eq!(receipt["receiptHash"], hex::encode(want));
        let sig: [u8; 64] = hex::decode(receipt["sequencerSignature"].as_str().unwrap()).unwrap().try_into().unwrap();
        sequencer_public_key().verify(&want, &Signature::from_bytes(&sig)).expect("receipt signature verifies");
    }
}

#[tokio::test]
async fn version_two_golden_events_are_accepted_with_receipts_over_their_signing_hash() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::golden();
    api.register_key(&agent).await;
    let g = golden();
    let events = golden_events(&g, &["v2_signed_execution_controls", "events"]);
    let envelopes: Vec<VesEventEnvelope> = events.iter().map(|(e, _)| e.clone()).collect();
    let (status, body) = api.ingest(agent.agent_id, &envelopes).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 2, "{body}");
    for (i, (envelope, expected)) in events.iter().enumerate() {
        let signing_hash: [u8; 32] =
            hex::decode(expected["signing_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
        let want = ves::hash::receipt_hash(
            envelope.tenant_id,
            envelope.store_id,
            envelope.event_id,
            i as u64 + 1,
            &signing_hash,
        );
        assert_eq!(body["receipts"][i]["receiptHash"], hex::encode(want));
    }
}

#[tokio::test]
async fn replaying_an_identical_event_returns_its_original_receipt() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let event = agent.event(1);
    let (_, first) = api.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    let (status, again) = api.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    assert_eq!(status, 200);
    assert_eq!(again["eventsAccepted"], 0);
    assert_eq!(again["eventsRejected"], 0);
    assert_eq!(again["receipts"][0], first["receipts"][0], "the original receipt, byte for byte");
    assert_eq!(again["headSequence"], 1);
}

#[tokio::test]
async fn reusing_an_event_id_with_different_contents_is_rejected() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let event = agent.event(1);
    api.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    let other = agent.builder().event_id(event.event_id).payload(json!({"delta": 2})).sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, &[other]).await;
    assert_eq!(body["eventsRejected"], 1, "{body}");
    assert_eq!(body["rejections"][0]["reason"], "duplicate_event_id");
}

#[tokio::test]
async fn a_command_id_is_processed_once_per_stream() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let cmd = Uuid::new_v4();
    let a = agent.builder().command_id(cmd).payload(json!({"n": 1})).sign(&agent.key);
    let b = agent.builder().command_id(cmd).payload(json!({"n": 2})).sign(&agent.key);
    let (_, first) = api.ingest(agent.agent_id, &[a]).await;
    assert_eq!(first["eventsAccepted"], 1);
    let (_, second) = api.ingest(agent.agent_id, &[b]).await;
    assert_eq!(second["eventsAccepted"], 0);
    assert_eq!(second["rejections"][0]["reason"], "duplicate_command_id", "{second}");
    // Within one batch too.
    let c = agent.builder().command_id(Uuid::new_v4()).payload(json!({"n": 3})).sign(&agent.key);
    let mut d = c.clone();
    d.event_id = Uuid::new_v4();
    d.sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, &[c, d]).await;
    assert_eq!(body["eventsAccepted"], 1, "{body}");
    assert_eq!(body["rejections"][0]["reason"], "duplicate_command_id");
}

#[tokio::test]
async fn base_version_is_optimistic_concurrency_per_entity_and_conflicts_are_dead_lettered() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let v0 = agent.builder().base_version(0).payload(json!({"n": 0})).sign(&agent.key);
    let v1 = agent.builder().base_version(1).payload(json!({"n": 1})).sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, &[v0, v1]).await;
    assert_eq!(body["eventsAccepted"], 2, "later events of a batch see earlier bumps: {body}");
    let stale = agent.builder().base_version(1).payload(json!({"n": 9})).sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, std::slice::from_ref(&stale)).await;
    assert_eq!(body["rejections"][0]["reason"], "version_conflict: expected 1, actual 2", "{body}");
    let letter = server.state.store.dead_letter_by_event_id(stale.event_id).await.unwrap().expect("dead letter");
    assert_eq!(letter.reason, "version_conflict");
    assert_eq!(letter.payload["event_id"], json!(stale.event_id));
    // Another entity is unaffected.
    let other = agent.builder().entity("InventoryItem", "OTHER").base_version(0).payload(json!({})).sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, &[other]).await;
    assert_eq!(body["eventsAccepted"], 1, "{body}");
}

/// A version is counted from the entity's mark (migration 0022) plus the events since. The mark moves only
/// once a check counts `VERSION_MARK_AFTER` events past it, stays true through events written without a
/// check (as the previous release writes them all), and is dropped when the log is damaged.
#[tokio::test]
async fn entity_versions_count_from_a_mark_that_stays_true_and_is_dropped_with_damage() {
    use sequencer::store::events::VERSION_MARK_AFTER;
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let pool = server.state.store.pool();
    let mark = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT version, at_sequence FROM entity_version_marks \
             WHERE tenant_id = $1 AND store_id = $2 AND entity_type = 'InventoryItem' AND entity_id = 'WIDGET-001'",
        )
        .bind(agent.tenant_id)
        .bind(agent.store_id)
        .fetch_optional(pool)
        .await
        .unwrap()
    };
    let checked = |base: i64| agent.builder().base_version(base as u64).payload(json!({"v": base})).sign(&agent.key);
    let other = || agent.builder().entity("InventoryItem", "OTHER").payload(json!({})).sign(&agent.key);
    let accept = |events: Vec<VesEventEnvelope>| {
        let api = &api;
        async move {
            let n = events.len();
            let (status, body) = api.ingest(agent.agent_id, &events).await;
            assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(n as u64)), "{body}");
        }
    };

    // Events without base_version are never checked, so they leave no mark.
    let plain = VERSION_MARK_AFTER + 8;
    accept((0..plain as u64).flat_map(|n| [agent.event(n), other()]).collect()).await;
    assert_eq!(mark().await, None);
    // The first check counts them all, and marks the version at the stream's head.
    accept(vec![checked(plain)]).await;
    let head = 2 * plain;
    assert_eq!(mark().await, Some((plain, head)), "the other entity's events are not counted");
    // Fewer than VERSION_MARK_AFTER past the mark: checks count from it and leave it where it is.
    accept((0..5).map(|n| agent.event(100 + n)).collect()).await;
    accept(vec![checked(plain + 6)]).await;
    assert_eq!(mark().await, Some((plain, head)));
    let (_, body) = api.ingest(agent.agent_id, &[checked(plain)]).await;
    assert_eq!(
        body["rejections"][0]["reason"],
        format!("version_conflict: expected {plain}, actual {}", plain + 7),
        "{body}"
    );
    // Enough past it, and the check moves it.
    let more = VERSION_MARK_AFTER as u64;
    accept((0..more).map(|n| agent.event(200 + n)).collect()).await;
    let version = plain + 7 + VERSION_MARK_AFTER;
    accept(vec![checked(version)]).await;
    let head = head + 1 + 5 + 1 + VERSION_MARK_AFTER;
    assert_eq!(mark().await, Some((version, head)));
    let stored: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE tenant_id = $1 AND store_id = $2 AND entity_id = 'WIDGET-001' \
         AND sequence_number <= $3",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .bind(head)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stored, version, "the mark is what the log holds up to its position");
    // `verify` holds every mark against the log.
    let verify = || sequencer::verify::verify(&server.state.store, Some(agent.tenant_id), Some(agent.store_id));
    assert!(verify().await.unwrap().findings.is_empty());
    sqlx::query("UPDATE entity_version_marks SET version = version + 1 WHERE tenant_id = $1 AND store_id = $2")
        .bind(agent.tenant_id)
        .bind(agent.store_id)
        .execute(pool)
        .await
        .unwrap();
    let findings = verify().await.unwrap().findings;
    assert_eq!(
        findings.iter().map(|f| (f.kind, f.sequence_number)).collect::<Vec<_>>(),
        [("version_mark_mismatch", Some(head))],
        "{findings:?}"
    );

    // An event of the entity removed behind the sequencer's back: the damage drops the stream's mark, and
    // the version is counted from the log again.
    tamper(pool, &delete_event_sql(&agent, 1)).await;
    assert_eq!(mark().await, None);
    let (_, body) = api.ingest(agent.agent_id, &[checked(version + 1)]).await;
    assert_eq!(
        body["rejections"][0]["reason"],
        format!("version_conflict: expected {}, actual {version}", version + 1),
        "{body}"
    );
}

/// A version is counted through the entity index from the entity's mark, never by walking the stream's
/// events or the entity's older entries, also on a database without statistics (a new one, before
/// autovacuum analyses it). There PostgreSQL chose the sequence index for a plain range on the sequence
/// number, and read every event of the stream since the mark for every entity checked; and with the
/// entity id's equality beside the range, it started the entity index's scan at the entity's first entry.
#[tokio::test]
async fn a_version_is_counted_through_the_entity_index_from_its_mark_without_statistics() {
    use sequencer::store::events::{StreamKey, entity_versions};
    // NB: no worker, whose leader would analyse the log once it holds a megabyte.
    let server = TestServer::start_with(&[("WORKER_ENABLED", "false")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let send = |entity: fn(u64) -> String, from: u64, n: u64| {
        let (api, agent) = (&api, &agent);
        async move {
            let events: Vec<VesEventEnvelope> = (from..from + n)
                .map(|i| agent.builder().entity("InventoryItem", entity(i)).payload(json!({"n": i})).sign(&agent.key))
                .collect();
            for chunk in events.chunks(250) {
                let (status, body) = api.ingest(agent.agent_id, chunk).await;
                assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(chunk.len() as u64)), "{body}");
            }
        }
    };
    /// This transaction's own reads of the indexes of the log that returned entries: entries returned
    /// and blocks fetched (with the metapage that planning reads).
    async fn reads(tx: &mut sqlx::PgConnection) -> Vec<(String, i64, i64)> {
        sqlx::query_as(
            "SELECT c.relname::text, pg_stat_get_xact_tuples_returned(c.oid), pg_stat_get_xact_blocks_fetched(c.oid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = 'ves_events'::regclass AND pg_stat_get_xact_tuples_returned(c.oid) > 0",
        )
        .fetch_all(tx)
        .await
        .unwrap()
    }
    // NB: a connection of its own: a backend's counts of earlier transactions may not be flushed yet.
    async fn own(url: &str) -> sqlx::PgConnection {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
        conn
    }
    let stream = StreamKey { tenant_id: agent.tenant_id, store_id: agent.store_id };
    let entity = |id: &str| vec![("InventoryItem".to_owned(), id.to_owned())];

    // 1,000 events over 50 entities: the two entities' own entries, and nothing of the others.
    send(|i| format!("SKU-{}", i % 50), 0, 1_000).await;
    let mut tx = own(&server.db.url).await;
    let two = [entity("SKU-7"), entity("SKU-8")].concat();
    let versions = entity_versions(&mut tx, stream, 1_000, &two).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.2).collect::<Vec<_>>(), [20, 20], "{versions:?}");
    let mut read = reads(&mut tx).await;
    read.sort();
    assert_eq!(read.len(), 2, "the entity index, and the sequence index for the stream's first epoch: {read:?}");
    assert_eq!(
        (read[0].0.as_str(), read[0].1),
        ("idx_ves_events_entity", 40),
        "the two entities' own entries: {read:?}"
    );
    assert_eq!((read[1].0.as_str(), read[1].1), ("uq_ves_events_sequence", 1), "its first event, once: {read:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut tx).await.unwrap();

    // An entity of 2,000 entries (several pages of the index) whose mark is at the head: a check after 10
    // more events reads those 10 entries, on one or two leaf pages below the root.
    send(|_| "SKU-HOT".to_owned(), 1_000, 2_000).await;
    let mut tx = own(&server.db.url).await;
    assert_eq!(entity_versions(&mut tx, stream, 3_000, &entity("SKU-HOT")).await.unwrap()[0].2, 2_000);
    sqlx::raw_sql("COMMIT").execute(&mut tx).await.unwrap();
    send(|_| "SKU-HOT".to_owned(), 3_000, 10).await;
    let mut tx = own(&server.db.url).await;
    assert_eq!(entity_versions(&mut tx, stream, 3_010, &entity("SKU-HOT")).await.unwrap()[0].2, 2_010);
    let mut read = reads(&mut tx).await;
    read.sort();
    assert_eq!(read.len(), 2, "the entity index, and the sequence index for the mark's epoch: {read:?}");
    assert_eq!((read[0].0.as_str(), read[0].1), ("idx_ves_events_entity", 10), "the entries after the mark: {read:?}");
    assert!(read[0].2 <= 5, "the scan starts at the mark, not at the entity's first entry: {read:?}");
    assert_eq!((read[1].0.as_str(), read[1].1), ("uq_ves_events_sequence", 1), "the event at the mark: {read:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut tx).await.unwrap();
}

/// A partition of the log that PostgreSQL has no statistics for is analysed once it holds enough to
/// matter (`FIRST_ANALYZE_BYTES`), and only then; the worker leader asks every second while events
/// arrive.
#[tokio::test]
async fn a_log_without_statistics_is_analysed_once_it_holds_enough() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<VesEventEnvelope> = (0..150).map(|n| agent.event(n)).collect();
    let (status, body) = api.ingest(agent.agent_id, &events).await;
    assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(150)), "{body}");
    let store = &server.state.store;
    let stats = || log_statistics(store.pool());
    let (tuples, bytes) = stats().await;
    assert!(tuples < 0.0, "never analysed yet: {tuples}");
    let first = |analysed: &[&'static str], waiting| FirstAnalyse { analysed: analysed.to_vec(), waiting };
    assert_eq!(store.analyze_log_if_never_analysed(bytes + 1, &[]).await.unwrap(), first(&[], 2), "too small");
    assert_eq!(store.analyze_log_if_never_analysed(bytes, &["ves_events"]).await.unwrap(), first(&[], 1));
    assert_eq!(store.analyze_log_if_never_analysed(bytes, &[]).await.unwrap(), first(&["ves_events"], 1));
    assert_eq!(stats().await.0, 150.0, "analysed");
    assert_eq!(
        store.analyze_log_if_never_analysed(0, &[]).await.unwrap(),
        first(&["legacy_events"], 0),
        "only the other, empty one"
    );
    assert_eq!(store.analyze_log_if_never_analysed(0, &[]).await.unwrap(), first(&[], 0), "both have statistics");
}

/// `ves_events`' rows as PostgreSQL's statistics have them (-1: never analysed) and its size in bytes.
async fn log_statistics(pool: &sqlx::PgPool) -> (f32, i64) {
    sqlx::query_as("SELECT reltuples, pg_relation_size(oid) FROM pg_class WHERE relname = 'ves_events'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The worker leader notices a log without statistics while events arrive, and analyses it within
/// seconds of its holding a megabyte, not at autovacuum's next pass (or never, where it is off).
#[tokio::test]
async fn the_worker_leader_analyses_a_new_log_once_it_holds_a_megabyte() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let stats = || log_statistics(server.state.store.pool());
    let mut sent = 0;
    while stats().await.1 < FIRST_ANALYZE_BYTES {
        assert!(sent < 20_000, "{sent} events and the log is still under a megabyte");
        let events: Vec<VesEventEnvelope> = (sent..sent + 500).map(|n| agent.event(n)).collect();
        let (status, body) = api.ingest(agent.agent_id, &events).await;
        assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(500)), "{body}");
        sent += 500;
    }
    // NB: polled every 50 ms, for ten seconds at most (the leader looks every second).
    let mut waited = 0;
    while stats().await.0 < 0.0 {
        assert!(waited < 10_000, "the log has no statistics {waited} ms after it reached a megabyte");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 50;
    }
    assert!(stats().await.0 >= 1_000.0, "analysed with its events: {:?}", stats().await);
}

#[tokio::test]
async fn fixable_rejections_are_dead_lettered_with_their_full_envelope() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    // Unknown key.
    let unknown = agent.event(1);
    let (_, body) = api.ingest(agent.agent_id, std::slice::from_ref(&unknown)).await;
    assert_eq!(body["rejections"][0]["reason"], "agent_key_invalid: Agent key not found", "{body}");
    let letter = server.state.store.dead_letter_by_event_id(unknown.event_id).await.unwrap().expect("dead letter");
    assert_eq!(letter.reason, "agent_key_invalid");
    let stored: VesEventEnvelope = serde_json::from_value(letter.payload.clone()).unwrap();
    assert_eq!(stored, unknown, "the envelope is kept as received");

    // Bad signature.
    api.register_key(&agent).await;
    let mut forged = agent.event(2);
    forged.agent_signature.0[0] ^= 1;
    let (_, body) = api.ingest(agent.agent_id, std::slice::from_ref(&forged)).await;
    assert_eq!(body["rejections"][0]["reason"], "invalid_signature", "{body}");
    assert!(server.state.store.dead_letter_by_event_id(forged.event_id).await.unwrap().is_some());

    // Revoked key.
    let (status, _) = api
        .post(
            &format!("/api/v1/agents/keys/{}/{}/{}/revoke", agent.tenant_id, agent.agent_id, agent.key_id),
            json!({"reason": "compromised"}),
        )
        .await;
    assert_eq!(status, 200);
    let late = agent.event(3);
    let (_, body) = api.ingest(agent.agent_id, std::slice::from_ref(&late)).await;
    assert_eq!(body["rejections"][0]["reason"], "agent_key_invalid: Agent key has been revoked", "{body}");

    // A payload hash mismatch cannot be fixed by an operator: rejected, not dead-lettered.
    let mut tampered = agent.event(4);
    tampered.payload = Some(json!({"delta": 999}));
    let (_, body) = api.ingest(agent.agent_id, std::slice::from_ref(&tampered)).await;
    assert_eq!(body["rejections"][0]["reason"], "invalid_payload_hash");
    assert!(server.state.store.dead_letter_by_event_id(tampered.event_id).await.unwrap().is_none());
    assert_eq!(server.state.store.dead_letter_depth().await.unwrap(), 3);
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_key_is_judged_at_server_time() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    let pk = format!("0x{}", hex::encode(agent.key.verifying_key().to_bytes()));
    for (key_id, from, to) in
        [(1, "2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"), (2, "2999-01-01T00:00:00Z", "2999-12-31T00:00:00Z")]
    {
        let (status, body) = api
            .post(
                "/api/v1/agents/keys",
                json!({"tenantId": agent.tenant_id, "agentId": agent.agent_id, "keyId": key_id, "publicKey": pk, "validFrom": from, "validTo": to}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // created_at inside the window does not help: the server's clock decides.
    let mut a = Agent { key_id: 1, ..agent.clone() }
        .builder()
        .created_at("2020-06-01T00:00:00Z")
        .payload(json!({}))
        .sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, std::slice::from_ref(&a)).await;
    assert_eq!(body["rejections"][0]["reason"], "agent_key_invalid: Agent key has expired", "{body}");
    a = Agent { key_id: 2, ..agent.clone() }.event(1);
    let (_, body) = api.ingest(agent.agent_id, &[a]).await;
    assert_eq!(body["rejections"][0]["reason"], "agent_key_invalid: Agent key is not yet valid", "{body}");
}

#[tokio::test]
async fn an_exact_replay_keeps_its_receipt_even_after_the_key_is_revoked() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let event = agent.event(1);
    let (_, first) = api.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    api.post(&format!("/api/v1/agents/keys/{}/{}/1/revoke", agent.tenant_id, agent.agent_id), json!({})).await;
    let (_, again) = api.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    assert_eq!(again["receipts"][0], first["receipts"][0], "{again}");
    assert_eq!(server.state.store.dead_letter_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_batch_is_partially_accepted_event_by_event() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let good1 = agent.event(1);
    let mut bad = agent.event(2);
    bad.agent_signature.0[5] ^= 0x40;
    let good2 = agent.event(3);
    let (status, body) = api.ingest(agent.agent_id, &[good1.clone(), bad.clone(), good2.clone()]).await;
    assert_eq!(status, 200);
    assert_eq!(body["eventsAccepted"], 2);
    assert_eq!(body["eventsRejected"], 1);
    assert_eq!(body["sequenceStart"], 1);
    assert_eq!(body["sequenceEnd"], 2);
    assert_eq!(body["headSequence"], 2);
    assert_eq!(body["rejections"][0]["event_id"], json!(bad.event_id));
    assert_eq!(body["receipts"][1]["eventId"], json!(good2.event_id));
}

#[tokio::test]
async fn version_one_is_refused_when_signed_execution_controls_are_required() {
    let server = TestServer::start_with(&[("REQUIRE_SIGNED_EXECUTION_CONTROLS", "true")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let (_, body) = api.ingest(agent.agent_id, &[agent.event(1)]).await;
    assert_eq!(body["rejections"][0]["reason"], "unsupported_version", "{body}");
    let v2 = agent.builder().version(2).command_id(Uuid::new_v4()).payload(json!({})).sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, &[v2]).await;
    assert_eq!(body["eventsAccepted"], 1, "{body}");
}

#[tokio::test]
async fn an_encrypted_payload_is_checked_by_structure_and_cipher_hash() {
    use ves::cipher::{Hpke, PayloadEncrypted, Recipient, base64url_encode};
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let encrypted = PayloadEncrypted {
        enc_version: 1,
        aead: "AES-256-GCM".into(),
        nonce_b64u: base64url_encode(&[7u8; 12]),
        ciphertext_b64u: base64url_encode(&[2u8; 24]),
        tag_b64u: base64url_encode(&[5u8; 16]),
        hpke: Hpke {
            mode: "base".into(),
            kem: "X25519-HKDF-SHA256".into(),
            kdf: "HKDF-SHA256".into(),
            aead: "AES-256-GCM".into(),
        },
        recipients: vec![Recipient {
            recipient_kid: 1,
            enc_b64u: base64url_encode(&[3u8; 32]),
            ct_b64u: base64url_encode(&[4u8; 48]),
        }],
    };
    let mut event = agent.builder().payload(json!({"secret": true})).build_unsigned();
    event.payload = None;
    event.payload_kind = 1;
    event.payload_plain_hash.0 = ves::hash::payload_plain_hash_salted(&[1u8; 16], &json!({"secret": true}));
    let aad = ves::cipher::payload_aad(&event.signing_input());
    event.payload_cipher_hash.0 = ves::cipher::cipher_hash(&encrypted, &aad).unwrap();
    event.payload_encrypted = Some(encrypted.clone());
    event.sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    assert_eq!(body["eventsAccepted"], 1, "{body}");

    let mut wrong_hash = event.clone();
    wrong_hash.event_id = Uuid::new_v4();
    wrong_hash.payload_cipher_hash.0[0] ^= 1;
    wrong_hash.sign(&agent.key);
    let mut bad_nonce = event.clone();
    bad_nonce.event_id = Uuid::new_v4();
    bad_nonce.payload_encrypted.as_mut().unwrap().nonce_b64u = base64url_encode(&[7u8; 11]);
    bad_nonce.sign(&agent.key);
    let (_, body) = api.ingest(agent.agent_id, &[wrong_hash, bad_nonce]).await;
    assert_eq!(body["rejections"][0]["reason"], "invalid_cipher_hash", "{body}");
    assert_eq!(body["rejections"][1]["reason"], "schema_validation: payload_encrypted.nonce_b64u", "{body}");
    // It reads back with its encrypted payload intact.
    let (_, read) =
        api.get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await;
    let back: VesEventEnvelope = serde_json::from_value(read["events"][0].clone()).unwrap();
    assert_eq!(back, event);
}

#[tokio::test]
async fn bad_requests_get_a_json_4xx_and_store_nothing() {
    let server = TestServer::start_with(&[("MAX_EVENTS_PER_BATCH", "2"), ("MAX_EVENT_PAYLOAD_SIZE", "64")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let other_stream = Agent { store_id: Uuid::new_v4(), ..agent.clone() };
    let big = agent.builder().payload(json!({"blob": "x".repeat(100)})).sign(&agent.key);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"agentId": agent.agent_id, "events": []}), 400, "events must not be empty"),
        (
            json!({"agentId": agent.agent_id, "events": [agent.event(1), other_stream.event(2)]}),
            400,
            "same tenantId and storeId",
        ),
        (json!({"agentId": Uuid::new_v4(), "events": [agent.event(1)]}), 400, "source_agent_id must match"),
        (
            json!({"agentId": agent.agent_id, "events": [agent.event(1), agent.event(2), agent.event(3)]}),
            413,
            "max_events_per_batch",
        ),
        (json!({"agentId": agent.agent_id, "events": [big]}), 413, "max_event_payload_size"),
        // A body of the wrong shape is answered naming where.
        (json!({"agentId": agent.agent_id, "events": [{"ves_version": 1}]}), 422, "at events[0]: missing field"),
        (json!({"agentId": "not-a-uuid", "events": []}), 422, "at agentId:"),
        // Bodies over 16 KiB are parsed on the compute pool, and answered the same way.
        (
            json!({"agentId": agent.agent_id, "events": [{"ves_version": 1, "pad": "x".repeat(20_000)}]}),
            422,
            "at events[0]: missing field",
        ),
        (json!({"agentId": "not-a-uuid", "pad": "x".repeat(20_000), "events": []}), 422, "at agentId:"),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = api.post("/api/v1/ves/events/ingest", body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_else(|| panic!("JSON error body: {answer}"));
        assert!(message.contains(needle), "{message} should mention {needle}");
        assert!(answer["error"]["code"].is_string());
    }
    // Malformed JSON.
    let resp = reqwest::Client::new()
        .post(server.url("/api/v1/ves/events/ingest"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
    let resp = reqwest::Client::new()
        .post(server.url("/api/v1/ves/events/ingest"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(format!("{{\"agentId\": \"{}\", \"pad\": \"{}\", not json", agent.agent_id, "x".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("JSON")), "{body}");
    let (_, head) = api.get(&format!("/api/v1/head?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await;
    assert_eq!(head["head_sequence"], 0, "nothing was stored");
}

#[tokio::test]
async fn entity_history_returns_the_entitys_events_in_order() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let mut events = Vec::new();
    for i in 0..5 {
        let entity = if i % 2 == 0 { "A" } else { "B" };
        events.push(agent.builder().entity("Order", entity).payload(json!({"i": i})).sign(&agent.key));
    }
    api.ingest(agent.agent_id, &events).await;
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    let (status, body) = api.get(&format!("/api/v1/ves/entities/Order/A?{q}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3);
    let seqs: Vec<i64> =
        body["events"].as_array().unwrap().iter().map(|e| e["sequence_number"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 3, 5]);
    let (_, body) = api.get(&format!("/api/v1/entities/Order/B?{q}&from=1&limit=1")).await;
    assert_eq!(body["count"], 1);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["events"][0]["envelope"]["sequence_number"], 4);
    let (_, body) = api.get(&format!("/api/v1/events?{q}&from=2&limit=2")).await;
    assert_eq!(body["count"], 2);
    assert_eq!(body["events"][0]["envelope"]["sequence_number"], 2);
    let (_, body) = api.get(&format!("/api/v1/ves/head?{q}")).await;
    assert_eq!(body["head_sequence"], 5);
}

/// Posts `events` (each an envelope whose `payload` member is replaced by the raw text given with it)
/// as written here, not re-encoded: a client in another language sends its own formatting.
async fn ingest_raw(api: &Api, agent: &Agent, events: &[(VesEventEnvelope, &str)]) -> (u16, Value) {
    let events: Vec<String> = events
        .iter()
        .map(|(e, payload)| {
            let mut without = serde_json::to_value(e).unwrap();
            without.as_object_mut().unwrap().remove("payload");
            let text = serde_json::to_string(&without).unwrap();
            format!("{},\"payload\":{payload}}}", &text[..text.len() - 1])
        })
        .collect();
    let body = format!("{{\"agentId\":\"{}\",\"events\":[{}]}}", agent.agent_id, events.join(","));
    let resp = api.request(reqwest::Method::POST, "/api/v1/ves/events/ingest").body(body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_payload_is_hashed_as_its_canonical_form_and_stored_as_its_compact_json_however_it_was_written() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    // As sent: canonical already (taken as it is), and two that are not (whitespace and keys out of
    // order, as a JavaScript or Python client writes them; `1.0`, `1e2`, `0.000001` and an escaped `/`).
    let texts = [
        r#"{"a":[1,2.5,"é"],"b":{"c":null,"d":true}}"#,
        "{ \"sku\" : \"A-1\",\n  \"delta\": -3, \"at\": {\"z\": 1, \"bin\": \"B/7\"} }",
        r#"{"f":1.0,"g":1e2,"h":"a\/b","i":0.000001}"#,
    ];
    let events: Vec<(VesEventEnvelope, &str)> = texts
        .iter()
        .enumerate()
        .map(|(n, text)| {
            let parsed: Value = serde_json::from_str(text).unwrap();
            (
                agent
                    .builder()
                    .entity("Item", format!("I-{n}"))
                    .event_type("Adjusted")
                    .payload(parsed)
                    .sign(&agent.key),
                *text,
            )
        })
        .collect();
    let (status, body) = ingest_raw(&api, &agent, &events).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 3, "{body}");
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT payload_text FROM ves_events WHERE tenant_id = $1 AND store_id = $2 ORDER BY sequence_number",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .fetch_all(server.state.store.pool())
    .await
    .unwrap();
    assert_eq!(stored.len(), 3);
    for (text, (envelope, sent)) in stored.iter().zip(&events) {
        let parsed: Value = serde_json::from_str(sent).unwrap();
        assert_eq!(*text, serde_json::to_string(&parsed).unwrap(), "stored as the compact JSON of {sent}");
        assert_eq!(Some(&parsed), envelope.payload.as_ref());
    }
    assert_eq!(stored[0], texts[0], "a canonical payload is stored as it was sent");
    // Served as before, and still verifying.
    let (status, body) = api
        .get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}&from=1&limit=10", agent.tenant_id, agent.store_id))
        .await;
    assert_eq!(status, 200, "{body}");
    for (served, (envelope, _)) in body["events"].as_array().unwrap().iter().zip(&events) {
        let read: VesEventEnvelope = serde_json::from_value(served.clone()).unwrap();
        assert_eq!(read.payload, envelope.payload);
        assert!(read.verify_signature(&agent.key.verifying_key()));
    }
}

#[tokio::test]
async fn a_payload_nested_deeper_or_with_numbers_larger_than_a_request_may_hold_is_a_400_and_stores_nothing() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let event = agent.event(1);
    // 124 levels parse within a request (serde_json's 128 less the body, `events` and the event);
    // one more never did, whether the text is canonical or not.
    let fits = format!("{}{}", "[".repeat(124), "]".repeat(124));
    for (levels, text) in
        [(125, format!("[{fits}]")), (125, format!("[ {fits}]")), (5000, "[".repeat(5000) + &"]".repeat(5000))]
    {
        let (status, body) = ingest_raw(&api, &agent, &[(event.clone(), &text)]).await;
        assert_eq!(status, 400, "{levels} levels: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("events[0].payload") && message.contains("recursion limit exceeded"), "{body}");
    }
    let (status, body) = api
        .get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}&from=1&limit=10", agent.tenant_id, agent.store_id))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 0, "{body}");
    // A number beyond a double's range and a lone surrogate were refused by the request's parse, and
    // still are.
    for (text, expected) in [(r#"{"a":[1,-1e400]}"#, "number out of range"), (r#"["\ud800"]"#, "hex escape")] {
        let (status, body) = ingest_raw(&api, &agent, &[(event.clone(), text)]).await;
        assert_eq!(status, 400, "{text}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("events[0].payload") && message.contains(expected), "{text}: {body}");
    }
    // At 124 levels the payload is read (and here refused for its hash, as the event was signed over
    // another payload): the limit is the request's, not lower.
    let (status, body) = ingest_raw(&api, &agent, &[(event, &fits)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rejections"][0]["reason"], "invalid_payload_hash", "{body}");
}

/// Since migration 0021 a signed event's row holds no receipt hash, nor a plaintext payload's cipher hash
/// (zero): the sequencer derives the receipt hash where it answers one, and every read the cipher hash,
/// so receipts, a replay's answer, a served event and `verify` are what they were when both were stored,
/// and `ves_receipt_hash()` (0020) computes the same hash in SQL. A row written before 0021 stores them,
/// and its own are read.
#[tokio::test]
async fn receipt_and_cipher_hashes_are_derived_on_every_read_not_stored() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<VesEventEnvelope> = (1..=3).map(|n| agent.event(n)).collect();
    let (status, first) = api.ingest(agent.agent_id, &events).await;
    assert_eq!(status, 200, "{first}");
    let pool = server.state.store.pool();
    // (receipt_hash, payload_cipher_hash, the receipt hash stored or derived in SQL)
    type Hashes = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);
    let stored: Vec<Hashes> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT receipt_hash, payload_cipher_hash, {} FROM ves_events WHERE tenant_id = $1 AND store_id = $2 \
         ORDER BY sequence_number",
        RECEIPT_HASH_SQL
    )))
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 3);
    for (((receipt, cipher, derived), (n, e)), answered) in
        stored.iter().zip((1u64..).zip(&events)).zip(first["receipts"].as_array().unwrap())
    {
        assert_eq!((receipt, cipher), (&None, &None), "neither is stored");
        let want = ves::hash::receipt_hash(agent.tenant_id, agent.store_id, e.event_id, n, &e.signing_hash());
        assert_eq!(derived[..], want[..], "SQL derives the receipt hash as the sequencer computes it");
        assert_eq!(answered["receiptHash"], hex::encode(want), "{answered}");
    }

    // A replay answers the original receipts, byte for byte.
    let (status, again) = api.ingest(agent.agent_id, &events).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["eventsAccepted"], 0, "{again}");
    assert_eq!(again["receipts"], first["receipts"], "{again}");
    // The served events are the envelopes as signed, their cipher hash the zeros they were signed with.
    let (status, body) = api
        .get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}&from=1&limit=10", agent.tenant_id, agent.store_id))
        .await;
    assert_eq!(status, 200, "{body}");
    for (served, sent) in body["events"].as_array().unwrap().iter().zip(&events) {
        assert_eq!(served["payload_cipher_hash"], serde_json::to_value(sent).unwrap()["payload_cipher_hash"]);
        let read: VesEventEnvelope = serde_json::from_value(served.clone()).unwrap();
        assert!(read.verify_signature(&agent.key.verifying_key()));
    }
    let verify = || api.post("/api/v1/admin/verify", json!({"tenantId": agent.tenant_id, "storeId": agent.store_id}));
    let (_, report) = verify().await;
    assert_eq!(report["ok"], true, "{report}");

    // A stored receipt hash is the one read: a wrong one in row 1 (the append-only trigger bypassed, which
    // `verify` reports too) is found as a hash that does not match its recomputation.
    tamper(
        pool,
        &format!(
            "UPDATE ves_events SET receipt_hash = decode(repeat('00', 32), 'hex') \
             WHERE tenant_id = '{}' AND store_id = '{}' AND sequence_number = 1",
            agent.tenant_id, agent.store_id
        ),
    )
    .await;
    let (_, report) = verify().await;
    let mut kinds = findings(&report);
    kinds.sort_unstable();
    assert_eq!(kinds, vec![("bad_hash", 1), ("log_modified", 1)], "{report}");
    assert!(report.to_string().contains("stored receipt_hash does not match"), "{report}");
}
