//! Helpers for the crash, outage and overload tests: an ingest call that reports transport errors
//! instead of panicking, and the stream check every one of them ends with.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

use crate::common::ADMIN_KEY;

/// An ingest answer: status, `Retry-After` (if any), JSON body, and how long it took.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
    pub elapsed: Duration,
}

/// One client with its own keep-alive connection.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(60)).build().expect("client")
}

/// `POST /api/v1/ves/events/ingest` as the bootstrap admin; a transport error is returned, not a panic.
pub async fn ingest(
    http: &reqwest::Client,
    base: &str,
    agent_id: Uuid,
    events: &[VesEventEnvelope],
) -> reqwest::Result<Answer> {
    let start = Instant::now();
    let response = http
        .post(format!("{base}/api/v1/ves/events/ingest"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .json(&json!({"agentId": agent_id, "events": events}))
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await?;
    let elapsed = start.elapsed();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { status, retry_after, body, elapsed })
}

/// A stream's stored events as (sequence number, event id, receipt hash hex), in order.
pub async fn stored(pool: &sqlx::PgPool, tenant_id: Uuid, store_id: Uuid) -> Vec<(i64, Uuid, String)> {
    // NB: the receipt hash stored, or derived in SQL (`RECEIPT_HASH_SQL`).
    let rows: Vec<(i64, Uuid, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT sequence_number, event_id, {} FROM events \
         WHERE tenant_id = $1 AND store_id = $2 ORDER BY sequence_number",
        crate::common::RECEIPT_HASH_SQL
    )))
    .bind(tenant_id)
    .bind(store_id)
    .fetch_all(pool)
    .await
    .expect("read the stream");
    rows.into_iter().map(|(n, e, h)| (n, e, hex::encode(h))).collect()
}

/// Asserts that the stream holds exactly 1..N with its counter at N, that every receipt names the event
/// stored at its number with the stored receipt hash, and that every stored event is one of `sent`.
/// Returns N.
pub async fn assert_stream(
    pool: &sqlx::PgPool,
    tenant_id: Uuid,
    store_id: Uuid,
    receipts: &[Value],
    sent: &HashSet<Uuid>,
) -> usize {
    let rows = stored(pool, tenant_id, store_id).await;
    let numbers: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let expected: Vec<i64> = (1..=rows.len() as i64).collect();
    assert_eq!(numbers, expected, "stream {tenant_id}/{store_id} must hold exactly 1..N");
    let head: i64 =
        sqlx::query_scalar("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
            .bind(tenant_id)
            .bind(store_id)
            .fetch_optional(pool)
            .await
            .expect("read the head")
            .unwrap_or(0);
    assert_eq!(head, rows.len() as i64, "the head of {tenant_id}/{store_id} is its last stored number");
    let by_number: HashMap<i64, (Uuid, String)> = rows.iter().map(|(n, e, h)| (*n, (*e, h.clone()))).collect();
    for r in receipts {
        let n = r["sequenceNumber"].as_i64().expect("sequenceNumber");
        let (event_id, hash) = by_number.get(&n).unwrap_or_else(|| panic!("receipt {r} names no stored event"));
        assert_eq!(r["eventId"].as_str().expect("eventId"), event_id.to_string(), "receipt {r}");
        assert_eq!(r["receiptHash"].as_str().expect("receiptHash"), hash, "receipt {r}");
    }
    for (_, event_id, _) in &rows {
        assert!(sent.contains(event_id), "stored event {event_id} was never sent");
    }
    rows.len()
}
