//! Test builders and the mocked API server (compiled for tests only).
//!
//! Builders read like the spec they build: `Sequencer::test().with_replicas(3).anchoring()`.
//! The mocked API server plays one documented [`Scenario`]: the exact requests one reconcile
//! makes, in order, each checked and answered like a real API server would. A scenario ends by
//! asserting that the reconcile made no further request.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

use crate::conditions::Reason;
use crate::controller::{AdminEndpoint, Context};
use crate::crd::*;
use crate::labels::FIELD_MANAGER;
use crate::metrics::Metrics;
use crate::resources::{self, Names};

pub const NAMESPACE: &str = "payments";
pub const NAME: &str = "ledger";
pub const IMAGE: &str = "ghcr.io/stateset/stateset-sequencer:0.2.0";
pub const OLD_IMAGE: &str = "ghcr.io/stateset/stateset-sequencer:0.1.0";
pub const ADMIN_KEY_SECRET: &str = "ledger-admin";
pub const ADMIN_KEY: &str = "ss_fixture_admin_key_value";
pub const BATCH_ID: &str = "0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41";
pub const TENANT_ID: &str = "6f1c2a70-5b3e-4c8d-9e0f-1a2b3c4d5e6f";
pub const STORE_ID: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

impl Sequencer {
    /// Sequencer `payments/ledger`, one replica of [`IMAGE`], Job migrations, anchoring off.
    pub fn test() -> Self {
        let spec: SequencerSpec = serde_json::from_value(json!({
            "image": IMAGE,
            "database": {"urlSecret": {"name": "ledger-db", "key": "url"}},
            "auth": {"adminApiKeySecret": {"name": ADMIN_KEY_SECRET, "key": "key"}},
            "receiptSigningKeySecret": {"name": "ledger-signing", "key": "seed"},
        }))
        .expect("the fixture spec is valid");
        let mut seq = Sequencer::new(NAME, spec);
        seq.metadata.namespace = Some(NAMESPACE.into());
        seq.metadata.uid = Some("2d1f0a4e-8a4c-4f8e-b1a9-6f3e5c7d9b21".into());
        seq.metadata.generation = Some(1);
        seq
    }

    pub fn with_replicas(mut self, replicas: i32) -> Self {
        self.spec.replicas = replicas;
        self
    }

    pub fn with_image(mut self, image: &str) -> Self {
        self.spec.image = image.to_string();
        self
    }

    pub fn with_migrations(mut self, mode: MigrationsMode) -> Self {
        self.spec.migrations.mode = mode;
        self
    }

    pub fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    pub fn with_status(mut self, status: SequencerStatus) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_migration_retries(mut self, retries: i32) -> Self {
        self.spec.migrations.retries = retries;
        self
    }

    pub fn with_rate_limit(mut self, per_tenant_per_minute: u32) -> Self {
        self.spec.rate_limits.per_tenant_per_minute = Some(per_tenant_per_minute);
        self
    }

    /// Anchoring on, with all its Secrets and settings.
    pub fn anchoring(mut self) -> Self {
        self.spec.anchoring = AnchoringSpec {
            enabled: true,
            rpc_url_secret: Some(SecretKeyRef::new("ledger-l2", "rpc-url")),
            private_key_secret: Some(SecretKeyRef::new("ledger-l2", "private-key")),
            chain_id: Some(84532),
            registry_address: Some("0x5FbDB2315678afecb367f032d93F642f64180aa3".into()),
            interval_seconds: 60,
        };
        self
    }

