//! The operator's admin client against a real sequencer (in-process, on its own database, anchoring
//! to a local anvil chain): every call a `SequencerAction` makes, and the status the operator polls.

use std::time::Duration;

use anchor::testing::Anvil;
use ed25519_dalek::SigningKey;
use secrecy::SecretString;
use sequencer::testing::{ADMIN_KEY, TestServer};
use sequencer_operator::admin::{AdminClient, AdminError, ApiKey, ReplayFilter, ReplaySelector};
use serde_json::json;
use uuid::Uuid;
use ves::envelope::EventBuilder;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn every_action_call_works_against_a_real_sequencer() {
    let anvil = Anvil::start();
    let key = SecretString::from(Anvil::DEV_PRIVATE_KEY.to_string());
    let registry = anchor::deploy_registry(&anvil.rpc_url, &key, false).await.unwrap().to_string();
    let server = TestServer::start_with(&[
        ("L2_RPC_URL", anvil.rpc_url.as_str()),
        ("SET_REGISTRY_ADDRESS", registry.as_str()),
        ("SEQUENCER_PRIVATE_KEY", Anvil::DEV_PRIVATE_KEY),
        ("L2_CHAIN_ID", "31337"),
        ("WORKER_ENABLED", "false"),
    ])
    .await;
    let admin = AdminClient::new(AdminClient::http_client(), server.base_url.clone(), ApiKey::new(ADMIN_KEY));
    let http = reqwest::Client::new();
    let auth = format!("ApiKey {ADMIN_KEY}");

    // An event from an agent whose key is not registered yet: a dead letter.
    let (tenant, store, agent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let signing = SigningKey::from_bytes(&[7u8; 32]);
    let event = EventBuilder::new(tenant, store, agent, 1)
        .entity("Order", "O-1")
        .event_type("Created")
        .payload(json!({"total": 10}))
        .sign(&signing);
    let ingest = |events: serde_json::Value| {
        http.post(server.url("/api/v1/ves/events/ingest"))
            .header("authorization", &auth)
            .json(&json!({"agentId": agent, "events": events}))
            .send()
    };
    ingest(json!([event])).await.unwrap();

    let status = admin.status(T).await.unwrap();
    assert_eq!(status.database.unwrap().connected, Some(true));
    let dead = status.dead_letters.unwrap();
    assert_eq!(dead.pending, Some(1));
    assert_eq!(dead.by_reason.get("agent_key_invalid"), Some(&1));
    let anchoring = status.anchoring.unwrap();
    assert_eq!(anchoring.enabled, Some(true));
    assert_eq!(anchoring.circuit_state.as_deref(), Some("closed"));

    // DeadLetterReplay: fails while the cause is there, succeeds once it is fixed.
    let selector = ReplaySelector::Filter(ReplayFilter { tenant_id: Some(tenant.to_string()), ..Default::default() });
    let replay = admin.replay_dead_letters(&selector, T).await.unwrap();
    assert_eq!((replay.attempted, replay.failed), (1, 1));
    let registered = http
        .post(server.url("/api/v1/agents/keys"))
        .header("authorization", &auth)
        .json(&json!({"tenantId": tenant, "agentId": agent, "keyId": 1,
                      "publicKey": hex::encode(signing.verifying_key().to_bytes())}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let id = replay.results[0].id.clone();
    let replay = admin.replay_dead_letters(&ReplaySelector::Ids(vec![id]), T).await.unwrap();
    assert_eq!((replay.attempted, replay.succeeded), (1, 1));
    assert_eq!(replay.results[0].outcome, "sequenced");
    assert_eq!(replay.results[0].sequence_number, Some(1));

    // VerifyStream, against the recorded receipt keys, the genuine key pinned, and a stranger's pinned.
    let (tenant_id, store_id) = (tenant.to_string(), store.to_string());
    let report = admin.verify_stream(&tenant_id, &store_id, None, T).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 1);
    let genuine = hex::encode(
        SigningKey::from_bytes(&hex::decode(sequencer::testing::SEQUENCER_SEED_HEX).unwrap().try_into().unwrap())
            .verifying_key()
            .to_bytes(),
    );
    let report = admin.verify_stream(&tenant_id, &store_id, Some(&[genuine]), T).await.unwrap();
    assert!(report.ok, "{report:?}");
    let stranger = hex::encode(SigningKey::from_bytes(&[8u8; 32]).verifying_key().to_bytes());
    let report = admin.verify_stream(&tenant_id, &store_id, Some(&[stranger]), T).await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.findings[0].kind, "bad_receipt_signature", "{report:?}");

    // AnchorRetry.
    let commitment: serde_json::Value = http
        .post(server.url("/api/v1/ves/commitments"))
        .header("authorization", &auth)
        .json(&json!({"tenant_id": tenant, "store_id": store, "sequence_start": 1, "sequence_end": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch = commitment["batch_id"].as_str().unwrap();
    let anchored = admin.anchor_retry(batch, T).await.unwrap();
    assert_eq!(anchored.status, "anchored");
    assert!(anchored.chain_tx_hash.is_some());
    assert_eq!(admin.anchor_retry(batch, T).await.unwrap().status, "already_anchored");

    // A refused request is an error the action must not retry.
    match admin.anchor_retry(&Uuid::new_v4().to_string(), T).await {
        Err(e @ AdminError::Api { status: 404, .. }) => assert!(!e.is_transient()),
        other => panic!("expected a 404, got {other:?}"),
    }
    let wrong_key =
        AdminClient::new(AdminClient::http_client(), server.base_url.clone(), ApiKey::new("ss_wrong_key_0000000000"));
    match wrong_key.status(T).await {
        Err(e @ AdminError::Api { status: 401, .. }) => assert!(!e.to_string().contains(ADMIN_KEY)),
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn the_calls_of_the_runbook_action_kinds_work_against_a_real_sequencer() {
    let server = TestServer::start_with(&[("WORKER_ENABLED", "false")]).await;
    let admin = AdminClient::new(AdminClient::http_client(), server.base_url.clone(), ApiKey::new(ADMIN_KEY));
    let (tenant, store) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());

    let paused = admin.pause_stream(&tenant, &store, Some("sequence gap"), T).await.unwrap();
    assert!(paused.paused);
    assert!(!admin.resume_stream(&tenant, &store, T).await.unwrap().paused);

    let filter = sequencer_operator::admin::PurgeFilter {
        status: "resolved".into(),
        tenant_id: Some(tenant.clone()),
        ..Default::default()
    };
    assert_eq!(admin.purge_dead_letters(&filter, T).await.unwrap().deleted, 0);

    let vacuumed = admin.vacuum(None, T).await.unwrap();
    assert_eq!(vacuumed.tables, vec!["events", "ves_events", "commitments"]);
    let tables = vec!["dead_letter_events".to_string()];
    assert_eq!(admin.vacuum(Some(&tables), T).await.unwrap().tables, tables);
    assert_eq!(admin.terminate_idle_connections(600, T).await.unwrap().terminated, Some(0));

    match admin.correct_commitment(&Uuid::new_v4().to_string(), "bad root", T).await {
        Err(e @ AdminError::Api { status: 404, .. }) => assert!(!e.is_transient()),
        other => panic!("expected a 404, got {other:?}"),
    }
}
