//! The operations surface: rate limits, dead letters, stream verification, admin status, pausing a
//! stream, clock skew.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_tenant_over_its_rate_limit_gets_429_with_retry_after_and_a_metric() {
    let loud = Uuid::new_v4();
    let overrides = format!("{{\"{loud}\": 100}}");
    let server =
        TestServer::start_with(&[("RATE_LIMIT_PER_MINUTE", "3"), ("RATE_LIMIT_TENANT_OVERRIDES", &overrides)]).await;
    let admin = Api::admin(&server);
    let tenant = Uuid::new_v4();
    let key = admin.mint_key(tenant, &[], &["read"]).await;
    let user = admin.with_key(&key);
    let path = format!("/api/v1/head?tenant_id={tenant}&store_id={}", Uuid::new_v4());
    for _ in 0..3 {
        assert_eq!(user.get(&path).await.0, 200);
    }
    let resp = reqwest::Client::new()
        .get(server.url(&path))
        .header("authorization", format!("ApiKey {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    // The overridden tenant has a larger allowance.
    let loud_user = admin.with_key(&admin.mint_key(loud, &[], &["read"]).await);
    let loud_path = format!("/api/v1/head?tenant_id={loud}&store_id={}", Uuid::new_v4());
    for _ in 0..10 {
        assert_eq!(loud_user.get(&loud_path).await.0, 200);
    }
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sequencer_ratelimit_rejected_total{scope=\"tenant\"} 1"), "{metrics}");
}

#[tokio::test]
async fn an_api_key_with_its_own_rate_limit_is_held_to_it() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let tenant = Uuid::new_v4();
    let (_, body) = admin
        .post("/api/v1/admin/api-keys", json!({"tenantId": tenant, "permissions": ["read"], "rateLimit": 2}))
        .await;
    let user = admin.with_key(body["apiKey"].as_str().unwrap());
    let path = format!("/api/v1/head?tenant_id={tenant}&store_id={}", Uuid::new_v4());
    assert_eq!(user.get(&path).await.0, 200);
    assert_eq!(user.get(&path).await.0, 200);
    let (status, body) = user.get(&path).await;
    assert_eq!(status, 429, "{body}");
}