    /// Marked for deletion (the garbage collector is about to remove it).
    pub fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        self
    }

    /// The Deployment the operator would apply for this Sequencer on `image`, as the API server
    /// returns it with `ready` of `replicas` pods ready and rolled out.
    pub fn live_deployment(&self, image: &str, ready: i32) -> Deployment {
        let config_hash = resources::config_hash(&resources::config_map(self));
        let mut deployment = resources::deployment(self, image, &config_hash);
        deployment.metadata.generation = Some(1);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(self.spec.replicas),
            updated_replicas: Some(self.spec.replicas),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            ..Default::default()
        });
        deployment
    }

    /// The migration Job of `spec.image`, finished with condition `type_` (`Complete`/`Failed`),
    /// or running when `type_` is None.
    pub fn live_migration_job(&self, finished: Option<(&str, &str, &str)>) -> Job {
        let mut job = resources::migration_job(self);
        job.status = Some(JobStatus {
            conditions: finished.map(|(type_, reason, message)| {
                vec![JobCondition {
                    type_: type_.to_string(),
                    status: "True".to_string(),
                    reason: Some(reason.to_string()),
                    message: Some(message.to_string()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        job
    }
}

impl SequencerAction {
    /// Action `payments/retry-anchor`: AnchorRetry of [`BATCH_ID`] against `ledger`, created now.
    pub fn test() -> Self {
        let spec: SequencerActionSpec = serde_json::from_value(json!({
            "sequencerRef": {"name": NAME},
            "anchorRetry": {"batchId": BATCH_ID},
        }))
        .expect("the fixture spec is valid");
        let mut action = SequencerAction::new("retry-anchor", spec);
        action.metadata.namespace = Some(NAMESPACE.into());
        action.metadata.uid = Some("5c0e7a9b-3d2f-4e1a-8b6c-9d0e1f2a3b4c".into());
        action.metadata.generation = Some(1);
        action.metadata.resource_version = Some("1".into());
        action.metadata.creation_timestamp = Some(Time(Timestamp::now()));
        action
    }

    /// A VerifyStream of [`TENANT_ID`]/[`STORE_ID`] instead.
    pub fn verify_stream(mut self) -> Self {
        self.metadata.name = Some("verify".into());
        self.spec.anchor_retry = None;
        self.spec.verify_stream =
            Some(VerifyStream { tenant_id: TENANT_ID.into(), store_id: STORE_ID.into(), receipt_keys: None });
        self
    }

    /// A DeadLetterReplay of the given ids instead.
    pub fn replay_ids(mut self, ids: &[&str]) -> Self {
        self.metadata.name = Some("replay".into());
        self.spec.anchor_retry = None;
        self.spec.dead_letter_replay =
            Some(DeadLetterReplay { ids: Some(ids.iter().map(|s| s.to_string()).collect()), filter: None });
        self
    }

    /// A DeadLetterReplay of everything matching `filter` instead.
    pub fn replay_filter(mut self, filter: DeadLetterFilter) -> Self {
        self.metadata.name = Some("replay".into());
        self.spec.anchor_retry = None;
        self.spec.dead_letter_replay = Some(DeadLetterReplay { ids: None, filter: Some(filter) });
        self
    }

    /// Created `seconds` ago.
    pub fn created_seconds_ago(mut self, seconds: i64) -> Self {
        let at = Timestamp::now() - SignedDuration::from_secs(seconds);
        self.metadata.creation_timestamp = Some(Time(at));
        self
    }

    /// Finished (`phase`) `seconds` ago.
    pub fn finished_seconds_ago(mut self, phase: ActionPhase, seconds: i64) -> Self {
        let at = Timestamp::now() - SignedDuration::from_secs(seconds);
        self.status = Some(SequencerActionStatus {
            phase,
            attempts: 1,
            completion_time: Some(Time(at)),
            message: Some("done".into()),
            ..Default::default()
        });
        self
    }

    pub fn with_status(mut self, status: SequencerActionStatus) -> Self {
        self.status = Some(status);
        self
    }
}

/// Secret `name` holding every key `seq` references in it, each with the value `<key>-<version>`.
pub fn fixture_secret(seq: &Sequencer, name: &str, version: &str) -> Secret {
    let data = seq
        .referenced_secret_keys()
        .into_iter()
        .filter(|r| r.name == name)
        .map(|r| {
            let value = if name == ADMIN_KEY_SECRET { ADMIN_KEY.to_string() } else { format!("{}-{version}", r.key) };
            (r.key, ByteString(value.into_bytes()))
        })
        .collect();
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NAMESPACE.into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    }
}

/// The Secret holding the admin key of the fixture Sequencer.
pub fn admin_key_secret() -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(ADMIN_KEY_SECRET.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some([("key".to_string(), ByteString(ADMIN_KEY.as_bytes().to_vec()))].into()),
        ..Default::default()
    }
}

/// A context whose client talks to the returned mocked API server, and whose admin API calls go
/// to `admin_url` (a local stub), if any.
pub fn mocked_context(admin_url: Option<String>) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let endpoint = AdminEndpoint::Fixed(admin_url.unwrap_or_else(|| "http://127.0.0.1:9".into()));
    let ctx = Context::new(client, Arc::new(Metrics::default()), endpoint, Some("test".into()));
    (Arc::new(ctx), ApiServer { handle })
}

pub fn path(kind: &str, name: &str) -> String {
    let ns = NAMESPACE;
    match kind {
        "deployment" => format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
        "job" => format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
        "jobs" => format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        "serviceaccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}"),
        "configmap" => format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
        "service" => format!("/api/v1/namespaces/{ns}/services/{name}"),
        "pdb" => format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}"),
        "secret" => format!("/api/v1/namespaces/{ns}/secrets/{name}"),
        "events" => format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        "sequencer" => {
            format!("/apis/sequencer.stateset.io/v1alpha1/namespaces/{ns}/sequencers/{name}")
        }
        "action" => {
            format!("/apis/sequencer.stateset.io/v1alpha1/namespaces/{ns}/sequenceractions/{name}")
        }
        other => panic!("no path for {other}"),
    }
}

/// One request the reconcile made, waiting for its answer.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    pub fn reply(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.send.send_response(response);
    }

    pub fn ok<T: serde::Serialize>(self, object: &T) {
        self.reply(200, &serde_json::to_value(object).unwrap());
    }

    pub fn not_found(self) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "not found", "reason": "NotFound", "code": 404
        });
        self.reply(404, &status);
    }

    /// Answers an apply with what was sent, as the API server does for a fresh object.
    pub fn echo(self) {
        let body = self.body.clone();
        self.reply(200, &body);
    }

    /// Asserts this is a server-side apply under the operator's field manager, forcing conflicts.
    pub fn assert_is_apply(&self) {
        assert_eq!(self.method, Method::PATCH, "{} should be applied", self.path);
        assert_eq!(self.content_type, "application/apply-patch+yaml", "{}", self.path);
        assert!(
            self.query.contains(&format!("fieldManager={FIELD_MANAGER}")) && self.query.contains("force=true"),
            "{} applied with query {:?}",
            self.path,
            self.query
        );
    }
}

