//! Anchoring on a real local chain (anvil): the retry endpoint, commit-and-anchor, reading the roots
//! back from the registry, the circuit breaker through an outage, and the leader-elected worker on two
//! replicas.

mod common;

use std::time::{Duration, Instant};

use anchor::testing::Anvil;
use common::*;
use secrecy::SecretString;
use serde_json::{Value, json};

async fn registry(anvil: &Anvil) -> String {
    let key = SecretString::from(Anvil::DEV_PRIVATE_KEY.to_string());
    anchor::deploy_registry(&anvil.rpc_url, &key, false).await.expect("deploy registry").to_string()
}

fn l2_env<'a>(anvil: &'a Anvil, registry: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("L2_RPC_URL", anvil.rpc_url.as_str()),
        ("SET_REGISTRY_ADDRESS", registry),
        ("SEQUENCER_PRIVATE_KEY", Anvil::DEV_PRIVATE_KEY),
        ("L2_CHAIN_ID", "31337"),
    ]
}

async fn commit(api: &Api, agent: &Agent, start: i64, end: i64) -> Value {
    let (status, body) = api
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": start, "sequence_end": end}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn on_chain_client(anvil: &Anvil, registry: &str) -> anchor::AnchorClient {
    anchor::AnchorClient::new(anchor::AnchorConfig::new(
        anvil.rpc_url.clone(),
        registry.parse().unwrap(),
        SecretString::from(Anvil::DEV_PRIVATE_KEY.to_string()),
        Anvil::CHAIN_ID,
    ))
    .unwrap()
}

#[tokio::test]
async fn an_anchored_commitment_reads_back_with_the_same_roots_from_the_contract() {
    let anvil = Anvil::start();
    let registry = registry(&anvil).await;
    let mut env = l2_env(&anvil, &registry);
    env.push(("WORKER_ENABLED", "false"));
    let server = TestServer::start_with(&env).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<_> = (0..3).map(|i| agent.event(i)).collect();
    api.ingest(agent.agent_id, &events).await;
    let c = commit(&api, &agent, 1, 3).await;
    let batch_id = c["batch_id"].as_str().unwrap().to_string();

    let (status, anchored) = api.post("/api/v1/ves/anchor", json!({"batch_id": batch_id})).await;
    assert_eq!(status, 200, "{anchored}");
    assert_eq!(anchored["status"], "anchored");
    assert_eq!(anchored["chain_id"], 31337);
    assert!(anchored["chain_tx_hash"].as_str().unwrap().len() == 64);
    let (_, again) = api.post("/api/v1/ves/anchor", json!({"batch_id": batch_id})).await;
    assert_eq!(again["status"], "already_anchored");
    assert_eq!(again["chain_tx_hash"], anchored["chain_tx_hash"]);

    // The registry holds exactly our roots and range.
    let client = on_chain_client(&anvil, &registry);
    let on_chain = client.get_commitment(batch_id.parse().unwrap()).await.unwrap().expect("anchored");
    assert_eq!(hex::encode(on_chain.events_root), c["merkle_root"].as_str().unwrap());
    assert_eq!(hex::encode(on_chain.state_root), c["new_state_root"].as_str().unwrap());
    assert_eq!((on_chain.sequence_start, on_chain.sequence_end, on_chain.event_count), (1, 3, 3));
    let (_, verify) = api.get(&format!("/api/v1/ves/anchor/{batch_id}/verify")).await;
    assert_eq!(verify["anchored_on_chain"], true, "{verify}");
    assert_eq!(verify["roots_match"], true);
    let (_, stored) = api.get(&format!("/api/v1/ves/commitments/{batch_id}")).await;
    assert_eq!(stored["is_anchored"], true);
    assert_eq!(stored["chain_tx_hash"], anchored["chain_tx_hash"]);

    // Commit-and-anchor takes the next range by itself.
    api.ingest(agent.agent_id, &[agent.event(10), agent.event(11)]).await;
    let (status, next) = api
        .post("/api/v1/ves/commitments/anchor", json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id}))
        .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!((next["sequence_start"].as_i64(), next["sequence_end"].as_i64()), (Some(4), Some(5)));
    assert_eq!(next["prev_state_root"], c["new_state_root"]);
    assert!(client.is_anchored(next["batch_id"].as_str().unwrap().parse().unwrap()).await.unwrap());
}

#[tokio::test]
async fn without_anchor_settings_the_endpoints_answer_503() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let (status, body) = api.post("/api/v1/ves/anchor", json!({"batch_id": uuid::Uuid::new_v4()})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "ANCHORING_NOT_CONFIGURED");
}

