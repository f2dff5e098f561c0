//! RBAC as a tested contract (compiled for tests only).
//!
//! Every request the controllers make to the mocked API server is recorded ([`record`], called by
//! `fixtures::ApiServer`) and checked at once against the chart's RBAC as rendered for both
//! install modes (`charts/sequencer-operator/tests/rbac-*.yaml`, which `scripts/operator-checks.sh`
//! re-renders with Helm and fails on drift). The contract test then replays every reconcile path,
//! the watches, the start-up check, the leader Lease and the event recorder, and fails on any
//! grant that no request uses: the chart grants exactly what the operator needs.

use std::collections::BTreeSet;
use std::sync::Mutex;

use http::Method;
use serde_json::Value;

/// Namespace of the operator's release in the rendered fixtures.
pub const RELEASE_NAMESPACE: &str = "sequencer-system";

/// The default `leaderElection.leaseName`.
const LEASE_NAME: &str = "sequencer-operator";
/// `watchNamespace` of the least-privilege mode in this contract (the fixtures' namespace).
const WATCH_NAMESPACE: &str = crate::fixtures::NAMESPACE;

/// One request as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiRequest {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    /// None: cluster-wide (all namespaces, or a cluster-scoped resource).
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl ApiRequest {
    /// The request of `method` on `path` with `query`, as the API server authorises it.
    pub fn parse(method: &Method, path: &str, query: &str) -> ApiRequest {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => (String::new(), rest.to_vec()),
            ["apis", group, _version, rest @ ..] => (group.to_string(), rest.to_vec()),
            _ => panic!("not an API path: {path}"),
        };
        let (namespace, rest) = match rest.as_slice() {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest.to_vec()),
            _ => (None, rest),
        };
        let resource = rest.first().unwrap_or_else(|| panic!("no resource in {path}")).to_string();
        let name = rest.get(1).map(|s| s.to_string());
        let subresource = rest.get(2).map(|s| s.to_string());
        let watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
        let verb = match (method.as_str(), &name) {
            ("GET", Some(_)) => "get",
            ("GET", None) if watch => "watch",
            ("GET", None) => "list",
            ("POST", _) => "create",
            ("PATCH", _) => "patch",
            ("PUT", _) => "update",
            ("DELETE", Some(_)) => "delete",
            ("DELETE", None) => "deletecollection",
            (other, _) => panic!("unexpected method {other}"),
        };
        ApiRequest { verb: verb.into(), group, resource, subresource, namespace, name }
    }

    fn resource_path(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        let scope = self.namespace.as_deref().map_or("cluster-wide".to_string(), |ns| format!("in {ns}"));
        write!(f, "{} {}.{} {scope}", self.verb, self.resource_path(), group)
    }
}

static RECORDED: Mutex<BTreeSet<ApiRequest>> = Mutex::new(BTreeSet::new());

/// Records a request the mocked API server received and panics (failing the scenario) when the
/// chart's RBAC does not grant it in either install mode.
pub fn record(method: &Method, path: &str, query: &str) {
    let request = ApiRequest::parse(method, path, query);
    for mode in [Mode::ClusterWide, Mode::WatchNamespace] {
        let rbac = mode.rbac();
        assert!(rbac.grants(&request), "the chart's RBAC ({mode:?}) does not grant {request}");
    }
    RECORDED.lock().unwrap().insert(request);
}

/// Records the implicit request the API server authorises when a child's owner reference sets
/// `blockOwnerDeletion` (OwnerReferencesPermissionEnforcement): update of the owner's finalizers.
pub fn record_owner_reference(body: &Value, namespace: &str) {
    let blocks = body["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["blockOwnerDeletion"] == true && o["kind"] == "Sequencer");
    if blocks {
        let path = format!("/apis/sequencer.stateset.io/v1alpha1/namespaces/{namespace}/sequencers/x/finalizers");
        record(&Method::PUT, &path, "");
    }
}

/// Records the create an apply implies: a server-side apply of an absent object creates it, and the
/// API server authorises that as `create` (status applies never create).
pub fn record_apply_may_create(path: &str) {
    let request = ApiRequest::parse(&Method::PATCH, path, "");
    if request.subresource.is_none() {
        let collection = path.rsplit_once('/').map_or(path, |(collection, _)| collection);
        record(&Method::POST, collection, "");
    }
}

/// Everything recorded so far in this test process.
pub fn recorded() -> BTreeSet<ApiRequest> {
    RECORDED.lock().unwrap().clone()
}

/// The two ways the chart installs the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    ClusterWide,
    WatchNamespace,
}

