//! The operator against a real Kubernetes cluster (kind is enough; see operator/README.md).
//!
//! Runs when `KUBECONFIG` reaches a cluster; otherwise every test prints that it skipped and
//! passes. The CRDs are installed as the docs upgrade them (`kubectl apply --server-side
//! --force-conflicts -f crds/`). Waits are watches with a deadline, never sleeps.
//!
//! The install test installs the operator as a user would: the chart rendered by `helm template`
//! (helm on PATH or `HELM`; without it that test says it skipped) in both install modes, applied
//! object by object, with the operator image `E2E_OPERATOR_IMAGE` (default the chart's, built by
//! operator/Dockerfile); the operator then runs in the cluster under the chart's own RBAC and brings
//! a Sequencer on the sequencer image to `Ready=True` on an in-cluster PostgreSQL, and the test
//! uninstalls it again.
//!
//! The other tests run the operator's controllers in the test process, each in a namespace of its
//! own: what the operator does with the API (CRDs, CEL rules, children, owner references, drift,
//! garbage collection, a failing migration Job, action deadlines and TTL) needs no image; a failing
//! migration uses `E2E_FAILING_IMAGE` (default `busybox:1.36`). One runs the controllers as a
//! ServiceAccount holding the chart's RBAC rules (impersonated), one the happy path in process. The
//! happy paths run the sequencer image (`E2E_SEQUENCER_IMAGE`, default the operator's default image,
//! built by the root Dockerfile and loaded into kind) on an in-cluster PostgreSQL
//! (`E2E_POSTGRES_IMAGE`, default `postgres:16-alpine`). Every namespace (and cluster-wide object) a
//! test creates is deleted, and the deletion awaited, when the test ends, also when it failed.

mod chart;

use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, ResourceExt};
use sequencer_operator::controller::{AdminEndpoint, Context, check_crds_installed, run_controllers};
use sequencer_operator::crd::{ActionPhase, Sequencer, SequencerAction};
use sequencer_operator::metrics::Metrics;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{RwLock, oneshot};

/// Longest wait for one observable step.
const STEP: Duration = Duration::from_secs(120);
/// Longest wait for a step that may pull an image (an operator pod) or run a migration first.
const SLOW_STEP: Duration = Duration::from_secs(600);
/// How long a namespace may take to go.
const NAMESPACE_GONE: Duration = Duration::from_secs(300);
const MANAGER: &str = "sequencer-operator-e2e";
/// kubectl's field manager for `kubectl apply --server-side`: the CRDs are applied as the docs do.
const KUBECTL: &str = "kubectl";
/// Field manager of the chart's objects in the install test.
const INSTALLER: &str = "sequencer-operator-e2e-install";

/// An operator watching every namespace reconciles the other tests' Sequencers too, so a test
/// running one holds this exclusively; the tests whose operator watches its own namespace share it.
static CLUSTER_WIDE: RwLock<()> = RwLock::const_new(());

/// Held for as long as a test's operator runs; see [`CLUSTER_WIDE`].
type Gate = Box<dyn Send>;

async fn gate(cluster_wide: bool) -> Gate {
    if cluster_wide { Box::new(CLUSTER_WIDE.write().await) } else { Box::new(CLUSTER_WIDE.read().await) }
}

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
    /// Set by [`Scene::end`], which already did what dropping does.
    ended: bool,
    /// NB: last, so that it is released after the clean-up of [`Drop`] ran.
    gate: Option<Gate>,
}

