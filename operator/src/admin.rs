//! Typed client of the sequencer's admin API, as the operator uses it.
//!
//! It speaks the contract of the sequencer's admin endpoints (status, anchor retry, dead-letter
//! replay, stream verification): `Authorization: ApiKey <key>`, JSON bodies, errors shaped
//! `{"error":{"code","message"}}`. Response types tolerate unknown and missing fields, so a newer
//! sequencer does not break an older operator. The API key never appears in `Debug` output, logs
//! or errors.
//!
//! Key rotation: a [`KeyRing`] remembers, in memory only, the previous value of each admin key
//! Secret the operator read. A client made after a rotation sends the new key and, when a pod
//! still running with the old one answers 401, repeats the call once with the previous key (a 401
//! is answered before the request does anything, so repeating it cannot run an action twice).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The admin API key. `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key read from its Secret.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    fn header_value(&self) -> String {
        format!("ApiKey {}", self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// The admin keys read so far, per Secret key: the current value and the one before it. Held in
/// this process's memory only; never written to any object, log or status.
#[derive(Default)]
pub struct KeyRing {
    seen: Mutex<HashMap<String, (ApiKey, Option<ApiKey>)>>,
}

impl KeyRing {
    /// Records `current` as the value of `slot` (namespace/secret/key) and returns it with the
    /// previous distinct value, if this process saw one.
    pub fn rotate(&self, slot: &str, current: ApiKey) -> (ApiKey, Option<ApiKey>) {
        let mut seen = self.seen.lock().expect("key ring lock");
        let entry = match seen.remove(slot) {
            Some((last, previous)) if last == current => (last, previous),
            Some((last, _)) => (current, Some(last)),
            None => (current, None),
        };
        seen.insert(slot.to_string(), entry.clone());
        entry
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyRing(<redacted>)")
    }
}

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The sequencer could not be reached or did not answer in time.
    #[error("admin API at {url} unreachable: {message}")]
    Transport { url: String, message: String },

    /// The sequencer answered with an error status.
    #[error("admin API answered {status} {code}: {message}")]
    Api { status: u16, code: String, message: String },

    /// The sequencer answered 2xx with a body the operator cannot read.
    #[error("admin API at {url} answered an unreadable body: {message}")]
    Decode { url: String, message: String },
}

impl AdminError {
    /// Whether trying again later can help: the sequencer was unreachable, overloaded, or said so
    /// (5xx, including 503 while the anchoring circuit breaker is open, and 429). A 4xx other than
    /// 408 and 429 is the sequencer refusing the request itself; repeating it changes nothing.
    pub fn is_transient(&self) -> bool {
        match self {
            AdminError::Transport { .. } => true,
            AdminError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            AdminError::Decode { .. } => false,
        }
    }

    /// The HTTP status, when the sequencer answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `GET /api/v1/admin/status`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AdminStatus {
    pub version: Option<String>,
    pub schema_version: Option<i64>,
    pub database: Option<DatabaseStatus>,
    pub dead_letters: Option<DeadLetterStatus>,
    pub anchoring: Option<AnchoringStatus>,
    pub ingestion: Option<IngestionStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DatabaseStatus {
    pub connected: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DeadLetterStatus {
    pub pending: Option<u64>,
    pub by_reason: BTreeMap<String, u64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AnchoringStatus {
    pub enabled: Option<bool>,
    /// The worker leader's breaker state (whichever replica answers), or the answering replica's
    /// own when no leader has reported.
    pub circuit_state: Option<String>,
    pub unanchored_commitments: Option<u64>,
    pub oldest_unanchored_age_seconds: Option<u64>,
    /// `leader` or `local`: whose breaker `circuit_state` is.
    pub reported_by: Option<String>,
    /// Whether the leader's last report is older than a few report intervals (no live leader).
    pub stale: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct IngestionStatus {
    pub paused_streams: Option<u64>,
}

/// `POST /api/v1/ves/anchor` answer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct AnchorResponse {
    pub batch_id: Option<String>,
    pub status: String,
    pub chain_tx_hash: Option<String>,
}

/// Which dead letters a replay takes: `{"ids":[...]}` or `{"filter":{...}}`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ReplaySelector {
    Ids(Vec<String>),
    Filter(ReplayFilter),
}

/// Filter of a replay; absent criteria are left out of the body.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplayFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/admin/dead-letters/retry` answer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplayResponse {
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub results: Vec<ReplayItem>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplayItem {
    pub id: String,
    pub event_id: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub sequence_number: Option<u64>,
}

/// `POST /api/v1/admin/verify` answer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VerifyResponse {
    pub ok: bool,
    pub streams_checked: u64,
    pub events_checked: u64,
    pub findings: Vec<Finding>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Finding {
    pub kind: String,
    pub tenant_id: Option<String>,
    pub store_id: Option<String>,
    pub sequence_number: Option<u64>,
    pub detail: String,
}

/// Answer of a stream pause or resume.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamAnswer {
    pub tenant_id: Option<String>,
    pub store_id: Option<String>,
    pub paused: bool,
}

/// A commitment as `GET /api/v1/ves/commitments/{batch_id}` and the correct route answer it (snake case).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct CommitmentAnswer {
    pub batch_id: Option<String>,
    pub corrects_batch_id: Option<String>,
    pub superseded_by: Option<String>,
}

