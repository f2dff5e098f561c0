//! Runbook conformance: starts the system (the sequencer on port 8080 against a database named
//! `stateset_sequencer` on the local PostgreSQL, and anvil), provokes every incident RUNBOOK.md
//! describes and runs its commands VERBATIM through bash (curl, psql, the admin CLI, pg_dump and
//! pg_restore), checking each answer.
//!
//! Needs: PostgreSQL at 127.0.0.1:5432 where the OS user running the test is a superuser role (root on
//! our machines), port 8080 free, curl, and anvil (`scripts/install-tools`). It uses the binaries
//! built next to this test (`cargo test --workspace` builds them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anchor::testing::Anvil;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::{EventBuilder, VesEventEnvelope};

const TOKEN: &str = "ss_runbook_conformance_admin_key_0001";
const DB: &str = "stateset_sequencer";

fn bin_dir() -> PathBuf {
    // target/<profile>/deps/runbook-xxxx -> target/<profile>
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

/// Runs one runbook command verbatim with bash in `dir`.
fn sh(dir: &Path, env: &[(&str, &str)], command: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("bash -c {command}: {e}"))
}

fn ok(dir: &Path, env: &[(&str, &str)], command: &str) -> String {
    let out = sh(dir, env, command);
    assert!(
        out.status.success(),
        "runbook command failed: {command}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// psql against the runbook's database, as the runbook's SQL blocks are run.
fn psql(dir: &Path, sql: &str) -> String {
    let escaped = sql.replace('\'', "'\\''");
    ok(dir, &[], &format!("psql -d {DB} -v ON_ERROR_STOP=1 -At -c '{escaped}'"))
}

struct Sequencer(Child);

impl Drop for Sequencer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sequencer(dir: &Path, env: &[(&str, &str)]) -> Sequencer {
    // Owned by the guard at once, so the process is killed on every path.
    let guard = Sequencer(
        Command::new(bin_dir().join("stateset-sequencer"))
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stateset-sequencer"),
    );
    let mut guard = guard;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("the sequencer exited during start-up: {status}");
        }
        let out = sh(dir, &[], "curl -s http://localhost:8080/ready");
        if String::from_utf8_lossy(&out.stdout).contains("\"ready\"") {
            return guard;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the sequencer did not become ready on port 8080");
}

struct Client {
    http: reqwest::blocking::Client,
}

impl Client {
    fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("http://localhost:8080{path}"))
            .header("authorization", format!("ApiKey {key}"))
            .json(&body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }
}

fn agent_event(tenant: Uuid, store: Uuid, agent: Uuid, key: &SigningKey, n: u64) -> VesEventEnvelope {
    EventBuilder::new(tenant, store, agent, 1)
        .entity("InventoryItem", format!("SKU-{}", n % 3))
        .event_type("Adjusted")
        .payload(json!({"delta": n}))
        .sign(key)
}

#[test]
fn every_runbook_command_works_verbatim() {
    assert!(bin_dir().join("stateset-sequencer").is_file(), "build the binaries first: cargo test --workspace");
    let port_free = std::net::TcpListener::bind("127.0.0.1:8080").is_ok();
    assert!(port_free, "the runbook talks to localhost:8080; free that port to run this test");
    let work = tempdir();
    let dir = work.path();
    std::os::unix::fs::symlink(bin_dir().join("stateset-sequencer-admin"), dir.join("stateset-sequencer-admin"))
        .unwrap();

    // A fresh `stateset_sequencer` database.
    ok(dir, &[], &format!("dropdb --if-exists --force {DB} && createdb {DB}"));

    // Database Operations: Run Migrations, verbatim (DATABASE_URL defaults to postgres://localhost/stateset_sequencer).
    let migrated = ok(dir, &[], "# Via admin CLI\n./stateset-sequencer-admin migrate");
    assert!(migrated.contains("schema version"), "{migrated}");

    // The chain and its registry.
    let mut anvil = Anvil::start();
    let rpc_url = anvil.rpc_url.clone();
    let registry = ok(
        dir,
        &[("L2_RPC_URL", &anvil.rpc_url)],
        &format!(
            "./stateset-sequencer-admin deploy-registry --rpc-url $L2_RPC_URL --private-key {}",
            Anvil::DEV_PRIVATE_KEY
        ),
    );
    let registry = registry.trim().to_string();
    let noisy_tenant = Uuid::new_v4();
    let overrides = format!("{{\"{noisy_tenant}\": 3}}");
    let env: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", "postgres://localhost/stateset_sequencer"),
        ("PORT", "8080"),
        ("BOOTSTRAP_ADMIN_API_KEY", TOKEN),
        ("VES_SEQUENCER_SIGNING_KEY", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"),
        ("L2_RPC_URL", &rpc_url),
        ("SET_REGISTRY_ADDRESS", &registry),
        ("SEQUENCER_PRIVATE_KEY", Anvil::DEV_PRIVATE_KEY),
        ("L2_CHAIN_ID", "31337"),
        ("WORKER_ENABLED", "false"),
        ("ANCHOR_BREAKER_FAILURES", "2"),
        ("ANCHOR_BREAKER_OPEN_MS", "300"),
        ("RATE_LIMIT_PER_MINUTE", "100000"),
        ("RATE_LIMIT_TENANT_OVERRIDES", &overrides),
        ("DB_MIGRATE_ON_STARTUP", "true"),
    ];
    // "Or set environment variable: export DB_MIGRATE_ON_STARTUP=true" (set in `env` above).
    let sequencer = start_sequencer(dir, &env);
    let client = Client { http: reqwest::blocking::Client::new() };

    // Health Checks.
    let health = json_of(&ok(dir, &[], "curl http://localhost:8080/health"));
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["service"], "stateset-sequencer");
    let ready = json_of(&ok(dir, &[], "curl http://localhost:8080/ready"));
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "connected");
    assert!(
        ok(dir, &[], "curl http://localhost:8080/metrics")
            .contains("# TYPE sequencer_ingest_latency_seconds histogram")
    );

    // Traffic: an agent with a registered key.
    let (tenant, store, agent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let (status, body) = client.post(
        "/api/v1/agents/keys",
        TOKEN,
        json!({"tenantId": tenant, "agentId": agent, "keyId": 1, "publicKey": hex::encode(key.verifying_key().to_bytes())}),
    );
    assert_eq!(status, 200, "{body}");
    let events: Vec<_> = (0..8).map(|n| agent_event(tenant, store, agent, &key, n)).collect();
    let (status, body) = client.post("/api/v1/ves/events/ingest", TOKEN, json!({"agentId": agent, "events": events}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 8);

    // Incident: High Latency on Event Ingestion.
    let pool = ok(dir, &[], "curl http://localhost:8080/metrics | grep db_pool");
    assert!(pool.contains("sequencer_db_pool_in_use") && pool.contains("sequencer_db_pool_waiting"), "{pool}");
    let latency = ok(dir, &[], "curl http://localhost:8080/metrics | grep sequencer_ingest_latency_seconds");
    assert!(latency.contains("sequencer_ingest_latency_seconds_count 1"), "{latency}");
    psql(
        dir,
        "SELECT pid, now() - pg_stat_activity.query_start AS duration, query
   FROM pg_stat_activity
   WHERE state != 'idle'
   ORDER BY duration DESC;",
    );
    let holder = sh(
        dir,
        &[],
        &format!(
            "psql -d {DB} -c \"BEGIN; SELECT * FROM sequence_counters WHERE tenant_id = '{tenant}' FOR UPDATE; SELECT count(*) FROM pg_locks WHERE relation = 'sequence_counters'::regclass; ROLLBACK;\""
        ),
    );
    assert!(holder.status.success(), "{holder:?}");
    psql(dir, "SELECT * FROM pg_locks\n   WHERE relation = 'sequence_counters'::regclass;");

    // Incident: Rate Limit Exceeded Errors.
    let (_, noisy) =
        client.post("/api/v1/admin/api-keys", TOKEN, json!({"tenantId": noisy_tenant, "permissions": ["read"]}));
    let noisy_key = noisy["apiKey"].as_str().unwrap().to_string();
    let mut saw_429 = false;
    for _ in 0..6 {
        let out = ok(
            dir,
            &[],
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {noisy_key}' 'http://localhost:8080/api/v1/head?tenant_id={noisy_tenant}&store_id={store}'"
            ),
        );
        saw_429 |= out.trim() == "429";
    }
    assert!(saw_429, "the noisy tenant is limited to 3 requests per minute");
    let limited = ok(dir, &[], "curl http://localhost:8080/metrics | grep ratelimit");
    assert!(limited.contains("sequencer_ratelimit_rejected_total{scope=\"tenant\"}"), "{limited}");
    let volume = psql(
        dir,
        "SELECT tenant_id, COUNT(*)
   FROM events
   WHERE created_at > NOW() - INTERVAL '1 hour'
   GROUP BY tenant_id
   ORDER BY COUNT(*) DESC;",
    );
    assert!(volume.contains(&format!("{tenant}|8")), "{volume}");

    // Incident: Signature Verification Failures.
    let mut forged = agent_event(tenant, store, agent, &key, 100);
    forged.agent_signature.0[3] ^= 1;
    let (_, body) = client.post("/api/v1/ves/events/ingest", TOKEN, json!({"agentId": agent, "events": [forged]}));
    let message = body["rejections"][0]["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("signature verification failed"), "{body}");
    let rejected = ok(dir, &[], "curl http://localhost:8080/metrics | grep sequencer_events_rejected");
    assert!(rejected.contains("reason=\"invalid_signature\"} 1"), "{rejected}");
    let keys = psql(dir, &format!("SELECT * FROM agent_keys\n   WHERE agent_id = '{agent}' AND active = true;"));
    assert!(keys.contains(&agent.to_string()), "{keys}");
    let rotation =
        psql(dir, "SELECT agent_id, key_id, created_at\n   FROM agent_keys\n   ORDER BY created_at DESC\n   LIMIT 10;");
    assert!(rotation.starts_with(&format!("{agent}|1|")), "{rotation}");

    // Recovery: Dead Letter Events (an agent whose key is not registered yet).
    let late_agent = Uuid::new_v4();
    let late_key = SigningKey::from_bytes(&[9u8; 32]);
    let late = agent_event(tenant, store, late_agent, &late_key, 7);
    client.post("/api/v1/ves/events/ingest", TOKEN, json!({"agentId": late_agent, "events": [late]}));
    let letters = psql(dir, "SELECT * FROM dead_letter_events\n   ORDER BY created_at DESC\n   LIMIT 100;");
    assert!(letters.contains("agent_key_invalid") && letters.contains("invalid_signature"), "{letters}");
    client.post(
        "/api/v1/agents/keys",
        TOKEN,
        json!({"tenantId": tenant, "agentId": late_agent, "keyId": 1, "publicKey": hex::encode(late_key.verifying_key().to_bytes())}),
    );
    let (_, replay) =
        client.post("/api/v1/admin/dead-letters/retry", TOKEN, json!({"filter": {"reason": "agent_key_invalid"}}));
    assert_eq!(replay["succeeded"], 1, "{replay}");
    let id = replay["results"][0]["id"].as_str().unwrap();
    let deleted = ok(
        dir,
        &[("TOKEN", TOKEN)],
        &format!(
            "curl -s -X DELETE -H \"Authorization: Bearer $TOKEN\" http://localhost:8080/api/v1/admin/dead-letters/{id}"
        ),
    );
    assert_eq!(json_of(&deleted)["deleted"], true);
    let dlq = ok(dir, &[], "curl http://localhost:8080/metrics | grep sequencer_dead_letter_events");
    assert!(dlq.contains("sequencer_dead_letter_events 1"), "only the forged event is left: {dlq}");

    // Performance: Slow Commitment Creation, and a commitment to anchor.
    let count = psql(
        dir,
        &format!(
            "SELECT COUNT(*) FROM events\n   WHERE tenant_id = '{tenant}'\n     AND store_id = '{store}'\n     AND sequence_number BETWEEN 1 AND 9;"
        ),
    );
    assert_eq!(count.trim(), "9");
    let (status, commitment) = client.post(
        "/api/v1/ves/commitments",
        TOKEN,
        json!({"tenant_id": tenant, "store_id": store, "sequence_start": 1, "sequence_end": 9}),
    );
    assert_eq!(status, 200, "{commitment}");
    let batch_id = commitment["batch_id"].as_str().unwrap().to_string();

    // Recovery: Anchor Service Failure.
    anvil.stop();
    let rpc_env = [("L2_RPC_URL", rpc_url.as_str()), ("TOKEN", TOKEN)];
    let verify_rpc = "curl $L2_RPC_URL -X POST \\\n     -H \"Content-Type: application/json\" \\\n     -d '{\"jsonrpc\":\"2.0\",\"method\":\"eth_blockNumber\",\"params\":[],\"id\":1}'";
    assert!(!sh(dir, &rpc_env, verify_rpc).status.success(), "the RPC is down");
    let retry = format!(
        "curl -X POST http://localhost:8080/api/v1/ves/anchor \\\n     -H \"Authorization: Bearer $TOKEN\" \\\n     -d '{{\"batch_id\": \"{batch_id}\"}}'"
    );
    for _ in 0..3 {
        let answer = json_of(&ok(dir, &rpc_env, &retry));
        assert!(answer["error"]["code"].as_str().unwrap().starts_with("ANCHOR_"), "{answer}");
    }
    let circuit = ok(dir, &[], "curl http://localhost:8080/metrics | grep circuit");
    assert!(circuit.contains("sequencer_anchor_circuit_state 2"), "{circuit}");
    // "Commitments remain unanchored but valid locally."
    let proof = ok(
        dir,
        &[("TOKEN", TOKEN)],
        &format!(
            "curl -s -H \"Authorization: Bearer $TOKEN\" 'http://localhost:8080/api/v1/ves/proofs/5?tenant_id={tenant}&store_id={store}'"
        ),
    );
    assert_eq!(json_of(&proof)["batch_id"], json!(batch_id));
    anvil.restart();
    assert!(ok(dir, &rpc_env, verify_rpc).contains("\"result\""));
    let deadline = Instant::now() + Duration::from_secs(30);
    let anchored = loop {
        let answer = json_of(&ok(dir, &rpc_env, &retry));
        if answer["status"] == "anchored" {
            break answer;
        }
        assert!(Instant::now() < deadline, "the retry never anchored: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(anchored["batch_id"], json!(batch_id));

    // Database Operations: Backup, Restore, Vacuum, Index usage. At backup time the streams' signed
    // checkpoints are saved outside the database, with the verifier key the sequencer publishes.
    let sequencer_info = json_of(&ok(
        dir,
        &[],
        &format!("curl -s -H 'Authorization: ApiKey {TOKEN}' http://localhost:8080/api/v1/ves/sequencer"),
    ));
    let verifier_key = sequencer_info["checkpoint_verifier_key"].as_str().expect("checkpoint verifier key").to_owned();
    ok(dir, &env, "./stateset-sequencer-admin save-checkpoints --output checkpoints_$(date +%Y%m%d).json");
    ok(dir, &[], "pg_dump -Fc stateset_sequencer > backup_$(date +%Y%m%d).dump");
    drop(sequencer);
    ok(
        dir,
        &[],
        &format!("dropdb --force {DB} && createdb {DB} && cp backup_$(date +%Y%m%d).dump backup_20251224.dump"),
    );
    ok(dir, &[], "pg_restore -d stateset_sequencer backup_20251224.dump");
    let verified = ok(dir, &[], "./stateset-sequencer-admin verify");
    assert!(verified.contains("OK:") && verified.contains("1 commitments checked"), "{verified}");
    // "Verify backup integrity": the restore against the evidence saved outside it and the L2 roots.
    let proved = ok(
        dir,
        &env,
        &format!(
            "./stateset-sequencer-admin verify-backup --checkpoints checkpoints_$(date +%Y%m%d).json --verifier-key '{verifier_key}'"
        ),
    );
    assert!(proved.contains("backup verified") && proved.contains("1 commitments against the L2 registry"), "{proved}");
    // The restored database gets the runbook view's search_path back from a migration run.
    ok(dir, &[], "./stateset-sequencer-admin migrate");
    ok(dir, &[], "psql -d stateset_sequencer -c \"VACUUM ANALYZE events;\"");
    ok(dir, &[], "psql -d stateset_sequencer -c \"VACUUM ANALYZE ves_events;\"");
    ok(dir, &[], "psql -d stateset_sequencer -c \"VACUUM ANALYZE commitments;\"");
    let _sequencer = start_sequencer(dir, &env);
    let indexes = psql(
        dir,
        "SELECT schemaname, tablename, indexname, idx_scan, idx_tup_read
FROM pg_stat_user_indexes
ORDER BY idx_scan DESC;",
    );
    assert!(indexes.contains("uq_ves_events_sequence"), "{indexes}");

    // Performance: High Memory Usage; Database Connection Exhaustion.
    let connections = ok(dir, &[], "psql -c \"SELECT count(*) FROM pg_stat_activity;\"");
    assert!(connections.contains("count"), "{connections}");
    assert!(ok(dir, &[], "curl http://localhost:8080/metrics | grep cache").contains("sequencer_cache_size"));
    let ours = psql(dir, "SELECT count(*) FROM pg_stat_activity\n   WHERE datname = 'stateset_sequencer';");
    assert!(ours.trim().parse::<i64>().unwrap() >= 1);
    psql(
        dir,
        "SELECT pg_terminate_backend(pid)
   FROM pg_stat_activity
   WHERE datname = 'stateset_sequencer'
     AND state = 'idle'
     AND query_start < NOW() - INTERVAL '10 minutes';",
    );
    psql(dir, "ALTER SYSTEM SET max_connections = 200;\n   -- Requires restart");
    psql(dir, "ALTER SYSTEM RESET max_connections;");

    // Incident: Sequence Gap Detected (made by deleting a row behind the sequencer's back).
    let gap_sql = format!(
        "-- Find gaps in sequence
WITH seq AS (
  SELECT sequence_number,
         LAG(sequence_number) OVER (ORDER BY sequence_number) as prev_seq
  FROM events
  WHERE tenant_id = '{tenant}' AND store_id = '{store}'
)
SELECT * FROM seq WHERE sequence_number != prev_seq + 1;"
    );
    assert_eq!(psql(dir, &gap_sql).trim(), "", "no gap in normal operation");
    let more: Vec<_> = (20..24).map(|n| agent_event(tenant, store, agent, &key, n)).collect();
    client.post("/api/v1/ves/events/ingest", TOKEN, json!({"agentId": agent, "events": more}));
    psql(
        dir,
        &format!(
            "SET session_replication_role = replica; DELETE FROM events WHERE tenant_id = '{tenant}' AND store_id = '{store}' AND sequence_number = 11;"
        ),
    );
    assert_eq!(psql(dir, &gap_sql).trim(), "12|10", "the runbook query finds the gap");
    let (status, failed) = client.post(
        "/api/v1/ves/commitments",
        TOKEN,
        json!({"tenant_id": tenant, "store_id": store, "sequence_start": 10, "sequence_end": 13}),
    );
    assert_eq!(status, 400);
    assert!(failed["error"]["message"].as_str().unwrap().contains("non-contiguous sequence"), "{failed}");
    // 1. Stop event ingestion for the affected stream.
    ok(
        dir,
        &[],
        &format!(
            "./stateset-sequencer-admin streams pause --tenant-id {tenant} --store-id {store} --reason 'gap at 11'"
        ),
    );
    let (status, paused) = client.post(
        "/api/v1/ves/events/ingest",
        TOKEN,
        json!({"agentId": agent, "events": [agent_event(tenant, store, agent, &key, 99)]}),
    );
    assert_eq!(status, 503, "{paused}");
    let out = sh(dir, &[], "./stateset-sequencer-admin verify");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gap"));
    ok(dir, &[], &format!("dropdb --force {DB}"));
}

/// A fresh directory under the system temp dir, removed (with the backups the runbook writes into it)
/// when the test ends, also when it fails.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("runbook-").tempdir().unwrap()
}
