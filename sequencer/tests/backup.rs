//! Backups you can prove, with the admin CLI as an operator runs it: `export-events` (resumable
//! NDJSON), `save-checkpoints` (evidence kept outside the database) and `verify-backup` against a
//! database or an export, which names the stream and range that disagree.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

fn admin(db_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("VES_SEQUENCER_SIGNING_KEY", SEQUENCER_SEED_HEX)
        .env_remove("VES_CHECKPOINT_VERIFIER_KEY")
        .env_remove("L2_RPC_URL")
        .output()
        .expect("run stateset-sequencer-admin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Two streams with commitments (A: 1..=4 and 5..=10, B: 1..=5) and two newer events in A.
async fn populated(api: &Api) -> (Agent, Agent) {
    let (a, b) = (Agent::random(), Agent::random());
    for (agent, n) in [(&a, 10), (&b, 5)] {
        api.register_key(agent).await;
        let events: Vec<_> = (1..=n).map(|i| agent.event(i)).collect();
        let (_, body) = api.ingest(agent.agent_id, &events).await;
        assert_eq!(body["eventsAccepted"], n, "{body}");
    }
    for (agent, start, end) in [(&a, 1, 4), (&a, 5, 10), (&b, 1, 5)] {
        let (status, body) = api
            .post(
                "/api/v1/ves/commitments",
                json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": start, "sequence_end": end}),
            )
            .await;
        assert!(status == 200 || status == 201, "{body}");
    }
    let (_, body) = api.ingest(a.agent_id, &[a.event(11), a.event(12)]).await;
    assert_eq!(body["eventsAccepted"], 2, "{body}");
    (a, b)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn a_backup_verifies_against_saved_checkpoints_and_a_damaged_one_names_the_stream_and_range() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let (a, b) = populated(&api).await;
    let url = server.db.url.clone();
    let dir = tempdir();
    let checkpoints = dir.join("checkpoints.json");
    let export = dir.join("events.ndjson");

    let out = admin(&url, &["save-checkpoints", "--output", checkpoints.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&checkpoints).unwrap()).unwrap();
    assert_eq!(saved["streams"].as_array().unwrap().len(), 2);
    // The saved checkpoint is the one the API serves.
    let served = reqwest::Client::new()
        .get(server.url(&format!("/api/v1/ves/checkpoint?tenant_id={}&store_id={}", a.tenant_id, a.store_id)))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let saved_a = saved["streams"].as_array().unwrap().iter().find(|s| s["tenantId"] == json!(a.tenant_id)).unwrap();
    assert_eq!(saved_a["checkpoint"].as_str().unwrap(), served);

    // Export: everything, then resumed from a sequence number.
    let out = admin(&url, &["export-events", "--output", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&export).len(), 17);
    let tail = dir.join("tail.ndjson");
    let (t, s) = (a.tenant_id.to_string(), a.store_id.to_string());
    let out = admin(
        &url,
        &["export-events", "--tenant-id", &t, "--store-id", &s, "--from", "6", "--output", tail.to_str().unwrap()],
    );
    assert!(out.status.success());
    let seqs: Vec<u64> = lines(&tail).iter().map(|l| l["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (6..=12).collect::<Vec<_>>());

    // The intact database and the intact export verify.
    let cp = checkpoints.to_str().unwrap();
    let out = admin(&url, &["verify-backup", "--checkpoints", cp]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("backup verified: 2 streams, 15 events"), "{}", stdout(&out));
    assert!(stdout(&out).contains("2 newer events not covered"), "{}", stdout(&out));
    let out = admin(&url, &["verify-backup", "--checkpoints", cp, "--export", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));

    // An export whose event 7 of stream A was edited: the range 5..=10 of that stream is named.
    let edited = dir.join("edited.ndjson");
    let text: Vec<String> = lines(&export)
        .into_iter()
        .map(|mut l| {
            if l["tenant_id"] == json!(a.tenant_id) && l["sequence_number"] == 7 {
                l["envelope"]["payload"] = json!({"delta": 700});
            }
            l.to_string()
        })
        .collect();
    std::fs::write(&edited, text.join("\n")).unwrap();
    let out = admin(&url, &["verify-backup", "--checkpoints", cp, "--export", edited.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        report["findings"],
        json!([{"kind": "events_differ", "tenantId": a.tenant_id, "storeId": a.store_id, "sequenceStart": 5,
                "sequenceEnd": 10, "detail": report["findings"][0]["detail"]}])
    );

    // A restored database that lost event 3 of stream B and had event 2 of stream A rewritten.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    tamper(
        &pool,
        &format!(
            "DELETE FROM events WHERE tenant_id = '{}' AND sequence_number = 3; \
             UPDATE events SET payload = NULL, payload_text = '{{\"delta\": 99}}' \
             WHERE tenant_id = '{}' AND sequence_number = 2",
            b.tenant_id, a.tenant_id
        ),
    )
    .await;
    let out = admin(&url, &["verify-backup", "--checkpoints", cp]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("MISMATCH events_differ tenant {} store {} events 1..=4", a.tenant_id, a.store_id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("MISMATCH missing_events tenant {} store {} events 3..=3", b.tenant_id, b.store_id)),
        "{text}"
    );

    // Evidence checked with another key, or a checkpoints file that was edited, is refused too.
    let other = sequencer::checkpoint::CheckpointSigner::new(
        "stateset-sequencer",
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    );
    let args = ["verify-backup", "--checkpoints", cp, "--verifier-key", other.verifier_key(), "--export"];
    let out = admin(&url, &[&args[..], &[export.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("checkpoint_signature"), "{}", stdout(&out));
    let mut forged = saved.clone();
    forged["streams"][0]["commitments"][0]["merkleRoot"] = json!(hex::encode([7u8; 32]));
    let forged_path = dir.join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let out = admin(
        &url,
        &["verify-backup", "--checkpoints", forged_path.to_str().unwrap(), "--export", export.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("saved_commitments_altered"), "{}", stdout(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory under the system's temporary directory.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stateset-backup-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
