//! Credentials, API-key administration and tenant isolation.

mod common;

use common::*;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn every_credential_form_authenticates_and_a_missing_one_is_a_json_401() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = server.url("/api/v1/admin/api-keys");
    for (name, value) in [
        ("authorization", format!("ApiKey {ADMIN_KEY}")),
        ("authorization", format!("Bearer {ADMIN_KEY}")),
        ("authorization", ADMIN_KEY.to_string()),
        ("x-api-key", ADMIN_KEY.to_string()),
    ] {
        let status = http.get(&url).header(name, &value).send().await.unwrap().status();
        assert_eq!(status, 200, "{name}: {value}");
    }
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AUTH_REQUIRED");
    let resp = http.get(&url).header("authorization", "ApiKey ss_not_a_real_key_000000").send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn an_hs256_jwt_carries_tenant_stores_and_permissions() {
    let secret = "a-jwt-secret-for-tests-only-0123456789";
    let server = TestServer::start_with(&[("JWT_SECRET", secret)]).await;
    let tenant = Uuid::new_v4();
    let store = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": tenant.to_string(), "iss": "stateset-sequencer", "aud": "stateset-api",
        "exp": now + 600, "iat": now, "nbf": now, "jti": "t1", "stores": store.to_string(), "perms": "read"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let head = |t: Uuid, s: Uuid| server.url(&format!("/api/v1/head?tenant_id={t}&store_id={s}"));
    let ok = http.get(head(tenant, store)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let other_store = http.get(head(tenant, Uuid::new_v4())).bearer_auth(&token).send().await.unwrap();
    assert_eq!(other_store.status(), 403);
    let other_tenant = http.get(head(Uuid::new_v4(), store)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(other_tenant.status(), 403);
    let write = http
        .post(server.url("/api/v1/ves/events/ingest"))
        .bearer_auth(&token)
        .json(&json!({"agentId": Uuid::new_v4(), "events": [Agent::new(tenant, store).event(1)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 400, "source_agent_id mismatch is checked before permissions, as upstream");
    let expired_claims = json!({"sub": tenant.to_string(), "iss": "stateset-sequencer", "aud": "stateset-api",
        "exp": now - 3600, "iat": now - 7200, "nbf": now - 7200, "jti": "t2"});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &expired_claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let resp = http.get(head(tenant, store)).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TOKEN_EXPIRED");
}

#[tokio::test]
async fn api_keys_are_minted_once_listed_without_secrets_and_revoked_at_once() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let tenant = Uuid::new_v4();
    let key = admin.mint_key(tenant, &[], &["read", "write"]).await;
    assert!(key.starts_with("ss_"));
    let (_, list) = admin.get("/api/v1/admin/api-keys").await;
    let text = list.to_string();
    assert!(!text.contains(&key), "the key itself is never listed");
    let entry = list["keys"].as_array().unwrap().iter().find(|k| k["tenantId"] == json!(tenant)).unwrap().clone();
    assert_eq!(entry["permissions"], json!(["read", "write"]));
    // The key works, then stops working the moment it is revoked.
    let user = admin.with_key(&key);
    let path = format!("/api/v1/head?tenant_id={tenant}&store_id={}", Uuid::new_v4());
    assert_eq!(user.get(&path).await.0, 200);
    let (status, _) = admin.delete(&format!("/api/v1/admin/api-keys/{}", entry["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert_eq!(user.get(&path).await.0, 401);
    // Only the hash is stored.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(server.state.store.pool()).await.unwrap();
    assert!(stored.iter().all(|h| h.len() == 64 && !h.contains("ss_")));
    assert!(stored.contains(&sequencer::auth::hash_api_key(&key)));
}

#[tokio::test]
async fn a_non_admin_key_cannot_reach_admin_routes_nor_mint_keys() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let tenant = Uuid::new_v4();
    let writer = admin.with_key(&admin.mint_key(tenant, &[], &["read", "write"]).await);
    assert_eq!(writer.get("/api/v1/admin/api-keys").await.0, 403);
    let (status, _) =
        writer.post("/api/v1/admin/api-keys", json!({"tenantId": tenant, "permissions": ["admin"]})).await;
    assert_eq!(status, 403);
    // A tenant admin can mint for its own tenant only.
    let tenant_admin = admin.with_key(&admin.mint_key(tenant, &[], &["admin"]).await);
    let (status, _) =
        tenant_admin.post("/api/v1/admin/api-keys", json!({"tenantId": tenant, "permissions": ["read"]})).await;
    assert_eq!(status, 201);
    let (status, _) =
        tenant_admin.post("/api/v1/admin/api-keys", json!({"tenantId": Uuid::new_v4(), "permissions": ["read"]})).await;
    assert_eq!(status, 403);
}

/// Walks every route with a credential of tenant A aimed at tenant B's data.
#[tokio::test]
async fn a_credential_of_tenant_a_can_read_or_write_nothing_of_tenant_b() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let a = Agent::random();
    let b = Agent::random();
    admin.register_key(&b).await;
    let (_, body) = admin.ingest(b.agent_id, &[b.event(1)]).await;
    assert_eq!(body["eventsAccepted"], 1);
    // Tenant A's most powerful credential: admin + read + write, all stores of tenant A.
    let a_key = admin.mint_key(a.tenant_id, &[], &["read", "write", "admin"]).await;
    let api = admin.with_key(&a_key);
    admin.mint_key(b.tenant_id, &[], &["read"]).await;
    let (_, list) = admin.get("/api/v1/admin/api-keys").await;
    let b_key_id = list["keys"].as_array().unwrap().iter().find(|k| k["tenantId"] == json!(b.tenant_id)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let q = format!("tenant_id={}&store_id={}", b.tenant_id, b.store_id);
    let key_path = format!("/api/v1/agents/keys/{}/{}/{}", b.tenant_id, b.agent_id, b.key_id);
    let attempts: Vec<(reqwest::Method, String, Option<serde_json::Value>)> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/ves/events/ingest".into(),
            Some(json!({"agentId": b.agent_id, "events": [b.event(2)]})),
        ),
        (reqwest::Method::GET, format!("/api/v1/ves/events?{q}"), None),
        (reqwest::Method::GET, format!("/api/v1/ves/head?{q}"), None),
        (reqwest::Method::GET, format!("/api/v1/ves/entities/InventoryItem/WIDGET-001?{q}"), None),
        (reqwest::Method::GET, format!("/api/v1/events?{q}"), None),
        (reqwest::Method::GET, format!("/api/v1/head?{q}"), None),
        (reqwest::Method::GET, format!("/api/v1/entities/InventoryItem/WIDGET-001?{q}"), None),
        (
            reqwest::Method::POST,
            "/api/v1/ves/commitments".into(),
            Some(json!({"tenant_id": b.tenant_id, "store_id": b.store_id, "sequence_start": 1, "sequence_end": 1})),
        ),
        (reqwest::Method::GET, format!("/api/v1/ves/commitments?{q}"), None),
        (reqwest::Method::GET, format!("/api/v1/ves/proofs/1?{q}"), None),
        (reqwest::Method::GET, format!("/api/v1/ves/commitments/consistency?{q}&from_size=0"), None),
        (reqwest::Method::GET, format!("/api/v1/ves/checkpoint?{q}"), None),
        (
            reqwest::Method::POST,
            "/api/v1/agents/keys".into(),
            Some(json!({"tenantId": b.tenant_id, "agentId": Uuid::new_v4(), "keyId": 9,
                "publicKey": hex::encode(Agent::random().key.verifying_key().to_bytes())})),
        ),
        (reqwest::Method::GET, format!("/api/v1/agents/keys?tenant_id={}", b.tenant_id), None),
        (reqwest::Method::POST, format!("{key_path}/revoke"), Some(json!({}))),
        (
            reqwest::Method::POST,
            format!("{key_path}/rotate"),
            Some(json!({"newKeyId": 2, "publicKey": hex::encode(Agent::random().key.verifying_key().to_bytes())})),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/admin/api-keys".into(),
            Some(json!({"tenantId": b.tenant_id, "permissions": ["admin"]})),
        ),
        (reqwest::Method::DELETE, format!("/api/v1/admin/api-keys/{b_key_id}"), None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = api.send(method.clone(), &path, body).await;
        assert!(status == 403 || status == 404, "{method} {path} answered {status}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{method} {path}: JSON error expected, got {answer}");
    }
    // Tenant A's listing shows none of tenant B's keys.
    let (_, list) = api.get("/api/v1/admin/api-keys").await;
    assert!(list["keys"].as_array().unwrap().iter().all(|k| k["tenantId"] == json!(a.tenant_id)));
    // And B's data is untouched.
    let (_, head) = admin.get(&format!("/api/v1/head?{q}")).await;
    assert_eq!(head["head_sequence"], 1);
    let (_, keys) = admin.get(&format!("/api/v1/agents/keys?tenant_id={}", b.tenant_id)).await;
    assert_eq!(keys["count"], 1);
    assert_eq!(keys["keys"][0]["active"], true);
}

#[tokio::test]
async fn a_store_scoped_key_sees_only_its_stores() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.register_key(&agent).await;
    let scoped = admin.with_key(&admin.mint_key(agent.tenant_id, &[agent.store_id], &["read", "write"]).await);
    let (status, body) = scoped.ingest(agent.agent_id, &[agent.event(1)]).await;
    assert_eq!(status, 200, "{body}");
    let elsewhere = Agent { store_id: Uuid::new_v4(), ..agent.clone() };
    let (status, body) = scoped.ingest(agent.agent_id, &[elsewhere.event(1)]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["message"], "Store access denied");
}
