//! Rolling the image back: a binary of the previous release (here: this code with the previous
//! release's migration set, the repository's migrations without the newest) starts and serves on a
//! schema the current release migrated, and its `migrate` applies nothing and says so; once a
//! contracting migration raises the compatibility floor above what a binary knows, that binary
//! refuses with a message that says why (migrations/README.md).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

/// The migration files of the repository, as (number, path), ascending.
fn migration_files() -> Vec<(i64, PathBuf)> {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let mut files: Vec<(i64, PathBuf)> = std::fs::read_dir(source)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| (p.file_name().unwrap().to_str().unwrap().split('_').next().unwrap().parse().unwrap(), p))
        .collect();
    files.sort();
    files
}

/// The previous release's migration set: every migration but the newest.
async fn previous_release() -> (Migrator, i64) {
    let (newest, _) = migration_files().last().cloned().unwrap();
    (migrations_below(newest).await, newest)
}

/// The migration set of a binary that embeds every migration below `number`.
async fn migrations_below(number: i64) -> Migrator {
    let dir = std::env::temp_dir().join(format!("seq-release-below-{number}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, path) in migration_files() {
        if n < number {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let migrator = Migrator::new(dir.as_path()).await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    migrator
}

/// The configuration `prepare_database_with` needs for `url`.
fn config_for(url: &str) -> sequencer::config::Config {
    let vars = std::collections::HashMap::from([
        ("DATABASE_URL".to_string(), url.to_string()),
        ("BOOTSTRAP_ADMIN_API_KEY".to_string(), sequencer::testing::ADMIN_KEY.to_string()),
    ]);
    sequencer::config::Config::from_map(&vars).unwrap()
}

#[tokio::test]
async fn the_previous_release_serves_on_a_schema_the_current_release_migrated() {
    let (previous, newest) = previous_release().await;
    assert!(!previous.version_exists(newest) && previous.iter().count() >= 4, "the fixture is the older set");
    let db = TestDb::migrated().await;

    // The older image's `migrate` (the operator's Job) over the newer schema: nothing to apply, exit 0.
    let pool = PgPool::connect(&db.url).await.unwrap();
    let store = sequencer::store::Store::from_pool(pool.clone());
    let report = store.migrate_with(&previous).await.expect("an older migrate over a compatible newer schema");
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.unknown, vec![newest], "{report:?}");
    let said = report.to_string();
    assert!(said.contains("no migration to apply") && said.contains("newer than this binary"), "{said}");
    let code = sequencer::admin::migrate_with(&store, &previous).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);

    // The older binary starts (migrating on start-up, as the default set-up does) and serves.
    let server =
        TestServer::start_as_release(db, &[("DB_MIGRATE_ON_STARTUP", "true"), ("WORKER_ENABLED", "false")], &previous)
            .await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    for n in 1..=3 {
        let (status, body) = api.ingest(agent.agent_id, &[agent.event(n)]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["receipts"][0]["sequenceNumber"], n, "{body}");
    }
    let (status, c) = api
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": 1, "sequence_end": 3}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&pool).await.unwrap();
    assert_eq!(versions, migration_files().iter().map(|f| f.0).collect::<Vec<_>>(), "nothing was undone or redone");
    pool.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_binary_below_the_compatibility_floor_refuses_the_schema_and_says_why() {
    let (previous, newest) = previous_release().await;
    let db = TestDb::migrated().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    // What a contracting migration of the newest release does (migrations/README.md).
    sqlx::query("UPDATE schema_compatibility SET min_binary_version = $1, reason = 'test: a contracting migration'")
        .bind(newest)
        .execute(&pool)
        .await
        .unwrap();

    let config = config_for(&db.url);
    let metrics = sequencer::metrics::Metrics::new();
    let store = sequencer::server::open_store(&config, &metrics).unwrap();
    let start = Instant::now();
    let err = sequencer::server::prepare_database_with(&config, &store, &previous).await.unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(5), "an incompatible schema is not retried: {:?}", start.elapsed());
    let known = previous.iter().map(|m| m.version).max().unwrap();
    let knows = format!("knows migrations up to {known}");
    let needs = format!("needs migration {newest} or newer");
    assert!(err.contains(&knows) && err.contains(&needs) && err.contains("a contracting migration"), "{err}");
    // Nor does the older `migrate` touch the schema.
    let err = store.migrate_with(&previous).await.unwrap_err().to_string();
    assert!(err.contains(&needs), "{err}");

    // The current binary (at the floor) is fine with it.
    sequencer::server::prepare_database(&config, &store).await.expect("the current release runs at its own floor");
    pool.close().await;
}

/// Migration 0007 re-keyed dead letters by stream, so the upsert a binary of 0001-0006 records a refused
/// event with has no index to conflict on: such a binary would serve until its first refused event, then
/// fail the request. Migration 0014 records the floor 0007 should have raised, so it refuses to start.
#[tokio::test]
async fn a_binary_from_before_0007_refuses_the_schema_its_dead_letter_upsert_cannot_use() {
    // The schema as the release with 0018 left it: 0019 raises the floor further, for its own reason
    // (`a_binary_from_before_0018_refuses_the_schema_that_stores_payloads_as_text`).
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    migrations_below(19).await.run(&pool).await.unwrap();
    // The statement such a binary records a dead letter with (its ON CONFLICT target), on this schema.
    let err = sqlx::query(
        "INSERT INTO dead_letter_events (id, event_id, tenant_id, store_id, reason, error_message, payload) \
         VALUES ($1, $2, $3, $4, 'invalid_signature', 'refused', '{}') \
         ON CONFLICT (event_id) DO UPDATE SET retry_count = dead_letter_events.retry_count + 1",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("42P10"), "no index matches the old conflict target: {err}");

    // A binary from before 0007 refuses the schema and says why; one that embeds 0007 runs on it.
    let err = refusal_below_floor(&db.url, 7).await;
    assert!(err.contains("dead-letter index"), "the refusal names the reason: {err}");
    pool.close().await;
}

/// Migration 0019 stores a signed event's payload in `payload_text`, which a binary from before 0018
/// does not read (it would serve such events without their payload and verify them as altered), and
/// raises the floor to 18: such a binary refuses to start, and the release with 0018 still runs.
#[tokio::test]
async fn a_binary_from_before_0018_refuses_the_schema_that_stores_payloads_as_text() {
    // The schema as the release with 0020 left it: 0021 raises the floor further, for its own reason
    // (`a_binary_from_before_0020_refuses_the_schema_that_stores_no_receipt_hashes`).
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    migrations_below(21).await.run(&pool).await.unwrap();
    // A binary with migration 0018 reads payloads from either column and is at the floor.
    let err = refusal_below_floor(&db.url, 18).await;
    assert!(err.contains("payload_text"), "the refusal names the reason: {err}");
    pool.close().await;
}

/// Migration 0021 stores signed events without their receipt hash and a plaintext payload's cipher hash,
/// which a binary from before 0020 reads as they are (NULL), and raises the floor to 20: such a binary
/// refuses to start, and the release with 0020, which derives both, still runs.
#[tokio::test]
async fn a_binary_from_before_0020_refuses_the_schema_that_stores_no_receipt_hashes() {
    // The schema as the release with 0023 left it: 0024 raises the floor further, for its own reason
    // (`a_binary_from_before_0024_refuses_the_schema_whose_event_ids_are_unique_by_epoch`).
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    migrations_below(24).await.run(&pool).await.unwrap();
    let err = refusal_below_floor(&db.url, 20).await;
    assert!(err.contains("receipt hash"), "the refusal names the reason: {err}");
    pool.close().await;
}

/// Migration 0024 makes event ids unique per epoch and drops the default of `ves_events.id_epoch`: a
/// binary from before it, which writes no epoch and checks no closed epoch, cannot insert a signed event
/// (so it cannot duplicate an id of a closed epoch), and refuses to start; the release with 0024 runs.
#[tokio::test]
async fn a_binary_from_before_0024_refuses_the_schema_whose_event_ids_are_unique_by_epoch() {
    // The schema as the release with 0026 left it: 0027 raises the floor further, for its own reason
    // (`a_binary_from_before_0027_refuses_the_schema_whose_entity_index_is_keyed_by_epoch`).
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    migrations_below(27).await.run(&pool).await.unwrap();
    // The insert such a binary makes, without the column.
    let err = sqlx::query(
        "INSERT INTO ves_events (tenant_id, store_id, sequence_number, event_id, signed) \
         VALUES ($1, $1, 1, $1, TRUE)",
    )
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("23502"), "no epoch, no insert: {err}");
    let err = refusal_below_floor(&db.url, 24).await;
    assert!(err.contains("epoch"), "the refusal names the reason: {err}");
    pool.close().await;
}

