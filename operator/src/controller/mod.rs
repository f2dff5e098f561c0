//! The two reconcilers and what they share: the context, server-side apply under the operator's
//! field manager, events, and the admin API client of a sequencer.

pub mod action;
pub mod sequencer;

use std::fmt::Debug;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::admin::{AdminClient, ApiKey, KeyRing};
use crate::conditions::Reason;
use crate::crd::{SecretKeyRef, Sequencer, SequencerAction};
use crate::labels::{FIELD_MANAGER, HTTP_PORT, LABEL_MANAGED_BY, OPERATOR_NAME};
use crate::metrics::Metrics;
use crate::resources;
use crate::server::Liveness;
use crate::{Error, Result};

/// Where the operator reaches a sequencer's admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// `http://<sequencer>.<namespace>.svc:8080`, through the sequencer's Service (in cluster).
    ServiceDns,
    /// Every sequencer at this base URL: tests, or an operator run outside the cluster against a
    /// port-forward of one sequencer.
    Fixed(String),
}

impl AdminEndpoint {
    /// The base URL of sequencer `name` in `namespace`.
    pub fn base_url(&self, name: &str, namespace: &str) -> String {
        match self {
            AdminEndpoint::ServiceDns => format!("http://{name}.{namespace}.svc:{HTTP_PORT}"),
            AdminEndpoint::Fixed(url) => url.clone(),
        }
    }
}

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub admin_endpoint: AdminEndpoint,
    /// Health of the watches, read by `/healthz`.
    pub liveness: Arc<Liveness>,
    /// The last admin status read per Sequencer (`namespace/name`) and when: the admin API is
    /// asked at most every `statusPollSeconds`, however often children trigger a reconcile.
    pub admin_reads:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, crate::conditions::AdminState)>>,
    /// Admin keys read so far (memory only), so calls keep working while pods roll after a rotation.
    pub admin_keys: KeyRing,
}

impl Context {
    /// A context reporting events as `instance` (the pod name, when known).
    pub fn new(client: Client, metrics: Arc<Metrics>, admin_endpoint: AdminEndpoint, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: OPERATOR_NAME.to_string(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            http: AdminClient::http_client(),
            admin_endpoint,
            liveness: Arc::new(Liveness::default()),
            admin_reads: Default::default(),
            admin_keys: KeyRing::default(),
        }
    }

    /// The same context reporting its watches to `liveness`.
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// Applies `object` unless an object of its name exists that the Sequencer with UID
    /// `owner_uid` does not control: then nothing is written and the conflict is the error.
    pub async fn apply_owned<K>(&self, object: &K, owner_uid: &str) -> Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        if let Some(existing) = api.get_opt(&object.name_any()).await? {
            ensure_controlled::<K>(&existing, owner_uid)?;
        }
        self.apply(object).await
    }

    /// Server-side applies `object` under the operator's field manager, taking over fields another
    /// manager changed (that is how drift is repaired), and returns the object as stored.
    pub async fn apply<K>(&self, object: &K) -> Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        Ok(api.patch(&object.name_any(), &params, &Patch::Apply(object)).await?)
    }

    /// Deletes `name` if it exists.
    pub async fn delete_if_present<K>(&self, namespace: &str, name: &str) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Publishes an event about `regarding`. Best effort: a failure is logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.as_str().to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            warn!(reason = %reason, %error, "publishing an event failed");
        }
    }

    /// An admin API client of sequencer `name`, with the key read (fresh) from `key_ref`, and the
    /// key read before it if it was rotated. The error is a sentence for a condition; it never
    /// contains the key.
    pub async fn admin_client(
        &self,
        namespace: &str,
        name: &str,
        key_ref: &SecretKeyRef,
    ) -> Result<AdminClient, String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = match secrets.get_opt(&key_ref.name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return Err(format!("Secret {} (admin API key) not found", key_ref.name)),
            Err(error) => return Err(format!("reading Secret {} failed: {error}", key_ref.name)),
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&key_ref.key))
            .ok_or_else(|| format!("Secret {} has no key {}", key_ref.name, key_ref.key))?;
        let key = std::str::from_utf8(&value.0)
            .map_err(|_| format!("key {} of Secret {} is not UTF-8", key_ref.key, key_ref.name))?
            .trim();
        if key.is_empty() {
            return Err(format!("key {} of Secret {} is empty", key_ref.key, key_ref.name));
        }
        let slot = format!("{namespace}/{}/{}", key_ref.name, key_ref.key);
        let (key, previous) = self.admin_keys.rotate(&slot, ApiKey::new(key));
        Ok(AdminClient::new(self.http.clone(), self.admin_endpoint.base_url(name, namespace), key)
            .with_previous_key(previous))
    }
}

