//! Pure builders of every object the operator applies for a `Sequencer`.
//!
//! Each builder takes the custom resource (and what the controller decided) and returns the full
//! object the operator owns, ready for server-side apply: only the fields the operator manages,
//! with labels and an owner reference. No I/O here; `render` and the controller share these.

mod config;
mod deployment;
mod migration_job;
mod pdb;
mod pod_monitor;
mod service;
mod service_account;

pub use config::{config_hash, config_map};
pub use deployment::{deployment, sequencer_container_image};
pub use migration_job::{migration_job, migration_job_image};
pub use pdb::pod_disruption_budget;
pub use pod_monitor::{pod_monitor, pod_monitor_resource};
pub use service::service;
pub use service_account::service_account;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, SecretKeySelector, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{SecretKeyRef, Sequencer};
use crate::labels::*;

/// Placeholder of the owner's UID when rendering a `Sequencer` that was never stored.
pub const UNASSIGNED_UID: &str = "assigned-by-the-api-server";

/// Names of the children of one `Sequencer`.
pub struct Names<'a>(pub &'a str);

impl Names<'_> {
    /// The Deployment, Service, ServiceAccount and PodDisruptionBudget share the Sequencer's name.
    pub fn workload(&self) -> String {
        self.0.to_string()
    }
    /// The ConfigMap of non-secret settings.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.0)
    }
    /// The migration Job of `image`: one per image, so a finished Job records which image it cleared.
    /// At most 47 + 9 + 7 = 63 characters (the CRD caps the Sequencer's name at 47).
    pub fn migration_job(&self, image: &str) -> String {
        let digest = hex::encode(Sha256::digest(image.as_bytes()));
        format!("{}-migrate-{}", self.0, &digest[..7])
    }
}

/// Every child of a `Sequencer`, as the operator would apply them.
#[derive(Clone, Debug)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub service: Service,
    /// Absent while the first migration Job has not succeeded (Job mode).
    pub deployment: Option<Deployment>,
    /// Present only with more than one replica.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// Present while the desired image waits for its migrations (Job mode).
    pub migration_job: Option<Job>,
}

impl Children {
    /// All present children, in apply order, as JSON.
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let mut out = vec![to_value(&self.service_account), to_value(&self.config_map), to_value(&self.service)];
        if let Some(pdb) = &self.pod_disruption_budget {
            out.push(to_value(pdb));
        }
        if let Some(job) = &self.migration_job {
            out.push(to_value(job));
        }
        if let Some(deployment) = &self.deployment {
            out.push(to_value(deployment));
        }
        out
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).expect("Kubernetes objects serialise to JSON")
}

/// The children of `seq`. `deploy_image` is the image the Deployment should run now (None: do not
/// apply the Deployment yet); `with_migration_job` adds the migration Job of `spec.image`.
pub fn children(seq: &Sequencer, deploy_image: Option<&str>, with_migration_job: bool) -> Children {
    let config_map = config_map(seq);
    let hash = config_hash(&config_map);
    Children {
        service_account: service_account(seq),
        service: service(seq),
        deployment: deploy_image.map(|image| deployment(seq, image, &hash)),
        pod_disruption_budget: pod_disruption_budget(seq),
        migration_job: with_migration_job.then(|| migration_job(seq)),
        config_map,
    }
}

/// Labels every object of `seq` carries, for `component`.
pub fn labels(seq: &Sequencer, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(seq, component);
    labels.insert(LABEL_MANAGED_BY.into(), OPERATOR_NAME.into());
    labels
}

/// Labels that select the pods of `seq`'s `component` (never changes for a given Sequencer).
pub fn selector_labels(seq: &Sequencer, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), seq.name_any()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

/// The label selector of the server pods as a string, for the scale subresource.
pub fn selector_string(seq: &Sequencer) -> String {
    selector_labels(seq, COMPONENT_SERVER).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The controller owner reference to `seq`: its children are garbage-collected with it.
pub fn owner_reference(seq: &Sequencer) -> OwnerReference {
    OwnerReference {
        api_version: Sequencer::api_version(&()).into_owned(),
        kind: Sequencer::kind(&()).into_owned(),
        name: seq.name_any(),
        uid: seq.uid().unwrap_or_else(|| UNASSIGNED_UID.to_string()),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child named `name` of `seq`'s `component`.
pub fn child_meta(seq: &Sequencer, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: seq.namespace(),
        labels: Some(labels(seq, component)),
        owner_references: Some(vec![owner_reference(seq)]),
        ..Default::default()
    }
}

/// Whether `meta` names the owner with UID `owner_uid` as its controller.
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.uid == owner_uid)
}

/// Whether `meta` is a child of `seq`'s `component` this operator may delete: controlled by `seq`
/// (owner UID) and carrying every label the operator gives such a child.
pub fn is_own_child(meta: &ObjectMeta, seq: &Sequencer, component: &str) -> bool {
    let Some(uid) = seq.uid() else { return false };
    let have = meta.labels.clone().unwrap_or_default();
    is_controlled_by(meta, &uid) && labels(seq, component).iter().all(|(k, v)| have.get(k) == Some(v))
}

/// Who controls the object of `meta`, for a conflict message.
pub fn describe_controller(meta: &ObjectMeta) -> String {
    match meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
        Some(owner) => format!("controlled by {} {} (uid {})", owner.kind, owner.name, owner.uid),
        None => "it has no controller owner reference".to_string(),
    }
}

/// SHA-256 over the values of every Secret key `seq` references, in a fixed order. `value_of`
/// returns a key's value, or None when the Secret or key is absent. Stamped on the pod template,
/// so that rotating any referenced Secret rolls the pods (environment from a Secret is read only
/// at container start). The hash reveals nothing about the values.
pub fn secrets_hash(seq: &Sequencer, value_of: impl Fn(&SecretKeyRef) -> Option<Vec<u8>>) -> String {
    let mut hasher = Sha256::new();
    for reference in seq.referenced_secret_keys() {
        hasher.update(reference.name.as_bytes());
        hasher.update([0]);
        hasher.update(reference.key.as_bytes());
        hasher.update([0]);
        match value_of(&reference) {
            Some(value) => {
                hasher.update([1]);
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(&value);
            }
            None => hasher.update([0]),
        }
    }
    hex::encode(hasher.finalize())
}

/// Stamps `hash` (see [`secrets_hash`]) on the pod template of `deployment`.
pub fn stamp_secrets_hash(deployment: &mut Deployment, hash: &str) {
    if let Some(spec) = deployment.spec.as_mut() {
        let meta = spec.template.metadata.get_or_insert_with(Default::default);
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_SECRETS_HASH.to_string(), hash.to_string());
    }
}

/// An environment variable read from a Secret key: the only way a secret reaches a pod.
pub fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A plain environment variable.
pub fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), ..Default::default() }
}

#[cfg(test)]
mod tests;