impl Mode {
    pub fn rbac(self) -> Rbac {
        let (operator_scope, lease_scope) = match self {
            Mode::ClusterWide => (None, RELEASE_NAMESPACE),
            Mode::WatchNamespace => (Some(WATCH_NAMESPACE.to_string()), WATCH_NAMESPACE),
        };
        let mut grants: Vec<Grant> =
            crate::chart_rbac::operator_rules().iter().map(|r| Grant::of(r, operator_scope.clone())).collect();
        grants.extend(
            crate::chart_rbac::leader_rules(LEASE_NAME).iter().map(|r| Grant::of(r, Some(lease_scope.to_string()))),
        );
        Rbac { grants }
    }
}

/// One rule of a role bound to the operator's ServiceAccount, and where it applies.
#[derive(Clone, Debug)]
pub struct Grant {
    /// None: everywhere (a ClusterRole bound by a ClusterRoleBinding).
    pub namespace: Option<String>,
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub names: Vec<String>,
}

/// The grants of the operator's ServiceAccount in one rendered chart.
#[derive(Clone, Debug)]
pub struct Rbac {
    pub grants: Vec<Grant>,
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

impl Grant {
    fn of(rule: &Value, namespace: Option<String>) -> Grant {
        Grant {
            namespace,
            groups: strings(&rule["apiGroups"]),
            resources: strings(&rule["resources"]),
            verbs: strings(&rule["verbs"]),
            names: strings(&rule["resourceNames"]),
        }
    }
}

impl Rbac {
    fn grant_matches(grant: &Grant, request: &ApiRequest) -> bool {
        let in_scope = match (&grant.namespace, &request.namespace) {
            (None, _) => true,
            (Some(granted), Some(asked)) => granted == asked,
            (Some(_), None) => false,
        };
        in_scope
            && grant.groups.iter().any(|g| g == "*" || *g == request.group)
            && grant.resources.iter().any(|r| r == "*" || *r == request.resource_path())
            && grant.verbs.iter().any(|v| v == "*" || *v == request.verb)
            && (grant.names.is_empty() || request.name.as_ref().is_some_and(|n| grant.names.contains(n)))
    }

    /// Whether some grant allows `request`.
    pub fn grants(&self, request: &ApiRequest) -> bool {
        self.grants.iter().any(|g| Self::grant_matches(g, request))
    }