/// The mocked API server.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

impl ApiServer {
    /// The next request; panics if the reconcile finished without making one.
    pub async fn next(&mut self) -> Call {
        let (request, send) =
            self.handle.next_request().await.expect("the reconcile ended before making the expected request");
        let (parts, body) = request.into_parts();
        crate::rbac_contract::record(&parts.method, parts.uri.path(), parts.uri.query().unwrap_or_default());
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if parts.method == Method::PATCH {
            crate::rbac_contract::record_owner_reference(&body, NAMESPACE);
            let apply = parts.headers.get("content-type").is_some_and(|v| v == "application/apply-patch+yaml");
            if apply {
                crate::rbac_contract::record_apply_may_create(parts.uri.path());
            }
        }
        Call {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            body,
            send,
        }
    }

    /// The next request, which must be `method` on `path`.
    pub async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected request (query {:?}, body {})",
            call.query,
            call.body
        );
        call
    }

    /// The next request, which must be an apply to `path`.
    pub async fn expect_apply(&mut self, path: &str) -> Call {
        let call = self.expect(Method::PATCH, path).await;
        call.assert_is_apply();
        call
    }

    /// The next request, which must publish an event with `reason`; returns the event.
    pub async fn expect_event(&mut self, reason: Reason) -> Value {
        let call = self.expect(Method::POST, &path("events", "")).await;
        assert_eq!(call.body["reason"], reason.as_str(), "event {}", call.body);
        let event = call.body.clone();
        call.reply(201, &event);
        event
    }

    /// Asserts the reconcile made no further request (the client was dropped).
    pub async fn done(mut self) {
        if let Some((request, _)) = self.handle.next_request().await {
            panic!("unexpected extra request {} {}", request.method(), request.uri());
        }
    }

    /// Plays `scenario` in the background; await the handle after the reconcile returned and
    /// the context was dropped.
    pub fn run(self, scenario: Scenario) -> tokio::task::JoinHandle<()> {
        tokio::spawn(scenario.play(self))
    }

    /// The referenced Secrets read (for the pod template's secrets hash), in name order; each
    /// answered by `secret_of(name)` (None: 404).
    pub async fn secrets_read_with(&mut self, seq: &Sequencer, secret_of: impl Fn(&str) -> Option<Secret>) {
        for name in seq.referenced_secrets() {
            let call = self.expect(Method::GET, &path("secret", &name)).await;
            match secret_of(&name) {
                Some(secret) => call.ok(&secret),
                None => call.not_found(),
            }
        }
    }

    /// The referenced Secrets read, each holding the fixture values of its keys.
    pub async fn secrets_read(&mut self, seq: &Sequencer) {
        let seq_for = seq.clone();
        self.secrets_read_with(seq, |name| Some(fixture_secret(&seq_for, name, "v1"))).await;
    }

    /// Secrets read; ServiceAccount and ConfigMap each read (absent) and applied: what comes before
    /// a migration Job. Returns the applied ConfigMap's data.
    pub async fn secrets_and_job_prerequisites_applied(&mut self, seq: &Sequencer) -> Value {
        self.secrets_read(seq).await;
        self.expect(Method::GET, &path("serviceaccount", NAME)).await.not_found();
        self.expect_apply(&path("serviceaccount", NAME)).await.echo();
        self.expect(Method::GET, &path("configmap", &Names(NAME).config_map())).await.not_found();
        let config = self.expect_apply(&path("configmap", &Names(NAME).config_map())).await;
        let data = config.body["data"].clone();
        config.echo();
        data
    }

    /// Secrets read; ServiceAccount, ConfigMap and Service each read (absent) and applied; the
    /// PodDisruptionBudget read (absent) and applied with more than one replica, left alone
    /// otherwise. Returns the applied ConfigMap's data.
    pub async fn children_applied(&mut self, seq: &Sequencer) -> Value {
        let data = self.secrets_and_job_prerequisites_applied(seq).await;
        self.service_and_budget_applied(seq).await;
        data
    }

    /// The Service and the PodDisruptionBudget (after any migration Job).
    pub async fn service_and_budget_applied(&mut self, seq: &Sequencer) {
        self.expect(Method::GET, &path("service", NAME)).await.not_found();
        self.expect_apply(&path("service", NAME)).await.echo();
        self.expect(Method::GET, &path("pdb", NAME)).await.not_found();
        if seq.spec.replicas > 1 {
            let pdb = self.expect_apply(&path("pdb", NAME)).await;
            assert_eq!(pdb.body["spec"]["maxUnavailable"], 1);
            pdb.echo();
        }
    }

    /// The Deployment applied; answered with `status`. Returns the applied body.
    pub async fn deployment_applied(&mut self, status: Value) -> Value {
        let call = self.expect_apply(&path("deployment", NAME)).await;
        let mut stored = call.body.clone();
        stored["metadata"]["generation"] = json!(1);
        stored["status"] = status;
        let sent = call.body.clone();
        call.reply(200, &stored);
        sent
    }

    /// The Sequencer's status written; returns it.
    pub async fn sequencer_status_written(&mut self, seq: &Sequencer) -> SequencerStatus {
        let call = self.expect(Method::PATCH, &format!("{}/status", path("sequencer", NAME))).await;
        call.assert_is_apply();
        let status: SequencerStatus = serde_json::from_value(call.body["status"].clone()).unwrap();
        let mut stored = seq.clone();
        stored.status = Some(status.clone());
        call.ok(&stored);
        status
    }

    /// The action's status written: a PUT of the status subresource carrying a resourceVersion
    /// precondition, answered as stored with the next resourceVersion; returns the status.
    pub async fn action_status_written(&mut self, action: &SequencerAction) -> SequencerActionStatus {
        let call = self.expect(Method::PUT, &format!("{}/status", path("action", &action.name_any()))).await;
        let version =
            call.body["metadata"]["resourceVersion"].as_str().expect("a status write carries a resourceVersion");
        let next: u64 = version.parse::<u64>().expect("numeric resourceVersion in fixtures") + 1;
        let status: SequencerActionStatus = serde_json::from_value(call.body["status"].clone()).unwrap();
        let mut stored: SequencerAction = serde_json::from_value(call.body.clone()).unwrap();
        stored.metadata.resource_version = Some(next.to_string());
        call.ok(&stored);
        status
    }

    /// The action's Sequencer read and found ready, and the admin key read.
    pub async fn target_ready(&mut self) {
        let ready = Sequencer::test().with_status(SequencerStatus { ready_replicas: 1, ..Default::default() });
        self.expect(Method::GET, &path("sequencer", NAME)).await.ok(&ready);
        self.expect(Method::GET, &path("secret", ADMIN_KEY_SECRET)).await.ok(&admin_key_secret());
    }
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> (&'a str, &'a str, &'a str) {
    let c = conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn not_ready_status() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0})
}

