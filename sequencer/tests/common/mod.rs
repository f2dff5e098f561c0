//! Shared helpers for the sequencer's integration tests: a signing agent, an HTTP client that speaks
//! the API, and a way to run the real binaries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::{EventBuilder, VesEventEnvelope};

#[allow(unused_imports)]
pub use sequencer::testing::{ADMIN_KEY, SEQUENCER_SEED_HEX, TestDb, TestServer};

/// The golden vectors, from the repository's copy.
pub fn golden() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/ves-golden.json"))
        .expect("testdata/ves-golden.json");
    serde_json::from_str(&text).expect("golden JSON")
}

/// A thin API client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Self {
        Api { base: base.into(), key: key.into(), http: reqwest::Client::new() }
    }

    pub fn admin(server: &TestServer) -> Self {
        Api::new(server.base_url.clone(), ADMIN_KEY)
    }

    pub fn with_key(&self, key: &str) -> Self {
        Api { base: self.base.clone(), key: key.to_string(), http: self.http.clone() }
    }

    /// A request to `path` carrying this API key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("ApiKey {}", self.key))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// A background verification once it has stopped running (polled; fails after 30 s).
    pub async fn finished_verify_job(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, job) = self.get(&format!("/api/v1/admin/verify/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if job["state"] != "running" {
                return job;
            }
            assert!(std::time::Instant::now() < deadline, "the job did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Mints an API key and returns it.
    pub async fn mint_key(&self, tenant_id: Uuid, store_ids: &[Uuid], permissions: &[&str]) -> String {
        let (status, body) = self
            .post(
                "/api/v1/admin/api-keys",
                json!({"tenantId": tenant_id, "storeIds": store_ids, "permissions": permissions}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["apiKey"].as_str().expect("apiKey").to_string()
    }

    /// Registers an agent's signing key.
    pub async fn register_key(&self, agent: &Agent) {
        let (status, body) = self
            .post(
                "/api/v1/agents/keys",
                json!({
                    "tenantId": agent.tenant_id,
                    "agentId": agent.agent_id,
                    "keyId": agent.key_id,
                    "publicKey": format!("0x{}", hex::encode(agent.key.verifying_key().to_bytes())),
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Ingests signed events for an agent.
    pub async fn ingest(&self, agent_id: Uuid, events: &[VesEventEnvelope]) -> (u16, Value) {
        self.post("/api/v1/ves/events/ingest", json!({"agentId": agent_id, "events": events})).await
    }
}

/// An agent with a signing key, writing to one stream.
#[derive(Clone)]
pub struct Agent {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub agent_id: Uuid,
    pub key_id: u32,
    pub key: SigningKey,
}

impl Agent {
    pub fn new(tenant_id: Uuid, store_id: Uuid) -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
        Agent { tenant_id, store_id, agent_id: Uuid::new_v4(), key_id: 1, key: SigningKey::from_bytes(&seed) }
    }

    pub fn random() -> Self {
        Agent::new(Uuid::new_v4(), Uuid::new_v4())
    }

    /// The stream the agent writes to.
    pub fn stream(&self) -> sequencer::store::events::StreamKey {
        sequencer::store::events::StreamKey { tenant_id: self.tenant_id, store_id: self.store_id }
    }

    /// The golden vectors' agent.
    pub fn golden() -> Self {
        let g = golden();
        let seed: [u8; 32] = hex::decode(g["agent_key"]["ed25519_seed"].as_str().unwrap()).unwrap().try_into().unwrap();
        Agent {
            tenant_id: Uuid::parse_str(g["agent_key"]["tenant_id"].as_str().unwrap()).unwrap(),
            store_id: Uuid::parse_str("00000000-0000-0000-0000-000000000002").unwrap(),
            agent_id: Uuid::parse_str(g["agent_key"]["agent_id"].as_str().unwrap()).unwrap(),
            key_id: 1,
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn builder(&self) -> EventBuilder {
        EventBuilder::new(self.tenant_id, self.store_id, self.agent_id, self.key_id)
            .entity("InventoryItem", "WIDGET-001")
            .event_type("Adjusted")
    }

    /// A signed event with a small payload.
    pub fn event(&self, n: u64) -> VesEventEnvelope {
        self.builder().payload(json!({"delta": n})).sign(&self.key)
    }
}

/// A `stateset-sequencer` process, killed on drop.
pub struct SequencerProcess {
    pub child: Child,
    pub base_url: String,
    pub log: LogLines,
}

impl SequencerProcess {
    /// Starts the real binary on an ephemeral port and waits (by reading its log) until it listens.
    pub fn spawn(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut env = vec![
            ("DATABASE_URL", database_url),
            ("BOOTSTRAP_ADMIN_API_KEY", ADMIN_KEY),
            ("VES_SEQUENCER_SIGNING_KEY", SEQUENCER_SEED_HEX),
        ];
        env.extend_from_slice(extra_env);
        Self::spawn_with_env(&env)
    }

    /// Starts the binary with only PATH, HOST=127.0.0.1, PORT=0 and `env` set.
    pub fn spawn_with_env(env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stateset-sequencer"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn stateset-sequencer");
        let log = LogLines::follow(child.stdout.take().expect("piped stdout"));
        let line = log.wait_for(|l| l.contains("listening on http://"), Duration::from_secs(90));
        let i = line.find("listening on http://").expect("matched");
        let base_url: String =
            line[i + "listening on ".len()..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
        SequencerProcess { child, base_url, log }
    }
}

/// The lines a child process writes to stdout, as they come.
pub struct LogLines {
    rx: mpsc::Receiver<String>,
}

impl LogLines {
    pub fn follow(stdout: std::process::ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LogLines { rx }
    }

    /// The next line matching `pred`; panics when none comes within `timeout`.
    pub fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => continue,
                Err(e) => panic!("expected log line did not appear: {e}"),
            }
        }
    }
}

impl Drop for SequencerProcess {
    /// SIGTERM first, so that a sequencer on its default set-up stops the private PostgreSQL it
    /// started (SIGKILL left one running per test run); SIGKILL after 10 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) with the pid of our own child, which has not been waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A row's receipt hash in SQL: stored (before migration 0021), or derived by `ves_receipt_hash()`
/// (0020), the SQL twin of `ves::hash::receipt_hash`. The sequencer derives it in Rust
/// (`ExistingEvent::receipt_hash`); tests that hold answered receipts against the log use this one, so
/// they also hold the two formulas equal.
pub const RECEIPT_HASH_SQL: &str =
    "COALESCE(receipt_hash, ves_receipt_hash(tenant_id, store_id, event_id, sequence_number, event_signing_hash))";

/// Runs `statements` as a superuser bypassing the log's append-only triggers, to simulate damage done
/// behind the sequencer's back (a deleted or edited row).
pub async fn tamper(pool: &sqlx::PgPool, statements: &str) {
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica; {statements}; SET session_replication_role = origin;"
    )))
    .execute(&mut *conn)
    .await
    .expect("tampering statements run");
}

/// The SQL that deletes event `seq` of the agent's stream.
pub fn delete_event_sql(agent: &Agent, seq: i64) -> String {
    format!(
        "DELETE FROM events WHERE tenant_id = '{}' AND store_id = '{}' AND sequence_number = {seq}",
        agent.tenant_id, agent.store_id
    )
}

/// A verification report's findings as (kind, sequence number; 0 for a finding about no one event).
pub fn findings(report: &Value) -> Vec<(&str, i64)> {
    report["findings"]
        .as_array()
        .expect("a report lists its findings")
        .iter()
        .map(|f| (f["kind"].as_str().expect("a finding has a kind"), f["sequenceNumber"].as_i64().unwrap_or(0)))
        .collect()
}
