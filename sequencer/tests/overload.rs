//! Overload: with a small `INGEST_MAX_QUEUED_EVENTS`, a flood of large requests on one stream is shed
//! with 503 + `Retry-After` + a JSON `INGEST_OVERLOADED` error, answered at once rather than after the
//! queue, and the stream stays gap-free with every receipt matching a stored event.
//!
//! To make the queue fill deterministically, the test holds the stream's counter row lock from its own
//! connection (as a sequencer on another replica would while it commits): the sequencing worker blocks
//! on it, so admitted requests stay queued until the test releases the lock.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

const MAX_QUEUED: usize = 200;
const BATCH: usize = 100;
const FLOOD: usize = 24;
/// At most this many requests fit in the queue while the worker is blocked.
const FIT: usize = MAX_QUEUED / BATCH;
/// A bound on a shed request's answer in a debug build on a busy machine (it includes uploading and
/// verifying 100 signed events); the lock is held far longer than this, indefinitely in fact.
const SHED_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooded_stream_sheds_load_with_503_retry_after_and_stays_gap_free() {
    let max = MAX_QUEUED.to_string();
    let server = TestServer::start_with(&[("INGEST_MAX_QUEUED_EVENTS", &max)]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let mut sent: HashSet<Uuid> = HashSet::new();
    let mut receipts: Vec<Value> = Vec::new();

    // The first event creates the stream's counter row.
    let first = agent.event(0);
    sent.insert(first.event_id);
    let (status, body) = api.ingest(agent.agent_id, std::slice::from_ref(&first)).await;
    assert_eq!(status, 200, "{body}");
    receipts.extend(body["receipts"].as_array().unwrap().iter().cloned());

    // Large requests, signed before the flood.
    let pad = "x".repeat(400);
    let batches: Vec<Vec<VesEventEnvelope>> = (0..FLOOD)
        .map(|r| {
            (0..BATCH)
                .map(|i| agent.builder().payload(json!({"delta": r * BATCH + i, "note": pad})).sign(&agent.key))
                .collect()
        })
        .collect();

    // Block the stream: its counter row lock, held by this test.
    let pool = sqlx::PgPool::connect(&server.db.url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    let head: i64 = sqlx::query_scalar(
        "SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    assert_eq!(head, 1);

    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for (r, events) in batches.iter().enumerate() {
        sent.extend(events.iter().map(|e| e.event_id));
        let (tx, base, events, agent_id) = (tx.clone(), server.base_url.clone(), events.clone(), agent.agent_id);
        tokio::spawn(async move {
            let answer = procs::ingest(&procs::client(), &base, agent_id, &events).await.expect("an HTTP answer");
            let _ = tx.send((r, answer));
        });
    }
    drop(tx);

    // While the lock is held at most FIT requests can be queued, so at least FLOOD - FIT are answered
    // now, and every one of them must be a quick, well-formed 503.
    let mut answered = Vec::new();
    while answered.len() < FLOOD - FIT {
        let (r, answer) = tokio::time::timeout(Duration::from_secs(60), answers.recv())
            .await
            .expect("shed requests are answered while the stream is blocked")
            .expect("an answer");
        assert_eq!(answer.status, 503, "request {r} while the stream is blocked: {}", answer.body);
        answered.push((r, answer));
    }
    // ... and the sequencing worker is indeed waiting for the row lock (it may take a moment to get there).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the sequencing worker never waited for the stream's row lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Release the stream: the queued requests are sequenced; any answer still outstanding was decided
    // either way.
    holder.commit().await.unwrap();
    while let Some(answer) = tokio::time::timeout(Duration::from_secs(60), answers.recv()).await.expect("answers") {
        answered.push(answer);
    }
    assert_eq!(answered.len(), FLOOD);

    let mut accepted_requests = 0;
    for (r, answer) in &answered {
        match answer.status {
            200 => {
                accepted_requests += 1;
                assert_eq!(answer.body["eventsAccepted"], BATCH as u64, "{}", answer.body);
                receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());
            }
            503 => {
                assert_eq!(answer.body["error"]["code"], "INGEST_OVERLOADED", "request {r}: {}", answer.body);
                assert_eq!(answer.retry_after.as_deref(), Some("1"), "request {r}: Retry-After");
                assert!(answer.elapsed <= SHED_BOUND, "request {r} was shed after {:?}", answer.elapsed);
            }
            other => panic!("request {r}: unexpected {other}: {}", answer.body),
        }
    }
    assert!((1..=FIT + 1).contains(&accepted_requests), "{accepted_requests} requests accepted");

    // Nothing refused was stored; everything receipted was, at its number, with no gap.
    let stored = procs::assert_stream(&pool, agent.tenant_id, agent.store_id, &receipts, &sent).await;
    assert_eq!(stored, 1 + accepted_requests * BATCH);

    // The queue drained: a request is accepted again.
    let answer = procs::ingest(&procs::client(), &server.base_url, agent.agent_id, &[agent.event(1)]).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    pool.close().await;
}