/// The documented mocked API-server scenarios, one per reconcile path.
pub enum Scenario {
    /// A new Sequencer in Job mode: no Deployment yet, so the migration Job of `spec.image` is
    /// created (and announced) first; the other children are applied, the Deployment is not, and
    /// status says migrations are running.
    CreateStartsMigrationJob(Sequencer),
    /// A new Sequencer with OnStartup migrations: no Job; every child including the Deployment is
    /// applied straight away and the pods migrate as they start.
    CreateWithMigrationsOnStartup(Sequencer),
    /// The migration Job of a new image completed: the Deployment moves from [`OLD_IMAGE`] to
    /// `spec.image`, the success and rollout are announced, older migration Jobs are deleted.
    MigrationSucceededRollsOut(Sequencer),
    /// The migration Job of a new image failed: the Deployment stays on [`OLD_IMAGE`], status
    /// carries the Job's reason, and a warning is published.
    MigrationFailedKeepsOldDeployment(Sequencer),
    /// The Deployment on `spec.image` was edited by someone else (replicas 7): the full desired
    /// Deployment is re-applied with force, taking the fields back. Status is unchanged, so it is
    /// not written.
    DriftIsRepaired(Sequencer),
    /// A changed spec (rate limit): the ConfigMap carries the new value and the Deployment's pod
    /// template a new config hash, which rolls the pods. Returns nothing; asserts the hash differs
    /// from `previous_hash`.
    SpecChangeRollsDeployment { seq: Sequencer, previous_hash: String },
    /// Rolled out and ready: the admin status is read with the admin key (from a stub) into status,
    /// and Ready=True is announced.
    ReadyReadsAdminStatus(Sequencer),
    /// Being deleted: nothing is requested at all.
    DeletionTouchesNothing,
    /// A migration Job that failed an hour ago with attempts left: the failure is announced, the
    /// Job removed (UID precondition) so that the next reconcile starts attempt 2, the old
    /// Deployment kept; status is Reconciling (not Stalled) and counts the attempt.
    FailedMigrationIsRetriedAfterBackoff(Sequencer),
    /// A Service of another owner under the Sequencer's name: after the ServiceAccount and
    /// ConfigMap (ours), the Service is read and nothing more is written; a Warning event and
    /// status (Ready=False, Stalled=True, NameConflict naming the Service) say why.
    ServiceNameConflictWritesNothingToIt(Sequencer),
    /// One replica and a PodDisruptionBudget under the Sequencer's name: deleted (UID
    /// precondition) when ours, left alone when someone else's.
    PodDisruptionBudgetOnScaleDown { seq: Sequencer, ours: bool },
    /// spec.monitoring.podMonitor enabled (OnStartup, fresh): after the Service, the PodMonitor is
    /// read and applied; without the monitoring.coreos.com CRDs both answer 404, a Warning event
    /// says so and MonitoringReady=False, but the reconcile goes on.
    PodMonitor { seq: Sequencer, crds_installed: bool },
    /// The API server fails (500) on the first read: a Warning event and status (Ready=False,
    /// Reconciling=True, ReconcileFailed with the error) record it.
    ReconcileErrorReachesStatus(Sequencer),
    /// AnchorRetry against a ready Sequencer: Running is recorded and announced, the admin API is
    /// called, Succeeded with the result is recorded and announced.
    ActionRunsToSuccess(SequencerAction),
    /// An action whose admin API call fails with findings or rejections: Running, then Failed
    /// with `reason`.
    ActionRunsToFailure { action: SequencerAction, reason: Reason },
    /// An action whose admin API call fails transiently (503): it stays Running, retrying.
    ActionRetriesTransientFailure(SequencerAction),
    /// An action whose Sequencer does not exist: it stays Pending and says so.
    ActionWaitsForMissingSequencer(SequencerAction),
    /// An action past its deadline: Failed with DeadlineExceeded, announced, without a call.
    ActionPastDeadlineFails(SequencerAction),
    /// A finished action still within its TTL: nothing is requested (it is never run again).
    FinishedActionIsLeftAlone,
    /// A finished action past its TTL: it is deleted, on condition that its UID is unchanged.
    FinishedActionPastTtlIsDeleted(SequencerAction),
}