impl Scene {
    async fn new(client: Client, test: &str) -> Scene {
        let gate = gate(false).await;
        let mut scene = Scene::bare(client.clone(), test).await;
        scene.gate = Some(gate);
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

    /// A fresh namespace with the CRDs installed, and no controllers yet (nor a [`Gate`]: the caller
    /// holds the one its operator needs).
    async fn bare(client: Client, test: &str) -> Scene {
        install_crds(&client).await;
        let suffix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let namespace = format!("seq-e2e-{}-{suffix:08x}", &test[..test.len().min(20)].replace('_', "-"));
        let namespace = namespace.trim_end_matches('-').to_string();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        namespaces.create(&PostParams::default(), &object).await.unwrap();
        Scene { client, namespace, stop: None, cluster_rbac: Vec::new(), ended: false, gate: None }
    }

    /// Ends the scene as dropping it does (controllers stopped, cluster-wide roles and the namespace
    /// deleted), failing the test unless the namespace is gone within [`NAMESPACE_GONE`].
    async fn end(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        delete_cluster_rbac(&self.client, &std::mem::take(&mut self.cluster_rbac)).await;
        delete_namespace(&self.client, &self.namespace).await.unwrap_or_else(|e| panic!("{e}"));
        self.ended = true;
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

    /// An in-cluster PostgreSQL (Deployment and Service `postgres`, image `E2E_POSTGRES_IMAGE`,
    /// default `postgres:16-alpine`; user, password and database `ledger`) and the Secrets of
    /// [`Scene::secrets`], whose database URL names it.
    async fn postgres(&self) {
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
        self.api::<Deployment>().create(&PostParams::default(), &postgres).await.unwrap();
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "postgres"}, "spec": {"selector": labels, "ports": [{"port": 5432, "targetPort": 5432}]}
        }))
        .unwrap();
        self.api::<Service>().create(&PostParams::default(), &service).await.unwrap();
        self.secrets().await;
    }
}

impl Drop for Scene {
    /// Stops the controllers, deletes the namespace and the cluster-wide roles, and waits until the
    /// namespace is gone, so that a run leaves nothing behind (also when the test failed).
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let namespace = self.namespace.clone();
        let cluster_rbac = std::mem::take(&mut self.cluster_rbac);
        clean_up(move |client| async move {
            delete_cluster_rbac(&client, &cluster_rbac).await;
            if let Err(error) = delete_namespace(&client, &namespace).await {
                skip("clean-up", format_args!("{error}"));
            }
        });
    }
}

/// Runs `work` to the end on a thread of its own, with its own runtime and client: from a `Drop`,
/// where the test's runtime is ending (a client is bound to the runtime that made it).
fn clean_up<F, Fut>(work: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for the clean-up");
        runtime.block_on(async move {
            match Client::try_default().await {
                Ok(client) => work(client).await,
                Err(error) => skip("clean-up", format_args!("no client of the test's cluster: {error}")),
            }
        });
    });
    let _ = cleanup.join();
}

async fn delete_cluster_rbac(client: &Client, names: &[String]) {
    for name in names {
        let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(name, &DeleteParams::default()).await;
        let _ = Api::<ClusterRole>::all(client.clone()).delete(name, &DeleteParams::default()).await;
    }
}

/// Deletes a namespace and waits until it is gone (its objects with it).
async fn delete_namespace(client: &Client, namespace: &str) -> Result<(), String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_opt(namespace).await.map_err(|e| format!("reading namespace {namespace}: {e}"))?
    else {
        return Ok(());
    };
    match namespaces.delete(namespace, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(format!("deleting namespace {namespace}: {error}")),
    }
    let uid = ns.uid().unwrap_or_default();
    let gone = await_condition(namespaces, namespace, conditions::is_deleted(&uid));
    match tokio::time::timeout(NAMESPACE_GONE, gone).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("watching namespace {namespace} go: {error}")),
        Err(_) => Err(format!("namespace {namespace} still terminating after {NAMESPACE_GONE:?}")),
    }
}