/// Migrations 0027-0030 key the entity index of signed events by id epoch and drop the index of the
/// whole log by entity: a binary from before them would read a stream's whole history for every entity
/// it looks up or counts, and refuses to start; the release with 0027 runs.
#[tokio::test]
async fn a_binary_from_before_0027_refuses_the_schema_whose_entity_index_is_keyed_by_epoch() {
    let db = TestDb::migrated().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    assert_eq!(index_state(&pool, "idx_events_entity").await, None, "0030 dropped the whole log's entity index");
    for (name, key) in [
        ("idx_ves_events_entity", "(tenant_id, store_id, id_epoch, entity_type, entity_id, sequence_number)"),
        ("idx_legacy_events_entity", "(tenant_id, store_id, entity_type, entity_id, sequence_number)"),
    ] {
        let (valid, unique, definition) = index_state(&pool, name).await.unwrap_or_else(|| panic!("{name} exists"));
        assert!(valid && !unique && definition.ends_with(key), "{name}: {definition}");
    }
    let err = refusal_below_floor(&db.url, 27).await;
    assert!(err.contains("by id epoch"), "the refusal names the reason: {err}");
    pool.close().await;
}

/// The refusal of a binary that embeds the migrations below `floor` on the schema at `url` (it must
/// name what it knows and what it needs), after checking that a binary that embeds `floor` runs there.
async fn refusal_below_floor(url: &str, floor: i64) -> String {
    let config = config_for(url);
    let metrics = sequencer::metrics::Metrics::new();
    let store = sequencer::server::open_store(&config, &metrics).unwrap();
    let err = sequencer::server::prepare_database_with(&config, &store, &migrations_below(floor).await)
        .await
        .unwrap_err()
        .to_string();
    let (knows, needs) = (format!("knows migrations up to {}", floor - 1), format!("needs migration {floor} or newer"));
    assert!(err.contains(&knows) && err.contains(&needs), "{err}");
    sequencer::server::prepare_database_with(&config, &store, &migrations_below(floor + 1).await)
        .await
        .unwrap_or_else(|e| panic!("a binary with migration {floor} is at the floor: {e}"));
    err
}