impl Scenario {
    async fn play(self, mut api: ApiServer) {
        match self {
            Scenario::CreateStartsMigrationJob(seq) => {
                let job = Names(NAME).migration_job(&seq.spec.image);
                api.expect(Method::GET, &path("deployment", NAME)).await.not_found();
                // The Job's ServiceAccount and the ConfigMap exist before the Job.
                api.secrets_and_job_prerequisites_applied(&seq).await;
                api.expect(Method::GET, &path("job", &job)).await.not_found();
                let created = api.expect_apply(&path("job", &job)).await;
                let container = &created.body["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(container["image"], IMAGE);
                assert_eq!(container["command"], json!(["stateset-sequencer-admin", "migrate"]));
                assert_eq!(created.body["metadata"]["ownerReferences"][0]["kind"], "Sequencer");
                created.echo();
                api.expect_event(Reason::MigrationJobCreated).await;
                api.service_and_budget_applied(&seq).await;
                let status = api.sequencer_status_written(&seq).await;
                assert_eq!(condition(&status.conditions, "Ready").1, "MigrationJobRunning");
                assert_eq!(condition(&status.conditions, "MigrationsApplied").0, "False");
                assert_eq!(condition(&status.conditions, "Progressing").0, "True");
                assert_eq!(status.observed_generation, Some(1));
                assert_eq!(status.current_image, None);
            }
            Scenario::CreateWithMigrationsOnStartup(seq) => {
                api.expect(Method::GET, &path("deployment", NAME)).await.not_found();
                let config = api.children_applied(&seq).await;
                assert_eq!(config["DB_MIGRATE_ON_STARTUP"], "true");
                let deployment = api.deployment_applied(not_ready_status()).await;
                assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], IMAGE);
                let status = api.sequencer_status_written(&seq).await;
                assert_eq!(condition(&status.conditions, "Ready").1, "RollingOut");
                assert_eq!(condition(&status.conditions, "MigrationsApplied").1, "WaitingForStartup");
                assert_eq!(status.current_image.as_deref(), Some(IMAGE));
            }
            Scenario::MigrationSucceededRollsOut(seq) => {
                let job = Names(NAME).migration_job(&seq.spec.image);
                let old_job = Names(NAME).migration_job(OLD_IMAGE);
                api.expect(Method::GET, &path("deployment", NAME)).await.ok(&seq.live_deployment(OLD_IMAGE, 1));
                api.secrets_and_job_prerequisites_applied(&seq).await;
                api.expect(Method::GET, &path("job", &job)).await.ok(&seq.live_migration_job(Some((
                    "Complete",
                    "CompletionsReached",
                    "",
                ))));
                api.service_and_budget_applied(&seq).await;
                let deployment = api.deployment_applied(not_ready_status()).await;
                assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], IMAGE);
                api.expect_event(Reason::MigrationJobSucceeded).await;
                let list = api.expect(Method::GET, &path("jobs", "")).await;
                assert!(list.query.contains("labelSelector="), "{}", list.query);
                let mut previous = seq.clone().with_image(OLD_IMAGE).live_migration_job(None);
                previous.metadata.name = Some(old_job.clone());
                let current = seq.live_migration_job(None);
                list.reply(
                    200,
                    &json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": [previous, current]}),
                );
                let deleted = api.expect(Method::DELETE, &path("job", &old_job)).await;
                assert_eq!(deleted.body["propagationPolicy"], "Background");
                deleted.ok(&seq.live_migration_job(None));
                let event = api.expect_event(Reason::ImageRolledOut).await;
                assert!(event["note"].as_str().unwrap().contains(OLD_IMAGE));
                let status = api.sequencer_status_written(&seq).await;
                assert_eq!(condition(&status.conditions, "MigrationsApplied").1, "MigrationJobSucceeded");
            }
            Scenario::MigrationFailedKeepsOldDeployment(seq) => {
                let job = Names(NAME).migration_job(&seq.spec.image);
                api.expect(Method::GET, &path("deployment", NAME)).await.ok(&seq.live_deployment(OLD_IMAGE, 1));
                api.secrets_and_job_prerequisites_applied(&seq).await;
                api.expect(Method::GET, &path("job", &job)).await.ok(&seq.live_migration_job(Some((
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ))));
                let warning = api.expect_event(Reason::MigrationJobFailed).await;
                assert_eq!(warning["type"], "Warning");
                api.service_and_budget_applied(&seq).await;
                let deployment = api
                    .deployment_applied(json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}))
                    .await;
                assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], OLD_IMAGE);
                // The old pods still serve: the admin status is read.
                api.expect(Method::GET, &path("secret", ADMIN_KEY_SECRET)).await.ok(&admin_key_secret());
                let status = api.sequencer_status_written(&seq).await;
                let (migrated, reason, message) = condition(&status.conditions, "MigrationsApplied");
                assert_eq!((migrated, reason), ("False", "MigrationJobFailed"));
                assert!(message.contains("BackoffLimitExceeded"), "{message}");
                assert_eq!(condition(&status.conditions, "Degraded").0, "True");
                assert_eq!(condition(&status.conditions, "Ready").0, "False");
                assert_eq!(condition(&status.conditions, "Stalled").0, "True");
                assert_eq!(condition(&status.conditions, "Reconciling").0, "False");
                assert_eq!(status.current_image.as_deref(), Some(OLD_IMAGE));
            }
            Scenario::FailedMigrationIsRetriedAfterBackoff(seq) => {
                let job = Names(NAME).migration_job(&seq.spec.image);
                api.expect(Method::GET, &path("deployment", NAME)).await.ok(&seq.live_deployment(OLD_IMAGE, 1));
                let mut failed = seq.live_migration_job(Some(("Failed", "BackoffLimitExceeded", "database not up")));
                failed.metadata.uid = Some("7e57a11e-0000-4000-8000-000000000001".into());
                let long_ago = Time(Timestamp::now() - SignedDuration::from_secs(3600));
                failed.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time = Some(long_ago);
                api.secrets_and_job_prerequisites_applied(&seq).await;
                api.expect(Method::GET, &path("job", &job)).await.ok(&failed);
                api.expect_event(Reason::MigrationJobFailed).await;
                let deleted = api.expect(Method::DELETE, &path("job", &job)).await;
                assert_eq!(deleted.body["preconditions"]["uid"], "7e57a11e-0000-4000-8000-000000000001");
                deleted.ok(&failed);
                api.service_and_budget_applied(&seq).await;
                let deployment = api
                    .deployment_applied(json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}))
                    .await;
                assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], OLD_IMAGE);
                api.expect(Method::GET, &path("secret", ADMIN_KEY_SECRET)).await.ok(&admin_key_secret());
                let status = api.sequencer_status_written(&seq).await;
                assert_eq!(condition(&status.conditions, "MigrationsApplied").1, "MigrationJobRetrying");
                assert_eq!(condition(&status.conditions, "Reconciling").0, "True");
                assert_eq!(condition(&status.conditions, "Stalled").0, "False");
                assert_eq!(
                    status.migration.map(|m| m.attempts),
                    Some(1),
                    "attempt 1 failed; the next reconcile starts 2"
                );
            }
            Scenario::ServiceNameConflictWritesNothingToIt(seq) => {
                api.expect(Method::GET, &path("deployment", NAME)).await.not_found();
                api.secrets_read(&seq).await;
                api.expect(Method::GET, &path("serviceaccount", NAME)).await.not_found();
                api.expect_apply(&path("serviceaccount", NAME)).await.echo();
                api.expect(Method::GET, &path("configmap", &Names(NAME).config_map())).await.not_found();
                api.expect_apply(&path("configmap", &Names(NAME).config_map())).await.echo();
                let mut foreign = resources::service(&seq);
                foreign.metadata.owner_references = None;
                foreign.metadata.labels = Some([("app".to_string(), "billing".to_string())].into());
                api.expect(Method::GET, &path("service", NAME)).await.ok(&foreign);
                let warning = api.expect_event(Reason::NameConflict).await;
                assert_eq!(warning["type"], "Warning");
                assert!(warning["note"].as_str().unwrap().contains("Service payments/ledger"), "{warning}");
                let status = api.sequencer_status_written(&seq).await;
                let (ready, reason, message) = condition(&status.conditions, "Ready");
                assert_eq!((ready, reason), ("False", "NameConflict"));
                assert!(message.contains("Service payments/ledger"), "{message}");
                assert_eq!(condition(&status.conditions, "Stalled").0, "True");
                assert_eq!(status.observed_generation, Some(1));
            }
            Scenario::PodDisruptionBudgetOnScaleDown { seq, ours } => {
                api.expect(Method::GET, &path("deployment", NAME)).await.ok(&seq.live_deployment(&seq.spec.image, 1));
                api.secrets_read(&seq).await;
                for (kind, name) in [
                    ("serviceaccount", NAME.to_string()),
                    ("configmap", Names(NAME).config_map()),
                    ("service", NAME.to_string()),
                ] {
                    api.expect(Method::GET, &path(kind, &name)).await.not_found();
                    api.expect_apply(&path(kind, &name)).await.echo();
                }
                let mut pdb = resources::pod_disruption_budget(&seq.clone().with_replicas(3)).unwrap();
                pdb.metadata.uid = Some("9d9d9d9d-0000-4000-8000-000000000002".into());
                if !ours {
                    pdb.metadata.owner_references = None;
                }
                api.expect(Method::GET, &path("pdb", NAME)).await.ok(&pdb);
                if ours {
                    let deleted = api.expect(Method::DELETE, &path("pdb", NAME)).await;
                    assert_eq!(deleted.body["preconditions"]["uid"], "9d9d9d9d-0000-4000-8000-000000000002");
                    deleted.ok(&pdb);
                }
                api.deployment_applied(not_ready_status()).await;
                api.sequencer_status_written(&seq).await;
            }
            Scenario::PodMonitor { seq, crds_installed } => {
                api.expect(Method::GET, &path("deployment", NAME)).await.not_found();
                api.secrets_and_job_prerequisites_applied(&seq).await;
                api.expect(Method::GET, &path("service", NAME)).await.not_found();
                api.expect_apply(&path("service", NAME)).await.echo();
                let monitor = format!("/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/podmonitors/{NAME}");
                api.expect(Method::GET, &monitor).await.not_found();
                let applied = api.expect_apply(&monitor).await;
                assert_eq!(applied.body["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
                assert_eq!(applied.body["metadata"]["ownerReferences"][0]["kind"], "Sequencer");
                if crds_installed {
                    applied.echo();
                } else {
                    applied.not_found();
                    let warning = api.expect_event(Reason::MonitoringCrdsAbsent).await;
                    assert_eq!(warning["type"], "Warning");
                }
                api.expect(Method::GET, &path("pdb", NAME)).await.not_found();
                api.deployment_applied(not_ready_status()).await;
                let status = api.sequencer_status_written(&seq).await;
                let expected =
                    if crds_installed { ("True", "PodMonitorApplied") } else { ("False", "MonitoringCrdsAbsent") };
                let (state, reason, _) = condition(&status.conditions, "MonitoringReady");
                assert_eq!((state, reason), expected);
            }
            Scenario::ReconcileErrorReachesStatus(seq) => {
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500
                });
                api.expect(Method::GET, &path("deployment", NAME)).await.reply(500, &status);
                api.expect_event(Reason::ReconcileFailed).await;
                let written = api.sequencer_status_written(&seq).await;
                let (ready, reason, message) = condition(&written.conditions, "Ready");
                assert_eq!((ready, reason), ("False", "ReconcileFailed"));
                assert!(message.contains("request timed out"), "{message}");
                assert_eq!(condition(&written.conditions, "Reconciling").0, "True");
                assert_eq!(condition(&written.conditions, "Stalled").0, "False");
                assert_eq!(written.observed_generation, seq.metadata.generation);
            }
            Scenario::DriftIsRepaired(seq) => {
                let mut drifted = seq.live_deployment(&seq.spec.image, 0);
                drifted.spec.as_mut().unwrap().replicas = Some(7);
                api.expect(Method::GET, &path("deployment", NAME)).await.ok(&drifted);
                api.children_applied(&seq).await;
                let deployment = api.deployment_applied(not_ready_status()).await;
                assert_eq!(deployment["spec"]["replicas"], seq.spec.replicas);
            }
            Scenario::SpecChangeRollsDeployment { seq, previous_hash } => {
                api.expect(Method::GET, &path("deployment", NAME)).await.ok(&seq.live_deployment(&seq.spec.image, 0));
                let config = api.children_applied(&seq).await;
                assert_eq!(config["RATE_LIMIT_PER_MINUTE"], "600");
                let deployment = api.deployment_applied(not_ready_status()).await;
                let hash =
                    &deployment["spec"]["template"]["metadata"]["annotations"][crate::labels::ANNOTATION_CONFIG_HASH];
                assert_ne!(hash.as_str().unwrap(), previous_hash);
                api.sequencer_status_written(&seq).await;
            }
            Scenario::ReadyReadsAdminStatus(seq) => {
                api.expect(Method::GET, &path("deployment", NAME))
                    .await
                    .ok(&seq.live_deployment(&seq.spec.image, seq.spec.replicas));
                api.children_applied(&seq).await;
                let n = seq.spec.replicas;
                api.deployment_applied(json!({"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n}))
                    .await;
                api.expect(Method::GET, &path("secret", ADMIN_KEY_SECRET)).await.ok(&admin_key_secret());
                api.expect_event(Reason::AllReplicasReady).await;
                let status = api.sequencer_status_written(&seq).await;
                assert_eq!(condition(&status.conditions, "Ready").0, "True");
                assert_eq!(condition(&status.conditions, "DeadLettersPending").1, "DeadLettersPresent");
                assert_eq!(condition(&status.conditions, "AnchoringHealthy").1, "CircuitOpen");
                assert_eq!(status.version.as_deref(), Some("0.2.0"));
                let admin = status.admin.unwrap();
                assert_eq!(admin.dead_letters_pending, Some(5));
                assert_eq!(admin.circuit_state.as_deref(), Some("open"));
            }
            Scenario::DeletionTouchesNothing | Scenario::FinishedActionIsLeftAlone => {}
            Scenario::ActionRunsToSuccess(action) => {
                api.target_ready().await;
                let running = api.action_status_written(&action).await;
                assert_eq!((running.phase, running.attempts), (ActionPhase::Running, 1));
                api.expect_event(Reason::ActionStarted).await;
                let done = api.action_status_written(&action).await;
                assert_eq!(done.phase, ActionPhase::Succeeded, "{:?}", done.message);
                assert!(done.completion_time.is_some());
                assert!(done.result.is_some());
                api.expect_event(Reason::ActionSucceeded).await;
            }
            Scenario::ActionRunsToFailure { action, reason } => {
                api.target_ready().await;
                api.action_status_written(&action).await;
                api.expect_event(Reason::ActionStarted).await;
                let done = api.action_status_written(&action).await;
                assert_eq!(done.phase, ActionPhase::Failed);
                assert_eq!(condition(&done.conditions, "Succeeded").1, reason.as_str());
                let event = api.expect_event(Reason::ActionFailed).await;
                assert_eq!(event["type"], "Warning");
            }
            Scenario::ActionRetriesTransientFailure(action) => {
                api.target_ready().await;
                api.action_status_written(&action).await;
                api.expect_event(Reason::ActionStarted).await;
                let after = api.action_status_written(&action).await;
                assert_eq!(after.phase, ActionPhase::Running);
                assert_eq!(condition(&after.conditions, "Succeeded").1, "RetryingAfterError");
                assert!(after.message.unwrap().contains("503"));
            }
            Scenario::ActionWaitsForMissingSequencer(action) => {
                api.expect(Method::GET, &path("sequencer", NAME)).await.not_found();
                let status = api.action_status_written(&action).await;
                assert_eq!(status.phase, ActionPhase::Pending);
                assert_eq!(condition(&status.conditions, "Succeeded").1, "WaitingForSequencer");
                assert!(status.message.unwrap().contains("not found"));
            }
            Scenario::ActionPastDeadlineFails(action) => {
                let status = api.action_status_written(&action).await;
                assert_eq!(status.phase, ActionPhase::Failed);
                assert_eq!(condition(&status.conditions, "Succeeded").1, "DeadlineExceeded");
                api.expect_event(Reason::ActionFailed).await;
            }
            Scenario::FinishedActionPastTtlIsDeleted(action) => {
                let deleted = api.expect(Method::DELETE, &path("action", &action.name_any())).await;
                assert_eq!(deleted.body["preconditions"]["uid"], json!(action.metadata.uid), "{}", deleted.body);
                deleted.ok(&action);
            }
        }
        api.done().await;
    }
}

