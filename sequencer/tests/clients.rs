//! The newer upstream clients (0.8/0.9 Node `VesClient` with its tool host, the Python SDK) against
//! this sequencer: every route they call for signed events, driven with the paths, query strings and
//! bodies those clients send, and checked for the fields they parse. Also durable cursors, agent-bound
//! API keys and per-agent policies.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `PUT` with a JSON body.
async fn put(api: &Api, path: &str, body: Value) -> (u16, Value) {
    api.send(Method::PUT, path, Some(body)).await
}

/// An agent with a registered key and `n` events in its stream.
async fn agent_with_events(api: &Api, n: u64) -> Agent {
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<_> = (1..=n).map(|i| agent.event(i)).collect();
    let (status, body) = api.ingest(agent.agent_id, &events).await;
    assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(n)), "{body}");
    agent
}

fn scope(agent: &Agent) -> String {
    format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)
}

/// The Python SDK's `verify_inclusion_proof_locally`: walks `proof_path` with `directions`.
fn verify_like_the_python_sdk(proof: &Value) -> bool {
    let decode = |v: &Value| hex::decode(v.as_str().unwrap().trim_start_matches("0x")).unwrap();
    let mut current = decode(&proof["leaf_hash"]);
    let mut index = proof["leaf_index"].as_u64().unwrap();
    let path = proof["proof_path"].as_array().unwrap();
    let directions = proof["directions"].as_array().unwrap();
    if path.len() != directions.len() {
        return false;
    }
    for (sibling, direction) in path.iter().zip(directions) {
        let left = index.is_multiple_of(2);
        if direction.as_bool() != Some(left) {
            return false;
        }
        let sibling = decode(sibling);
        let children = if left { [current, sibling].concat() } else { [sibling, current].concat() };
        current = Sha256::new().chain_update(b"VES_NODE_V1").chain_update(children).finalize().to_vec();
        index /= 2;
    }
    index == 0 && current == decode(&proof["merkle_root"])
}