/// Which dead letters a purge deletes; absent criteria are left out of the body.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PurgeFilter {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/admin/dead-letters/purge` answer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PurgeAnswer {
    pub deleted: u64,
}

/// `POST /api/v1/admin/maintenance/*` answer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct MaintenanceAnswer {
    pub tables: Vec<String>,
    pub terminated: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Most bytes of a non-JSON error body quoted in an error message.
const MAX_QUOTED_BODY: usize = 200;

/// A client of one sequencer's admin API.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    base_url: String,
    key: ApiKey,
    /// The key before a rotation, tried once when `key` is answered 401.
    previous_key: Option<ApiKey>,
}

impl AdminClient {
    /// A client of the sequencer at `base_url` (`http://host:port`, no trailing path) using `key`.
    pub fn new(http: reqwest::Client, base_url: impl Into<String>, key: ApiKey) -> Self {
        Self { http, base_url: base_url.into().trim_end_matches('/').to_string(), key, previous_key: None }
    }

    /// Also tries `previous` when a pod answers 401 to the current key (pods not yet rolled).
    pub fn with_previous_key(mut self, previous: Option<ApiKey>) -> Self {
        self.previous_key = previous;
        self
    }

    /// A shared HTTP client with the operator's connection timeout; request timeouts are per call.
    pub fn http_client() -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("sequencer-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client without TLS always builds")
    }

    /// Reads the admin status summary.
    pub async fn status(&self, timeout: Duration) -> Result<AdminStatus, AdminError> {
        self.call(reqwest::Method::GET, "/api/v1/admin/status", None::<&()>, timeout).await
    }

    /// Re-sends the anchor transaction of batch `batch_id`.
    pub async fn anchor_retry(&self, batch_id: &str, timeout: Duration) -> Result<AnchorResponse, AdminError> {
        let body = serde_json::json!({ "batch_id": batch_id });
        self.call(reqwest::Method::POST, "/api/v1/ves/anchor", Some(&body), timeout).await
    }

    /// Replays the dead letters `selector` chooses.
    pub async fn replay_dead_letters(
        &self,
        selector: &ReplaySelector,
        timeout: Duration,
    ) -> Result<ReplayResponse, AdminError> {
        self.call(reqwest::Method::POST, "/api/v1/admin/dead-letters/retry", Some(selector), timeout).await
    }

    /// Verifies the stream of `tenant_id` and `store_id`.
    pub async fn verify_stream(
        &self,
        tenant_id: &str,
        store_id: &str,
        receipt_keys: Option<&[String]>,
        timeout: Duration,
    ) -> Result<VerifyResponse, AdminError> {
        let mut body = serde_json::json!({ "tenantId": tenant_id, "storeId": store_id });
        if let Some(keys) = receipt_keys {
            body["receiptKeys"] = serde_json::json!(keys);
        }
        self.call(reqwest::Method::POST, "/api/v1/admin/verify", Some(&body), timeout).await
    }

    /// Pauses ingestion of one stream.
    pub async fn pause_stream(
        &self,
        tenant_id: &str,
        store_id: &str,
        reason: Option<&str>,
        timeout: Duration,
    ) -> Result<StreamAnswer, AdminError> {
        let path = format!("/api/v1/admin/streams/{tenant_id}/{store_id}/pause");
        let body = serde_json::json!({ "reason": reason });
        self.call(reqwest::Method::POST, &path, Some(&body), timeout).await
    }

    /// Resumes ingestion of one stream.
    pub async fn resume_stream(
        &self,
        tenant_id: &str,
        store_id: &str,
        timeout: Duration,
    ) -> Result<StreamAnswer, AdminError> {
        let path = format!("/api/v1/admin/streams/{tenant_id}/{store_id}/resume");
        self.call(reqwest::Method::POST, &path, None::<&()>, timeout).await
    }

    /// Creates the correcting commitment of batch `batch_id`.
    pub async fn correct_commitment(
        &self,
        batch_id: &str,
        reason: &str,
        timeout: Duration,
    ) -> Result<CommitmentAnswer, AdminError> {
        let path = format!("/api/v1/ves/commitments/{batch_id}/correct");
        let body = serde_json::json!({ "reason": reason });
        self.call(reqwest::Method::POST, &path, Some(&body), timeout).await
    }

    /// Reads commitment `batch_id`.
    pub async fn commitment(&self, batch_id: &str, timeout: Duration) -> Result<CommitmentAnswer, AdminError> {
        let path = format!("/api/v1/ves/commitments/{batch_id}");
        self.call(reqwest::Method::GET, &path, None::<&()>, timeout).await
    }

    /// Deletes the dead letters `filter` selects.
    pub async fn purge_dead_letters(&self, filter: &PurgeFilter, timeout: Duration) -> Result<PurgeAnswer, AdminError> {
        self.call(reqwest::Method::POST, "/api/v1/admin/dead-letters/purge", Some(filter), timeout).await
    }

    /// VACUUM ANALYZE of `tables` (the sequencer's default set when None).
    pub async fn vacuum(&self, tables: Option<&[String]>, timeout: Duration) -> Result<MaintenanceAnswer, AdminError> {
        let body = serde_json::json!({ "tables": tables });
        self.call(reqwest::Method::POST, "/api/v1/admin/maintenance/vacuum", Some(&body), timeout).await
    }

    /// Terminates connections to the database idle longer than `seconds`.
    pub async fn terminate_idle_connections(
        &self,
        seconds: u32,
        timeout: Duration,
    ) -> Result<MaintenanceAnswer, AdminError> {
        let body = serde_json::json!({ "idleLongerThanSeconds": seconds });
        let path = "/api/v1/admin/maintenance/terminate-idle-connections";
        self.call(reqwest::Method::POST, path, Some(&body), timeout).await
    }

    async fn call<B: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, AdminError> {
        match self.call_with(&self.key, method.clone(), path, body, timeout).await {
            Err(AdminError::Api { status: 401, .. }) if self.previous_key.is_some() => {
                let previous = self.previous_key.as_ref().expect("checked above");
                self.call_with(previous, method, path, body, timeout).await
            }
            other => other,
        }
    }

    async fn call_with<B: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        key: &ApiKey,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, AdminError> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self
            .http
            .request(method, &url)
            .header(reqwest::header::AUTHORIZATION, key.header_value())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |e: reqwest::Error| AdminError::Transport {
            url: url.clone(),
            // NB: reqwest's Display of a timeout or connect error names the URL, never headers.
            message: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => {
                    AdminError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message }
                }
                Err(_) => AdminError::Api {
                    status: status.as_u16(),
                    code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
                    message: quote_body(&bytes),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| AdminError::Decode { url: url.clone(), message: e.to_string() })
    }
}