/// A stand-in for the sequencer's admin API: answers each path with a fixed status and body and
/// records the requests (path, Authorization header, body).
#[derive(Clone, Default)]
pub struct AdminStub {
    pub requests: Arc<Mutex<Vec<(String, String, Value)>>>,
}

impl AdminStub {
    /// Serves `routes` (path → (status, body)) on an ephemeral local port; returns its base URL.
    pub async fn start(&self, routes: Vec<(&'static str, u16, Value)>) -> String {
        use axum::extract::State;
        use axum::http::Uri;
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::any;

        let routes = Arc::new(routes);
        let handler = move |State(stub): State<AdminStub>, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let routes = routes.clone();
            async move {
                let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                stub.requests.lock().unwrap().push((uri.path().to_string(), auth, body));
                let (_, status, answer) = routes.iter().find(|(path, _, _)| *path == uri.path()).cloned().unwrap_or((
                    "",
                    404,
                    json!({"error": {"code": "not_found", "message": "no such route"}}),
                ));
                (StatusCode::from_u16(status).unwrap(), axum::Json(answer))
            }
        };
        let router = axum::Router::new().fallback(any(handler)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    pub fn requests(&self) -> Vec<(String, String, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

/// The admin status of a sequencer with 5 dead letters and an open circuit breaker.
pub fn admin_status_with_trouble() -> Value {
    json!({
        "version": "0.2.0", "schemaVersion": 3,
        "database": {"connected": true, "pool": {"size": 10, "idle": 8, "inUse": 2, "waiting": 0, "max": 20}},
        "deadLetters": {"pending": 5, "byReason": {"invalid_signature": 3, "unknown_key": 2}},
        "anchoring": {"enabled": true, "circuitState": "open", "unanchoredCommitments": 2, "oldestUnanchoredAgeSeconds": 120},
        "ingestion": {"pausedStreams": 0}
    })
}