#[tokio::test]
async fn every_read_path_of_the_newer_clients_answers_with_the_shape_they_parse() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = agent_with_events(&api, 4).await;

    // VesClient.ingest / record_action: receipts for accepted events, rejections keyed by event_id.
    let event =
        agent.builder().entity("order", "O-1").event_type("order.created").payload(json!({"n": 5})).sign(&agent.key);
    let (status, body) = api.ingest(agent.agent_id, std::slice::from_ref(&event)).await;
    assert_eq!(status, 200, "{body}");
    // The clients hand `receipts[0]` back as it is; its fields are camelCase, as upstream.
    assert_eq!(body["receipts"][0]["eventId"], json!(event.event_id), "{body}");
    let (_, body) = api
        .ingest(agent.agent_id, &[agent.builder().event_id(event.event_id).payload(json!({"n": 6})).sign(&agent.key)])
        .await;
    assert_eq!(body["rejections"][0]["event_id"], json!(event.event_id), "{body}");
    assert!(body["rejections"][0]["reason"].is_string() && body["rejections"][0]["message"].is_string());

    // getHead / get_head.
    let (status, body) = api.get(&format!("/api/v1/ves/head?{}", scope(&agent))).await;
    assert_eq!((status, body["head_sequence"].as_u64()), (200, Some(5)), "{body}");

    // listEvents / wait_for_event: `events` with sequence numbers and `next_sequence`.
    let (status, body) = api.get(&format!("/api/v1/ves/events?{}&from=2&limit=2", scope(&agent))).await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(body["next_sequence"], 4);
    assert!(events[0]["entity_type"].is_string() && events[0]["event_type"].is_string());

    // getEntityHistory with the clients' default `from=0`.
    let (status, body) = api.get(&format!("/api/v1/ves/entities/order/O-1?{}&from=0&limit=100", scope(&agent))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(1), "{body}");

    // getInclusionProof, then verifyInclusionProof with the proof object exactly as received.
    let (status, body) = api
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": 1, "sequence_end": 5}),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, proof) = api.get(&format!("/api/v1/ves/proofs/3?{}", scope(&agent))).await;
    assert_eq!(status, 200, "{proof}");
    assert!(verify_like_the_python_sdk(&proof), "{proof}");
    let (status, body) = api.post("/api/v1/ves/proofs/verify", proof.clone()).await;
    assert_eq!((status, &body["valid"]), (200, &json!(true)), "{body}");

    // getCursor / acknowledge.
    let (status, body) = api.get(&format!("/api/v1/ves/cursors/{}?{}", agent.agent_id, scope(&agent))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["acknowledgedSequence"], &body["headSequence"], &body["lag"]), (&json!(0), &json!(5), &json!(5)));
    assert!(body["updatedAt"].is_null());
    let (status, body) = put(
        &api,
        &format!("/api/v1/ves/cursors/{}", agent.agent_id),
        json!({"tenantId": agent.tenant_id, "storeId": agent.store_id, "sequenceNumber": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["acknowledgedSequence"], &body["lag"]), (&json!(3), &json!(2)));
    assert!(body["updatedAt"].is_string());

    // getAgentPolicy / setAgentPolicy (the SDK merges tenantId into the policy body).
    let policy_path = format!("/api/v1/agents/{}/policy", agent.agent_id);
    let (status, _) = api.get(&format!("{policy_path}?tenant_id={}", agent.tenant_id)).await;
    assert_eq!(status, 404);
    let (status, body) = put(
        &api,
        &policy_path,
        json!({"allowedEventTypes": ["order.*"], "allowedEntityTypes": ["order"], "tenantId": agent.tenant_id}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, got) = api.get(&format!("{policy_path}?tenant_id={}", agent.tenant_id)).await;
    assert_eq!((status, &got), (200, &body));
    assert_eq!(got["requireBaseVersion"], true);
    assert_eq!(got["enabled"], true);

    // What stays out of scope answers a JSON 501 that names why.
    for (method, path, code) in [
        (
            Method::GET,
            format!("/api/v1/projections/order/O-1?{}&source=ves", scope(&agent)),
            "PROJECTIONS_NOT_SUPPORTED",
        ),
        (Method::GET, format!("/api/v1/ves/validity/{}/inputs", Uuid::new_v4()), "STARK_PROOFS_NOT_SUPPORTED"),
        (Method::POST, format!("/api/v1/ves/compliance/{}/proofs", Uuid::new_v4()), "STARK_PROOFS_NOT_SUPPORTED"),
        (Method::GET, "/api/v1/x402/capabilities".to_string(), "X402_NOT_SUPPORTED"),
        (Method::POST, "/api/v1/x402/payments".to_string(), "X402_NOT_SUPPORTED"),
    ] {
        let (status, body) = api.send(method, &path, None).await;
        assert_eq!(status, 501, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("out of scope")
                || body["error"]["message"].as_str().unwrap().contains("no materialised projections")
        );
    }
}

#[tokio::test]
async fn a_cursor_never_moves_back_and_never_beyond_the_head() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = agent_with_events(&api, 3).await;
    let path = format!("/api/v1/ves/cursors/{}", agent.agent_id);
    let ack = |n: u64| json!({"tenantId": agent.tenant_id, "storeId": agent.store_id, "sequenceNumber": n});
    let (status, first) = put(&api, &path, ack(2)).await;
    assert_eq!(status, 200, "{first}");
    // An older acknowledgement (a late retry) leaves the cursor where it is.
    let (status, body) = put(&api, &path, ack(1)).await;
    assert_eq!((status, &body["acknowledgedSequence"], &body["updatedAt"]), (200, &json!(2), &first["updatedAt"]));
    let (status, body) = put(&api, &path, ack(4)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("cannot exceed the stream head"));
    let (_, body) = api.get(&format!("{path}?{}", scope(&agent))).await;
    assert_eq!((&body["acknowledgedSequence"], &body["lag"]), (&json!(2), &json!(1)));
    // It survives a restart: it is in the database.
    let db = server.stop().await;
    let server = TestServer::start_on(db, &[]).await;
    let (_, body) = Api::admin(&server).get(&format!("{path}?{}", scope(&agent))).await;
    assert_eq!(body["acknowledgedSequence"], 2);
}

