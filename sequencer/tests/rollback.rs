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
    let files = migration_files();
    let (newest, _) = files.last().cloned().unwrap();
    let dir = std::env::temp_dir().join(format!("seq-previous-release-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for (number, path) in &files {
        if *number < newest {
            std::fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let migrator = Migrator::new(dir.as_path()).await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    (migrator, newest)
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

    let vars = std::collections::HashMap::from([
        ("DATABASE_URL".to_string(), db.url.clone()),
        ("BOOTSTRAP_ADMIN_API_KEY".to_string(), sequencer::testing::ADMIN_KEY.to_string()),
    ]);
    let config = sequencer::config::Config::from_map(&vars).unwrap();
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
