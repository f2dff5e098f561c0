//! Database session guards: every pooled connection carries `DB_STATEMENT_TIMEOUT_MS`,
//! `DB_LOCK_TIMEOUT_MS` and `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`, so a transaction stuck holding a
//! stream's counter lock makes ingest answer a JSON 503 within the lock timeout instead of hanging,
//! and nothing is lost: once the lock is released the stream continues without a gap.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use sqlx::{Connection, PgConnection};

const LOCK_TIMEOUT_MS: u64 = 500;
/// What a 503 may take beyond the lock timeout (a bound on a debug build on a busy machine).
const MARGIN: Duration = Duration::from_millis(2500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_counter_lock_gives_a_json_503_within_the_lock_timeout_and_loses_nothing() {
    let lock_timeout = LOCK_TIMEOUT_MS.to_string();
    let server = TestServer::start_with(&[
        ("DB_LOCK_TIMEOUT_MS", &lock_timeout),
        ("DB_STATEMENT_TIMEOUT_MS", "20000"),
        ("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "30000"),
        ("WORKER_ENABLED", "false"),
    ])
    .await;

    // The guards are set on the server's pooled connections.
    let mut conn = server.state.store.pool().acquire().await.unwrap();
    // And no statement of theirs is compiled by LLVM (`store::connect_options`).
    for (setting, want) in [
        ("lock_timeout", "500ms"),
        ("statement_timeout", "20s"),
        ("idle_in_transaction_session_timeout", "30s"),
        ("jit", "off"),
    ] {
        let got: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}"))).fetch_one(&mut *conn).await.unwrap();
        assert_eq!(got, want, "{setting} on a pooled connection");
    }
    drop(conn);

    let api = Api::admin(&server);
    let http = procs::client();
    let agent = Agent::random();
    api.register_key(&agent).await;
    let mut sent = HashSet::new();
    let mut receipts = Vec::new();
    let first = agent.event(1);
    sent.insert(first.event_id);
    let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[first]).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());

    // Another session takes the stream's counter row and sits on it.
    let mut holder = PgConnection::connect(&server.db.url).await.unwrap();
    let mut stuck = holder.begin().await.unwrap();
    sqlx::query("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE")
        .bind(agent.tenant_id)
        .bind(agent.store_id)
        .fetch_one(&mut *stuck)
        .await
        .unwrap();

    let second = agent.event(2);
    sent.insert(second.event_id);
    let answer = procs::ingest(&http, &server.base_url, agent.agent_id, std::slice::from_ref(&second)).await.unwrap();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body["error"]["code"].is_string(), "a JSON error body: {}", answer.body);
    assert!(answer.retry_after.is_some(), "a 503 carries Retry-After: {}", answer.body);
    let bound = Duration::from_millis(LOCK_TIMEOUT_MS) + MARGIN;
    assert!(
        answer.elapsed >= Duration::from_millis(LOCK_TIMEOUT_MS) && answer.elapsed <= bound,
        "ingest waited {:?} on the lock; the lock timeout is {LOCK_TIMEOUT_MS} ms",
        answer.elapsed
    );

    // The holder lets go; the refused event is accepted as new, and the stream goes on without a gap.
    stuck.rollback().await.unwrap();
    holder.close().await.unwrap();
    let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[second]).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["receipts"][0]["sequenceNumber"], 2, "{}", answer.body);
    receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());
    let third = agent.event(3);
    sent.insert(third.event_id);
    let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[third]).await.unwrap();
    assert_eq!(answer.body["receipts"][0]["sequenceNumber"], 3, "{}", answer.body);
    receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());

    let pool = sqlx::PgPool::connect(&server.db.url).await.unwrap();
    assert_eq!(procs::assert_stream(&pool, agent.tenant_id, agent.store_id, &receipts, &sent).await, 3);
    pool.close().await;
    server.stop().await;
}
