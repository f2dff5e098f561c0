//! The admin status is right whichever sequencer replica answers (issue 10, item 9): two
//! `stateset-sequencer` processes on one database, where only the worker leader anchors and only its
//! anchoring circuit breaker is open (its L2 RPC URL points at a closed port, the other replica's at
//! a live anvil chain). The operator's own admin client and condition function are applied to each
//! replica's answer: both say `AnchoringHealthy=False`. And a database the sequencer cannot reach
//! shows as `Degraded=True` with reason `DatabaseUnreachable`.

use std::time::{Duration, Instant};

use anchor::testing::Anvil;
use e2e::spawn::{SpawnedSequencer, ThrowawayDb, sequencer_binary};
use ed25519_dalek::SigningKey;
use secrecy::SecretString;
use sequencer_operator::admin::{AdminClient, AdminStatus, ApiKey};
use sequencer_operator::conditions::{
    AdminState, Computed, ConditionType, MigrationState, SequencerObservation, sequencer_conditions,
};
use sequencer_operator::crd::SequencerSpec;
use serde_json::json;
use uuid::Uuid;
use ves::envelope::EventBuilder;

const ADMIN_KEY: &str = "ss_e2e_leader_status_admin_key_0123456789";
const T: Duration = Duration::from_secs(10);

fn maintenance_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The spec of a Sequencer with anchoring on: what the operator computes the conditions against.
fn anchored_spec() -> SequencerSpec {
    serde_json::from_value(json!({
        "image": "ghcr.io/stateset/stateset-sequencer:test",
        "database": {"urlSecret": {"name": "db", "key": "url"}},
        "auth": {"adminApiKeySecret": {"name": "admin", "key": "key"}},
        "receiptSigningKeySecret": {"name": "signing", "key": "seed"},
        "anchoring": {
            "enabled": true,
            "rpcUrlSecret": {"name": "l2", "key": "rpc-url"},
            "privateKeySecret": {"name": "l2", "key": "private-key"},
            "chainId": 31337,
            "registryAddress": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "intervalSeconds": 60
        }
    }))
    .expect("a valid Sequencer spec")
}

/// The condition `type_` the operator computes from one admin status answer.
fn condition(status: AdminStatus, type_: ConditionType) -> Computed {
    let seen = SequencerObservation {
        deployment: None,
        migration: MigrationState::UpToDate,
        admin: AdminState::Read(status),
        monitoring: Default::default(),
    };
    sequencer_conditions(&anchored_spec(), &seen).into_iter().find(|c| c.type_ == type_).expect("condition computed")
}

fn admin(base_url: &str) -> AdminClient {
    AdminClient::new(AdminClient::http_client(), base_url, ApiKey::new(ADMIN_KEY))
}