    /// Each (group, resource, verb) of every grant that none of `requests` uses, as sentences.
    pub fn unused(&self, requests: &BTreeSet<ApiRequest>) -> Vec<String> {
        let mut unused = Vec::new();
        for grant in &self.grants {
            for group in &grant.groups {
                for resource in &grant.resources {
                    for verb in &grant.verbs {
                        let single = Grant {
                            groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            verbs: vec![verb.clone()],
                            ..grant.clone()
                        };
                        if !requests.iter().any(|r| Self::grant_matches(&single, r)) {
                            let scope = grant.namespace.as_deref().unwrap_or("cluster-wide");
                            unused.push(format!("{verb} {resource} (group {group:?}) {scope}"));
                        }
                    }
                }
            }
        }
        unused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;
    use kube::runtime::events::EventType;
    use kube::{Client, Resource};

    use crate::conditions::Reason;
    use crate::controller::{self, AdminEndpoint, Context};
    use crate::crd::Sequencer;
    use crate::fixtures::{self, NAMESPACE};
    use crate::metrics::Metrics;

    /// Answers every request of the controllers' start-up with an empty list, keeps watches open
    /// (never answering), and records each, until `until` distinct requests were seen.
    async fn record_runtime_requests(namespace: Option<String>, until: usize) -> BTreeSet<ApiRequest> {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NAMESPACE);
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            AdminEndpoint::Fixed("http://127.0.0.1:9".into()),
            None,
        ));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let crd_check = {
            let client = client.clone();
            let namespace = namespace.clone();
            async move { controller::check_crds_installed(&client, namespace.as_deref()).await }
        };
        let runtime = tokio::spawn(async move {
            crd_check.await.expect("the CRDs are listed");
            controller::run_controllers(ctx, namespace, async move {
                let _ = stop_rx.await;
            })
            .await;
        });
        let mut seen = BTreeSet::new();
        let mut open_watches = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < until {
            let (request, send) = tokio::time::timeout_at(deadline, handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("only {} distinct requests within 20s: {seen:#?}", seen.len()))
                .expect("the client is alive");
            let parsed = ApiRequest::parse(request.method(), request.uri().path(), request.uri().query().unwrap_or(""));
            if parsed.verb == "watch" {
                open_watches.push(send);
            } else {
                let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
                send.send_response(
                    Response::builder().status(200).body(Body::from(serde_json::to_vec(&list).unwrap())).unwrap(),
                );
            }
            seen.insert(ApiRequest { name: None, ..parsed });
        }
        let _ = stop_tx.send(());
        drop(open_watches);
        drop(handle);
        runtime.abort();
        seen
    }

    /// The requests of the event recorder: a new event is created, a repeated one patched.
    async fn record_event_requests() -> BTreeSet<ApiRequest> {
        let (ctx, mut api) = fixtures::mocked_context(None);
        let seq = Sequencer::test();
        let server = tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            for _ in 0..2 {
                let call = api.next().await;
                seen.insert(ApiRequest::parse(&call.method, &call.path, &call.query));
                let body = call.body.clone();
                call.reply(201, &body);
            }
            seen
        });
        for _ in 0..2 {
            ctx.publish(&seq.object_ref(&()), EventType::Normal, Reason::AllReplicasReady, "Reconcile", "ready".into())
                .await;
        }
        drop(ctx);
        server.await.unwrap()
    }

    /// The leader Lease requests of kube-lease-manager (read, create when absent, patch to renew
    /// or take over), in the Lease's namespace.
    fn lease_requests(namespace: &str) -> BTreeSet<ApiRequest> {
        let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
        [
            ApiRequest::parse(&Method::GET, &format!("{leases}/sequencer-operator"), ""),
            ApiRequest::parse(&Method::POST, &leases, ""),
            ApiRequest::parse(&Method::PATCH, &format!("{leases}/sequencer-operator"), ""),
        ]
        .into()
    }

    /// Watches: Sequencers, SequencerActions, six kinds of children and Secrets (metadata).
    const WATCHES: usize = 9;

    #[test]
    fn every_request_of_the_operator_is_granted_and_every_grant_is_used_in_both_install_modes() {
        // Every reconcile path of the Sequencer controller (each panics on an ungranted request).
        use crate::controller::sequencer::tests as seq;
        seq::creating_a_sequencer_in_job_mode_runs_the_migration_job_before_any_deployment();
        seq::creating_a_sequencer_that_migrates_on_startup_applies_the_deployment_at_once();
        seq::a_succeeded_migration_job_moves_the_deployment_to_the_new_image();
        seq::a_failed_migration_job_keeps_the_old_deployment_and_reports_the_jobs_reason();
        seq::a_failed_migration_job_with_attempts_left_is_replaced_after_its_backoff();
        seq::a_deployment_edited_by_someone_else_is_taken_back_without_a_status_write();
        seq::a_spec_change_rolls_the_deployment_through_the_config_hash();
        seq::a_ready_sequencer_reports_what_its_admin_status_says();
        seq::a_service_of_someone_else_under_the_sequencers_name_is_never_written();
        seq::scaling_to_one_replica_deletes_our_pod_disruption_budget();
        seq::a_pod_disruption_budget_of_someone_else_is_never_deleted();
        seq::a_failed_reconcile_reaches_status_as_reconciling_with_the_error();
        seq::a_pod_monitor_is_applied_and_its_absent_crds_are_reported_instead_of_failing();
        // The SequencerAction controller's paths: a call, a missing Sequencer, a TTL deletion, a
        // conflicting status write re-read and replaced, a stale object after the terminal write.
        use crate::controller::action::reconcile_tests as action;
        action::an_anchor_retry_calls_the_admin_api_once_and_records_success();
        action::an_action_against_a_missing_sequencer_waits_pending();
        action::a_finished_action_is_deleted_after_its_ttl_only_if_it_is_still_the_same_object();
        action::a_conflicting_outcome_write_on_a_still_running_action_is_written_on_the_fresh_object();
        action::a_stale_running_object_delivered_after_the_terminal_write_makes_no_second_admin_call();

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let events = runtime.block_on(record_event_requests());
        for (mode, watch_namespace, lease_namespace) in [
            (Mode::ClusterWide, None, RELEASE_NAMESPACE),
            (Mode::WatchNamespace, Some(NAMESPACE.to_string()), NAMESPACE),
        ] {
            let rbac = mode.rbac();
            // The start-up list of the CRDs (the same requests as two initial lists), then a list and
            // a watch per watched kind.
            let started = runtime.block_on(record_runtime_requests(watch_namespace.clone(), 2 * WATCHES));
            let mut requests = recorded();
            requests.extend(events.clone());
            requests.extend(started.clone());
            requests.extend(lease_requests(lease_namespace));
            for request in started.iter().chain(lease_requests(lease_namespace).iter()) {
                assert!(rbac.grants(request), "{mode:?}: not granted: {request}");
                if let Some(ns) = &watch_namespace {
                    assert_eq!(
                        request.namespace.as_ref(),
                        Some(ns),
                        "{mode:?}: {request} leaves the watched namespace"
                    );
                }
            }
            if mode == Mode::WatchNamespace {
                let outside: Vec<String> = requests
                    .iter()
                    .filter(|r| r.namespace.as_deref() != Some(NAMESPACE))
                    .map(|r| r.to_string())
                    .collect();
                assert!(outside.is_empty(), "requests outside the watched namespace: {outside:#?}");
            }
            let unused = rbac.unused(&requests);
            assert!(unused.is_empty(), "{mode:?}: grants no request uses: {unused:#?}");
        }
    }

    #[test]
    fn a_request_is_granted_only_in_the_namespace_of_its_role() {
        let rbac = Mode::WatchNamespace.rbac();
        let get = |ns: &str| ApiRequest::parse(&Method::GET, &format!("/api/v1/namespaces/{ns}/configmaps/x"), "");
        assert!(rbac.grants(&get(NAMESPACE)));
        assert!(!rbac.grants(&get("kube-system")));
        let cluster_list = ApiRequest::parse(&Method::GET, "/apis/sequencer.stateset.io/v1alpha1/sequencers", "");
        assert!(!rbac.grants(&cluster_list));
        assert!(Mode::ClusterWide.rbac().grants(&cluster_list));
    }

    #[test]
    fn the_chart_binds_the_rules_as_the_contract_assumes() {
        let template: String = crate::chart_rbac::RBAC_TEMPLATE.split_whitespace().collect::<Vec<_>>().join(" ");
        let namespaced = template.find("{{- if .Values.watchNamespace }}").expect("a watchNamespace branch");
        let cluster = template.find("{{- else }}").expect("a cluster-wide branch");
        let role = &template[namespaced..cluster];
        assert!(role.contains("kind: Role") && role.contains("namespace: {{ .Values.watchNamespace }}"));
        assert!(role.contains("include \"sequencer-operator.rules\"") && role.contains("kind: RoleBinding"));
        let cluster_role = &template[cluster..template.find("-leader-election").unwrap()];
        assert!(cluster_role.contains("kind: ClusterRole ") && cluster_role.contains("kind: ClusterRoleBinding"));
        assert!(cluster_role.contains("include \"sequencer-operator.rules\""));
        let leader = &template[template.find("-leader-election").unwrap()..];
        assert!(leader.contains("namespace: {{ include \"sequencer-operator.leaseNamespace\" . }}"));
        assert_eq!(
            crate::chart_rbac::define_body("sequencer-operator.leaseNamespace").trim(),
            "{{- default .Release.Namespace .Values.watchNamespace -}}"
        );
    }

    #[test]
    fn the_chart_ships_view_and_edit_roles_for_people_that_aggregate_into_the_default_roles() {
        let chart = include_str!("../../charts/sequencer-operator/templates/rbac-aggregated.yaml");
        for role in ["view", "edit"] {
            assert!(
                chart.contains(&format!("rbac.authorization.k8s.io/aggregate-to-{role}: \"true\"")),
                "no aggregate-to-{role} role"
            );
        }
        assert!(chart.contains("admin API"), "the edit role must say that a SequencerAction is admin-API power");
    }
}