#[tokio::test]
async fn a_dead_letter_is_replayed_once_its_agent_key_is_registered() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    let event = agent.event(1);
    let (_, body) = admin.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    assert_eq!(body["rejections"][0]["reason"], "agent_key_invalid: Agent key not found");

    let (status, list) =
        admin.get(&format!("/api/v1/admin/dead-letters?tenant_id={}&reason=agent_key_invalid", agent.tenant_id)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 1);
    let id = list["deadLetters"][0]["id"].as_str().unwrap().to_string();
    let (_, one) = admin.get(&format!("/api/v1/admin/dead-letters/{id}")).await;
    assert_eq!(one["eventId"], json!(event.event_id));
    assert_eq!(one["payload"]["agent_signature"], json!(event.agent_signature));

    // Retrying before the cause is fixed fails again and counts the attempt.
    let (_, retry) = admin.post(&format!("/api/v1/admin/dead-letters/{id}/retry"), json!({})).await;
    assert_eq!(retry["outcome"], "rejected", "{retry}");
    let (_, one) = admin.get(&format!("/api/v1/admin/dead-letters/{id}")).await;
    assert_eq!(one["retryCount"], 1);
    assert_eq!(one["status"], "pending");

    // Fix the cause, retry: the event is sequenced and the entry resolved.
    admin.register_key(&agent).await;
    let (_, retry) = admin.post(&format!("/api/v1/admin/dead-letters/{id}/retry"), json!({})).await;
    assert_eq!(retry["outcome"], "sequenced", "{retry}");
    assert_eq!(retry["sequenceNumber"], 1);
    let (_, one) = admin.get(&format!("/api/v1/admin/dead-letters/{id}")).await;
    assert_eq!(one["status"], "resolved");
    assert_eq!(one["resolvedSequenceNumber"], 1);
    let (_, events) =
        admin.get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await;
    assert_eq!(events["events"][0]["event_id"], json!(event.event_id));
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sequencer_dead_letter_events 0"), "the queue is empty again");

    // Delete.
    let (status, _) = admin.delete(&format!("/api/v1/admin/dead-letters/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(admin.get(&format!("/api/v1/admin/dead-letters/{id}")).await.0, 404);
}

#[tokio::test]
async fn bulk_retry_by_filter_replays_every_matching_entry() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    let events: Vec<_> = (0..3).map(|i| agent.event(i)).collect();
    admin.ingest(agent.agent_id, &events).await;
    admin.register_key(&agent).await;
    let (status, summary) = admin
        .post(
            "/api/v1/admin/dead-letters/retry",
            json!({"filter": {"tenantId": agent.tenant_id, "reason": "agent_key_invalid"}}),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["attempted"], 3);
    assert_eq!(summary["succeeded"], 3);
    let numbers: Vec<u64> =
        summary["results"].as_array().unwrap().iter().map(|r| r["sequenceNumber"].as_u64().unwrap()).collect();
    let mut sorted = numbers.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3]);
    let (status, _) = admin.post("/api/v1/admin/dead-letters/retry", json!({"ids": [], "filter": {}})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_tenant_admin_sees_and_retries_only_its_own_dead_letters() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let a = Agent::random();
    let b = Agent::random();
    admin.ingest(a.agent_id, &[a.event(1)]).await;
    admin.ingest(b.agent_id, &[b.event(1)]).await;
    let a_admin = admin.with_key(&admin.mint_key(a.tenant_id, &[], &["admin"]).await);
    let (_, list) = a_admin.get("/api/v1/admin/dead-letters").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["deadLetters"][0]["tenantId"], json!(a.tenant_id));
    let (_, all) = admin.get("/api/v1/admin/dead-letters").await;
    let b_id =
        all["deadLetters"].as_array().unwrap().iter().find(|l| l["tenantId"] == json!(b.tenant_id)).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(a_admin.get(&format!("/api/v1/admin/dead-letters/{b_id}")).await.0, 404);
    assert_eq!(a_admin.post(&format!("/api/v1/admin/dead-letters/{b_id}/retry"), json!({})).await.0, 404);
    assert_eq!(a_admin.delete(&format!("/api/v1/admin/dead-letters/{b_id}")).await.0, 404);
    assert_eq!(a_admin.get(&format!("/api/v1/admin/dead-letters?tenant_id={}", b.tenant_id)).await.0, 403);
    let (_, verify) = a_admin.post("/api/v1/admin/verify", json!({"tenantId": b.tenant_id})).await;
    assert_eq!(verify["error"]["code"], "INSUFFICIENT_PERMISSIONS");
}

#[tokio::test]
async fn verification_finds_gaps_tampering_and_commitments_that_no_longer_match() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.register_key(&agent).await;
    let events: Vec<_> = (0..6).map(|i| agent.event(i)).collect();
    admin.ingest(agent.agent_id, &events).await;
    admin
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": 1, "sequence_end": 6}),
        )
        .await;
    let body = json!({"tenantId": agent.tenant_id, "storeId": agent.store_id});
    let (status, report) = admin.post("/api/v1/admin/verify", body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["eventsChecked"], 6);
    assert_eq!(report["commitmentsChecked"], 1);

    // Tamper with one payload and delete another row, behind the sequencer's back.
    let edit = format!(
        "UPDATE events SET payload = NULL, payload_text = '{{\"delta\": 1000}}' \
         WHERE tenant_id = '{}' AND store_id = '{}' AND sequence_number = 2",
        agent.tenant_id, agent.store_id
    );
    tamper(server.state.store.pool(), &format!("{edit}; {}", delete_event_sql(&agent, 4))).await;

    let (_, report) = admin.post("/api/v1/admin/verify", body).await;
    assert_eq!(report["ok"], false);
    let kinds: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"gap"), "{report}");
    assert!(kinds.contains(&"bad_hash"), "{report}");
    assert!(kinds.contains(&"commitment_mismatch"), "{report}");

    // The CLI says the same and exits non-zero.
    let out = Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
        .args(["verify", "--tenant-id", &agent.tenant_id.to_string()])
        .env("DATABASE_URL", &server.db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("gap") && stdout.contains("FAILED"), "{stdout}");
}