#[tokio::test]
async fn the_circuit_opens_while_the_chain_is_down_and_the_retry_anchors_after_it_recovers() {
    let mut anvil = Anvil::start();
    let registry = registry(&anvil).await;
    let mut env = l2_env(&anvil, &registry);
    env.extend([("WORKER_ENABLED", "false"), ("ANCHOR_BREAKER_FAILURES", "2"), ("ANCHOR_BREAKER_OPEN_MS", "500")]);
    let server = TestServer::start_with(&env).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    api.ingest(agent.agent_id, &[agent.event(1), agent.event(2)]).await;
    let c = commit(&api, &agent, 1, 2).await;
    let batch = json!({"batch_id": c["batch_id"]});

    anvil.stop();
    for _ in 0..2 {
        let (status, body) = api.post("/api/v1/ves/anchor", batch.clone()).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "ANCHOR_UNAVAILABLE");
    }
    // Open: refused at once, without touching the network.
    let started = Instant::now();
    let (status, body) = api.post("/api/v1/ves/anchor", batch.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "ANCHOR_CIRCUIT_OPEN", "{body}");
    assert!(started.elapsed() < Duration::from_millis(400), "fails fast: {:?}", started.elapsed());
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sequencer_anchor_circuit_state 2"), "{metrics}");
    assert!(metrics.contains("sequencer_anchor_circuit_opened_total 1"), "{metrics}");
    let (_, status_body) = api.get("/api/v1/admin/status").await;
    assert_eq!(status_body["anchoring"]["circuitState"], "open");
    assert_eq!(status_body["anchoring"]["unanchoredCommitments"], 1);
    // The commitment stays valid and queryable locally.
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    assert_eq!(api.get(&format!("/api/v1/ves/proofs/2?{q}")).await.0, 200);

    anvil.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let anchored = loop {
        let (status, body) = api.post("/api/v1/ves/anchor", batch.clone()).await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "never recovered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(anchored["status"], "anchored");
    // One more successful call through the breaker closes it.
    let (_, verify) = api.get(&format!("/api/v1/ves/anchor/{}/verify", c["batch_id"].as_str().unwrap())).await;
    assert_eq!(verify["anchored_on_chain"], true);
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sequencer_anchor_circuit_state 0"), "{metrics}");
    let (_, status_body) = api.get("/api/v1/admin/status").await;
    assert_eq!(status_body["anchoring"]["circuitState"], "closed");
    assert_eq!(status_body["anchoring"]["unanchoredCommitments"], 0);
}

#[tokio::test]
async fn two_replicas_create_and_anchor_each_commitment_exactly_once() {
    let anvil = Anvil::start();
    let registry = registry(&anvil).await;
    let mut env = l2_env(&anvil, &registry);
    env.extend([("COMMIT_INTERVAL_MS", "100"), ("ANCHOR_INTERVAL_MS", "100"), ("COMMIT_MAX_EVENTS", "3")]);
    let db = TestDb::migrated().await;
    let shared = TestDb { url: db.url.clone(), name: String::new() };
    let a = TestServer::start_on(db, &env).await;
    let b = TestServer::start_on(shared, &env).await;
    let apis = [Api::admin(&a), Api::admin(&b)];
    let agent = Agent::random();
    apis[0].register_key(&agent).await;
    for i in 0..5u64 {
        let (_, body) =
            apis[i as usize % 2].ingest(agent.agent_id, &[agent.event(2 * i), agent.event(2 * i + 1)]).await;
        assert_eq!(body["eventsAccepted"], 2);
    }
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    let commitments = loop {
        let (_, list) = apis[0].get(&format!("/api/v1/ves/commitments?{q}")).await;
        let all = list["commitments"].as_array().unwrap().clone();
        let covered = all.last().is_some_and(|c| c["sequence_end"] == 10);
        if covered && all.iter().all(|c| c["is_anchored"] == true) {
            break all;
        }
        assert!(Instant::now() < deadline, "worker did not commit and anchor everything: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Contiguous, non-overlapping, each anchored by its own transaction.
    let mut next = 1;
    let mut txs = std::collections::HashSet::new();
    for c in &commitments {
        assert_eq!(c["sequence_start"], next, "{commitments:?}");
        next = c["sequence_end"].as_i64().unwrap() + 1;
        assert!(txs.insert(c["chain_tx_hash"].as_str().unwrap().to_string()));
    }
    assert_eq!(next, 11);
    // The chain holds exactly as many anchors as there are commitments.
    let client = on_chain_client(&anvil, &registry);
    let count = client.registry().getAnchoredCount().call().await.unwrap();
    assert_eq!(count.to::<u64>(), commitments.len() as u64);
    // Exactly one replica led.
    let leader = |s: &TestServer| s.state.metrics.worker_leader.get();
    assert_eq!(leader(&a) + leader(&b), 1);
    let created = a.state.metrics.commitments_created.get() + b.state.metrics.commitments_created.get();
    assert_eq!(created, commitments.len() as u64);
}
