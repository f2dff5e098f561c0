//! Event ids by epoch (migrations 0024-0026, `store::epochs`): the database keeps an id unique within
//! its epoch and the sequencer across epochs. A replay or reuse of an id of a closed epoch is answered
//! as before; a write screened against an epoch that has since closed writes nothing; and an epoch
//! closes only once every writer of it has committed, without letting later writers overtake it.

mod common;

use std::sync::Arc;

use chrono::Utc;
use common::*;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use ves::envelope::{RawPayload, VesEventEnvelope};

use sequencer::store::Store;
use sequencer::store::epochs;
use sequencer::store::events::{self, HeadAppend, StreamKey, VesEventRow};

/// `agent`'s event under `event_id`, its payload `n`.
fn with_id(agent: &Agent, event_id: Uuid, n: u64) -> VesEventEnvelope {
    agent.builder().event_id(event_id).payload(json!({"delta": n})).sign(&agent.key)
}

/// The (event id, epoch, rows with that id) of every signed event of the tenant.
async fn ids_by_epoch(pool: &PgPool, tenant_id: Uuid) -> Vec<(Uuid, i32, i64)> {
    sqlx::query_as(
        "SELECT event_id, id_epoch, COUNT(*) OVER (PARTITION BY event_id) FROM ves_events WHERE tenant_id = $1 \
         ORDER BY sequence_number",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_id_of_a_closed_epoch_is_answered_as_a_replay_or_refused_as_a_reuse() {
    // Epochs close only when this test says so.
    let server = TestServer::start_with(&[("EVENT_ID_EPOCH_EVENTS", "1000000000")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let old: Vec<VesEventEnvelope> = (1..=3).map(|n| agent.event(n)).collect();
    let (status, first) = api.ingest(agent.agent_id, &old).await;
    assert_eq!((status, &first["eventsAccepted"]), (200, &json!(3)), "{first}");

    let store = &server.state.store;
    assert_eq!(store.advance_event_id_epoch(1).await.unwrap(), Some(1));
    assert_eq!(store.advance_event_id_epoch(1).await.unwrap(), None, "the log has not grown since");

    // First whichever path this process is on while it builds epoch 0's filter (the background task
    // builds it when it sees the epoch closed), then with the filter built for certain.
    for round in 0..2u64 {
        if round == 1 {
            store.refresh_id_epochs().await.unwrap();
            assert_eq!(store.id_epochs().filtered(), 1);
        }
        let (status, again) = api.ingest(agent.agent_id, &old).await;
        assert_eq!((status, &again["eventsAccepted"]), (200, &json!(0)), "{again}");
        assert_eq!(again["receipts"], first["receipts"], "a replay answers the original receipts");

        let (status, reuse) = api.ingest(agent.agent_id, &[with_id(&agent, old[0].event_id, 100 + round)]).await;
        assert_eq!(status, 200, "{reuse}");
        assert_eq!(reuse["eventsAccepted"], 0, "{reuse}");
        assert_eq!(reuse["rejections"][0]["reason"], "duplicate_event_id", "{reuse}");

        let (status, mixed) = api.ingest(agent.agent_id, &[old[1].clone(), agent.event(10 + round)]).await;
        assert_eq!(status, 200, "{mixed}");
        assert_eq!(mixed["eventsAccepted"], 1, "{mixed}");
        assert_eq!(mixed["receipts"][0], first["receipts"][1], "{mixed}");
    }

    // Every id once; the old ones in epoch 0, the new ones in epoch 1.
    let pool = PgPool::connect(&server.db.url).await.unwrap();
    let stored = ids_by_epoch(&pool, agent.tenant_id).await;
    let epochs_of: Vec<i32> = stored.iter().map(|s| s.1).collect();
    assert_eq!(epochs_of, [0, 0, 0, 1, 1], "{stored:?}");
    assert!(stored.iter().all(|s| s.2 == 1), "{stored:?}");

    // A lookup by id finds an event of a closed epoch, with this process's filters and with none.
    for store in [store.clone(), Store::from_pool(pool.clone())] {
        let found = store.find_by_event_ids(agent.tenant_id, &[old[2].event_id, Uuid::new_v4()]).await.unwrap();
        assert_eq!(found.iter().map(|e| (e.event_id, e.sequence_number)).collect::<Vec<_>>(), [(old[2].event_id, 3)]);
        assert_eq!(store.tlog_sequence_of_event(agent.stream(), old[2].event_id).await.unwrap(), Some(3));
        assert_eq!(store.tlog_sequence_of_event(agent.stream(), Uuid::new_v4()).await.unwrap(), None);
    }
    pool.close().await;
}

/// A row of `agent`'s stream numbered `sequence`, with placeholder hashes (the database checks lengths).
fn row(agent: &Agent, n: u64, sequence: i64) -> VesEventRow {
    row_with_id(agent, Uuid::new_v4(), n, sequence)
}

/// [`row`] under `event_id`.
fn row_with_id(agent: &Agent, event_id: Uuid, n: u64, sequence: i64) -> VesEventRow {
    let envelope = Arc::new(with_id(agent, event_id, n).map_payload(|p| RawPayload::from_value(&p)));
    VesEventRow::new(envelope, None, false, Utc::now(), [1; 32], sequence, [2; 32], Some([3; 64]), [4; 32])
}

async fn head(pool: &PgPool, stream: StreamKey) -> Option<i64> {
    sqlx::query_scalar("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_write_screened_against_an_epoch_that_has_closed_writes_nothing() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let store = Store::from_pool(pool.clone());
    store.migrate().await.unwrap();
    let (a, b, c) = (Agent::random(), Agent::random(), Agent::random());
    let id = Uuid::new_v4();
    let at = Utc::now();
    let mut conn = pool.acquire().await.unwrap();
    assert!(events::append_at_head(&mut conn, a.stream(), &[row(&a, 1, 1)], at, id, 0, true, None, 0).await.unwrap());
    assert!(events::append_at_head(&mut conn, b.stream(), &[row(&b, 1, 1)], at, id, 0, true, None, 0).await.unwrap());
    assert_eq!(store.advance_event_id_epoch(1).await.unwrap(), Some(1));

    // Screened for epoch 0: nothing is written, the head stays, a new stream gets no counter row.
    assert!(!events::append_at_head(&mut conn, a.stream(), &[row(&a, 2, 2)], at, id, 1, false, None, 0).await.unwrap());
    assert!(!events::append_at_head(&mut conn, c.stream(), &[row(&c, 1, 1)], at, id, 0, true, None, 0).await.unwrap());
    assert_eq!((head(&pool, a.stream()).await, head(&pool, c.stream()).await), (Some(1), None));
    // Several streams in one statement: each group goes only if its epoch is current.
    let (a2, b2) = ([row(&a, 3, 2)], [row(&b, 3, 2)]);
    let group =
        |stream, rows, epoch| HeadAppend { stream, rows, sequenced_at: at, expected_head: 1, checks: None, epoch };
    let written =
        events::append_at_heads(&mut conn, &[group(a.stream(), &a2[..], 0), group(b.stream(), &b2[..], 1)], id)
            .await
            .unwrap();
    assert_eq!(written, [false, true]);
    assert!(events::append_at_head(&mut conn, a.stream(), &a2, at, id, 1, false, None, 1).await.unwrap());
    assert!(events::append_at_head(&mut conn, c.stream(), &[row(&c, 1, 1)], at, id, 0, true, None, 1).await.unwrap());
    for agent in [&a, &b, &c] {
        let epochs_of: Vec<i32> = ids_by_epoch(&pool, agent.tenant_id).await.iter().map(|s| s.1).collect();
        let want: &[i32] = if agent.tenant_id == c.tenant_id { &[1] } else { &[0, 1] };
        assert_eq!(epochs_of, want);
    }
    drop(conn);
    pool.close().await;
}

#[tokio::test]
async fn verify_reports_an_id_stored_in_two_epochs_of_a_tenant() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let store = Store::from_pool(pool.clone());
    store.migrate().await.unwrap();
    let (a, b) = (Agent::random(), Agent::random());
    let (reused, once) = (Uuid::new_v4(), Uuid::new_v4());
    let at = Utc::now();
    let mut conn = pool.acquire().await.unwrap();
    let rows = [row_with_id(&a, reused, 1, 1), row_with_id(&a, once, 2, 2)];
    assert!(events::append_at_head(&mut conn, a.stream(), &rows, at, Uuid::new_v4(), 0, true, None, 0).await.unwrap());
    assert_eq!(store.advance_event_id_epoch(1).await.unwrap(), Some(1));
    // What the sequencer's screen would have refused (a write's own statement checks only the epoch):
    // the id again in the same tenant, in the new epoch; and in another tenant, which may use it.
    let again = [row_with_id(&a, reused, 3, 3)];
    assert!(
        events::append_at_head(&mut conn, a.stream(), &again, at, Uuid::new_v4(), 2, false, None, 1).await.unwrap()
    );
    let other = [row_with_id(&b, reused, 1, 1)];
    assert!(events::append_at_head(&mut conn, b.stream(), &other, at, Uuid::new_v4(), 0, true, None, 1).await.unwrap());
    drop(conn);

    let duplicates = |report: &sequencer::verify::Report| -> Vec<(Uuid, Option<i64>)> {
        let found = report.findings.iter().filter(|f| f.kind == "duplicate_event_id");
        found.map(|f| (f.tenant_id, f.sequence_number)).collect()
    };
    let report = sequencer::verify::verify(&store, Some(a.tenant_id), None).await.unwrap();
    assert_eq!(duplicates(&report), [(a.tenant_id, Some(1)), (a.tenant_id, Some(3))], "{:?}", report.findings);
    let report = sequencer::verify::verify(&store, Some(b.tenant_id), None).await.unwrap();
    assert_eq!(duplicates(&report), [], "{:?}", report.findings);
    pool.close().await;
}

/// Adds `n` copies of the stream's first event to the tenant `tenant_id` (one new stream), as fast
/// as SQL can: the planner's view of the log is what matters here, not the rows' contents.
async fn copies(pool: &PgPool, from: StreamKey, tenant_id: Uuid, n: i64) {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
          WHERE table_name = 'ves_events' AND is_generated = 'NEVER' ORDER BY ordinal_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let values: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "tenant_id" | "store_id" => "$3".into(),
            "event_id" => "gen_random_uuid()".into(),
            "sequence_number" => "g".into(),
            c => format!("v.{c}"),
        })
        .collect();
    let sql = format!(
        "INSERT INTO ves_events ({}) SELECT {} FROM ves_events v, generate_series(1, $4::bigint) g \
          WHERE v.tenant_id = $1 AND v.store_id = $2 AND v.sequence_number = 1",
        columns.join(", "),
        values.join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from.tenant_id)
        .bind(from.store_id)
        .bind(tenant_id)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_probe_for_a_tenant_the_statistics_do_not_know_reads_only_its_ids() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let store = Store::from_pool(pool.clone());
    store.migrate().await.unwrap();
    let a = Agent::random();
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        events::append_at_head(&mut conn, a.stream(), &[row(&a, 1, 1)], Utc::now(), Uuid::new_v4(), 0, true, None, 0)
            .await
            .unwrap()
    );
    drop(conn);
    // A large tenant the statistics know all about, then a new one they do not.
    let (known, new) = (Uuid::new_v4(), Uuid::new_v4());
    copies(&pool, a.stream(), known, 50_000).await;
    sqlx::query("ANALYZE ves_events").execute(&pool).await.unwrap();
    copies(&pool, a.stream(), new, 50_000).await;

    let mut conn = pool.acquire().await.unwrap();
    for tenant in [known, new] {
        let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) {}",
            epochs::ANY_STORED
        )))
        .bind(vec![tenant; 2])
        .bind(vec![0, 0])
        .bind(vec![Uuid::new_v4(), Uuid::new_v4()])
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        let blocks = |p: &serde_json::Value| {
            p["Shared Hit Blocks"].as_i64().unwrap() + p["Shared Read Blocks"].as_i64().unwrap()
        };
        // Two descents of a small index: a handful of blocks. A scan of the tenant's rows reads thousands.
        assert!(blocks(&plan[0]["Plan"]) < 50, "{tenant}: {plan:#}");
    }
    assert!(!epochs::any_stored(&mut conn, new, &[(0, Uuid::new_v4())]).await.unwrap());
    drop(conn);
    pool.close().await;
}

