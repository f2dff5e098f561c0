//! The operator against a real Kubernetes cluster (kind is enough; see operator/README.md).
//!
//! Runs when `KUBECONFIG` reaches a cluster; otherwise every test prints that it skipped and
//! passes. Each test works in a namespace of its own and runs the operator's controllers in
//! process, limited to that namespace; waits are watches with a deadline, never sleeps.
//!
//! Most tests check what the operator does with the API (CRDs, CEL rules, children, owner
//! references, drift, garbage collection, a failing migration Job, action deadlines and TTL) and
//! need no sequencer image; a failing migration uses `E2E_FAILING_IMAGE` (default `busybox:1.36`).
//! The install test runs the controllers as a ServiceAccount holding exactly the chart's RBAC (read
//! from its templates), in both install modes. The happy path runs the sequencer image
//! (`E2E_SEQUENCER_IMAGE`, default the operator's default image, built by the root Dockerfile and
//! loaded into kind) on an in-cluster PostgreSQL (`E2E_POSTGRES_IMAGE`, default `postgres:16-alpine`)
//! up to `Ready=True`. Every namespace (and cluster-wide role) a test creates is deleted, and the
//! deletion awaited, when the test ends.

mod chart;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, ResourceExt};
use sequencer_operator::controller::{AdminEndpoint, Context, check_crds_installed, run_controllers};
use sequencer_operator::crd::{ActionPhase, Sequencer, SequencerAction, all_crds};
use sequencer_operator::metrics::Metrics;
use serde_json::json;
use tokio::sync::oneshot;

/// Longest wait for one observable step.
const STEP: Duration = Duration::from_secs(120);
const MANAGER: &str = "sequencer-operator-e2e";