/// Installs (or upgrades) the CRDs as the docs say: `kubectl apply --server-side --force-conflicts -f
/// crds/`, i.e. every document of every file in crds/, applied under kubectl's field manager and
/// taking over fields another manager (a first `helm install`) owns; then waits until each is
/// established.
async fn install_crds(client: &Client) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        .collect();
    files.sort();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for document in yaml_serde::Deserializer::from_str(&text) {
            let Some(crd) = Option::<CustomResourceDefinition>::deserialize(document)
                .unwrap_or_else(|e| panic!("{} holds a document that is no CRD: {e}", file.display()))
            else {
                continue;
            };
            let name = crd.name_any();
            api.patch(&name, &PatchParams::apply(KUBECTL).force(), &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("applying CRD {name} of {}: {e}", file.display()));
            names.push(name);
        }
    }
    assert!(names.len() >= 2, "crds/ holds the Sequencer and SequencerAction CRDs: {names:?}");
    for name in names {
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

    // The transparency log's rules compile in the API server's CEL (RE2 classes, cost) and say why.
    let witness = |url: &str, key: &str| json!({"transparencyLog": {"witnesses": [{"url": url, "key": key}]}});
    let good_key = "witness.example.com+87ef5671+BOpKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs";
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let tenant = "0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41";
    let mut accepted = witness("https://witness.example.com/", good_key);
    accepted["transparencyLog"]["publicRead"] = json!([format!("{tenant}/{tenant}"), format!("{tenant}/*")]);
    scene.api::<Sequencer>().create(&dry_run, &sequencer("ledger", accepted)).await.unwrap();
    for (spec, message) in [
        (witness("https://witness.example.com/", "witness.example.com+87ef5671"), "must be a C2SP cosignature/v1"),
        (witness("https://user:token@witness.example.com/", good_key), "must not carry credentials"),
        (witness("witness.example.com", good_key), "must be an http:// or https:// URL"),
        (json!({"transparencyLog": {"publicRead": ["*/*"]}}), "publicRead entries must be"),
    ] {
        let error = scene.api::<Sequencer>().create(&dry_run, &sequencer("ledger", spec.clone())).await.unwrap_err();
        assert!(error.to_string().contains(message), "{spec}: {error}");
    }

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

    // Pinned receipt keys: the schema's item count and pattern, and the set's uniqueness, which only
    // the API server checks (operator/src/crd/tests.rs checks the rest without one).
    let key = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
    let verify = |keys: serde_json::Value| -> SequencerAction {
        serde_json::from_value(json!({
            "apiVersion": "sequencer.stateset.io/v1alpha1", "kind": "SequencerAction",
            "metadata": {"name": "verify"},
            "spec": {"sequencerRef": {"name": "ledger"},
                     "verifyStream": {"tenantId": tenant, "storeId": tenant, "receiptKeys": keys}}
        }))
        .unwrap()
    };
    actions.create(&dry_run, &verify(json!([key, format!("0x{key}")]))).await.unwrap();
    for (keys, message) in [
        (json!([]), "should have at least 1 items"),
        (json!(["zz"]), "should match"),
        (json!([key, key]), "Duplicate value"),
    ] {
        let error = actions.create(&dry_run, &verify(keys.clone())).await.unwrap_err();
        assert!(error.to_string().contains(message), "{keys}: {error}");
    }
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

/// The controllers, run in this process as a ServiceAccount holding the chart's RBAC rules (read
/// from its templates, bound by hand, impersonated), start and reconcile in both install modes.
/// Unlike the install test below it needs neither helm nor an operator image, and it checks what
/// only an in-process caller sees: the start-up check passes in the operator's scope, and a
/// namespace-limited operator asked beyond its namespace reports the RBAC problem, not a missing CRD.
#[tokio::test]
async fn with_only_the_charts_rbac_the_operator_starts_and_reconciles_in_both_install_modes() {
    let test = "with_only_the_charts_rbac_the_operator_starts_and_reconciles_in_both_install_modes";
    let Some(client) = cluster(test).await else {
        return;
    };
    for watch_namespace in [true, false] {
        let _gate = gate(!watch_namespace).await;
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

/// The happy path with the controllers in process: the same Sequencer as the install test's, without
/// helm or an operator image, so that a failure of both tells the operator's logic from its packaging.
#[tokio::test]
async fn a_sequencer_on_the_sequencer_image_and_an_in_cluster_postgres_becomes_ready() {
    let Some(client) = cluster("a_sequencer_on_the_sequencer_image_and_an_in_cluster_postgres_becomes_ready").await
    else {
        return;
    };
    let scene = Scene::new(client, "happy").await;
    scene.postgres().await;
    a_ready_sequencer(&scene, &sequencer_image(), &[&scene.namespace]).await;
}

/// The sequencer image of the happy paths: `E2E_SEQUENCER_IMAGE`, default the operator's default.
fn sequencer_image() -> String {
    std::env::var("E2E_SEQUENCER_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| sequencer_operator::crd::DEFAULT_IMAGE.to_string())
}

/// Creates the Sequencer `ledger` on `image` in the scene (whose PostgreSQL and Secrets exist) and
/// waits for `Ready=True`; on a timeout the failure shows what `namespaces` hold (see [`explain`]).
async fn a_ready_sequencer(scene: &Scene, image: &str, namespaces: &[&str]) -> Sequencer {
    // Job mode: the migration Job (stateset-sequencer-admin from the same image) waits for the
    // database and is retried if it is not up yet.
    let seq = sequencer("ledger", json!({"image": image, "replicas": 1}));
    scene.api::<Sequencer>().create(&PostParams::default(), &seq).await.unwrap();
    let ready = within_explained(
        SLOW_STEP,
        await_condition(scene.api::<Sequencer>(), "ledger", |s: Option<&Sequencer>| {
            has_condition(s, "Ready", "True", "AllReplicasReady")
        }),
        "Sequencer ledger Ready=True",
        &scene.client,
        namespaces,
    )
    .await
    .unwrap_or_else(|e| panic!("watching Sequencer ledger: {e}"))
    .unwrap();
    assert!(
        has_condition(Some(&ready), "MigrationsApplied", "True", "MigrationJobSucceeded")
            || has_condition(Some(&ready), "MigrationsApplied", "True", "UpToDate")
    );
    assert_eq!(ready.status.as_ref().and_then(|s| s.current_image.as_deref()), Some(image));
    ready
}

/// Waits for `future` at most `limit`; on a timeout, fails with what `namespaces` hold.
async fn within_explained<T>(
    limit: Duration,
    future: impl Future<Output = T>,
    what: &str,
    client: &Client,
    namespaces: &[&str],
) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not happen within {limit:?}\n{}", explain(client, namespaces).await),
    }
}

/// What someone needs to see when a step in the cluster timed out: per namespace the pods (phase,
/// each container's state and its last log lines), the Sequencers' conditions and the Warning events.
async fn explain(client: &Client, namespaces: &[&str]) -> String {
    let mut out = String::new();
    for namespace in namespaces {
        let _ = writeln!(out, "--- namespace {namespace}");
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        match pods.list(&ListParams::default()).await {
            Err(error) => {
                let _ = writeln!(out, "pods: {error}");
            }
            Ok(list) => {
                for pod in list {
                    let name = pod.name_any();
                    let status = pod.status.unwrap_or_default();
                    let _ = writeln!(out, "pod {name}: {}", status.phase.unwrap_or_default());
                    let containers = status
                        .init_container_statuses
                        .iter()
                        .flatten()
                        .chain(status.container_statuses.iter().flatten());
                    for container in containers {
                        let state = container.state.clone().unwrap_or_default();
                        let detail = match (state.waiting, state.terminated) {
                            (Some(w), _) => {
                                format!("waiting {}: {}", w.reason.unwrap_or_default(), w.message.unwrap_or_default())
                            }
                            (_, Some(t)) => {
                                format!("terminated {} (exit {})", t.reason.unwrap_or_default(), t.exit_code)
                            }
                            _ => "running".to_string(),
                        };
                        let _ = writeln!(
                            out,
                            "  {}: ready {}, {} restarts, {detail}",
                            container.name, container.ready, container.restart_count
                        );
                        let logs = LogParams {
                            container: Some(container.name.clone()),
                            tail_lines: Some(20),
                            ..LogParams::default()
                        };
                        if let Ok(lines) = pods.logs(&name, &logs).await {
                            for line in lines.lines() {
                                let _ = writeln!(out, "    | {line}");
                            }
                        }
                    }
                }
            }
        }
        let sequencers: Api<Sequencer> = Api::namespaced(client.clone(), namespace);
        for seq in sequencers.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let _ = writeln!(out, "sequencer {}:", seq.name_any());
            for c in seq.status.iter().flat_map(|s| &s.conditions) {
                let _ = writeln!(out, "  {}={} {}: {}", c.type_, c.status, c.reason, c.message);
            }
        }
        let events: Api<Event> = Api::namespaced(client.clone(), namespace);
        let warnings: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .collect();
        for event in warnings.iter().rev().take(20).rev() {
            let object = &event.involved_object;
            let _ = writeln!(
                out,
                "warning {} {}/{}: {}",
                event.reason.as_deref().unwrap_or_default(),
                object.kind.as_deref().unwrap_or_default(),
                object.name.as_deref().unwrap_or_default(),
                event.message.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

/// One object applied from the chart: what it takes to delete it again.
struct Applied {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
}

impl Applied {
    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }

    fn describe(&self) -> String {
        let namespace = self.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
        format!("{} {namespace}{}", self.resource.kind, self.name)
    }

    /// Deletes the object, its dependents first (the Deployment's pods), and waits until it is gone.
    async fn delete(&self, client: &Client) -> Result<(), String> {
        let api = self.api(client);
        let Some(object) = api.get_opt(&self.name).await.map_err(|e| format!("reading {}: {e}", self.describe()))?
        else {
            return Ok(());
        };
        match api.delete(&self.name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(format!("deleting {}: {error}", self.describe())),
        }
        let uid = object.uid().unwrap_or_default();
        match tokio::time::timeout(SLOW_STEP, await_condition(api, &self.name, conditions::is_deleted(&uid))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("watching {} go: {error}", self.describe())),
            Err(_) => Err(format!("{} still there {SLOW_STEP:?} after its deletion", self.describe())),
        }
    }
}

/// Deletes `applied` in reverse order of application, awaiting each deletion; returns the failures.
async fn delete_all(client: &Client, applied: &[Applied]) -> Vec<String> {
    let mut failures = Vec::new();
    for object in applied.iter().rev() {
        if let Err(error) = object.delete(client).await {
            failures.push(error);
        }
    }
    failures
}

/// The chart's rendered objects as the install test applied them. [`Installed::uninstall`] deletes
/// every one (cluster-scoped ones too) and awaits each deletion; dropping it does the same when the
/// test failed before.
struct Installed {
    client: Client,
    applied: Vec<Applied>,
}

impl Installed {
    fn new(client: Client) -> Installed {
        Installed { client, applied: Vec::new() }
    }

    /// Applies every object of helm's output, in helm's install order, by server-side apply; each
    /// object's resource and scope come from discovery (its apiVersion and kind), a namespaced one
    /// without namespace goes to `release_namespace`. Returns the objects as applied.
    async fn apply(&mut self, rendered: &str, release_namespace: &str) -> Vec<DynamicObject> {
        let mut objects = chart::parse_manifests(rendered).unwrap_or_else(|e| panic!("helm's output: {e}"));
        chart::sort_for_install(&mut objects);
        for object in &mut objects {
            let gvk =
                chart::gvk(object).unwrap_or_else(|e| panic!("{} {}: {e}", chart::kind(object), object.name_any()));
            let (resource, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("discovering {gvk:?} (is its CRD installed?): {e}"));
            let namespace =
                chart::place(object, &capabilities.scope, release_namespace).unwrap_or_else(|e| panic!("{e}"));
            // NB: recorded before the request, so that a failed test deletes whatever it created.
            self.applied.push(Applied { resource, namespace, name: object.name_any() });
            let applied = self.applied.last().unwrap();
            applied
                .api(&self.client)
                .patch(&applied.name, &PatchParams::apply(INSTALLER).force(), &Patch::Apply(&*object))
                .await
                .unwrap_or_else(|e| panic!("applying {}: {e}", applied.describe()));
            println!("applied {}", applied.describe());
        }
        objects
    }

    /// Deletes everything applied, in reverse order, and fails unless each object is gone.
    async fn uninstall(&mut self) {
        let applied = std::mem::take(&mut self.applied);
        let failures = delete_all(&self.client, &applied).await;
        assert!(failures.is_empty(), "uninstalling: {failures:#?}");
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let applied = std::mem::take(&mut self.applied);
        if applied.is_empty() {
            return;
        }
        clean_up(move |client| async move {
            for failure in delete_all(&client, &applied).await {
                skip("clean-up", format_args!("{failure}"));
            }
        });
    }
}

/// The installer against a mocked API server (no cluster needed): every rendered object's resource
/// and scope come from discovery of its apiVersion and kind, and it is applied in helm's install
/// order at its scope's path (namespaced ones in their namespace, cluster-scoped ones at the root)
/// by server-side apply under [`INSTALLER`], forcing conflicts, with the object as rendered.
#[tokio::test]
async fn the_installer_applies_each_rendered_object_at_its_scopes_path() {
    use hyper::{Method, Request, Response};
    use kube::client::Body;

    /// What discovery answers for the group versions the fixture uses: (plural, kind, namespaced).
    fn resources(group_version: &str) -> Vec<(&'static str, &'static str, bool)> {
        match group_version {
            "v1" => vec![("serviceaccounts", "ServiceAccount", true), ("services", "Service", true)],
            "rbac.authorization.k8s.io/v1" => vec![
                ("clusterroles", "ClusterRole", false),
                ("clusterrolebindings", "ClusterRoleBinding", false),
                ("roles", "Role", true),
                ("rolebindings", "RoleBinding", true),
            ],
            "apps/v1" => vec![("deployments", "Deployment", true), ("deployments/scale", "Scale", true)],
            other => panic!("discovery of an unexpected group version {other}"),
        }
    }

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let applies = Arc::new(std::sync::Mutex::new(Vec::<(String, serde_json::Value)>::new()));
    let server = tokio::spawn({
        let applies = applies.clone();
        async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap();
                let path = parts.uri.path().to_string();
                let reply = if parts.method == Method::GET {
                    let group_version = path.strip_prefix("/api/").or_else(|| path.strip_prefix("/apis/")).unwrap();
                    let resources: Vec<_> = resources(group_version)
                        .into_iter()
                        .map(|(name, kind, namespaced)| {
                            json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
                        })
                        .collect();
                    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
                } else {
                    assert_eq!(parts.method, Method::PATCH, "{path}");
                    let query = parts.uri.query().unwrap_or_default();
                    assert!(
                        query.contains(&format!("fieldManager={INSTALLER}")) && query.contains("force=true"),
                        "{query}"
                    );
                    assert_eq!(parts.headers["content-type"], "application/apply-patch+yaml", "{path}");
                    let object: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    applies.lock().unwrap().push((path, object.clone()));
                    object
                };
                let response = Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        }
    });

    let mut installed = Installed::new(Client::new(service, "default"));
    // The fixture in reverse: the installer, not the renderer, puts the objects in install order.
    let mut documents: Vec<&str> = chart::FIXTURE.split("\n---\n").skip(1).collect();
    documents.reverse();
    let rendered = documents.join("\n---\n");
    let objects = installed.apply(&rendered, "seq-op").await;
    // NB: nothing to delete from a mocked cluster (dropping would try the real one).
    installed.applied.clear();
    server.abort();

    let applies = applies.lock().unwrap().clone();
    let paths: Vec<&str> = applies.iter().map(|(path, _)| path.as_str()).collect();
    let (rbac, name) = ("/apis/rbac.authorization.k8s.io/v1", "seq-e2e-sequencer-operator");
    assert_eq!(
        paths,
        [
            format!("/api/v1/namespaces/seq-op/serviceaccounts/{name}"),
            format!("{rbac}/clusterroles/{name}-edit"),
            format!("{rbac}/clusterroles/{name}-view"),
            format!("{rbac}/namespaces/seq-app/roles/{name}-leader-election"),
            format!("{rbac}/namespaces/seq-app/roles/{name}"),
            format!("{rbac}/namespaces/seq-app/rolebindings/{name}-leader-election"),
            format!("{rbac}/namespaces/seq-app/rolebindings/{name}"),
            format!("/api/v1/namespaces/seq-op/services/{name}-metrics"),
            format!("/apis/apps/v1/namespaces/seq-op/deployments/{name}"),
        ]
    );
    for ((path, sent), object) in applies.iter().zip(&objects) {
        assert_eq!(sent, &serde_json::to_value(object).unwrap(), "{path}");
        assert!(sent["apiVersion"].is_string() && sent["kind"].is_string(), "{path}: {sent}");
    }
    assert_eq!(applies[0].1["metadata"]["namespace"], "seq-op");
    assert!(applies[1].1["metadata"].get("namespace").is_none(), "a ClusterRole has no namespace");
    assert_eq!(applies[8].1["spec"]["template"]["spec"]["serviceAccountName"], name);
}

/// Whether a Deployment has rolled out its current generation with every replica available.
fn deployment_available(deployment: Option<&Deployment>) -> bool {
    let Some(deployment) = deployment else { return false };
    let (Some(spec), Some(status)) = (&deployment.spec, &deployment.status) else { return false };
    status.observed_generation == deployment.metadata.generation
        && status.available_replicas.unwrap_or(0) >= spec.replicas.unwrap_or(1)
        && status.conditions.iter().flatten().any(|c| c.type_ == "Available" && c.status == "True")
}

/// The operator installed from the chart's rendered manifests, as a user would, in both install
/// modes (cluster-wide, then `watchNamespace`), each in namespaces and under a release name of its
/// own: `helm template` with the operator image (`E2E_OPERATOR_IMAGE`, default the chart's), the
/// CRDs applied as the docs say, every rendered object applied by server-side apply, the operator
/// Deployment awaited until available; then, in another namespace, an in-cluster PostgreSQL and a
/// Sequencer on the sequencer image, which the operator (in its pod, under the chart's RBAC: no
/// controller runs in this process) brings to `Ready=True` while holding the leader Lease. Then
/// uninstalled: every applied object deleted (the ClusterRoles and ClusterRoleBinding too), nothing
/// of the release left cluster-wide, both namespaces deleted and their deletion awaited.
#[tokio::test]
async fn the_operator_installed_from_the_charts_manifests_brings_a_sequencer_to_ready_in_both_install_modes() {
    let test = "the_operator_installed_from_the_charts_manifests_brings_a_sequencer_to_ready_in_both_install_modes";
    let Some(client) = cluster(test).await else {
        return;
    };
    let helm = chart::helm();
    let helm_version = match chart::helm_version(&helm) {
        Ok(version) => version,
        Err(why) => {
            skip(test, format_args!("{why}"));
            return;
        }
    };
    let operator_image = std::env::var("E2E_OPERATOR_IMAGE").ok().filter(|i| !i.is_empty());
    let sequencer_image = sequencer_image();
    println!("helm {helm_version}; sequencer image {sequencer_image}");

    for watch in [false, true] {
        let mode = if watch { "watchNamespace" } else { "cluster-wide" };
        let _gate = gate(!watch).await;
        // NB: declared in this order so that, on a failure, the installed objects go first, then
        // the operator's namespace, then the Sequencer's (locals drop in reverse).
        let app = Scene::bare(client.clone(), if watch { "chart-ns-app" } else { "chart-cw-app" }).await;
        let op = Scene::bare(client.clone(), if watch { "chart-ns-op" } else { "chart-cw-op" }).await;
        // Unique per run, like the namespaces (whose random suffix it takes): the chart names its
        // cluster-wide objects after the release.
        let release_name = format!("seq-{}", op.namespace.rsplit('-').next().unwrap());
        let release = chart::Release {
            name: &release_name,
            namespace: &op.namespace,
            watch_namespace: watch.then_some(app.namespace.as_str()),
            image: operator_image.as_deref(),
        };
        let rendered = release.render(&helm).unwrap_or_else(|e| panic!("{e}"));

        let mut installed = Installed::new(client.clone());
        let objects = installed.apply(&rendered, &op.namespace).await;
        let deployment = objects.iter().find(|o| chart::kind(o) == "Deployment").expect("the operator Deployment");
        let image = chart::container_image(deployment).unwrap_or_default();
        println!(
            "{mode}: release {release_name} in namespace {}, operator image {image}, Sequencer in namespace {}",
            op.namespace, app.namespace
        );
        let namespaces = [op.namespace.as_str(), app.namespace.as_str()];
        within_explained(
            SLOW_STEP,
            await_condition(op.api::<Deployment>(), &deployment.name_any(), deployment_available),
            &format!("{mode}: operator Deployment {} available", deployment.name_any()),
            &client,
            &namespaces,
        )
        .await
        .unwrap_or_else(|e| panic!("watching the operator Deployment: {e}"));

        app.postgres().await;
        a_ready_sequencer(&app, &sequencer_image, &namespaces).await;

        // The operator in the pod did it: it holds the leader Lease where the chart puts it.
        let lease_name = chart::container_env(deployment, "LEASE_NAME").expect("LEASE_NAME");
        let lease_namespace = chart::container_env(deployment, "LEASE_NAMESPACE").expect("LEASE_NAMESPACE");
        assert_eq!(&lease_namespace, if watch { &app.namespace } else { &op.namespace });
        let lease = Api::<Lease>::namespaced(client.clone(), &lease_namespace).get(&lease_name).await.unwrap();
        let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        let selector = deployment.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("the Deployment's selector")
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let pods = op.api::<Pod>().list(&ListParams::default().labels(&selector)).await.unwrap();
        assert!(
            pods.iter().any(|p| p.name_any() == holder),
            "the Lease {lease_namespace}/{lease_name} is held by {holder:?}, not by an operator pod"
        );

        installed.uninstall().await;
        let instance = ListParams::default().labels(&format!("app.kubernetes.io/instance={release_name}"));
        let roles = Api::<ClusterRole>::all(client.clone()).list(&instance).await.unwrap();
        let bindings = Api::<ClusterRoleBinding>::all(client.clone()).list(&instance).await.unwrap();
        assert!(
            roles.items.is_empty() && bindings.items.is_empty(),
            "the release left cluster-wide: {:?} {:?}",
            roles.iter().map(|r| r.name_any()).collect::<Vec<_>>(),
            bindings.iter().map(|b| b.name_any()).collect::<Vec<_>>()
        );
        op.end().await;
        app.end().await;
        println!("{mode}: uninstalled, namespaces gone");
    }
}