/// Every statement of a migration that removes or tightens something an older binary may use, with
/// the decision taken on it (migrations/README.md, "Expand and contract"). A migration with such a
/// statement that is not listed here fails `every_removal_or_tightening_in_a_migration_is_decided`, so
/// none lands without someone deciding whether the binaries before it still work.
const DECIDED: &[(i64, Decided)] = &[
    // idx_events_created_at: the B-tree is replaced by a BRIN index of the same name; no statement
    // names an index in a conflict target or hint, so an older binary does not notice.
    (4, Decided::Expand),
    // uq_dead_letter_event_id: older binaries record a dead letter with ON CONFLICT (event_id).
    (7, Decided::Contract),
    // uq_*_event_id: replaced by per-tenant unique indexes of the same names; older binaries insert
    // events with ON CONFLICT DO NOTHING, which takes any unique index.
    (8, Decided::Expand),
    // (0012's constraint is NOT VALID: it checks new rows only, and no older binary writes the column.)
    // uq_ves_events_sequence (0016 drops it, 0017 renames 0015's index to its name): 0015's unique
    // index over the same columns keeps the numbers unique throughout, and no statement names either.
    (16, Decided::Expand),
    (17, Decided::Expand),
    // ves_events.id_epoch loses its default: a binary from before 0024 writes no epoch, so its inserts
    // of signed events fail (rather than put an id into an epoch whose filter is built); 0024 raises the
    // floor to 24.
    (24, Decided::Contract),
    // uq_ves_events_event_id: every binary at or above the floor 0024 raised looks ids up by epoch
    // (0025's index), and no statement names this index.
    (26, Decided::Expand),
    // idx_events_entity: every binary at or above the floor 0027 raised reads entities through 0028's
    // and 0029's indexes, and no statement names this one.
    (30, Decided::Expand),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decided {
    /// Older binaries keep working: the floor stays.
    Expand,
    /// Older binaries break: the floor must reach this migration (in it or in a later one).
    Contract,
}

/// The statements (comments removed, lower case) of a migration file.
fn statements(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let code: String = text.lines().map(|l| l.split("--").next().unwrap()).collect::<Vec<_>>().join("\n");
    code.split(';').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()).collect()
}

/// Whether a statement removes or tightens something: drops, renames, type changes, NOT NULL, and
/// constraints that check existing rows.
fn removes_or_tightens(statement: &str) -> bool {
    let s = statement;
    [
        "drop index",
        "drop table",
        "drop column",
        "drop constraint",
        "drop function",
        "drop view",
        "drop default",
        " rename ",
    ]
    .iter()
    .any(|k| s.contains(k))
        || (s.starts_with("alter table")
            && (s.contains("set not null")
                || s.contains(" type ")
                || (s.contains("add constraint") && !s.contains("not valid"))))
}