/// Says why a test skips, on the terminal even when the test harness captures output.
fn skip(test: &str, why: std::fmt::Arguments) {
    use std::io::Write;
    // NB: `println!` is captured by the test harness and hidden for passing tests; a direct write
    // to stderr is not, so a skipped suite never looks like a passed one.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A client of the cluster `KUBECONFIG` names, or None after saying plainly why the test skips.
async fn cluster(test: &str) -> Option<Client> {
    let Some(path) = std::env::var_os("KUBECONFIG") else {
        skip(test, format_args!("KUBECONFIG is not set, so there is no cluster to test against"));
        return None;
    };
    let reach = async {
        let client = Client::try_default().await?;
        client.apiserver_version().await?;
        Ok::<_, kube::Error>(client)
    };
    match tokio::time::timeout(Duration::from_secs(15), reach).await {
        Ok(Ok(client)) => Some(client),
        Ok(Err(error)) => {
            skip(test, format_args!("KUBECONFIG={} does not reach a cluster: {error}", path.display()));
            None
        }
        Err(_) => {
            skip(test, format_args!("KUBECONFIG={} did not answer within 15s", path.display()));
            None
        }
    }
}

/// A fresh namespace (deleted when the guard drops), the CRDs installed, and the operator's
/// controllers running on that namespace until the guard drops.
struct Scene {
    client: Client,
    namespace: String,
    stop: Option<oneshot::Sender<()>>,
    /// Cluster-scoped RBAC objects (ClusterRole and ClusterRoleBinding names) to delete at the end.
    cluster_rbac: Vec<String>,
}

impl Scene {
    async fn new(client: Client, test: &str) -> Scene {
        let mut scene = Scene::bare(client.clone(), test).await;
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            AdminEndpoint::ServiceDns,
            Some(format!("e2e-{test}")),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(run_controllers(ctx, Some(scene.namespace.clone()), async move {
            let _ = stopped.await;
        }));
        scene.stop = Some(stop);
        scene
    }

    /// A fresh namespace with the CRDs installed, and no controllers yet.
    async fn bare(client: Client, test: &str) -> Scene {
        install_crds(&client).await;
        let suffix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let namespace = format!("seq-e2e-{}-{suffix:08x}", &test[..test.len().min(20)].replace('_', "-"));
        let namespace = namespace.trim_end_matches('-').to_string();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        namespaces.create(&PostParams::default(), &object).await.unwrap();
        Scene { client, namespace, stop: None, cluster_rbac: Vec::new() }
    }

    /// Installs the chart's RBAC (its rules, read from the templates) for a ServiceAccount
    /// `sequencer-operator` in this namespace: cluster-wide (ClusterRole) or, with
    /// `watch_namespace`, a Role here, plus the leader-election Role. Returns a client acting as
    /// that ServiceAccount (impersonation), and starts the controllers with it.
    async fn run_with_chart_rbac(&mut self, watch_namespace: bool) -> Client {
        let ns = self.namespace.clone();
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "sequencer-operator"}})).unwrap();
        self.api::<ServiceAccount>().create(&PostParams::default(), &account).await.unwrap();
        let subject = json!([{"kind": "ServiceAccount", "name": "sequencer-operator", "namespace": ns}]);
        let rules = json!(sequencer_operator::chart_rbac::operator_rules());
        let apply = PatchParams::apply(MANAGER).force();
        if watch_namespace {
            let roles: Api<Role> = self.api();
            let role: Role = serde_json::from_value(json!({"metadata": {"name": "operator"}, "rules": rules})).unwrap();
            roles.patch("operator", &apply, &Patch::Apply(&role)).await.unwrap();
            let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "operator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"}, "subjects": subject}))
            .unwrap();
            self.api::<RoleBinding>().patch("operator", &apply, &Patch::Apply(&binding)).await.unwrap();
        } else {
            let name = format!("sequencer-operator-e2e-{ns}");
            let role: ClusterRole =
                serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap();
            Api::<ClusterRole>::all(self.client.clone()).patch(&name, &apply, &Patch::Apply(&role)).await.unwrap();
            let binding: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, "subjects": subject}))
            .unwrap();
            Api::<ClusterRoleBinding>::all(self.client.clone())
                .patch(&name, &apply, &Patch::Apply(&binding))
                .await
                .unwrap();
            self.cluster_rbac.push(name);
        }
        let leader_rules = json!(sequencer_operator::chart_rbac::leader_rules("sequencer-operator"));
        let leader: Role =
            serde_json::from_value(json!({"metadata": {"name": "leader-election"}, "rules": leader_rules})).unwrap();
        self.api::<Role>().patch("leader-election", &apply, &Patch::Apply(&leader)).await.unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "leader-election"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader-election"}, "subjects": subject}))
        .unwrap();
        self.api::<RoleBinding>().patch("leader-election", &apply, &Patch::Apply(&binding)).await.unwrap();

        let mut config = kube::Config::infer().await.unwrap();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:sequencer-operator"));
        let operator = Client::try_from(config).unwrap();
        let scope = if watch_namespace { Some(ns.clone()) } else { None };
        let ctx =
            Arc::new(Context::new(operator.clone(), Arc::new(Metrics::default()), AdminEndpoint::ServiceDns, None));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(run_controllers(ctx, scope, async move {
            let _ = stopped.await;
        }));
        self.stop = Some(stop);
        operator
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn secrets(&self) {
        for (name, key, value) in [
            ("ledger-db", "url", "postgres://ledger:ledger@postgres:5432/ledger"),
            ("ledger-admin", "key", "ss_e2e_admin_key"),
            ("ledger-signing", "seed", "0000000000000000000000000000000000000000000000000000000000000001"),
        ] {
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: value}})).unwrap();
            self.api::<Secret>().create(&PostParams::default(), &secret).await.unwrap();
        }
    }
}

