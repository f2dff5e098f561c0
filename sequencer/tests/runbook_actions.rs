//! The runbook steps a `SequencerAction` runs through the admin API (and the admin CLI runs
//! against the database): purging resolved dead letters, VACUUM ANALYZE of the runbook's tables,
//! terminating idle connections; each scoped to what the caller may touch.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

/// One resolved dead letter (replayed after its key was registered) and one still pending, both of
/// `tenant`'s store `store`.
async fn one_resolved_and_one_pending(admin: &Api, tenant: Uuid, store: Uuid) {
    let fixed = Agent::new(tenant, store);
    let broken = Agent::new(tenant, store);
    admin.ingest(fixed.agent_id, &[fixed.event(1)]).await;
    admin.ingest(broken.agent_id, &[broken.event(1)]).await;
    admin.register_key(&fixed).await;
    let (status, replay) =
        admin.post("/api/v1/admin/dead-letters/retry", json!({"filter": {"tenantId": tenant}})).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!((replay["succeeded"].as_u64(), replay["failed"].as_u64()), (Some(1), Some(1)), "{replay}");
}

#[tokio::test]
async fn a_purge_deletes_only_resolved_dead_letters_by_default_and_only_within_the_callers_scope() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let (tenant, store) = (Uuid::new_v4(), Uuid::new_v4());
    one_resolved_and_one_pending(&admin, tenant, store).await;

    // Another tenant's admin cannot purge this tenant's dead letters; a store-limited admin must name its store.
    let stranger = admin.with_key(&admin.mint_key(Uuid::new_v4(), &[], &["admin"]).await);
    let (status, body) = stranger.post("/api/v1/admin/dead-letters/purge", json!({"tenantId": tenant})).await;
    assert_eq!(status, 403, "{body}");
    let limited = admin.with_key(&admin.mint_key(tenant, &[store], &["admin"]).await);
    let (status, body) = limited.post("/api/v1/admin/dead-letters/purge", json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "INSUFFICIENT_PERMISSIONS");
    let (status, body) =
        limited.post("/api/v1/admin/dead-letters/purge", json!({"storeId": store, "status": "gone"})).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = limited.post("/api/v1/admin/dead-letters/purge", json!({"storeId": store})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"deleted": 1, "status": "resolved"}));
    let (_, left) = admin.get(&format!("/api/v1/admin/dead-letters?tenant_id={tenant}")).await;
    assert_eq!(left["count"], 1);
    assert_eq!(left["deadLetters"][0]["status"], "pending");
    // Purging again deletes nothing: the step is idempotent.
    let (_, again) = limited.post("/api/v1/admin/dead-letters/purge", json!({"storeId": store})).await;
    assert_eq!(again["deleted"], 0);
}

#[tokio::test]
async fn maintenance_needs_the_bootstrap_admin_and_vacuums_the_runbooks_tables_by_default() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let tenant_admin = admin.with_key(&admin.mint_key(Uuid::new_v4(), &[], &["admin"]).await);
    let (status, body) = tenant_admin.post("/api/v1/admin/maintenance/vacuum", json!({})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = tenant_admin
        .post("/api/v1/admin/maintenance/terminate-idle-connections", json!({"idleLongerThanSeconds": 600}))
        .await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = admin.post("/api/v1/admin/maintenance/vacuum", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tables"], json!(["events", "ves_events", "commitments"]));
    let (status, body) =
        admin.post("/api/v1/admin/maintenance/vacuum", json!({"tables": ["dead_letter_events"]})).await;
    assert_eq!((status, &body["tables"]), (200, &json!(["dead_letter_events"])), "{body}");
    let (status, body) =
        admin.post("/api/v1/admin/maintenance/vacuum", json!({"tables": ["pg_class; DROP TABLE events"]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("unknown table"), "{body}");

    let (status, body) =
        admin.post("/api/v1/admin/maintenance/terminate-idle-connections", json!({"idleLongerThanSeconds": 10})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        admin.post("/api/v1/admin/maintenance/terminate-idle-connections", json!({"idleLongerThanSeconds": 600})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["terminated"], 0, "nothing has been idle for ten minutes in a fresh database");
    let vacuum = server.state.store.pool().clone();
    let last: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT GREATEST(last_vacuum, last_analyze) FROM pg_stat_user_tables WHERE relname = 'commitments'",
    )
    .fetch_one(&vacuum)
    .await
    .unwrap();
    assert!(last.is_some(), "commitments was vacuumed and analyzed");
}

#[tokio::test]
async fn terminating_idle_connections_ends_those_idle_longer_than_asked_and_no_other() {
    let server = TestServer::start().await;
    let mut idle = sqlx::PgConnection::connect(&server.db.url).await.unwrap();
    let idle_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut idle).await.unwrap();
    let mut busy = sqlx::PgConnection::connect(&server.db.url).await.unwrap();
    let busy_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut busy).await.unwrap();

    // Poll (bounded) until the idle connection has been idle longer than a second and is ended;
    // the busy one runs a query on every round, so it is never idle that long.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        sqlx::query("SELECT 1").execute(&mut busy).await.expect("the busy connection is never terminated");
        let ended = server.state.store.terminate_idle_connections(1).await.unwrap();
        if ended.iter().any(|c| c.pid == idle_pid) {
            break ended;
        }
        assert!(Instant::now() < deadline, "the idle connection was never terminated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ended.iter().all(|c| c.pid != busy_pid && c.idle_seconds > 1.0), "{ended:?}");
    assert!(sqlx::query("SELECT 1").execute(&mut idle).await.is_err(), "the idle connection is gone");
    assert!(sqlx::query("SELECT 1").execute(&mut busy).await.is_ok());
}

#[tokio::test]
async fn the_admin_cli_purges_dead_letters_vacuums_and_corrects_a_commitment() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let (tenant, store) = (Uuid::new_v4(), Uuid::new_v4());
    one_resolved_and_one_pending(&admin, tenant, store).await;
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
            .args(args)
            .env("DATABASE_URL", &server.db.url)
            .output()
            .unwrap()
    };
    let out = cli(&["dead-letters", "purge", "--tenant-id", &tenant.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted 1 resolved dead letters"));
    let out = cli(&["maintenance", "vacuum"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("events, ves_events, commitments"));
    let out = cli(&["maintenance", "terminate-idle-connections", "--idle-longer-than-seconds", "600"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A commitment whose root is wrong is corrected from the CLI; the bad one is kept, superseded.
    let (_, commitment) = admin
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": tenant, "store_id": store, "sequence_start": 1, "sequence_end": 1}),
        )
        .await;
    let batch = commitment["batch_id"].as_str().unwrap().to_string();
    tamper(
        server.state.store.pool(),
        &format!("UPDATE commitments SET merkle_root = decode(repeat('ab', 32), 'hex') WHERE batch_id = '{batch}'"),
    )
    .await;
    let out = cli(&["commitments", "correct", &batch, "--reason", "wrong merkle root"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, bad) = admin.get(&format!("/api/v1/ves/commitments/{batch}")).await;
    assert!(bad["superseded_by"].is_string(), "{bad}");
    let out = cli(&["commitments", "correct", &batch, "--reason", "again"]);
    assert!(!out.status.success(), "a corrected commitment is not corrected twice");
}