/// `Ok` when `existing` is controlled by the owner with UID `owner_uid`; the name conflict otherwise.
pub fn ensure_controlled<K>(existing: &K, owner_uid: &str) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    if resources::is_controlled_by(existing.meta(), owner_uid) {
        return Ok(());
    }
    Err(Error::NameConflict {
        kind: K::kind(&()).into_owned(),
        namespace: existing.namespace().unwrap_or_default(),
        name: existing.name_any(),
        controller: resources::describe_controller(existing.meta()),
    })
}

/// Fails with a hint when the CRDs are not installed, or with the RBAC problem when the operator
/// may not list them, instead of a crash loop of watch errors. With `namespace` set, the check
/// lists in that namespace only: a least-privilege install has no cluster-wide grant.
pub async fn check_crds_installed(client: &Client, namespace: Option<&str>) -> Result<()> {
    fn api<K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>>(
        client: &Client,
        namespace: Option<&str>,
    ) -> Api<K> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let params = ListParams::default().limit(1);
    for (kind, resource, result) in [
        ("Sequencer", "sequencers", api::<Sequencer>(client, namespace).list(&params).await.map(|_| ())),
        (
            "SequencerAction",
            "sequenceractions",
            api::<SequencerAction>(client, namespace).list(&params).await.map(|_| ()),
        ),
    ] {
        if let Err(error) = result {
            return Err(start_up_error(kind, resource, namespace, error));
        }
    }
    Ok(())
}

/// What a failed start-up list means: 403 is RBAC (never a missing CRD), 404 a missing CRD.
pub fn start_up_error(
    kind: &'static str,
    resource: &'static str,
    namespace: Option<&str>,
    error: kube::Error,
) -> Error {
    match &error {
        kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
            verb: "list",
            resource,
            scope: match namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "cluster-wide (all namespaces)".to_string(),
            },
            reason: status.message.clone(),
        },
        _ => Error::CrdsMissing { kind, reason: error.to_string() },
    }
}

/// What makes a change of a Sequencer worth a reconcile: its spec (generation), labels or
/// annotations. A status-only change (the operator's own status writes) is not: reconciling on
/// it would loop, one status write triggering the next reconcile.
pub fn sequencer_trigger() -> impl Predicate<Sequencer> {
    predicates::generation.combine(predicates::labels).combine(predicates::annotations)
}

/// The Sequencers in `namespace` that reference Secret `name` (a change of it rolls their pods).
pub fn sequencers_referencing(store: &Store<Sequencer>, namespace: &str, name: &str) -> Vec<ObjectRef<Sequencer>> {
    store
        .state()
        .iter()
        .filter(|seq| seq.namespace().as_deref() == Some(namespace))
        .filter(|seq| seq.referenced_secrets().contains(name))
        .map(|seq| ObjectRef::from_obj(seq.as_ref()))
        .collect()
}