impl Drop for Scene {
    /// Stops the controllers, deletes the namespace and the cluster-wide roles, and waits until the
    /// namespace is gone, so that a run leaves nothing behind (also when the test failed).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let namespace = self.namespace.clone();
        let cluster_rbac = std::mem::take(&mut self.cluster_rbac);
        // NB: on a thread of its own with its own runtime and client: the test's runtime is
        // ending, and a client is bound to the runtime that made it.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime for the clean-up");
            runtime.block_on(async move {
                let client = Client::try_default().await.expect("the cluster of the test");
                for name in cluster_rbac {
                    let _ =
                        Api::<ClusterRoleBinding>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
                    let _ = Api::<ClusterRole>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
                }
                let namespaces: Api<Namespace> = Api::all(client);
                let Ok(Some(ns)) = namespaces.get_opt(&namespace).await else { return };
                let _ = namespaces.delete(&namespace, &DeleteParams::default()).await;
                let uid = ns.uid().unwrap_or_default();
                let gone = await_condition(namespaces, &namespace, conditions::is_deleted(&uid));
                if tokio::time::timeout(Duration::from_secs(300), gone).await.is_err() {
                    skip("clean-up", format_args!("namespace {namespace} still terminating after 300s"));
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in all_crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait(&api, &name, conditions::is_crd_established(), "CRD established").await;
    }
}

/// Waits (by watch) until `condition` holds for object `name`, or fails after [`STEP`].
async fn wait<K>(api: &Api<K>, name: &str, condition: impl Condition<K>, what: &str) -> Option<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + k8s_openapi::serde::de::DeserializeOwned + Send + 'static,
{
    within(STEP, await_condition(api.clone(), name, condition), &format!("{what} ({name})"))
        .await
        .unwrap_or_else(|e| panic!("watching {name} for {what}: {e}"))
}

async fn within<T>(limit: Duration, future: impl Future<Output = T>, what: &str) -> T {
    tokio::time::timeout(limit, future).await.unwrap_or_else(|_| panic!("{what} did not happen within {limit:?}"))
}

fn sequencer(name: &str, spec: serde_json::Value) -> Sequencer {
    let mut base = json!({
        "database": {"urlSecret": {"name": "ledger-db", "key": "url"}},
        "auth": {"adminApiKeySecret": {"name": "ledger-admin", "key": "key"}},
        "receiptSigningKeySecret": {"name": "ledger-signing", "key": "seed"},
    });
    base.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    Sequencer::new(name, serde_json::from_value(base).unwrap())
}

fn has_condition(seq: Option<&Sequencer>, type_: &str, status: &str, reason: &str) -> bool {
    seq.and_then(|s| s.condition(type_)).is_some_and(|c| c.status == status && c.reason == reason)
}

#[tokio::test]
async fn the_api_server_rejects_invalid_resources_with_the_crds_cel_messages() {
    let Some(client) = cluster("the_api_server_rejects_invalid_resources_with_the_crds_cel_messages").await else {
        return;
    };
    let scene = Scene::new(client, "cel").await;

    let anchoring_without_secrets = sequencer(
        "ledger",
        json!({"anchoring": {"enabled": true, "chainId": 8453, "registryAddress": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}}),
    );
    let error = scene.api::<Sequencer>().create(&PostParams::default(), &anchoring_without_secrets).await.unwrap_err();
    assert!(error.to_string().contains("anchoring.enabled requires anchoring.rpcUrlSecret"), "{error}");

    let action: SequencerAction = serde_json::from_value(json!({
        "apiVersion": "sequencer.stateset.io/v1alpha1", "kind": "SequencerAction",
        "metadata": {"name": "retry"},
        "spec": {"sequencerRef": {"name": "ledger"}, "anchorRetry": {"batchId": "0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41"}}
    }))
    .unwrap();
    let actions = scene.api::<SequencerAction>();
    actions.create(&PostParams::default(), &action).await.unwrap();
    let edit = json!({"spec": {"anchorRetry": {"batchId": "1b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41"}}});
    let error = actions.patch("retry", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap_err();
    assert!(error.to_string().contains("spec is immutable"), "{error}");
}

#[tokio::test]
async fn a_sequencer_gets_owned_children_drift_is_repaired_and_deletion_removes_them() {
    let Some(client) = cluster("a_sequencer_gets_owned_children_drift_is_repaired_and_deletion_removes_them").await
    else {
        return;
    };
    let scene = Scene::new(client, "children").await;
    scene.secrets().await;
    let seq = sequencer("ledger", json!({"replicas": 2, "migrations": {"mode": "OnStartup"}}));
    let seq = scene.api::<Sequencer>().create(&PostParams::default(), &seq).await.unwrap();

    let deployments = scene.api::<Deployment>();
    let deployment =
        wait(&deployments, "ledger", |d: Option<&Deployment>| d.is_some(), "Deployment created").await.unwrap();
    let owner = &deployment.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Sequencer", seq.uid().unwrap().as_str()));
    assert_eq!(owner.controller, Some(true));
    assert!(scene.api::<Service>().get_opt("ledger").await.unwrap().is_some());
    assert!(scene.api::<ServiceAccount>().get_opt("ledger").await.unwrap().is_some());
    let config = scene.api::<ConfigMap>().get("ledger-config").await.unwrap();
    assert_eq!(config.data.unwrap()["DB_MIGRATE_ON_STARTUP"], "true");

    // Status is written from the first reconcile, with every condition.
    let written = wait(
        &scene.api::<Sequencer>(),
        "ledger",
        |s: Option<&Sequencer>| s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.conditions.len() == 6),
        "status with six conditions",
    )
    .await
    .unwrap();
    assert_eq!(written.status.unwrap().observed_generation, written.metadata.generation);

    // Someone scales the Deployment by hand: the operator takes it back.
    let by_hand = json!({"spec": {"replicas": 5}});
    deployments.patch("ledger", &PatchParams::default(), &Patch::Merge(&by_hand)).await.unwrap();
    wait(
        &deployments,
        "ledger",
        |d: Option<&Deployment>| d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas) == Some(2),
        "replicas restored to 2",
    )
    .await;

    // Deleting the Sequencer deletes its children (garbage collection by owner reference).
    let uid = deployment.uid().unwrap();
    scene.api::<Sequencer>().delete("ledger", &DeleteParams::foreground()).await.unwrap();
    wait(&deployments, "ledger", conditions::is_deleted(&uid), "Deployment deleted with the Sequencer").await;
}

#[tokio::test]
async fn a_failing_migration_job_is_reported_and_no_deployment_is_created() {
    let Some(client) = cluster("a_failing_migration_job_is_reported_and_no_deployment_is_created").await else {
        return;
    };
    let scene = Scene::new(client, "migration").await;
    scene.secrets().await;
    let image = std::env::var("E2E_FAILING_IMAGE").unwrap_or_else(|_| "busybox:1.36".to_string());
    let seq = sequencer(
        "ledger",
        json!({"image": image, "migrations": {"mode": "Job", "backoffLimit": 0, "retries": 0, "activeDeadlineSeconds": 60}}),
    );
    scene.api::<Sequencer>().create(&PostParams::default(), &seq).await.unwrap();

    let failed = wait(
        &scene.api::<Sequencer>(),
        "ledger",
        |s: Option<&Sequencer>| has_condition(s, "MigrationsApplied", "False", "MigrationJobFailed"),
        "MigrationsApplied=False/MigrationJobFailed",
    )
    .await
    .unwrap();
    assert!(has_condition(Some(&failed), "Degraded", "True", "MigrationJobFailed"));
    assert!(has_condition(Some(&failed), "Ready", "False", "MigrationJobFailed"));
    assert!(scene.api::<Deployment>().get_opt("ledger").await.unwrap().is_none());
}

#[tokio::test]
async fn an_action_whose_sequencer_never_serves_fails_at_its_deadline_and_is_deleted_after_its_ttl() {
    let Some(client) =
        cluster("an_action_whose_sequencer_never_serves_fails_at_its_deadline_and_is_deleted_after_its_ttl").await
    else {
        return;
    };
    let scene = Scene::new(client, "action").await;
    let action: SequencerAction = serde_json::from_value(json!({
        "apiVersion": "sequencer.stateset.io/v1alpha1", "kind": "SequencerAction",
        "metadata": {"name": "verify"},
        "spec": {
            "sequencerRef": {"name": "absent"},
            "verifyStream": {"tenantId": "6f1c2a70-5b3e-4c8d-9e0f-1a2b3c4d5e6f", "storeId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"},
            "deadlineSeconds": 10,
            "ttlSecondsAfterFinished": 5
        }
    }))
    .unwrap();
    let actions = scene.api::<SequencerAction>();
    let created = actions.create(&PostParams::default(), &action).await.unwrap();

    let failed = wait(
        &actions,
        "verify",
        |a: Option<&SequencerAction>| a.is_some_and(|a| a.phase() == ActionPhase::Failed),
        "phase Failed",
    )
    .await
    .unwrap();
    let reason = failed.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Succeeded").unwrap().reason;
    assert_eq!(reason, "DeadlineExceeded");
    wait(&actions, "verify", conditions::is_deleted(&created.uid().unwrap()), "deleted after its TTL").await;
}

#[tokio::test]
async fn with_only_the_charts_rbac_the_operator_starts_and_reconciles_in_both_install_modes() {
    let test = "with_only_the_charts_rbac_the_operator_starts_and_reconciles_in_both_install_modes";
    let Some(client) = cluster(test).await else {
        return;
    };
    for watch_namespace in [true, false] {
        let mut scene = Scene::bare(client.clone(), if watch_namespace { "rbac-ns" } else { "rbac-cluster" }).await;
        let operator = scene.run_with_chart_rbac(watch_namespace).await;
        let scope = watch_namespace.then(|| scene.namespace.clone());
        check_crds_installed(&operator, scope.as_deref())
            .await
            .expect("the start-up check passes with the chart's RBAC");
        if watch_namespace {
            let error = check_crds_installed(&operator, None).await.unwrap_err().to_string();
            assert!(error.contains("RBAC") && !error.contains("CRD not installed"), "{error}");
        }
        scene.secrets().await;
        let seq = sequencer("ledger", json!({"image": "busybox:1.36", "migrations": {"mode": "OnStartup"}}));
        scene.api::<Sequencer>().create(&PostParams::default(), &seq).await.unwrap();
        wait(&scene.api::<Deployment>(), "ledger", |d: Option<&Deployment>| d.is_some(), "Deployment applied").await;
        let written = wait(
            &scene.api::<Sequencer>(),
            "ledger",
            |s: Option<&Sequencer>| {
                s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.observed_generation.is_some())
            },
            "status written by the operator",
        )
        .await
        .unwrap();
        assert!(written.condition("Ready").is_some());
    }
}