#[tokio::test]
async fn an_agent_bound_key_ingests_only_its_agent_and_reaches_only_its_own_cursor() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = agent_with_events(&api, 1).await;
    let other = Agent::new(agent.tenant_id, agent.store_id);
    api.register_key(&other).await;

    let keys_path = format!("/api/v1/agents/{}/api-keys", agent.agent_id);
    let (status, minted) =
        api.post(&keys_path, json!({"tenantId": agent.tenant_id, "storeIds": [agent.store_id]})).await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!((&minted["success"], &minted["permissions"]), (&json!(true), &json!("read_write")));
    let agent_api = api.with_key(minted["apiKey"].as_str().unwrap());

    let (_, body) = agent_api.ingest(agent.agent_id, &[agent.event(2)]).await;
    assert_eq!(body["eventsAccepted"], 1, "{body}");
    let (status, body) = agent_api.ingest(other.agent_id, &[other.event(1)]).await;
    assert_eq!(status, 403, "{body}");

    let cursor = |a: &Agent| format!("/api/v1/ves/cursors/{}?{}", a.agent_id, scope(a));
    assert_eq!(agent_api.get(&cursor(&agent)).await.0, 200);
    assert_eq!(agent_api.get(&cursor(&other)).await.0, 403);
    // A key bound to the agent cannot mint an admin key, nor one for another agent.
    let (status, _) = agent_api.post(&keys_path, json!({"admin": true})).await;
    assert_eq!(status, 403);
    let (status, _) = agent_api.post(&format!("/api/v1/agents/{}/api-keys", other.agent_id), json!({})).await;
    assert_eq!(status, 403);

    // Listed by prefix, revoked by prefix, refused at once afterwards.
    let (status, list) = agent_api.get(&keys_path).await;
    assert_eq!((status, &list["count"]), (200, &json!(1)), "{list}");
    assert_eq!(list["keys"][0]["keyHashPrefix"], minted["keyHashPrefix"]);
    let prefix = minted["keyHashPrefix"].as_str().unwrap();
    let (status, body) = api.delete(&format!("{keys_path}/{prefix}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(agent_api.get(&cursor(&agent)).await.0, 401);
    assert_eq!(api.delete(&format!("{keys_path}/{prefix}")).await.0, 404);
}

#[tokio::test]
async fn an_agent_policy_is_enforced_at_ingest_with_upstreams_reasons_and_counted() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let (status, body) = put(
        &api,
        &format!("/api/v1/agents/{}/policy", agent.agent_id),
        json!({"tenantId": agent.tenant_id, "allowedEventTypes": ["order.*"], "allowedEntityTypes": ["order"],
               "maxPayloadBytes": 64}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put(
        &api,
        &format!("/api/v1/agents/{}/policy", agent.agent_id),
        json!({"tenantId": agent.tenant_id, "allowedEventTypes": ["order.*.created"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let ev = |entity: &str, event_type: &str, base: Option<u64>, payload: Value| {
        let mut b = agent.builder().entity(entity, "O-1").event_type(event_type).payload(payload);
        if let Some(v) = base {
            b = b.base_version(v);
        }
        b.sign(&agent.key)
    };
    let batch = vec![
        ev("order", "order.created", None, json!({})),
        ev("order", "refund.issued", Some(1), json!({})),
        ev("customer", "order.created", None, json!({})),
        ev("order", "order.shipped", None, json!({})),
        ev("order", "order.created", None, json!({"pad": "x".repeat(100)})),
        // A new entity at version 0: allowed by `order.*`, with the base version it needs.
        agent
            .builder()
            .entity("order", "O-2")
            .event_type("order.shipped")
            .base_version(0)
            .payload(json!({}))
            .sign(&agent.key),
    ];
    let (status, body) = api.ingest(agent.agent_id, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 2, "{body}");
    let messages: Vec<(&str, &str)> = body["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap(), r["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        messages,
        vec![
            ("agent_policy_violation", "event type is not allowed for this agent: refund.issued"),
            ("agent_policy_violation", "entity type is not allowed for this agent: customer"),
            ("agent_policy_violation", "base_version is required when modifying an existing entity"),
            ("agent_policy_violation", "payload exceeds this agent's 64 byte policy limit"),
        ]
    );
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("events_rejected") && l.contains("agent_policy_violation") && l.ends_with(" 4")),
        "{metrics}"
    );

    // Disabling the policy lifts it at once on this replica.
    let (status, _) = put(
        &api,
        &format!("/api/v1/agents/{}/policy", agent.agent_id),
        json!({"tenantId": agent.tenant_id, "enabled": false}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = api.ingest(agent.agent_id, &[ev("customer", "refund.issued", None, json!({}))]).await;
    assert_eq!(body["eventsAccepted"], 1, "{body}");
}