/// Runs both controllers until `shutdown` resolves. `namespace` limits them to one namespace:
/// every list and watch then stays in it.
pub async fn run_controllers(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let liveness = ctx.liveness.clone();
    // NB: children are watched by our managed-by label only, so the caches hold our objects alone.
    let ours = || watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={OPERATOR_NAME}"));
    // Each watch reports to the liveness probe: one failing for minutes makes the process unhealthy.
    fn tracked<K, S>(stream: S, liveness: Arc<Liveness>, watch: &'static str) -> impl futures::Stream<Item = S::Item>
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    {
        stream.inspect(move |event| liveness.observe(watch, event.is_ok()))
    }
    fn owned<K>(
        api: Api<K>,
        config: watcher::Config,
        liveness: Arc<Liveness>,
        watch: &'static str,
    ) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        tracked(watcher(api, config).default_backoff(), liveness, watch).touched_objects()
    }
    // NB: both controllers stop on the same signal; `Shared` lets them await one future.
    let stop = shutdown.boxed().shared();

    let (store, writer) = reflector::store::<Sequencer>();
    let trigger = tracked(
        watcher(api::<Sequencer>(&client, &namespace), watcher::Config::default().any_semantic()).default_backoff(),
        liveness.clone(),
        "sequencers",
    )
    .reflect(writer)
    .applied_objects()
    .predicate_filter(sequencer_trigger(), Default::default());
    // Secrets: metadata only (no secret value is cached), mapped to the Sequencers naming them.
    let secrets = tracked(
        watcher(api::<PartialObjectMeta<Secret>>(&client, &namespace), watcher::Config::default()).default_backoff(),
        liveness.clone(),
        "secrets",
    )
    .touched_objects();
    let index = store.clone();
    let sequencers = Controller::for_stream(trigger, store)
        .owns_stream(owned(api::<Deployment>(&client, &namespace), ours(), liveness.clone(), "deployments"))
        .owns_stream(owned(api::<Service>(&client, &namespace), ours(), liveness.clone(), "services"))
        .owns_stream(owned(api::<ConfigMap>(&client, &namespace), ours(), liveness.clone(), "configmaps"))
        .owns_stream(owned(api::<ServiceAccount>(&client, &namespace), ours(), liveness.clone(), "serviceaccounts"))
        .owns_stream(owned(
            api::<PodDisruptionBudget>(&client, &namespace),
            ours(),
            liveness.clone(),
            "poddisruptionbudgets",
        ))
        .owns_stream(owned(api::<Job>(&client, &namespace), ours(), liveness.clone(), "jobs"))
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            sequencers_referencing(&index, &secret.namespace().unwrap_or_default(), &secret.name_any())
        })
        .graceful_shutdown_on(stop.clone())
        .run(sequencer::reconcile, sequencer::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(controller = "sequencer", %error, "reconcile failed");
            }
        });
    let (action_store, action_writer) = reflector::store::<SequencerAction>();
    let action_trigger = tracked(
        watcher(api::<SequencerAction>(&client, &namespace), watcher::Config::default().any_semantic())
            .default_backoff(),
        liveness.clone(),
        "sequenceractions",
    )
    .reflect(action_writer)
    .applied_objects();
    let actions = Controller::for_stream(action_trigger, action_store)
        .graceful_shutdown_on(stop.clone())
        .run(action::reconcile, action::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(controller = "sequencer_action", %error, "reconcile failed");
            }
        });

    info!(namespace = namespace.as_deref().unwrap_or("(all)"), "controllers started");
    futures::join!(sequencers, actions);
    liveness.clear();
    info!("controllers stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure(message, "x").with_code(code)))
    }

    #[test]
    fn a_forbidden_start_up_list_is_an_rbac_problem_naming_verb_resource_and_namespace_never_a_missing_crd() {
        let error = start_up_error(
            "Sequencer",
            "sequencers",
            Some("payments"),
            api_error(403, "sequencers.sequencer.stateset.io is forbidden: User cannot list resource"),
        );
        let message = error.to_string();
        assert!(message.contains("RBAC") && message.contains("list sequencers in namespace payments"), "{message}");
        assert!(!message.contains("CRD not installed"), "{message}");
        assert_eq!(error.metric_label(), "forbidden");
        let cluster = start_up_error("Sequencer", "sequencers", None, api_error(403, "forbidden")).to_string();
        assert!(cluster.contains("cluster-wide"), "{cluster}");
        let missing = start_up_error(
            "Sequencer",
            "sequencers",
            None,
            api_error(404, "the server could not find the requested resource"),
        );
        assert!(missing.to_string().contains("CRD not installed"), "{missing}");
    }

    #[test]
    fn a_secret_change_reconciles_exactly_the_sequencers_that_reference_it() {
        use kube::runtime::watcher::Event;
        let (store, mut writer) = reflector::store::<Sequencer>();
        let plain = Sequencer::test();
        let mut anchored = Sequencer::test().anchoring();
        anchored.metadata.name = Some("anchored".into());
        let mut elsewhere = Sequencer::test().anchoring();
        elsewhere.metadata.namespace = Some("other".into());
        for seq in [&plain, &anchored, &elsewhere] {
            writer.apply_watcher_event(&Event::Apply(seq.clone()));
        }
        let names = |secret: &str| {
            let mut refs: Vec<String> =
                sequencers_referencing(&store, "payments", secret).into_iter().map(|r| r.name).collect();
            refs.sort();
            refs
        };
        assert_eq!(names("ledger-db"), vec!["anchored", "ledger"]);
        assert_eq!(names("ledger-l2"), vec!["anchored"], "only where anchoring is on, and only in its namespace");
        assert!(names("unrelated").is_empty());
    }

    #[test]
    fn the_charts_grace_period_outlives_the_longest_admin_call_and_the_lease_release() {
        let values: serde_json::Value =
            yaml_serde::from_str(include_str!("../../../charts/sequencer-operator/values.yaml")).unwrap();
        let grace = values["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
        let needed = action::CALL_TIMEOUT_MAX + crate::run::RELEASE_TIMEOUT;
        assert!(grace > needed.as_secs(), "grace {grace}s must exceed {}s", needed.as_secs());
        let template = include_str!("../../../charts/sequencer-operator/templates/deployment.yaml");
        assert!(template.contains("terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}"));
    }
}
