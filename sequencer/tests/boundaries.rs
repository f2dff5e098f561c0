//! Tenant and store boundaries, route by route. The route walk is generated from the route table the
//! router is built from, so a new route is checked against foreign credentials without anyone
//! remembering to add it here.

mod common;

use std::collections::HashMap;

use common::*;
use reqwest::Method;
use sequencer::api::routes::{Access, Perm, RouteSpec, route_table};
use serde_json::{Value, json};
use uuid::Uuid;

const JWT_SECRET: &str = "a-jwt-secret-for-boundary-tests-0123456789";

/// The victim's resources, which every foreign credential aims at.
struct Victim {
    tenant: Uuid,
    store: Uuid,
    other_store: Uuid,
    agent: Agent,
    batch_id: Uuid,
    dead_letter: Uuid,
    key_id: Uuid,
    job_id: Uuid,
    event: Value,
}

impl Victim {
    async fn create(admin: &Api) -> Self {
        let tenant = Uuid::new_v4();
        let store = Uuid::new_v4();
        let agent = Agent::new(tenant, store);
        admin.register_key(&agent).await;
        let events: Vec<_> = (1..=3).map(|n| agent.event(n)).collect();
        let (status, body) = admin.ingest(agent.agent_id, &events).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = admin
            .post(
                "/api/v1/ves/commitments",
                json!({"tenant_id": tenant, "store_id": store, "sequence_start": 1, "sequence_end": 2}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let batch_id = Uuid::parse_str(body["batch_id"].as_str().expect("batch_id")).unwrap();
        // An event by an agent whose key is not registered is dead-lettered.
        let stranger = Agent { agent_id: Uuid::new_v4(), ..agent.clone() };
        let refused = stranger.event(9);
        let (status, body) = admin.ingest(stranger.agent_id, std::slice::from_ref(&refused)).await;
        assert_eq!(status, 200, "{body}");
        let (_, letters) = admin.get(&format!("/api/v1/admin/dead-letters?tenant_id={tenant}")).await;
        let dead_letter = Uuid::parse_str(letters["deadLetters"][0]["id"].as_str().expect("a dead letter")).unwrap();
        let (status, body) = admin
            .post("/api/v1/admin/api-keys", json!({"tenantId": tenant, "storeIds": [store], "permissions": ["read"]}))
            .await;
        assert_eq!(status, 201, "{body}");
        let key_id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
        let (status, body) =
            admin.post("/api/v1/admin/verify/jobs", json!({"tenantId": tenant, "storeId": store})).await;
        assert_eq!(status, 202, "{body}");
        let job_id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
        let event = serde_json::to_value(agent.event(4)).unwrap();
        Victim { tenant, store, other_store: Uuid::new_v4(), agent, batch_id, dead_letter, key_id, job_id, event }
    }

    /// Markers that must not appear in an answer to a foreign credential.
    fn secrets(&self) -> Vec<String> {
        vec![self.store.to_string(), self.dead_letter.to_string(), self.key_id.to_string()]
    }

    /// A request for `route` aimed at the victim's resources: (path with query, body).
    fn request(&self, route: &RouteSpec) -> (String, Option<Value>) {
        let (t, s, a) = (self.tenant, self.store, self.agent.agent_id);
        let mut params: HashMap<&str, String> = HashMap::from([
            ("tenant_id", t.to_string()),
            ("store_id", s.to_string()),
            ("agent_id", a.to_string()),
            ("key_id", "1".to_string()),
            ("entity_type", "InventoryItem".to_string()),
            ("entity_id", "WIDGET-001".to_string()),
            ("batch_id", self.batch_id.to_string()),
            ("sequence_number", "1".to_string()),
            ("*path", "0/000".to_string()),
            ("*rest", "proofs".to_string()),
            ("key_prefix", "ss_0000".to_string()),
        ]);
        let id = if route.path.starts_with("/api/v1/admin/api-keys") {
            self.key_id
        } else if route.path.starts_with("/api/v1/admin/verify/jobs") {
            self.job_id
        } else {
            self.dead_letter
        };
        params.insert("id", id.to_string());
        let mut path = route.path.to_string();
        for (name, value) in &params {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "{} {}: give the test a value for its path parameters", route.method, route.path);
        let key = format!("{} {}", route.method, route.path);
        let stream = json!({"tenant_id": t, "store_id": s});
        let body = match key.as_str() {
            "POST /api/v1/ves/events/ingest" => json!({"agentId": a, "events": [self.event]}),
            "POST /api/v1/events/ingest" => json!({"agent_id": a, "events": [{
                "event_id": Uuid::new_v4(), "tenant_id": t, "store_id": s, "entity_type": "InventoryItem",
                "entity_id": "WIDGET-001", "event_type": "Adjusted", "payload": {"delta": 1},
                "payload_hash": "5ee0e0b7dd5e7d8cd3fd3c2e79e4c8bd4a0c4d1d6b7f3ee5cb3c5e4fd34f9cf4",
                "created_at": "2025-06-01T12:00:00Z", "source_agent": a}]}),
            "POST /api/v1/ves/commitments" => {
                json!({"tenant_id": t, "store_id": s, "sequence_start": 1, "sequence_end": 3})
            }
            "POST /api/v1/ves/commitments/anchor" => stream,
            "POST /api/v1/ves/anchor" => json!({"batch_id": self.batch_id}),
            "POST /api/v1/ves/commitments/{batch_id}/correct" => json!({"reason": "boundary test"}),
            "POST /api/v1/ves/proofs/verify" => json!({"leaf_hash": "00".repeat(32),
                "merkle_root": "00".repeat(32), "proof_path": [], "leaf_index": 0}),
            "POST /api/v1/agents/keys" => json!({"tenantId": t, "agentId": Uuid::new_v4(), "keyId": 1,
                "publicKey": format!("0x{}", hex::encode(self.agent.key.verifying_key().to_bytes()))}),
            "POST /api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/revoke" => json!({"reason": "test"}),
            "POST /api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/rotate" => json!({"newKeyId": 2,
                "publicKey": format!("0x{}", hex::encode(self.agent.key.verifying_key().to_bytes()))}),
            "POST /api/v1/admin/dead-letters/retry" => json!({"ids": [self.dead_letter]}),
            "POST /api/v1/admin/verify" | "POST /api/v1/admin/verify/jobs" => json!({"tenantId": t, "storeId": s}),
            "POST /api/v1/admin/api-keys" => json!({"tenantId": t, "storeIds": [s], "permissions": ["read"]}),
            "POST /api/v1/admin/dead-letters/purge" => json!({"tenantId": t, "storeId": s, "status": "pending"}),
            "POST /api/v1/admin/maintenance/terminate-idle-connections" => json!({"idleLongerThanSeconds": 86400}),
            _ if route.method == Method::POST => json!({}),
            _ => Value::Null,
        };
        let query = format!("tenant_id={t}&store_id={s}&from_size=0&streams=true");
        let path = if route.method == Method::GET { format!("{path}?{query}") } else { path };
        (path, (!body.is_null()).then_some(body))
    }
}

/// Mints a key: (the key, its id).
async fn mint(admin: &Api, tenant: Uuid, stores: &[Uuid], permissions: &[&str]) -> (String, String) {
    let (status, body) = admin
        .post("/api/v1/admin/api-keys", json!({"tenantId": tenant, "storeIds": stores, "permissions": permissions}))
        .await;
    assert_eq!(status, 201, "{body}");
    (body["apiKey"].as_str().unwrap().to_string(), body["id"].as_str().unwrap().to_string())
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn send(server: &TestServer, method: &Method, path: &str, auth: &str, body: Option<&Value>) -> (u16, String) {
    let mut req = reqwest::Client::new().request(method.clone(), server.url(path)).header("authorization", auth);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn every_route_refuses_another_tenant_another_store_a_narrower_permission_a_revoked_key_and_an_early_token() {
    let server = TestServer::start_with(&[("JWT_SECRET", JWT_SECRET)]).await;
    let admin = Api::admin(&server);
    let victim = Victim::create(&admin).await;
    let t = victim.tenant;
    let other_tenant = admin.mint_key(Uuid::new_v4(), &[], &["read", "write", "admin"]).await;
    let other_store = admin.mint_key(t, &[victim.other_store], &["read", "write", "admin"]).await;
    let read_only = admin.mint_key(t, &[], &["read"]).await;
    let read_write = admin.mint_key(t, &[], &["read", "write"]).await;
    let (revoked, revoked_id) = mint(&admin, t, &[], &["read", "write", "admin"]).await;
    let (status, _) = admin.delete(&format!("/api/v1/admin/api-keys/{revoked_id}")).await;
    assert_eq!(status, 200);
    let now = chrono::Utc::now().timestamp();
    let early = jwt(json!({"sub": t.to_string(), "iss": "stateset-sequencer", "aud": "stateset-api",
        "exp": now + 7200, "nbf": now + 3600, "perms": "read,write,admin"}));
    let no_issuer =
        jwt(json!({"sub": t.to_string(), "aud": "stateset-api", "exp": now + 600, "perms": "read,write,admin"}));
    let no_audience =
        jwt(json!({"sub": t.to_string(), "iss": "stateset-sequencer", "exp": now + 600, "perms": "read,write,admin"}));

    let routes = route_table();
    let mut checked = 0;
    for route in &routes {
        if route.access == Access::Public {
            continue;
        }
        let (path, body) = victim.request(route);
        let narrower = match route.access {
            Access::Stream(Perm::Write) | Access::Tenant(Perm::Write) => Some(&read_only),
            Access::Stream(Perm::Admin) | Access::Tenant(Perm::Admin) | Access::Filtered | Access::Global => {
                Some(&read_write)
            }
            _ => None,
        };
        let mut hostile: Vec<(&str, String)> = vec![
            ("a revoked key", format!("ApiKey {revoked}")),
            ("a not-yet-valid JWT", format!("Bearer {early}")),
            ("a JWT without iss", format!("Bearer {no_issuer}")),
            ("a JWT without aud", format!("Bearer {no_audience}")),
        ];
        // NB: agent routes are checked against other agents and tenants in tests/clients.rs.
        if !matches!(route.access, Access::AnyCaller | Access::Agent) {
            hostile.push(("another tenant's admin", format!("ApiKey {other_tenant}")));
        }
        if matches!(
            route.access,
            Access::Stream(_)
                | Access::PublicIfListed
                | Access::Tenant(Perm::Admin)
                | Access::Filtered
                | Access::Global
        ) {
            hostile.push(("another store's admin", format!("ApiKey {other_store}")));
        }
        if let Some(key) = narrower {
            hostile.push(("a narrower permission", format!("ApiKey {key}")));
        }
        for (who, auth) in hostile {
            let (status, text) = send(&server, &route.method, &path, &auth, body.as_ref()).await;
            let what = format!("{} {} with {who}: {status} {text}", route.method, route.path);
            assert!(!text.contains("No such route"), "{what}: the route table and the router disagree");
            if status == 503 && text.contains("ANCHORING_NOT_CONFIGURED") {
                continue; // the route is off in this server: it answers nothing about anyone
            }
            if route.access == Access::Filtered && status == 200 {
                for marker in victim.secrets() {
                    assert!(!text.contains(&marker), "{what}: shows the victim's {marker}");
                }
                continue;
            }
            assert!(matches!(status, 401 | 403 | 404), "{what}");
            let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(error["error"]["code"].is_string(), "{what}: not the JSON error shape");
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} routes were checked");

    // Nothing of the victim's changed under all that.
    let (_, letter) = admin.get(&format!("/api/v1/admin/dead-letters/{}", victim.dead_letter)).await;
    assert_eq!(letter["status"], "pending", "{letter}");
    let (_, head) = admin.get(&format!("/api/v1/ves/head?tenant_id={t}&store_id={}", victim.store)).await;
    assert_eq!(head["head_sequence"].as_i64().or(head["head"].as_i64()), Some(3), "{head}");
    let (_, keys) = admin.get("/api/v1/admin/api-keys").await;
    let key = keys["keys"].as_array().unwrap().iter().find(|k| k["id"] == json!(victim.key_id)).unwrap().clone();
    assert_eq!(key["active"], true, "{key}");
    let (_, status) = admin.get(&format!("/api/v1/admin/status?streams=true&tenant_id={t}")).await;
    assert_eq!(status["ingestion"]["pausedStreams"], 0, "{status}");

    // And the victim's own admin reaches every one of these routes (so the refusals above were the
    // boundary, not a malformed request).
    let own = admin.mint_key(t, &[victim.store], &["read", "write", "admin"]).await;
    let tenant_admin = admin.mint_key(t, &[], &["read", "write", "admin"]).await;
    let bootstrap = ADMIN_KEY.to_string();
    for route in &routes {
        let (path, body) = victim.request(route);
        let key = match route.access {
            Access::Tenant(_) | Access::Agent => &tenant_admin,
            Access::Global => &bootstrap,
            _ => &own,
        };
        let (status, text) = send(&server, &route.method, &path, &format!("ApiKey {key}"), body.as_ref()).await;
        assert!(
            !matches!(status, 401 | 403 | 405) && status < 500 || status == 503 || status == 501,
            "{} {} with the owner's key: {status} {text}",
            route.method,
            route.path
        );
    }
}

#[tokio::test]
async fn a_stream_listed_for_public_read_opens_its_log_routes_to_anyone_and_nothing_else() {
    let server = TestServer::start().await;
    let victim = Victim::create(&Api::admin(&server)).await;
    let listed = format!("{}/{}", victim.tenant, victim.store);
    let server = TestServer::start_on(server.stop().await, &[("TLOG_PUBLIC_READ", listed.as_str())]).await;
    let anonymous = |method: &Method, path: &str, body: Option<&Value>| {
        let mut req = reqwest::Client::new().request(method.clone(), server.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        async move {
            let resp = req.send().await.expect("request");
            (resp.status().as_u16(), resp.text().await.unwrap_or_default())
        }
    };
    let mut opened = 0;
    for route in route_table() {
        if route.access == Access::Public {
            continue;
        }
        let (path, body) = victim.request(&route);
        let what = format!("{} {} without a credential", route.method, route.path);
        let (status, text) = anonymous(&route.method, &path, body.as_ref()).await;
        if route.access == Access::PublicIfListed {
            assert!(!matches!(status, 401 | 403) && status < 500, "{what}, listed stream: {status} {text}");
            opened += 1;
        } else {
            assert_eq!(status, 401, "{what}, listed stream: {text}");
        }
        // Another store of the same tenant is not listed: everything needs a credential, as before.
        let (store, other) = (victim.store.to_string(), victim.other_store.to_string());
        let body = body.map(|b| serde_json::from_str::<Value>(&b.to_string().replace(&store, &other)).unwrap());
        let (status, text) = anonymous(&route.method, &path.replace(&store, &other), body.as_ref()).await;
        assert_eq!(status, 401, "{what}, unlisted stream of the same tenant: {text}");
    }
    assert_eq!(opened, 5, "checkpoint, tiles, two proofs and the bundle");
}

#[tokio::test]
async fn a_store_scoped_admin_cannot_mint_or_revoke_wider_keys_nor_see_other_stores() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let t = Uuid::new_v4();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let scoped = admin.with_key(&admin.mint_key(t, &[a], &["read", "write", "admin"]).await);
    let (status, body) =
        scoped.post("/api/v1/admin/api-keys", json!({"tenantId": t, "storeIds": [], "permissions": ["read"]})).await;
    assert_eq!(status, 403, "a tenant-wide key: {body}");
    let (status, body) = scoped
        .post("/api/v1/admin/api-keys", json!({"tenantId": t, "storeIds": [a, b], "permissions": ["read"]}))
        .await;
    assert_eq!(status, 403, "a key over another store too: {body}");
    let (status, body) =
        scoped.post("/api/v1/admin/api-keys", json!({"tenantId": t, "storeIds": [a], "permissions": ["read"]})).await;
    assert_eq!(status, 201, "a narrower key: {body}");
    let narrower = body["id"].as_str().unwrap().to_string();
    let reader = admin.with_key(&admin.mint_key(t, &[a], &["read", "write"]).await);
    let (status, _) = reader
        .post("/api/v1/admin/api-keys", json!({"tenantId": t, "storeIds": [a], "permissions": ["read", "admin"]}))
        .await;
    assert_eq!(status, 403, "a non-admin cannot mint");

    let (wide, wide_id) = mint(&admin, t, &[], &["read"]).await;
    let (status, _) = scoped.delete(&format!("/api/v1/admin/api-keys/{wide_id}")).await;
    assert_eq!(status, 404, "a wider key cannot be revoked");
    let (_, mine) = scoped.get("/api/v1/admin/api-keys").await;
    assert!(!mine.to_string().contains(&wide_id), "a wider key is not listed: {mine}");
    let still = admin.with_key(&wide).get(&format!("/api/v1/head?tenant_id={t}&store_id={b}")).await.0;
    assert_eq!(still, 200, "the wider key still works");
    let (status, _) = scoped.delete(&format!("/api/v1/admin/api-keys/{narrower}")).await;
    assert_eq!(status, 200, "a narrower key can be revoked");

    let (status, _) = scoped.post(&format!("/api/v1/admin/streams/{t}/{b}/pause"), json!({})).await;
    assert_eq!(status, 403, "another store cannot be paused");
    let (status, _) = scoped.post("/api/v1/admin/verify", json!({"tenantId": t, "storeId": b})).await;
    assert_eq!(status, 403, "another store cannot be verified");
    admin.post(&format!("/api/v1/admin/streams/{t}/{b}/pause"), json!({"reason": "x"})).await;
    let (_, status) = scoped.get("/api/v1/admin/status?streams=true").await;
    assert_eq!(status["ingestion"]["pausedStreams"], 0, "{status}");
    assert!(!status.to_string().contains(&b.to_string()), "{status}");
    let (_, status) =
        admin.with_key(&admin.mint_key(Uuid::new_v4(), &[], &["admin"]).await).get("/api/v1/admin/status").await;
    assert_eq!(status["ingestion"]["pausedStreams"], 0, "another tenant's admin counts no paused stream: {status}");
}

#[tokio::test]
async fn a_refused_event_reusing_another_tenants_dead_lettered_event_id_leaves_that_dead_letter_alone() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let victim = Agent::random();
    let intruder = Agent::random();
    let event_id = Uuid::new_v4();
    let original = victim.builder().event_id(event_id).payload(json!({"delta": 1})).sign(&victim.key);
    let (status, body) = admin.ingest(victim.agent_id, std::slice::from_ref(&original)).await;
    assert_eq!(status, 200, "{body}");
    let store = &server.state.store;
    let stream_a = victim.stream();
    let before = store.dead_letter_in_stream(stream_a, event_id).await.unwrap().expect("the victim's dead letter");

    let squat = intruder.builder().event_id(event_id).payload(json!({"evil": true})).sign(&intruder.key);
    let (status, body) = admin.ingest(intruder.agent_id, std::slice::from_ref(&squat)).await;
    assert_eq!(status, 200, "{body}");
    let after = store.dead_letter_in_stream(stream_a, event_id).await.unwrap().expect("still there");
    assert_eq!(after.payload, before.payload);
    assert_eq!(after.retry_count, before.retry_count);
    assert_eq!(after.updated_at, before.updated_at);
    let stream_b = intruder.stream();
    assert!(store.dead_letter_in_stream(stream_b, event_id).await.unwrap().is_some(), "the intruder has its own");

    admin.register_key(&victim).await;
    let victim_admin = admin.with_key(&admin.mint_key(victim.tenant_id, &[victim.store_id], &["admin"]).await);
    let (status, body) = victim_admin.post(&format!("/api/v1/admin/dead-letters/{}/retry", before.id), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "sequenced", "{body}");
    let head = |a: &Agent| format!("/api/v1/head?tenant_id={}&store_id={}", a.tenant_id, a.store_id);
    let (_, a) = admin.get(&head(&victim)).await;
    let (_, b) = admin.get(&head(&intruder)).await;
    assert!(a.to_string().contains(":1"), "the retry wrote into the victim's stream: {a}");
    assert!(!b.to_string().contains(":1"), "nothing was written into the intruder's stream: {b}");
    let (_, events) =
        admin.get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}", victim.tenant_id, victim.store_id)).await;
    assert!(events.to_string().contains("\"delta\":1"), "the victim's own envelope was replayed: {events}");
}

#[tokio::test]
async fn verification_runs_as_a_background_job_with_progress_and_findings() {
    let server = TestServer::start().await;
    let admin = Api::admin(&server);
    let agent = Agent::random();
    admin.register_key(&agent).await;
    for n in 0..3 {
        let other = Agent { store_id: Uuid::new_v4(), ..agent.clone() };
        let (status, _) = admin.ingest(other.agent_id, &[other.event(n)]).await;
        assert_eq!(status, 200);
    }
    let (status, job) = admin.post("/api/v1/admin/verify/jobs", json!({"tenantId": agent.tenant_id})).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["streamsTotal"], 3, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = admin.finished_verify_job(&id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["streamsChecked"], 3, "{done}");
    assert_eq!(done["report"]["eventsChecked"], 3, "{done}");
    assert_eq!(done["report"]["ok"], true, "{done}");
    let stranger = admin.with_key(&admin.mint_key(Uuid::new_v4(), &[], &["admin"]).await);
    assert_eq!(stranger.get(&format!("/api/v1/admin/verify/jobs/{id}")).await.0, 404);
}

#[tokio::test]
async fn a_jwt_must_name_issuer_and_audience_and_is_refused_before_its_not_before_time() {
    let server = TestServer::start_with(&[("JWT_SECRET", JWT_SECRET)]).await;
    let t = Uuid::new_v4();
    let s = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let base = json!({"sub": t.to_string(), "iss": "stateset-sequencer", "aud": "stateset-api", "exp": now + 600,
        "perms": "read"});
    let path = format!("/api/v1/head?tenant_id={t}&store_id={s}");
    let status = |token: String| {
        let url = server.url(&path);
        async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(jwt(base.clone())).await, 200);
    for field in ["iss", "aud"] {
        let mut claims = base.clone();
        claims.as_object_mut().unwrap().remove(field);
        assert_eq!(status(jwt(claims)).await, 401, "without {field}");
    }
    let mut early = base.clone();
    early["nbf"] = json!(now + 3600);
    assert_eq!(status(jwt(early)).await, 401, "before nbf");
    let mut ready = base;
    ready["nbf"] = json!(now - 10);
    assert_eq!(status(jwt(ready)).await, 200, "after nbf");
}