/// Polls `check` until it returns Some, for at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(base_url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base_url}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find(|l| l.starts_with(name) && !l.starts_with('#'))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn anchoring_is_unhealthy_whichever_replica_answers_when_only_the_leaders_breaker_is_open() {
    let bin = sequencer_binary(None, false).expect("the sequencer binary");
    let db = ThrowawayDb::create(&maintenance_url()).await.expect("a throw-away database");
    let anvil = Anvil::start();
    let key = SecretString::from(Anvil::DEV_PRIVATE_KEY.to_string());
    let registry = anchor::deploy_registry(&anvil.rpc_url, &key, false).await.unwrap().to_string();
    // A port nothing listens on: the leader's chain is unreachable.
    let dead_rpc = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let env = |rpc: &str| -> Vec<(String, String)> {
        [
            ("L2_RPC_URL", rpc),
            ("SET_REGISTRY_ADDRESS", registry.as_str()),
            ("SEQUENCER_PRIVATE_KEY", Anvil::DEV_PRIVATE_KEY),
            ("L2_CHAIN_ID", "31337"),
            ("COMMIT_INTERVAL_MS", "200"),
            ("ANCHOR_INTERVAL_MS", "200"),
            ("ANCHOR_BREAKER_FAILURES", "1"),
            ("ANCHOR_RPC_TIMEOUT_MS", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let start = |rpc: &str| {
        let env = env(rpc);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        SpawnedSequencer::start_with_env(&bin, &db.url, ADMIN_KEY, false, &env).expect("the sequencer starts")
    };

    // The first process takes the worker's leadership (and publishes its view) before the second starts.
    let leader = start(&dead_rpc);
    eventually("the first process leads and publishes its anchoring view", Duration::from_secs(60), || async {
        let status = admin(&leader.base_url).status(T).await.ok()?;
        (status.anchoring?.reported_by.as_deref() == Some("leader")).then_some(())
    })
    .await;
    let follower = start(&anvil.rpc_url);
    assert_eq!(metric(&follower.base_url, "sequencer_worker_leader").await, Some(0.0), "the second one follows");

    // One event, so that the leader has a commitment to anchor (and fails to).
    let http = reqwest::Client::new();
    let auth = format!("ApiKey {ADMIN_KEY}");
    let (tenant, store, agent) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let signing = SigningKey::from_bytes(&[9u8; 32]);
    let registered = http
        .post(format!("{}/api/v1/agents/keys", follower.base_url))
        .header("authorization", &auth)
        .json(&json!({"tenantId": tenant, "agentId": agent, "keyId": 1,
                      "publicKey": hex::encode(signing.verifying_key().to_bytes())}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let event = EventBuilder::new(tenant, store, agent, 1)
        .entity("Order", "O-1")
        .event_type("Created")
        .payload(json!({"total": 10}))
        .sign(&signing);
    let ingested = http
        .post(format!("{}/api/v1/ves/events/ingest", follower.base_url))
        .header("authorization", &auth)
        .json(&json!({"agentId": agent, "events": [event]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ingested.status(), 200);

    for (who, base_url) in [("the leader", &leader.base_url), ("the follower", &follower.base_url)] {
        let healthy =
            eventually(&format!("{who} reports the leader's open breaker"), Duration::from_secs(60), || async {
                let status = admin(base_url).status(T).await.ok()?;
                let healthy = condition(status, ConditionType::AnchoringHealthy);
                (healthy.status.as_str() == "False").then_some(healthy)
            })
            .await;
        assert_eq!(healthy.reason.as_str(), "CircuitOpen", "{who}: {}", healthy.message);
    }
    // Only the leader's own breaker is open: the follower's (live chain, nothing to anchor) is closed.
    assert_eq!(metric(&leader.base_url, "sequencer_anchor_circuit_state").await, Some(2.0));
    assert_eq!(metric(&follower.base_url, "sequencer_anchor_circuit_state").await, Some(0.0));
    let answer = admin(&follower.base_url).status(T).await.unwrap().anchoring.unwrap();
    assert_eq!((answer.reported_by.as_deref(), answer.stale), (Some("leader"), Some(false)));

    leader.stop().unwrap();
    follower.stop().unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_the_sequencer_cannot_reach_shows_as_degraded_database_unreachable() {
    let bin = sequencer_binary(None, false).expect("the sequencer binary");
    let db = ThrowawayDb::create(&maintenance_url()).await.expect("a throw-away database");
    let env = [("DB_ACQUIRE_TIMEOUT_MS", "1000"), ("WORKER_ENABLED", "false")];
    let sequencer = SpawnedSequencer::start_with_env(&bin, &db.url, ADMIN_KEY, false, &env).unwrap();
    let before = admin(&sequencer.base_url).status(T).await.unwrap();
    assert_eq!(condition(before, ConditionType::Degraded).status.as_str(), "False");

    // The outage: the database refuses new connections and the existing ones are cut.
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&maintenance_url()).await.unwrap();
    let refuse = format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(refuse)).execute(&mut conn).await.unwrap();

    let degraded =
        eventually("the operator computes Degraded from the admin status", Duration::from_secs(30), || async {
            let status = admin(&sequencer.base_url).status(T).await.ok()?;
            let degraded = condition(status, ConditionType::Degraded);
            (degraded.status.as_str() == "True").then_some(degraded)
        })
        .await;
    assert_eq!(degraded.reason.as_str(), "DatabaseUnreachable", "{}", degraded.message);

    let allow = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true");
    sqlx::raw_sql(sqlx::AssertSqlSafe(allow)).execute(&mut conn).await.unwrap();
    sequencer.stop().unwrap();
    db.drop_db().await;
}