/// Returns once `n` statements of the database wait for a lock and `query` is one of them (polled every
/// 10 ms, for 5 s at most).
async fn wait_for_waiters(pool: &PgPool, n: i64, query: &str) {
    for _ in 0..500 {
        let (waiting, found): (i64, bool) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(bool_or(query LIKE $1), FALSE) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .bind(format!("{query}%"))
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting == n && found {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never {n} statements waiting for a lock with {query:?} among them");
}

#[tokio::test]
async fn an_epoch_closes_only_after_its_writers_commit_and_later_writers_wait_for_it() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let store = Store::from_pool(pool.clone());
    store.migrate().await.unwrap();
    let agent = Agent::random();
    let mut conn = pool.acquire().await.unwrap();
    let at = Utc::now();
    assert!(
        events::append_at_head(&mut conn, agent.stream(), &[row(&agent, 1, 1)], at, Uuid::nil(), 0, true, None, 0)
            .await
            .unwrap()
    );
    drop(conn);

    // A writer of epoch 0 in the middle of its transaction.
    let mut writer = pool.begin().await.unwrap();
    assert_eq!(epochs::lock_current(&mut writer).await.unwrap(), 0);
    let closing = tokio::spawn({
        let store = store.clone();
        async move { store.advance_event_id_epoch(1).await }
    });
    wait_for_waiters(&pool, 1, "LOCK TABLE event_id_epochs").await;
    // A later writer queues behind the advance rather than joining the writers it waits for.
    let later = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let epoch = epochs::lock_current(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            epoch
        }
    });
    wait_for_waiters(&pool, 2, "SELECT current FROM event_id_epochs FOR SHARE").await;
    assert!(!closing.is_finished());

    // The first writer's row goes into epoch 0 before the epoch closes.
    let rows = [row(&agent, 2, 2)];
    assert!(events::insert_ves_events(&mut writer, agent.stream(), &rows, at, Uuid::nil(), 2, false, 0).await.unwrap());
    writer.commit().await.unwrap();
    assert_eq!(closing.await.unwrap().unwrap(), Some(1));
    assert_eq!(later.await.unwrap(), 1);

    // So the filter built now holds every id of epoch 0.
    let fresh = Store::from_pool(pool.clone());
    assert_eq!(fresh.refresh_id_epochs().await.unwrap(), 1);
    let ids: Vec<Uuid> = ids_by_epoch(&pool, agent.tenant_id).await.iter().map(|s| s.0).collect();
    assert_eq!(ids.len(), 2);
    let screen = fresh.id_epochs().screen(agent.tenant_id, &ids);
    assert_eq!(screen, epochs::Screen { epoch: 1, maybe: ids.iter().map(|id| (0, *id)).collect() });
    // Stored, so another process reads it rather than the epoch's ids.
    let another = Store::from_pool(pool.clone());
    assert_eq!(another.refresh_id_epochs().await.unwrap(), 0);
    assert_eq!(another.id_epochs().screen(agent.tenant_id, &ids), screen);
    pool.close().await;
}

