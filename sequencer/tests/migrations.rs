//! Migration 0004 on a database that already holds events: it writes the leaf runs of the existing
//! log (at most 1024 events a run, split at any gap), and the sequencer commits from them. Migration
//! 0013 keeps a run of the benchmark's size, and a partial hash tile, in their tables' own pages.
//! Migrations 0018 and 0019: a payload stored as text reads back as the same payload stored as JSONB.

mod common;

use common::*;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Applies the migrations numbered below `below` only, from a copy of the repository's files.
async fn migrate_below(pool: &PgPool, below: u32) {
    let dir = std::env::temp_dir().join(format!("seq-migrations-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".sql") {
            continue; // README.md
        }
        let number: u32 = name.split('_').next().unwrap().parse().unwrap();
        if number < below {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap().run(pool).await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

fn leaf(stream: Uuid, seq: i64) -> Vec<u8> {
    ves::hash::stream_id(stream, Uuid::from_u128(seq as u128)).to_vec()
}

/// Stores unsigned events `seqs` of a stream the way an older version did (no leaf runs).
async fn insert_old_events(pool: &PgPool, tenant: Uuid, store: Uuid, seqs: &[i64]) {
    let leaves: Vec<Vec<u8>> = seqs.iter().map(|s| leaf(store, *s)).collect();
    sqlx::query(
        "INSERT INTO legacy_events (tenant_id, store_id, sequence_number, event_id, signed, entity_type, entity_id, \
           event_type, created_at, sequenced_at, source_agent_id, payload, payload_hash, leaf_hash) \
         SELECT $1, $2, s.seq, gen_random_uuid(), FALSE, 'Item', 'I-1', 'Added', NOW(), NOW(), $1, '{}', \
           s.leaf, s.leaf FROM UNNEST($3::bigint[], $4::bytea[]) AS s(seq, leaf)",
    )
    .bind(tenant)
    .bind(store)
    .bind(seqs)
    .bind(&leaves)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO sequence_counters (tenant_id, store_id, current_sequence) VALUES ($1, $2, $3)")
        .bind(tenant)
        .bind(store)
        .bind(seqs.iter().max())
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn migration_0004_writes_the_leaf_runs_of_the_events_already_stored() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    migrate_below(&pool, 4).await;
    let tenant = Uuid::new_v4();
    let (long, gapped) = (Uuid::new_v4(), Uuid::new_v4());
    insert_old_events(&pool, tenant, long, &(1..=2500).collect::<Vec<_>>()).await;
    insert_old_events(&pool, tenant, gapped, &[1, 2, 4, 5]).await;

    sequencer::store::MIGRATOR.run(&pool).await.expect("migration 0004 applies over existing events");

    let runs: Vec<(Uuid, i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT store_id, first_sequence, last_sequence, leaves FROM event_leaf_runs ORDER BY store_id, first_sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let shape = |store: Uuid| -> Vec<(i64, i64)> { runs.iter().filter(|r| r.0 == store).map(|r| (r.1, r.2)).collect() };
    assert_eq!(shape(long), vec![(1, 1024), (1025, 2048), (2049, 2500)]);
    assert_eq!(shape(gapped), vec![(1, 2), (4, 5)], "a run never spans a gap");
    for (store, first, last, leaves) in &runs {
        let want: Vec<u8> = (*first..=*last).flat_map(|s| leaf(*store, s)).collect();
        assert_eq!(leaves, &want, "run {first}..={last} holds the events' leaves in order");
    }
    pool.close().await;

    // The sequencer commits the old events from their runs.
    let server = TestServer::start_on(db, &[]).await;
    let (status, c) = Api::admin(&server)
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": tenant, "store_id": long, "sequence_start": 1, "sequence_end": 2500}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    let leaves: Vec<[u8; 32]> = (1..=2500).map(|s| leaf(long, s).try_into().unwrap()).collect();
    assert_eq!(c["merkle_root"], hex::encode(ves::merkle::merkle_root(&leaves)));
}

/// The bytes of `table`'s TOAST table.
async fn toast_bytes(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = $1::regclass")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Writes a leaf run of `events` events (both leaf columns filled, as with the log on) and returns the
/// bytes of `event_leaf_runs`'s TOAST table afterwards.
async fn toast_bytes_after_run(pool: &PgPool, first: i64, events: i64) -> i64 {
    let leaves = vec![7u8; 32 * events as usize];
    sqlx::query(
        "INSERT INTO event_leaf_runs (tenant_id, store_id, first_sequence, last_sequence, leaves, tlog_leaves) \
         VALUES ($1, $1, $2, $3, $4, $4)",
    )
    .bind(Uuid::nil())
    .bind(first)
    .bind(first + events - 1)
    .bind(&leaves)
    .execute(pool)
    .await
    .unwrap();
    toast_bytes(pool, "event_leaf_runs").await
}

/// Writes a level-0 hash tile of `width` hashes and returns the bytes of `tlog_tiles`'s TOAST table
/// afterwards.
async fn toast_bytes_after_tile(pool: &PgPool, idx: i64, width: i32) -> i64 {
    sqlx::query("INSERT INTO tlog_tiles (tenant_id, store_id, level, idx, width, data) VALUES ($1, $1, 0, $2, $3, $4)")
        .bind(Uuid::nil())
        .bind(idx)
        .bind(width)
        .bind(vec![9u8; 32 * width as usize])
        .execute(pool)
        .await
        .unwrap();
    toast_bytes(pool, "tlog_tiles").await
}

#[tokio::test]
async fn migration_0013_keeps_runs_and_partial_tiles_out_of_toast() {
    // Before 0013, a run of 100 events goes to TOAST (the row passes about 2 KB), as does a partial
    // tile of 100 hashes ...
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    migrate_below(&pool, 13).await;
    assert!(toast_bytes_after_run(&pool, 1, 100).await > 0, "before 0013 a 100-event run is toasted");
    assert!(toast_bytes_after_tile(&pool, 0, 100).await > 0, "before 0013 a partial tile of 100 hashes is toasted");
    pool.close().await;

    // ... with it, the same run stays in the heap, and a longer one still goes out of line.
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    sequencer::store::MIGRATOR.run(&pool).await.unwrap();
    assert_eq!(toast_bytes_after_run(&pool, 1, 100).await, 0, "a 100-event run is one heap row");
    assert_eq!(toast_bytes_after_run(&pool, 101, 126).await, 0, "up to 126 events with both leaf columns");
    assert!(toast_bytes_after_run(&pool, 227, 200).await > 0, "a 200-event run still goes out of line");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT tlog_leaves FROM event_leaf_runs WHERE first_sequence = 227")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32 * 200);

    // A partial hash tile of up to 252 hashes is one heap row; a full tile goes out of line.
    assert_eq!(toast_bytes_after_tile(&pool, 0, 100).await, 0);
    assert_eq!(toast_bytes_after_tile(&pool, 1, 252).await, 0, "a partial tile of 252 hashes is one heap row");
    assert!(toast_bytes_after_tile(&pool, 2, 256).await > 0, "a full tile is stored out of line");
}

/// The bodies of GET `paths`, as served (bytes, not parsed).
async fn served(api: &Api, paths: &[String]) -> Vec<String> {
    let mut bodies = Vec::new();
    for path in paths {
        let resp = api.request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        bodies.push(resp.text().await.unwrap());
    }
    bodies
}

#[tokio::test]
async fn migrations_0018_and_0019_a_payload_stored_as_text_reads_back_as_the_jsonb_one() {
    // Events with payloads whose JSONB and text forms differ (key order, spacing, number notation,
    // escapes), stored as this release stores them (0019): the sequencer's compact JSON as text.
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let payloads = [
        json!({"delta": 5}),
        json!({"price": 12.5, "tiny": 1e-7, "huge": 1.5e300, "neg": -3, "max": u64::MAX, "zero": 0.0}),
        json!({"note": "é ☃ 😀 \"quoted\" back\\slash\ttab", "nested": {"z": [1, 2.0, null, true], "a": {}}, "list": []}),
        json!({}),
    ];
    let events: Vec<_> = payloads.iter().map(|p| agent.builder().payload(p.clone()).sign(&agent.key)).collect();
    let (status, body) = api.ingest(agent.agent_id, &events).await;
    assert_eq!(status, 200, "{body}");
    let pool = PgPool::connect(&server.db.url).await.unwrap();
    let stored: Vec<(Option<serde_json::Value>, Option<String>)> = sqlx::query_as(
        "SELECT payload, payload_text FROM ves_events WHERE tenant_id = $1 AND store_id = $2 ORDER BY sequence_number",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<_> = payloads.iter().map(|p| (None, Some(serde_json::to_string(p).unwrap()))).collect();
    assert_eq!(stored, expected, "each payload is stored as its compact JSON text, and not as JSONB");
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    let reads = [
        format!("/api/v1/ves/events?{q}&from=1&limit=10"),
        format!("/api/v1/ves/entities/InventoryItem/WIDGET-001?{q}"),
        format!("/api/v1/events?{q}&from=1&limit=10"),
    ];
    let as_text = served(&api, &reads).await;

    // The same rows as every release before 0019 wrote them: the payload as JSONB, none as text. (The
    // log refuses updates, hence the trigger bypass.)
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.unwrap();
    let moved = sqlx::query(
        "UPDATE ves_events SET payload = payload_text::jsonb, payload_text = NULL \
         WHERE tenant_id = $1 AND store_id = $2",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .execute(&mut *conn)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 4);
    sqlx::query("SET session_replication_role = origin").execute(&mut *conn).await.unwrap();

    // Served byte for byte the same, and the stream verifies (signatures, payload hashes, leaves): its
    // only findings are this test's own updates, which the log records as bypassing its triggers.
    assert_eq!(served(&api, &reads).await, as_text, "a payload stored as text reads back as the JSONB one");
    let report =
        sequencer::verify::verify(&server.state.store, Some(agent.tenant_id), Some(agent.store_id)).await.unwrap();
    assert_eq!(report.events_checked, 4);
    let kinds: Vec<&str> = report.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["log_modified"; 4], "{:?}", report.findings);

    // The constraint of 0018: a text payload only for a plaintext event, never beside a JSONB one.
    let both = sqlx::query(
        "UPDATE ves_events SET payload_text = payload::text WHERE tenant_id = $1 AND sequence_number = 1 AND store_id = $2",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id);
    sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.unwrap();
    let refused = both.execute(&mut *conn).await.unwrap_err();
    assert!(refused.to_string().contains("ves_events_payload_text"), "{refused}");
    drop(conn);
    pool.close().await;
    server.stop().await;
}
