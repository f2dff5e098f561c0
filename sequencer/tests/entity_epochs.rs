//! The entity index of signed events keyed by id epoch (migrations 0027-0030): an entity whose events
//! are spread over several epochs and the legacy partition is read back in sequence order, page by page,
//! and its versions are counted across the epochs, from its mark or without one.

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

use sequencer::store::Store;
use sequencer::store::events::VERSION_MARK_AFTER;

const ENTITY: (&str, &str) = ("InventoryItem", "WIDGET-001");

/// A legacy event of `agent`'s stream about [`ENTITY`], checked against `base_version`.
fn legacy_event(agent: &Agent, base_version: i64) -> Value {
    let payload = json!({"legacy": base_version});
    let hash = hex::encode(Sha256::digest(serde_json::to_vec(&payload).unwrap()));
    json!({
        "event_id": Uuid::new_v4(), "tenant_id": agent.tenant_id, "store_id": agent.store_id,
        "entity_type": ENTITY.0, "entity_id": ENTITY.1, "event_type": "Adjusted", "base_version": base_version,
        "payload": payload, "payload_hash": hash, "created_at": "2025-06-01T12:00:00Z", "source_agent": agent.agent_id,
    })
}

#[tokio::test]
async fn an_entity_spread_over_epochs_and_legacy_events_reads_in_order_and_counts_every_version() {
    // Epochs close only when this test says so.
    let server = TestServer::start_with(&[("EVENT_ID_EPOCH_EVENTS", "1000000000")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let store = &server.state.store;
    let checked = |base: usize| agent.builder().base_version(base as u64).payload(json!({"v": base})).sign(&agent.key);
    let other = |n: u64| agent.builder().entity(ENTITY.0, "OTHER").payload(json!({"n": n})).sign(&agent.key);
    // The entity's sequence numbers, as written.
    let mut mine: Vec<i64> = Vec::new();
    let mut head = 0i64;
    let signed = |events: Vec<VesEventEnvelope>, of_entity: Vec<bool>| {
        let api = &api;
        async move {
            let (status, body) = api.ingest(agent.agent_id, &events).await;
            assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(events.len() as u64)), "{body}");
            let numbers: Vec<i64> =
                body["receipts"].as_array().unwrap().iter().map(|r| r["sequenceNumber"].as_i64().unwrap()).collect();
            numbers.into_iter().zip(of_entity).filter(|(_, mine)| *mine).map(|(n, _)| n).collect::<Vec<_>>()
        }
    };

    // Epoch 0 takes enough checked events for a mark; each later one a few more, beside another entity's
    // and a checked legacy event, each numbered after the signed ones before it.
    let first: Vec<VesEventEnvelope> = (0..VERSION_MARK_AFTER as usize + 3).map(checked).collect();
    let n = first.len();
    mine.extend(signed(first, vec![true; n]).await);
    // The first check of the stream marks its head, and two of the entity's events follow the mark in
    // the same epoch.
    mine.extend(signed(vec![checked(n), checked(n + 1)], vec![true, true]).await);
    head += n as i64 + 2;
    for epoch in 1..=4 {
        assert_eq!(store.advance_event_id_epoch(1).await.unwrap(), Some(epoch));
        let events = vec![other(epoch as u64), checked(mine.len()), other(10 + epoch as u64), checked(mine.len() + 1)];
        mine.extend(signed(events, vec![false, true, false, true]).await);
        head += 4;
        let (status, body) = api
            .post(
                "/api/v1/events/ingest",
                json!({"agent_id": agent.agent_id, "events": [legacy_event(&agent, mine.len() as i64)]}),
            )
            .await;
        assert_eq!((status, &body["events_accepted"]), (200, &json!(1)), "{body}");
        head += 1;
        mine.push(head);
    }
    let pool = PgPool::connect(&server.db.url).await.unwrap();
    let epochs: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT id_epoch FROM ves_events WHERE tenant_id = $1 AND store_id = $2 AND entity_id = $3 ORDER BY 1",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .bind(ENTITY.1)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(epochs, [0, 1, 2, 3, 4], "the entity's signed events are in every epoch");
    let mark: Option<i64> = sqlx::query_scalar(
        "SELECT at_sequence FROM entity_version_marks WHERE tenant_id = $1 AND store_id = $2 AND entity_id = $3",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .bind(ENTITY.1)
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert_eq!(mark, Some(n as i64), "a mark in epoch 0, with events after it there");

    // Versions: the next one is accepted, a stale one is refused, from the mark and without it.
    for without_mark in [false, true] {
        if without_mark {
            sqlx::query("DELETE FROM entity_version_marks WHERE tenant_id = $1")
                .bind(agent.tenant_id)
                .execute(&pool)
                .await
                .unwrap();
        }
        let (_, body) = api.ingest(agent.agent_id, &[checked(mine.len() - 1)]).await;
        assert_eq!(
            body["rejections"][0]["reason"],
            format!("version_conflict: expected {}, actual {}", mine.len() - 1, mine.len()),
            "{body}"
        );
        mine.extend(signed(vec![checked(mine.len())], vec![true]).await);
    }

    // The history, page by page through the API, and whole from a store of this process's pool that has
    // never seen an epoch close (the statement reads the epochs from the database).
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    let mut read = Vec::new();
    for from in (0..mine.len() + 3).step_by(3) {
        let (status, page) =
            api.get(&format!("/api/v1/ves/entities/{}/{}?{q}&from={from}&limit=3", ENTITY.0, ENTITY.1)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], json!(mine.len()), "{page}");
        read.extend(page["events"].as_array().unwrap().iter().map(|e| e["sequence_number"].as_i64().unwrap()));
    }
    assert_eq!(read, mine, "every event of the entity once, in order");
    let behind = Store::from_pool(pool.clone());
    assert_eq!(behind.id_epochs().current(), 0);
    let (events, total) = behind.entity_history(agent.stream(), ENTITY.0, ENTITY.1, 0, 1000).await.unwrap();
    assert_eq!(events.iter().map(|e| e.sequence_number).collect::<Vec<_>>(), mine);
    assert_eq!(total, mine.len() as i64);
    pool.close().await;
}