/// Receipts stay verifiable across a rotation of the receipt key: each process records its key before it
/// signs (migration 0023), `GET /api/v1/ves/sequencer` lists every key receipts were signed with, and
/// `verify` checks each stored sequencer signature against its sequencer's keys. A forged signature is a
/// finding; one whose sequencer recorded no key (a release before 0023) is counted, not reported.
#[tokio::test]
async fn receipts_signed_before_a_key_rotation_are_still_verified() {
    use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
    let old_key = SigningKey::from_bytes(&hex::decode(SEQUENCER_SEED_HEX).unwrap().try_into().unwrap());
    let new_key = SigningKey::from_bytes(&[7u8; 32]);
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.register_key(&agent).await;
    let (_, before) = admin.ingest(agent.agent_id, &(1..=3).map(|i| agent.event(i)).collect::<Vec<_>>()).await;
    let first_process = server.state.ingest.sequencer().sequencer_id();
    let db = server.stop().await;

    let server = TestServer::start_on(db, &[("VES_SEQUENCER_SIGNING_KEY", &hex::encode(new_key.to_bytes()))]).await;
    let admin = Api::admin(&server);
    let (_, after) = admin.ingest(agent.agent_id, &(4..=6).map(|i| agent.event(i)).collect::<Vec<_>>()).await;
    let (status, info) = admin.get("/api/v1/ves/sequencer").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["public_key"], hex::encode(new_key.verifying_key().to_bytes()));
    let listed: Vec<&str> =
        info["receipt_keys"].as_array().unwrap().iter().map(|k| k["public_key"].as_str().unwrap()).collect();
    let (old_public, new_public) =
        (hex::encode(old_key.verifying_key().to_bytes()), hex::encode(new_key.verifying_key().to_bytes()));
    assert_eq!(listed, [old_public.as_str(), new_public.as_str()], "the oldest first: {info}");

    // A client holding a receipt from before the rotation verifies it with a listed key, not the current one.
    let verifies = |receipt: &serde_json::Value, public: &str| {
        let key = VerifyingKey::from_bytes(&hex::decode(public).unwrap().try_into().unwrap()).unwrap();
        let hash = hex::decode(receipt["receiptHash"].as_str().unwrap()).unwrap();
        let signature: [u8; 64] =
            hex::decode(receipt["sequencerSignature"].as_str().unwrap()).unwrap().try_into().unwrap();
        key.verify(&hash, &ed25519_dalek::Signature::from_bytes(&signature)).is_ok()
    };
    let old_receipt = &before["receipts"][0];
    assert!(verifies(old_receipt, listed[0]) && !verifies(old_receipt, listed[1]), "{before}");
    assert!(verifies(&after["receipts"][0], listed[1]), "{after}");

    let body = json!({"tenantId": agent.tenant_id, "storeId": agent.store_id});
    let (status, report) = admin.post("/api/v1/admin/verify", body.clone()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!((&report["receiptSignaturesChecked"], &report["receiptSignaturesUnchecked"]), (&json!(6), &json!(0)));

    // Event 5's signature replaced by one over its own receipt hash under a key no process recorded; the
    // first process's key record removed, as if a release before 0023 had sequenced events 1-3.
    let receipt_hash = hex::decode(after["receipts"][1]["receiptHash"].as_str().unwrap()).unwrap();
    let forged = SigningKey::from_bytes(&[9u8; 32]).sign(&receipt_hash).to_bytes();
    let forge = format!(
        "UPDATE events SET sequencer_signature = '\\x{}' WHERE tenant_id = '{}' AND store_id = '{}' AND sequence_number = 5",
        hex::encode(forged),
        agent.tenant_id,
        agent.store_id
    );
    tamper(
        server.state.store.pool(),
        &format!("{forge}; DELETE FROM receipt_keys WHERE sequencer_id = '{first_process}'"),
    )
    .await;
    let (_, report) = admin.post("/api/v1/admin/verify", body).await;
    assert_eq!(report["ok"], false);
    let found = findings(&report);
    assert!(found.contains(&("bad_receipt_signature", 5)), "{report}");
    assert!(found.iter().all(|(kind, _)| ["bad_receipt_signature", "log_modified"].contains(kind)), "{report}");
    assert_eq!(found.iter().filter(|(kind, _)| *kind == "bad_receipt_signature").count(), 1, "{report}");
    assert_eq!((&report["receiptSignaturesChecked"], &report["receiptSignaturesUnchecked"]), (&json!(3), &json!(3)));
}

