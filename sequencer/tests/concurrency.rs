//! Gap-free sequencing across two sequencer processes on one database, under concurrency.

mod common;

use std::collections::HashMap;

use common::*;
use futures::future::join_all;
use serde_json::Value;
use uuid::Uuid;

/// Every stream holds exactly 1..N, and every receipt handed out matches a stored event.
async fn check_streams(pool: &sqlx::PgPool, receipts: &[(Uuid, Uuid, Value)]) {
    let mut by_stream: HashMap<(Uuid, Uuid), Vec<&Value>> = HashMap::new();
    for (t, s, r) in receipts {
        by_stream.entry((*t, *s)).or_default().push(r);
    }
    for ((tenant, store), receipts) in by_stream {
        // NB: the receipt hash stored, or derived in SQL (`RECEIPT_HASH_SQL`).
        let rows: Vec<(i64, Uuid, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT sequence_number, event_id, {} FROM events \
             WHERE tenant_id = $1 AND store_id = $2 ORDER BY sequence_number",
            RECEIPT_HASH_SQL
        )))
        .bind(tenant)
        .bind(store)
        .fetch_all(pool)
        .await
        .unwrap();
        let numbers: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let expected: Vec<i64> = (1..=rows.len() as i64).collect();
        assert_eq!(numbers, expected, "stream {tenant}/{store} must hold exactly 1..N");
        assert_eq!(rows.len(), receipts.len(), "one stored event per receipt in {tenant}/{store}");
        let stored: HashMap<i64, (Uuid, String)> = rows.into_iter().map(|(n, e, h)| (n, (e, hex::encode(h)))).collect();
        for r in &receipts {
            let n = r["sequenceNumber"].as_i64().unwrap();
            let (event_id, hash) = &stored[&n];
            assert_eq!(r["eventId"].as_str().unwrap(), event_id.to_string());
            assert_eq!(r["receiptHash"].as_str().unwrap(), hash);
        }
        let head: i64 =
            sqlx::query_scalar("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
                .bind(tenant)
                .bind(store)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(head, receipts.len() as i64, "the head is the last number handed out");
    }
}

/// Runs `clients` concurrent clients, each sending `requests` requests of `batch` events, spread over
/// both processes and over the given agents' streams. Returns every receipt.
async fn run_clients(
    apis: &[Api],
    agents: &[Agent],
    clients: usize,
    requests: usize,
    batch: usize,
) -> Vec<(Uuid, Uuid, Value)> {
    let tasks = (0..clients).map(|c| {
        let api = apis[c % apis.len()].clone();
        let agent = agents[c % agents.len()].clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            for r in 0..requests {
                let events: Vec<_> = (0..batch).map(|i| agent.event((c * 1_000_000 + r * 1000 + i) as u64)).collect();
                let (status, body) = api.ingest(agent.agent_id, &events).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["eventsAccepted"], batch as u64, "{body}");
                for receipt in body["receipts"].as_array().unwrap() {
                    receipts.push((agent.tenant_id, agent.store_id, receipt.clone()));
                }
            }
            receipts
        })
    });
    join_all(tasks).await.into_iter().flat_map(|r| r.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_and_32_clients_keep_every_stream_gap_free() {
    let db = TestDb::migrated().await;
    let env = [("MAX_DB_CONNECTIONS", "6"), ("DB_MIGRATE_ON_STARTUP", "false")];
    let a = SequencerProcess::spawn(&db.url, &env);
    let b = SequencerProcess::spawn(&db.url, &env);
    let apis = [Api::new(a.base_url.clone(), ADMIN_KEY), Api::new(b.base_url.clone(), ADMIN_KEY)];

    // One shared stream: 32 clients, single-event requests, alternating processes.
    let shared = Agent::random();
    apis[0].register_key(&shared).await;
    let receipts = run_clients(&apis, std::slice::from_ref(&shared), 32, 12, 1).await;
    assert_eq!(receipts.len(), 32 * 12);

    // Many streams: 32 clients over 16 streams, batches of 5.
    let agents: Vec<Agent> = (0..16).map(|_| Agent::random()).collect();
    for agent in &agents {
        apis[1].register_key(agent).await;
    }
    let many = run_clients(&apis, &agents, 32, 6, 5).await;
    assert_eq!(many.len(), 32 * 6 * 5);

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    check_streams(&pool, &receipts).await;
    check_streams(&pool, &many).await;
    pool.close().await;
}