/// A page of an entity's history reads the page's own events, also when the entity has thousands in
/// several epochs and is all of its epochs: the first entries of each epoch of its stream from the
/// entity index (one descent each, none for the log's epochs before the stream began or after it went
/// quiet), then the page's events by sequence number, never every event of the entity. Its total is
/// counted in the same epochs.
///
/// With statistics of all of it. (Without any statistics, or with those of the table when it held one
/// event, PostgreSQL took the sequence index for each epoch's first entries here: 2,647 and 3,331 blocks
/// for the first page of this table of 1,177, as it can for a version count,
/// `store::events::counted_versions`. The worker leader analyses a log that has none once it holds a
/// megabyte, `Store::analyze_log_if_never_analysed`; one analysed while small keeps its statistics until
/// autovacuum comes back to it.)
#[tokio::test]
async fn a_page_of_an_entity_spread_over_epochs_reads_only_its_own_events() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    Store::from_pool(pool.clone()).migrate().await.unwrap();
    let agent = Agent::random();
    let row = |seq: i64| {
        let envelope =
            std::sync::Arc::new(agent.event(seq as u64).map_payload(|p| ves::envelope::RawPayload::from_value(&p)));
        sequencer::store::events::VesEventRow::new(
            envelope,
            None,
            false,
            chrono::Utc::now(),
            [1; 32],
            seq,
            [2; 32],
            Some([3; 64]),
            [4; 32],
        )
    };
    let mut conn = pool.acquire().await.unwrap();
    let stream = agent.stream();
    // The stream begins in epoch 2 of the log and goes quiet in epoch 6, while the log goes on to 9.
    sqlx::query("UPDATE event_id_epochs SET current = 2").execute(&pool).await.unwrap();
    assert!(
        sequencer::store::events::append_at_head(
            &mut conn,
            stream,
            &[row(1)],
            chrono::Utc::now(),
            Uuid::new_v4(),
            0,
            true,
            None,
            2
        )
        .await
        .unwrap()
    );
    // 20,000 more events of the entity, 5,000 to an epoch (3..=6, the epoch row moved on below, as the
    // leader would have), as fast as SQL can write them.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
          WHERE table_name = 'ves_events' AND is_generated = 'NEVER' ORDER BY ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let values: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "event_id" => "gen_random_uuid()".into(),
            "sequence_number" => "g + 1".into(),
            "id_epoch" => "3 + (g - 1) / 5000".into(),
            c => format!("v.{c}"),
        })
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ves_events ({}) SELECT {} FROM ves_events v, generate_series(1, 20000) g \
          WHERE v.tenant_id = $1 AND v.store_id = $2 AND v.sequence_number = 1",
        columns.join(", "),
        values.join(", ")
    )))
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .execute(&pool)
    .await
    .unwrap();
    let heap_blocks: i64 =
        sqlx::query_scalar("SELECT pg_relation_size('ves_events') / 8192").fetch_one(&pool).await.unwrap();
    sqlx::query("UPDATE event_id_epochs SET current = 9").execute(&pool).await.unwrap();
    sqlx::query("ANALYZE ves_events").execute(&pool).await.unwrap();
    // As the sequencer runs it: a prepared statement, whose first five runs are planned for their values
    // and the rest by a generic plan.
    let page_sql = sequencer::store::events::entity_page_sql();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE page(uuid, uuid, text, text, bigint, bigint) AS {page_sql}")))
        .execute(&mut *conn)
        .await
        .unwrap();
    let args = |offset: i64| {
        format!("'{}', '{}', '{}', '{}', {offset}, 3", stream.tenant_id, stream.store_id, ENTITY.0, ENTITY.1)
    };
    for run in 0..7 {
        for (offset, first) in [(0i64, 1i64), (9_998, 9_999)] {
            let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) EXECUTE page({})",
                args(offset)
            )))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            let top = &plan[0]["Plan"];
            let blocks = top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap();
            // The first page: a few blocks of each epoch and the page's own events, where sorting the
            // entity's events, or reading the stream for the page's numbers, reads every block of the
            // table. (A page deep into this entity, which is all of its epochs, reads them whole, as the
            // events it skips are most of them anyway.)
            // One descent of the entity index for each epoch of the stream (2..=6), none for the log's
            // epochs before or after it.
            if offset == 0 {
                assert!(blocks < 60, "run {run}: {blocks} blocks of {heap_blocks}\n{plan:#}");
                assert_eq!(descents(&plan), 5, "run {run}\n{plan:#}");
            }
            let page: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT sequence_number FROM ({page_sql}) page ORDER BY 1"
            )))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(ENTITY.0)
            .bind(ENTITY.1)
            .bind(offset)
            .bind(3i64)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            assert_eq!(page, [first, first + 1, first + 2]);
        }
    }
    // First pages alone, as most readers ask: the statement runs its generic plan after five, not one
    // planned afresh for every page (`entity_page_sql`'s NB).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE first_page(uuid, uuid, text, text, bigint, bigint) AS {page_sql}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    for _ in 0..10 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("EXECUTE first_page({})", args(0))))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let plans: (i64, i64) =
        sqlx::query_as("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'first_page'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(plans, (5, 5), "(generic, custom) plans of ten first pages");
    // The total the same way: every event of the entity (20,001), counted in the stream's five epochs.
    let total_sql = sequencer::store::events::entity_total_sql();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE total(uuid, uuid, text, text) AS {total_sql}")))
        .execute(&mut *conn)
        .await
        .unwrap();
    let entity = format!("'{}', '{}', '{}', '{}'", stream.tenant_id, stream.store_id, ENTITY.0, ENTITY.1);
    for run in 0..7 {
        let plan: Value =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON, ANALYZE) EXECUTE total({entity})")))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(epochs_read(&plan), 5, "run {run}\n{plan:#}");
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXECUTE total({entity})")))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(total, 20_001);
    }
    drop(conn);
    pool.close().await;
}

/// The sum over a plan's nodes (`EXPLAIN (FORMAT JSON, ANALYZE)`) of `count` of each.
fn sum_nodes(plan: &Value, count: fn(&Value) -> u64) -> u64 {
    fn walk(node: &Value, count: fn(&Value) -> u64) -> u64 {
        count(node) + node["Plans"].as_array().map_or(0, |children| children.iter().map(|c| walk(c, count)).sum())
    }
    walk(&plan[0]["Plan"], count)
}

/// How many times a plan descended the entity index of signed events: the loops of its scans of
/// `idx_ves_events_entity`.
fn descents(plan: &Value) -> u64 {
    sum_nodes(plan, |node| match node["Index Name"].as_str() {
        Some("idx_ves_events_entity") => node["Actual Loops"].as_u64().unwrap(),
        _ => 0,
    })
}

/// How many epochs a plan read: the rows of its `generate_series`. (The count of an entity that is every
/// event of its epochs, as here, may read them through another index than the entity's.)
fn epochs_read(plan: &Value) -> u64 {
    sum_nodes(plan, |node| match node["Function Name"].as_str() {
        Some("generate_series") => node["Actual Rows"].as_u64().unwrap(),
        _ => 0,
    })
}