/// `receipt_keys` vouches only for what the database says: whoever can rewrite a signature can also
/// record the key that made it, and `verify` against the recorded keys then finds nothing. Keys pinned
/// by the verifier (`receiptKeys`, `--receipt-key`) are the only ones a signature may verify under, and
/// they also check events whose sequencer recorded none.
#[tokio::test]
async fn pinned_receipt_keys_catch_a_forgery_whose_key_was_recorded_too() {
    use ed25519_dalek::{Signer, SigningKey};
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.register_key(&agent).await;
    let (_, ingested) = admin.ingest(agent.agent_id, &(1..=3).map(|i| agent.event(i)).collect::<Vec<_>>()).await;
    let (_, info) = admin.get("/api/v1/ves/sequencer").await;
    let genuine = info["public_key"].as_str().unwrap().to_owned();
    let stream = json!({"tenantId": agent.tenant_id, "storeId": agent.store_id});
    let pinned = |keys: &[&str]| {
        let mut body = stream.clone();
        body["receiptKeys"] = json!(keys);
        body
    };

    let (status, report) = admin.post("/api/v1/admin/verify", pinned(&[&format!("0x{genuine}")])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["receiptKeysPinned"], true, "{report}");
    assert_eq!((&report["receiptSignaturesChecked"], &report["receiptSignaturesUnchecked"]), (&json!(3), &json!(0)));

    // Event 2 re-signed under a forger's key, and that key recorded for the sequencer that signed it.
    let forger = SigningKey::from_bytes(&[11u8; 32]);
    let receipt_hash = hex::decode(ingested["receipts"][1]["receiptHash"].as_str().unwrap()).unwrap();
    let sequencer_id = server.state.ingest.sequencer().sequencer_id();
    tamper(
        server.state.store.pool(),
        &format!(
            "UPDATE events SET sequencer_signature = '\\x{}' WHERE tenant_id = '{}' AND store_id = '{}' \
             AND sequence_number = 2; INSERT INTO receipt_keys (sequencer_id, public_key) VALUES ('{sequencer_id}', '\\x{}')",
            hex::encode(forger.sign(&receipt_hash).to_bytes()),
            agent.tenant_id,
            agent.store_id,
            hex::encode(forger.verifying_key().to_bytes()),
        ),
    )
    .await;
    // (The update itself is recorded as damage; the signature is what this test is about.)
    let (_, report) = admin.post("/api/v1/admin/verify", stream.clone()).await;
    assert_eq!(findings(&report), [("log_modified", 2)], "the recorded keys vouch for the forged signature: {report}");
    assert_eq!(report.get("receiptKeysPinned"), None, "{report}");
    let (_, report) = admin.post("/api/v1/admin/verify", pinned(&[&genuine])).await;
    assert_eq!(findings(&report), [("bad_receipt_signature", 2), ("log_modified", 2)], "{report}");
    assert!(report["findings"][0]["detail"].as_str().unwrap().contains("pinned"), "{report}");

    // With no key on record (a release before 0023), the recorded keys check nothing; pinned ones still do.
    tamper(server.state.store.pool(), &format!("DELETE FROM receipt_keys WHERE sequencer_id = '{sequencer_id}'")).await;
    let (_, report) = admin.post("/api/v1/admin/verify", stream.clone()).await;
    assert_eq!(findings(&report), [("log_modified", 2)], "{report}");
    assert_eq!(report["receiptSignaturesUnchecked"], 3, "{report}");
    let (_, job) = admin.post("/api/v1/admin/verify/jobs", pinned(&[&genuine])).await;
    let job = admin.finished_verify_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(findings(&job["report"]), [("bad_receipt_signature", 2), ("log_modified", 2)], "{job}");
    assert_eq!(job["report"]["receiptSignaturesChecked"], 3, "{job}");

    // The CLI pins the same way.
    let cli = |keys: &[&str]| {
        let mut args = vec!["verify".to_owned(), "--store-id".into(), agent.store_id.to_string()];
        for k in keys {
            args.extend(["--receipt-key".to_owned(), (*k).to_owned()]);
        }
        Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
            .args(args)
            .env("DATABASE_URL", &server.db.url)
            .output()
            .unwrap()
    };
    let out = cli(&[&genuine]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bad_receipt_signature")
            && stdout.contains("3 receipt signatures checked against the pinned keys"),
        "{stdout}"
    );
    let out = cli(&[&genuine, &hex::encode(forger.verifying_key().to_bytes())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("bad_receipt_signature") && stdout.contains("log_modified"),
        "pinning the forger's key too: {stdout}"
    );

    // Keys that are not keys are a clear 400 (and a clear CLI error), not a verification with none pinned.
    let too_many = vec![genuine.clone(); 65];
    for bad in [
        json!(["abcd"]),
        json!([genuine.replace(&genuine[..2], "zz")]),
        json!("not a list"),
        json!([]),
        json!(too_many),
    ] {
        let mut body = stream.clone();
        body["receiptKeys"] = bad.clone();
        let (status, error) = admin.post("/api/v1/admin/verify", body).await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert_eq!(error["error"]["code"], "INVALID_FIELD_VALUE", "{error}");
    }
    let out = cli(&["abcd"]);
    assert_eq!(out.status.code(), Some(2), "a usage error, before the database is read");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not 32 bytes of hex"), "{out:?}");
}

#[tokio::test]
async fn admin_status_reports_what_the_operator_reads() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    let mut bad = agent.event(1);
    bad.agent_signature.0[0] ^= 1;
    admin.ingest(agent.agent_id, &[bad]).await;
    admin
        .post(
            &format!("/api/v1/admin/streams/{}/{}/pause", agent.tenant_id, agent.store_id),
            json!({"reason": "gap found"}),
        )
        .await;
    let (status, s) = admin.get("/api/v1/admin/status?streams=true").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["schemaVersion"].as_i64().unwrap() >= 2);
    assert_eq!(s["database"]["connected"], true);
    assert_eq!(s["database"]["pool"]["max"], 8);
    assert_eq!(s["deadLetters"]["pending"], 1);
    assert_eq!(s["deadLetters"]["byReason"]["agent_key_invalid"], 1);
    assert_eq!(s["anchoring"]["enabled"], false);
    assert_eq!(s["anchoring"]["circuitState"], "disabled");
    assert_eq!(s["anchoring"]["unanchoredCommitments"], 0);
    assert_eq!(s["ingestion"]["pausedStreams"], 1);
    assert_eq!(s["streams"][0]["paused"], true);
    assert_eq!(s["streams"][0]["pausedReason"], "gap found");
    let reader = admin.with_key(&admin.mint_key(agent.tenant_id, &[], &["read", "write"]).await);
    assert_eq!(reader.get("/api/v1/admin/status").await.0, 403);
}