fn quote_body(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! The client against a small local stub of the admin API (axum on an ephemeral port): the exact
    //! requests each call sends, and answers a real sequencer does not readily give (sections missing,
    //! an error page, no answer at all). The same calls against a real sequencer are in
    //! `tests/admin_client_against_sequencer.rs`.

    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{Value, json};

    use super::*;

    const KEY: &str = "ss_test_admin_key";

    /// Path, Authorization header and body of one request.
    type Recorded = (String, Option<String>, Value);

    #[derive(Clone, Default)]
    struct Seen {
        requests: Arc<Mutex<Vec<Recorded>>>,
    }

    impl Seen {
        fn record(&self, path: &str, headers: &HeaderMap, body: Value) {
            let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
            self.requests.lock().unwrap().push((path.to_string(), auth, body));
        }
        fn all(&self) -> Vec<Recorded> {
            self.requests.lock().unwrap().clone()
        }
    }

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn client(base: &str) -> AdminClient {
        AdminClient::new(AdminClient::http_client(), base, ApiKey::new(KEY))
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn status_is_read_with_the_api_key_and_unknown_fields_are_ignored() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/api/v1/admin/status",
                get(|State(seen): State<Seen>, headers: HeaderMap| async move {
                    seen.record("/api/v1/admin/status", &headers, Value::Null);
                    Json(json!({
                        "version": "0.1.0", "schemaVersion": 3, "futureField": {"x": 1},
                        "database": {"connected": true, "pool": {"size": 10, "idle": 8, "inUse": 2, "waiting": 0, "max": 20}},
                        "deadLetters": {"pending": 5, "byReason": {"invalid_signature": 3}},
                        "anchoring": {"enabled": true, "circuitState": "open", "unanchoredCommitments": 2, "oldestUnanchoredAgeSeconds": null},
                        "ingestion": {"pausedStreams": 0}
                    }))
                }),
            )
            .with_state(seen.clone());
        let status = client(&serve(router).await).status(T).await.unwrap();

        assert_eq!(status.version.as_deref(), Some("0.1.0"));
        assert_eq!(status.schema_version, Some(3));
        assert_eq!(status.dead_letters.as_ref().unwrap().pending, Some(5));
        assert_eq!(status.dead_letters.as_ref().unwrap().by_reason["invalid_signature"], 3);
        let anchoring = status.anchoring.unwrap();
        assert_eq!(anchoring.circuit_state.as_deref(), Some("open"));
        assert_eq!(anchoring.oldest_unanchored_age_seconds, None);
        assert_eq!(seen.all()[0].1.as_deref(), Some("ApiKey ss_test_admin_key"));
    }

    #[tokio::test]
    async fn a_status_with_missing_sections_still_parses() {
        let router = Router::new().route("/api/v1/admin/status", get(|| async { Json(json!({"version": "0.2.0"})) }));
        let status = client(&serve(router).await).status(T).await.unwrap();
        assert_eq!(status.version.as_deref(), Some("0.2.0"));
        assert!(status.anchoring.is_none());
    }

    #[tokio::test]
    async fn anchor_retry_posts_the_batch_id_in_snake_case() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/api/v1/ves/anchor",
                post(|State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    seen.record("/api/v1/ves/anchor", &headers, body.clone());
                    Json(json!({"batch_id": body["batch_id"], "status": "anchored", "chain_tx_hash": "0xabc"}))
                }),
            )
            .with_state(seen.clone());
        let batch = "6f1c2a70-0000-4000-8000-000000000001";
        let answer = client(&serve(router).await).anchor_retry(batch, T).await.unwrap();

        assert_eq!(answer.status, "anchored");
        assert_eq!(answer.chain_tx_hash.as_deref(), Some("0xabc"));
        assert_eq!(seen.all()[0].2, json!({"batch_id": batch}));
    }

    #[tokio::test]
    async fn replay_sends_ids_or_a_filter_with_only_the_given_criteria() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/api/v1/admin/dead-letters/retry",
                post(|State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    seen.record("retry", &headers, body);
                    Json(json!({"attempted": 2, "succeeded": 1, "failed": 1, "results": [
                        {"id": "a", "eventId": "e1", "outcome": "sequenced", "sequenceNumber": 7},
                        {"id": "b", "eventId": "e2", "outcome": "rejected", "reason": "invalid_signature"}
                    ]}))
                }),
            )
            .with_state(seen.clone());
        let client = client(&serve(router).await);

        let by_ids = client.replay_dead_letters(&ReplaySelector::Ids(vec!["a".into(), "b".into()]), T).await.unwrap();
        let filter = ReplayFilter { reason: Some("invalid_signature".into()), ..Default::default() };
        client.replay_dead_letters(&ReplaySelector::Filter(filter), T).await.unwrap();

        assert_eq!(by_ids.failed, 1);
        assert_eq!(by_ids.results[1].reason.as_deref(), Some("invalid_signature"));
        let bodies: Vec<Value> = seen.all().into_iter().map(|r| r.2).collect();
        assert_eq!(bodies[0], json!({"ids": ["a", "b"]}));
        assert_eq!(bodies[1], json!({"filter": {"reason": "invalid_signature"}}));
    }

    #[tokio::test]
    async fn verify_posts_tenant_and_store_in_camel_case_and_reads_findings() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/api/v1/admin/verify",
                post(|State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    seen.record("verify", &headers, body);
                    Json(json!({"ok": false, "streamsChecked": 1, "eventsChecked": 10, "findings": [
                        {"kind": "gap", "tenantId": "t", "storeId": "s", "sequenceNumber": 4, "detail": "4 missing"}
                    ]}))
                }),
            )
            .with_state(seen.clone());
        let answer = client(&serve(router).await).verify_stream("t", "s", None, T).await.unwrap();

        assert!(!answer.ok);
        assert_eq!(answer.findings[0].sequence_number, Some(4));
        assert_eq!(seen.all()[0].2, json!({"tenantId": "t", "storeId": "s"}));
    }

    #[tokio::test]
    async fn a_json_error_keeps_its_code_and_a_503_is_transient_but_a_404_is_not() {
        let router = Router::new().route(
            "/api/v1/ves/anchor",
            post(|Json(body): Json<Value>| async move {
                if body["batch_id"] == "missing" {
                    (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": "unknown batch"}})))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"error": {"code": "circuit_open", "message": "anchoring paused"}})),
                    )
                }
            }),
        );
        let client = client(&serve(router).await);

        let missing = client.anchor_retry("missing", T).await.unwrap_err();
        let open = client.anchor_retry("other", T).await.unwrap_err();

        assert!(matches!(&missing, AdminError::Api { status: 404, code, .. } if code == "not_found"));
        assert!(!missing.is_transient());
        assert!(matches!(&open, AdminError::Api { status: 503, code, .. } if code == "circuit_open"));
        assert!(open.is_transient());
    }

    #[tokio::test]
    async fn a_non_json_error_body_is_quoted_briefly() {
        let router =
            Router::new().route("/api/v1/admin/status", get(|| async { (StatusCode::BAD_GATEWAY, "x".repeat(1000)) }));
        let error = client(&serve(router).await).status(T).await.unwrap_err();
        let AdminError::Api { status, message, .. } = &error else { panic!("expected an API error, got {error:?}") };
        assert_eq!(*status, 502);
        assert!(message.chars().count() <= MAX_QUOTED_BODY + 1);
        assert!(error.is_transient());
    }

    #[tokio::test]
    async fn an_unreachable_sequencer_is_a_transient_error_that_does_not_reveal_the_key() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = client(&format!("http://{addr}")).status(T).await.unwrap_err();

        assert!(matches!(error, AdminError::Transport { .. }));
        assert!(error.is_transient());
        assert!(!format!("{error} {error:?}").contains(KEY));
    }

    #[test]
    fn the_key_ring_keeps_the_previous_value_of_a_rotated_key_and_forgets_nothing_else() {
        let ring = KeyRing::default();
        assert_eq!(ring.rotate("ns/admin/key", ApiKey::new("old")), (ApiKey::new("old"), None));
        assert_eq!(ring.rotate("ns/admin/key", ApiKey::new("old")), (ApiKey::new("old"), None));
        let rotated = ring.rotate("ns/admin/key", ApiKey::new("new"));
        assert_eq!(rotated, (ApiKey::new("new"), Some(ApiKey::new("old"))));
        assert_eq!(ring.rotate("ns/admin/key", ApiKey::new("new")), rotated, "read again: still both");
        assert_eq!(ring.rotate("ns/other/key", ApiKey::new("x")).1, None);
        assert!(!format!("{ring:?}").contains("old"));
    }

    #[tokio::test]
    async fn a_401_is_repeated_once_with_the_previous_key_and_never_otherwise() {
        let seen = Seen::default();
        let router = Router::new()
            .route(
                "/api/v1/admin/status",
                get(|State(seen): State<Seen>, headers: HeaderMap| async move {
                    seen.record("status", &headers, Value::Null);
                    if headers["authorization"] == "ApiKey old" {
                        (StatusCode::OK, Json(json!({"version": "0.1.0"})))
                    } else {
                        (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "INVALID_API_KEY", "message": "no"}})))
                    }
                }),
            )
            .with_state(seen.clone());
        let base = serve(router).await;
        let rotated = AdminClient::new(AdminClient::http_client(), &base, ApiKey::new("new"))
            .with_previous_key(Some(ApiKey::new("old")));
        assert_eq!(rotated.status(T).await.unwrap().version.as_deref(), Some("0.1.0"));
        let auths: Vec<_> = seen.all().into_iter().map(|r| r.1.unwrap()).collect();
        assert_eq!(auths, vec!["ApiKey new", "ApiKey old"]);

        let alone = AdminClient::new(AdminClient::http_client(), &base, ApiKey::new("new"));
        assert!(matches!(alone.status(T).await, Err(AdminError::Api { status: 401, .. })));
        assert_eq!(seen.all().len(), 3, "without a previous key a 401 is not repeated");
    }

    #[test]
    fn the_api_key_is_redacted_in_debug_output() {
        let client = AdminClient::new(AdminClient::http_client(), "http://x", ApiKey::new(KEY));
        assert!(!format!("{client:?}").contains(KEY));
    }
}
