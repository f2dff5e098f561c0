//! Agent signing keys over REST: register, 409 on re-register, list, revoke, rotate.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn re_registering_an_existing_key_id_is_a_409() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let (status, body) = api
        .post(
            "/api/v1/agents/keys",
            json!({"tenantId": agent.tenant_id, "agentId": agent.agent_id, "keyId": agent.key_id,
                   "publicKey": hex::encode(Agent::random().key.verifying_key().to_bytes())}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "ALREADY_EXISTS");
}

#[tokio::test]
async fn malformed_keys_are_refused_with_a_400() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    for (pk, needle) in [("zz", "hex"), ("abcd", "32 bytes")] {
        let (status, body) = api
            .post(
                "/api/v1/agents/keys",
                json!({"tenantId": agent.tenant_id, "agentId": agent.agent_id, "keyId": 1, "publicKey": pk}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{body}");
    }
}

#[tokio::test]
async fn rotating_a_key_switches_verification_to_the_new_key() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let old = Agent::random();
    api.register_key(&old).await;
    let (_, body) = api.ingest(old.agent_id, &[old.event(1)]).await;
    assert_eq!(body["eventsAccepted"], 1);
    let new = Agent { key_id: 2, key: Agent::random().key, ..old.clone() };
    let (status, body) = api
        .post(
            &format!("/api/v1/agents/keys/{}/{}/1/rotate", old.tenant_id, old.agent_id),
            json!({"newKeyId": 2, "publicKey": hex::encode(new.key.verifying_key().to_bytes())}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["oldKey"]["rotatedToKeyId"], 2);
    let (_, body) = api.ingest(old.agent_id, &[new.event(2)]).await;
    assert_eq!(body["eventsAccepted"], 1, "{body}");
    let (_, body) = api.ingest(old.agent_id, &[old.event(3)]).await;
    assert_eq!(body["rejections"][0]["reason"], "agent_key_invalid: Agent key has expired", "{body}");
    let (_, list) =
        api.get(&format!("/api/v1/agents/keys?tenant_id={}&agent_id={}", old.tenant_id, old.agent_id)).await;
    assert_eq!(list["count"], 2);
}

#[tokio::test]
async fn a_revoked_key_stays_listed_as_inactive() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let path = format!("/api/v1/agents/keys/{}/{}/1/revoke", agent.tenant_id, agent.agent_id);
    let (status, body) = api.post(&path, json!({"reason": "laptop lost"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = api.get(&format!("/api/v1/agents/keys?tenant_id={}", agent.tenant_id)).await;
    assert_eq!(list["keys"][0]["active"], false);
    assert_eq!(list["keys"][0]["revocationReason"], "laptop lost");
    let (status, _) =
        api.post(&format!("/api/v1/agents/keys/{}/{}/7/revoke", agent.tenant_id, agent.agent_id), json!({})).await;
    assert_eq!(status, 404);
}