#[tokio::test]
async fn a_sequencer_on_the_sequencer_image_and_an_in_cluster_postgres_becomes_ready() {
    let Some(client) = cluster("a_sequencer_on_the_sequencer_image_and_an_in_cluster_postgres_becomes_ready").await
    else {
        return;
    };
    let scene = Scene::new(client, "happy").await;
    let postgres_image = std::env::var("E2E_POSTGRES_IMAGE").unwrap_or_else(|_| "postgres:16-alpine".to_string());
    let labels = json!({"app": "postgres"});
    let postgres: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "postgres"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
            "name": "postgres", "image": postgres_image,
            "env": [{"name": "POSTGRES_USER", "value": "ledger"}, {"name": "POSTGRES_PASSWORD", "value": "ledger"},
                    {"name": "POSTGRES_DB", "value": "ledger"}],
            "ports": [{"containerPort": 5432}],
            "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "ledger"]}, "periodSeconds": 2}
        }]}}}
    }))
    .unwrap();
    scene.api::<Deployment>().create(&PostParams::default(), &postgres).await.unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "postgres"}, "spec": {"selector": labels, "ports": [{"port": 5432, "targetPort": 5432}]}
    }))
    .unwrap();
    scene.api::<Service>().create(&PostParams::default(), &service).await.unwrap();
    scene.secrets().await;

    let image =
        std::env::var("E2E_SEQUENCER_IMAGE").unwrap_or_else(|_| sequencer_operator::crd::DEFAULT_IMAGE.to_string());
    // Job mode: the migration Job (stateset-sequencer-admin from the same image) waits for the
    // database and is retried if it is not up yet.
    let seq = sequencer("ledger", json!({"image": image, "replicas": 1}));
    scene.api::<Sequencer>().create(&PostParams::default(), &seq).await.unwrap();
    let ready = within(
        Duration::from_secs(600),
        await_condition(scene.api::<Sequencer>(), "ledger", |s: Option<&Sequencer>| {
            has_condition(s, "Ready", "True", "AllReplicasReady")
        }),
        "Ready=True",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        has_condition(Some(&ready), "MigrationsApplied", "True", "MigrationJobSucceeded")
            || has_condition(Some(&ready), "MigrationsApplied", "True", "UpToDate")
    );
    assert_eq!(ready.status.as_ref().and_then(|s| s.current_image.clone()), Some(image));
}
