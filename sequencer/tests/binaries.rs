//! The two binaries as an operator runs them: the default set-up, `stateset-sequencer-admin migrate`,
//! configuration errors and graceful shutdown.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_admin_cli_applies_migrations_idempotently() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::create());
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
            .arg("migrate")
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("schema version"));
    }
    let tables: Vec<String> = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    for t in ["agent_keys", "api_keys", "dead_letter_events", "legacy_events", "sequence_counters", "ves_events"] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
}

#[test]
fn an_invalid_setting_stops_start_up_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_stateset-sequencer"))
        .env_clear()
        .env("MAX_DB_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MAX_DB_CONNECTIONS"), "{stderr}");
}

#[test]
fn the_default_set_up_starts_its_own_database_and_a_bootstrap_key() {
    let server = SequencerProcess::spawn_with_env(&[]);
    let key_line = server.log.wait_for(|l| l.contains("bootstrap admin API key"), Duration::from_secs(10));
    let path = key_line.rsplit(' ').next().unwrap().trim();
    let key = std::fs::read_to_string(path).expect("key file");
    assert!(key.starts_with("ss_"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let ready = http.get(format!("{}/ready", server.base_url)).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let api = Api::new(server.base_url.clone(), key.trim());
        let agent = Agent::random();
        api.register_key(&agent).await;
        let (status, body) = api.ingest(agent.agent_id, &[agent.event(1)]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["receipts"][0]["signatureAlg"], "ed25519", "receipts are signed by a generated key");
    });
}

#[test]
fn sigterm_drains_and_stops_the_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::migrated());
    let mut server = SequencerProcess::spawn(&db.url, &[]);
    // SAFETY: kill(2) with a valid pid of our own child.
    let rc = unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}