/// Replays and new events from several streams at once while epochs close as fast as the log grows: every
/// id is stored once, every replay answers its original number, and the advances really raced the writes.
/// More streams than pool connections: a stream's worker that looks ids up in a closed epoch must not
/// keep a connection while its group waits for a writer that needs one.
#[tokio::test]
async fn replays_racing_epoch_advances_never_store_an_id_twice() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    const STREAMS: usize = 12;
    const ROUNDS: u64 = 12;
    const NEW: u64 = 4;
    let server = TestServer::start_with(&[("EVENT_ID_EPOCH_EVENTS", "1000000000"), ("MAX_DB_CONNECTIONS", "4")]).await;
    let api = Api::admin(&server);
    let base = Agent::random();
    api.register_key(&base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let closer = tokio::spawn({
        let (store, stop) = (server.state.store.clone(), stop.clone());
        async move {
            let mut closed = 0;
            while !stop.load(Ordering::Relaxed) {
                if store.advance_event_id_epoch(1).await.unwrap().is_some() {
                    closed += 1;
                }
                // Pacing only: each advance already waits for the writers it races.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            closed
        }
    });
    let writers: Vec<_> = (0..STREAMS)
        .map(|_| {
            let mut agent = base.clone();
            agent.store_id = Uuid::new_v4();
            let api = Api::admin(&server);
            tokio::spawn(async move {
                let mut sent: Vec<VesEventEnvelope> = Vec::new();
                let mut numbers: HashMap<Uuid, i64> = HashMap::new();
                for round in 0..ROUNDS {
                    let replays: Vec<VesEventEnvelope> = sent.iter().rev().step_by(3).take(3).cloned().collect();
                    let fresh: Vec<VesEventEnvelope> = (0..NEW).map(|n| agent.event(round * NEW + n)).collect();
                    let batch: Vec<VesEventEnvelope> = replays.iter().chain(&fresh).cloned().collect();
                    let (status, body) = api.ingest(agent.agent_id, &batch).await;
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body["eventsAccepted"], NEW, "{body}");
                    let receipts = body["receipts"].as_array().unwrap();
                    assert_eq!(receipts.len(), batch.len(), "{body}");
                    for (event, receipt) in batch.iter().zip(receipts) {
                        let n = receipt["sequenceNumber"].as_i64().unwrap();
                        assert_eq!(*numbers.entry(event.event_id).or_insert(n), n, "{body}");
                    }
                    sent.extend(fresh);
                }
                sent.len()
            })
        })
        .collect();
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let closed = closer.await.unwrap();
    assert!(closed >= 2, "the epoch closed {closed} times while the streams wrote");

    let pool = PgPool::connect(&server.db.url).await.unwrap();
    let stored = ids_by_epoch(&pool, base.tenant_id).await;
    assert_eq!(stored.len(), written);
    assert!(stored.iter().all(|s| s.2 == 1), "an id stored twice: {stored:?}");
    let epochs_used = stored.iter().map(|s| s.1).collect::<std::collections::HashSet<_>>().len();
    assert!(epochs_used >= 2, "{epochs_used}");
    pool.close().await;
}
