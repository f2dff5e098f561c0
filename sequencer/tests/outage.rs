//! Database outage: on a private PostgreSQL (so the shared test server is never disturbed), stopping
//! the database makes `/ready` and ingest answer 503 with a JSON error within `DB_ACQUIRE_TIMEOUT_MS`,
//! and starting it again (same port, same data directory) lets the sequencer recover by itself and
//! continue the stream without a gap.

mod common;
#[path = "common/private_pg.rs"]
mod private_pg;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use private_pg::PrivatePg;
use serde_json::Value;

const ACQUIRE_TIMEOUT_MS: u64 = 1000;
/// What a 503 may take beyond `DB_ACQUIRE_TIMEOUT_MS` (a bound on a debug build on a busy machine,
/// not a benchmark).
const MARGIN: Duration = Duration::from_millis(1500);

fn assert_json_503(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    assert!(body.is_object(), "{what}: a JSON body, got {body}");
    assert!(body["error"]["code"].is_string(), "{what}: an error code in {body}");
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value, Duration) {
    let start = Instant::now();
    let response = http.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_quickly_and_the_sequencer_recovers_by_itself() {
    let pg = PrivatePg::init();
    pg.start("-c max_connections=40");
    let pool = sqlx::PgPool::connect(&pg.url("")).await.expect("connect the private PostgreSQL");
    sequencer::store::MIGRATOR.run(&pool).await.expect("migrate");
    pool.close().await;

    // NB: an empty name keeps TestDb from dropping anything on the shared test server.
    let db = TestDb { url: pg.url(""), name: String::new() };
    let timeout = ACQUIRE_TIMEOUT_MS.to_string();
    let server = TestServer::start_on(db, &[("DB_ACQUIRE_TIMEOUT_MS", &timeout), ("MAX_DB_CONNECTIONS", "4")]).await;
    let api = Api::admin(&server);
    let http = procs::client();
    let agent = Agent::random();
    api.register_key(&agent).await;
    let mut sent = HashSet::new();
    let mut receipts = Vec::new();
    for n in 1..=3 {
        let event = agent.event(n);
        sent.insert(event.event_id);
        let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[event]).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());
    }
    let (status, _, _) = get(&http, &server.url("/ready")).await;
    assert_eq!(status, 200);

    // The database goes away.
    pg.stop();
    let bound = Duration::from_millis(ACQUIRE_TIMEOUT_MS) + MARGIN;
    for attempt in 0..2 {
        let (status, body, elapsed) = get(&http, &server.url("/ready")).await;
        assert_json_503(status, &body, "/ready while the database is down");
        assert_eq!(body["status"], "not_ready", "{body}");
        assert!(elapsed <= bound, "/ready took {elapsed:?} (attempt {attempt}), more than {bound:?}");

        let event = agent.event(100 + attempt);
        sent.insert(event.event_id);
        let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[event]).await.unwrap();
        assert_json_503(answer.status, &answer.body, "ingest while the database is down");
        assert!(answer.retry_after.is_some(), "a 503 carries Retry-After: {}", answer.body);
        assert!(answer.elapsed <= bound, "ingest took {:?} (attempt {attempt}), more than {bound:?}", answer.elapsed);
    }

    // It comes back on the same port and data directory; the sequencer reconnects on its own.
    pg.start("-c max_connections=40");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = get(&http, &server.url("/ready")).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/ready still {status} 30 s after the database came back: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 4..=6 {
        let event = agent.event(n);
        sent.insert(event.event_id);
        let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[event]).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["receipts"][0]["sequenceNumber"], n, "{}", answer.body);
        receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());
    }

    let pool = sqlx::PgPool::connect(&pg.url("")).await.unwrap();
    let stored = procs::assert_stream(&pool, agent.tenant_id, agent.store_id, &receipts, &sent).await;
    assert_eq!(stored, 6, "the events refused during the outage were not stored");
    pool.close().await;
    server.stop().await;
    drop(pg);
}