#[test]
fn every_removal_or_tightening_in_a_migration_is_decided() {
    let files = migration_files();
    let floors: Vec<(i64, i64)> = files
        .iter()
        .flat_map(|(n, path)| {
            statements(path).into_iter().filter_map(move |s| {
                let raised = s.split("greatest(min_binary_version,").nth(1)?;
                Some((*n, raised.split(')').next()?.trim().parse::<i64>().ok()?))
            })
        })
        .collect();
    let mut found = Vec::new();
    for (n, path) in &files {
        if statements(path).iter().any(|s| removes_or_tightens(s)) {
            found.push(*n);
        }
    }
    let decided: Vec<i64> = DECIDED.iter().map(|d| d.0).collect();
    assert_eq!(found, decided, "migrations that remove or tighten something, against those decided in DECIDED");
    for (n, decision) in DECIDED {
        if *decision == Decided::Contract {
            assert!(
                floors.iter().any(|(at, floor)| at >= n && floor >= n),
                "migration {n} is contracting, but no migration raises the floor to {n} (floors raised: {floors:?})"
            );
        }
    }
    // The detector itself: what it must and must not take for a removal.
    assert!(removes_or_tightens("alter table t alter column c set not null"));
    assert!(removes_or_tightens("alter table t alter column c drop default"));
    assert!(removes_or_tightens("alter table t add constraint c check (x > 0)"));
    assert!(!removes_or_tightens("alter table t add constraint c check (x > 0) not valid"));
    assert!(!removes_or_tightens("create table event_types (event_type text)"));
}

/// The index `name` as the schema has it: (valid, unique, definition), or `None` when there is no index
/// of that name.
async fn index_state(pool: &PgPool, name: &str) -> Option<(bool, bool, String)> {
    sqlx::query_as(
        "SELECT i.indisvalid, i.indisunique, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Migration 0015 builds the sequence index again `CONCURRENTLY`. A build that fails leaves an INVALID
/// index and no record of the migration; the next `migrate` must build it again, not keep the invalid
/// one under `IF NOT EXISTS` and then drop the valid old index (0016), which would leave the log's
/// numbers without a unique index.
#[tokio::test]
async fn a_failed_concurrent_index_build_is_built_again_by_the_next_migrate() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let store = sequencer::store::Store::from_pool(pool.clone());
    store.migrate_with(&migrations_below(15).await).await.unwrap();
    // What a cancelled or failed concurrent build leaves: the index, marked invalid; 0015 not recorded.
    sqlx::raw_sql(
        "CREATE UNIQUE INDEX CONCURRENTLY uq_ves_events_sequence_new ON ves_events (tenant_id, store_id, sequence_number)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE pg_index SET indisvalid = FALSE WHERE indexrelid = 'uq_ves_events_sequence_new'::regclass")
        .execute(&pool)
        .await
        .unwrap();

    let report = store.migrate().await.unwrap();
    assert!(report.applied.starts_with(&[15, 16, 17]), "{report:?}");
    let (valid, unique, def) = index_state(&pool, "uq_ves_events_sequence").await.expect("the index has its name");
    assert!(valid && unique, "{def}");
    assert!(def.ends_with("(tenant_id, store_id, sequence_number)"), "no INCLUDE (leaf_hash) any more: {def}");
    assert_eq!(index_state(&pool, "uq_ves_events_sequence_new").await, None);

    // And it is what keeps a stream's numbers unique: the old index is gone.
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = 'ves_events' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(indexes.iter().filter(|i| i.contains("sequence")).count(), 1, "{indexes:?}");
    pool.close().await;
}

/// Two `migrate` runs at once (two pods migrating on start-up) both finish. Each waits for the other by
/// polling a lock, not inside a statement: a session blocked in `pg_advisory_lock()` holds a snapshot
/// that 0015's concurrent build waits for, while it waits for the build's session — a deadlock that
/// PostgreSQL would resolve by cancelling one of them.
#[tokio::test]
async fn two_migration_runs_at_once_both_finish() {
    let db = TestDb::create().await;
    let stores: Vec<_> = futures::future::join_all((0..2).map(|_| PgPool::connect(&db.url)))
        .await
        .into_iter()
        .map(|p| sequencer::store::Store::from_pool(p.unwrap()))
        .collect();
    let (a, b) = tokio::join!(stores[0].migrate(), stores[1].migrate());
    let (a, b) = (a.expect("first run"), b.expect("second run"));
    let mut applied = [a.applied, b.applied].concat();
    applied.sort();
    assert_eq!(applied, migration_files().iter().map(|f| f.0).collect::<Vec<_>>(), "each migration applied once");
    let pool = PgPool::connect(&db.url).await.unwrap();
    let (valid, unique, _) = index_state(&pool, "uq_ves_events_sequence").await.unwrap();
    assert!(valid && unique);
    pool.close().await;
}
