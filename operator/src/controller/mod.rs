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
use kube::runtime::controller::Controller;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::admin::{AdminClient, ApiKey, KeyRing};
use crate::conditions::Reason;
use crate::crd::{SecretKeyRef, Sequencer, SequencerAction};
use crate::labels::{FIELD_MANAGER, HTTP_PORT, LABEL_MANAGED_BY, OPERATOR_NAME};
use crate::metrics::Metrics;
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
            admin_keys: KeyRing::default(),
        }
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

/// Fails with a hint when the CRDs are not installed, instead of a crash loop of watch errors.
pub async fn check_crds_installed(client: &Client) -> Result<()> {
    for (kind, result) in [
        ("Sequencer", Api::<Sequencer>::all(client.clone()).list(&ListParams::default().limit(1)).await.map(|_| ())),
        (
            "SequencerAction",
            Api::<SequencerAction>::all(client.clone()).list(&ListParams::default().limit(1)).await.map(|_| ()),
        ),
    ] {
        if let Err(error) = result {
            return Err(Error::CrdsMissing { kind, reason: error.to_string() });
        }
    }
    Ok(())
}

/// Runs both controllers until `shutdown` resolves. `namespace` limits them to one namespace.
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
    // NB: children are watched by our managed-by label only, so the caches hold our objects alone.
    let ours = || watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={OPERATOR_NAME}"));
    // NB: both controllers stop on the same signal; `Shared` lets them await one future.
    let stop = shutdown.boxed().shared();
    let sequencers = Controller::new(api::<Sequencer>(&client, &namespace), watcher::Config::default().any_semantic())
        .owns(api::<Deployment>(&client, &namespace), ours())
        .owns(api::<Service>(&client, &namespace), ours())
        .owns(api::<ConfigMap>(&client, &namespace), ours())
        .owns(api::<ServiceAccount>(&client, &namespace), ours())
        .owns(api::<PodDisruptionBudget>(&client, &namespace), ours())
        .owns(api::<Job>(&client, &namespace), ours())
        .graceful_shutdown_on(stop.clone())
        .run(sequencer::reconcile, sequencer::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(controller = "sequencer", %error, "reconcile failed");
            }
        });
    let actions =
        Controller::new(api::<SequencerAction>(&client, &namespace), watcher::Config::default().any_semantic())
            .graceful_shutdown_on(stop.clone())
            .run(action::reconcile, action::error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    warn!(controller = "sequencer_action", %error, "reconcile failed");
                }
            });

    info!(namespace = namespace.as_deref().unwrap_or("(all)"), "controllers started");
    futures::join!(sequencers, actions);
    info!("controllers stopped");
}