#[tokio::test]
async fn a_paused_stream_refuses_events_with_503_until_resumed() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.register_key(&agent).await;
    let path = format!("/api/v1/admin/streams/{}/{}", agent.tenant_id, agent.store_id);
    let (status, _) = admin.post(&format!("{path}/pause"), json!({"reason": "investigating a gap"})).await;
    assert_eq!(status, 200);
    let (status, body) = admin.ingest(agent.agent_id, &[agent.event(1)]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STREAM_PAUSED");
    assert!(body["error"]["message"].as_str().unwrap().contains("paused"));
    // Other streams are unaffected.
    let other = Agent { store_id: Uuid::new_v4(), ..agent.clone() };
    assert_eq!(admin.ingest(other.agent_id, &[other.event(1)]).await.0, 200);
    admin.post(&format!("{path}/resume"), json!({})).await;
    let (status, body) = admin.ingest(agent.agent_id, &[agent.event(2)]).await;
    assert_eq!(status, 200);
    assert_eq!(body["receipts"][0]["sequenceNumber"], 1, "nothing was numbered while paused");
}

#[tokio::test]
async fn with_max_clock_skew_an_event_from_the_wrong_time_is_dead_lettered() {
    let server = TestServer::start_with(&[("MAX_CLOCK_SKEW_SECS", "300")]).await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.register_key(&agent).await;
    let old = agent.builder().created_at("2020-01-01T00:00:00Z").payload(json!({})).sign(&agent.key);
    let (_, body) = admin.ingest(agent.agent_id, &[old.clone(), agent.event(1)]).await;
    assert_eq!(body["eventsAccepted"], 1);
    assert_eq!(body["rejections"][0]["reason"], "clock_skew", "{body}");
    let letter = server.state.store.dead_letter_by_event_id(old.event_id).await.unwrap().expect("dead-lettered");
    assert_eq!(letter.reason, "clock_skew");
}

#[tokio::test]
async fn the_admin_cli_lists_retries_and_deletes_dead_letters() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.ingest(agent.agent_id, &[agent.event(1), agent.event(2)]).await;
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
            .args(args)
            .env("DATABASE_URL", &server.db.url)
            .output()
            .unwrap()
    };
    let out = cli(&["dead-letters", "list", "--reason", "agent_key_invalid"]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(listing.lines().count(), 2, "{listing}");
    let first_id = listing.lines().next().unwrap().split_whitespace().next().unwrap().to_string();
    let out = cli(&["dead-letters", "retry", "--all"]);
    assert_eq!(out.status.code(), Some(1), "still refused: the key is unknown");
    admin.register_key(&agent).await;
    let out = cli(&["dead-letters", "retry", "--tenant-id", &agent.tenant_id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 succeeded"));
    let out = cli(&["dead-letters", "delete", &first_id]);
    assert!(out.status.success());
    let (_, head) = admin.get(&format!("/api/v1/head?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await;
    assert_eq!(head["head_sequence"], 2);
}

#[tokio::test]
async fn dead_letters_older_than_the_retention_are_purged() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let old = Agent::random();
    let fresh = Agent::random();
    admin.ingest(old.agent_id, &[old.event(1)]).await;
    admin.ingest(fresh.agent_id, &[fresh.event(1)]).await;
    let store = &server.state.store;
    sqlx::query("UPDATE dead_letter_events SET created_at = NOW() - INTERVAL '40 days' WHERE tenant_id = $1")
        .bind(old.tenant_id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.purge_dead_letters(30).await.unwrap(), 1);
    assert_eq!(store.dead_letter_depth().await.unwrap(), 1, "the recent entry stays");
}
