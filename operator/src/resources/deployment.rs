//! The Deployment of the sequencer pods, and the pod settings migration Jobs share with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, LocalObjectReference, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, SleepAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{Names, child_meta, labels, plain_env, secret_env, selector_labels};
use crate::crd::Sequencer;
use crate::labels::*;

/// Seconds a pod keeps serving after it is told to stop, so endpoints drop it before it exits.
const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Seconds between SIGTERM and SIGKILL: the sequencer drains in-flight batches on SIGTERM.
const TERMINATION_GRACE_SECONDS: i64 = 30;
/// Start-up allowance (period × failures): OnStartup migrations run before the server listens.
const STARTUP_PROBE_PERIOD_SECONDS: i32 = 5;
const STARTUP_PROBE_FAILURES: i32 = 120;
/// Numeric non-root user and group the sequencer runs as.
const RUN_AS: i64 = 65532;

/// The Deployment of `seq` running `image`, with the config hash stamped on the pod template.
pub fn deployment(seq: &Sequencer, image: &str, config_hash: &str) -> Deployment {
    let names = Names(&seq.name_any());
    let spec = &seq.spec;

    let mut env: Vec<EnvVar> = vec![
        secret_env("DATABASE_URL", &spec.database.url_secret),
        secret_env("BOOTSTRAP_ADMIN_API_KEY", &spec.auth.admin_api_key_secret),
        secret_env("VES_SEQUENCER_SIGNING_KEY", &spec.receipt_signing_key_secret),
    ];
    if let Some(replica) = &spec.database.read_replica {
        env.push(secret_env("READ_DATABASE_URL", &replica.url_secret));
    }
    if spec.anchoring.enabled {
        if let Some(url) = &spec.anchoring.rpc_url_secret {
            env.push(secret_env("L2_RPC_URL", url));
        }
        if let Some(key) = &spec.anchoring.private_key_secret {
            env.push(secret_env("SEQUENCER_PRIVATE_KEY", key));
        }
    }
    env.extend(database_tls_env(seq));
    // NB: last, so that they override the ConfigMap's settings (env wins over envFrom); the CRD
    // refuses the names set above.
    env.extend(spec.env.iter().cloned());

    let container = Container {
        name: CONTAINER_SEQUENCER.to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_string()),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_string()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource { name: names.config_map(), optional: Some(false) }),
            ..Default::default()
        }]),
        env: Some(env),
        startup_probe: Some(http_probe("/health", STARTUP_PROBE_PERIOD_SECONDS, STARTUP_PROBE_FAILURES, 2)),
        liveness_probe: Some(http_probe("/health", 10, 3, 2)),
        readiness_probe: Some(http_probe("/ready", 5, 2, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: PRE_STOP_SLEEP_SECONDS }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(resources(seq)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(volume_mounts(seq)),
        ..Default::default()
    };

    let mut pod_spec = pod_spec(seq, container, None);
    if pod_spec.affinity.is_none() {
        pod_spec.affinity = Some(spread_over_nodes(seq));
    }
    pod_spec.termination_grace_period_seconds = Some(TERMINATION_GRACE_SECONDS);

    Deployment {
        metadata: child_meta(seq, names.workload(), COMPONENT_SERVER),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(seq, COMPONENT_SERVER)),
                ..Default::default()
            },
            // NB: surge one pod, never remove one first: capacity holds during a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(pod_metadata(
                    seq,
                    COMPONENT_SERVER,
                    [
                        (ANNOTATION_CONFIG_HASH, config_hash.to_string()),
                        (ANNOTATION_DEFAULT_CONTAINER, CONTAINER_SEQUENCER.to_string()),
                    ],
                )),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The image of the sequencer container of a live Deployment, if it has one.
pub fn sequencer_container_image(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER_SEQUENCER)?
        .image
        .clone()
}

/// A pod spec around `container` with the sequencer's account, security and scheduling settings.
pub(super) fn pod_spec(seq: &Sequencer, container: Container, restart_policy: Option<&str>) -> PodSpec {
    let spec = &seq.spec;
    let scheduling = &spec.scheduling;
    PodSpec {
        containers: vec![container],
        service_account_name: Some(Names(&seq.name_any()).workload()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        restart_policy: restart_policy.map(str::to_string),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), ..Default::default() }),
            ..Default::default()
        }),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.iter().map(|s| LocalObjectReference { name: s.name.clone() }).collect()),
        node_selector: (!scheduling.node_selector.is_empty()).then(|| scheduling.node_selector.clone()),
        tolerations: (!scheduling.tolerations.is_empty()).then(|| scheduling.tolerations.clone()),
        affinity: scheduling.affinity.clone(),
        topology_spread_constraints: (!scheduling.topology_spread_constraints.is_empty())
            .then(|| scheduling.topology_spread_constraints.clone()),
        priority_class_name: scheduling.priority_class_name.clone(),
        volumes: Some(volumes(seq)),
        ..Default::default()
    }
}

/// Directory of the database CA inside the pods, and the file PGSSLROOTCERT names.
pub const DB_CA_DIR: &str = "/etc/stateset/db-ca";
pub const DB_CA_FILE: &str = "/etc/stateset/db-ca/ca.crt";
const DB_CA_VOLUME: &str = "db-ca";

/// PGSSLMODE and PGSSLROOTCERT from `spec.database.tls` (none when unset).
pub(super) fn database_tls_env(seq: &Sequencer) -> Vec<EnvVar> {
    let Some(tls) = &seq.spec.database.tls else { return Vec::new() };
    let mut env = vec![plain_env("PGSSLMODE", tls.ssl_mode.as_str())];
    if tls.ca_secret.is_some() {
        env.push(plain_env("PGSSLROOTCERT", DB_CA_FILE));
    }
    env
}

/// /tmp, and the database CA when the spec names one.
fn volumes(seq: &Sequencer) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if let Some(ca) = seq.spec.database.tls.as_ref().and_then(|tls| tls.ca_secret.as_ref()) {
        volumes.push(Volume {
            name: DB_CA_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                items: Some(vec![KeyToPath { key: ca.key.clone(), path: "ca.crt".to_string(), mode: None }]),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    volumes
}

/// The mounts matching [`volumes`], for the sequencer container and the migration container.
pub(super) fn volume_mounts(seq: &Sequencer) -> Vec<VolumeMount> {
    let mut mounts = vec![tmp_mount()];
    if seq.spec.database.tls.as_ref().is_some_and(|tls| tls.ca_secret.is_some()) {
        mounts.push(VolumeMount {
            name: DB_CA_VOLUME.to_string(),
            mount_path: DB_CA_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

/// Pod metadata of `seq`'s `component`: `spec.pod` labels and annotations under the operator's own
/// (which win), without the managed-by label (pods are the Deployment's, not the operator's).
pub(super) fn pod_metadata<const N: usize>(
    seq: &Sequencer,
    component: &str,
    annotations: [(&str, String); N],
) -> ObjectMeta {
    let mut pod_labels = seq.spec.pod.labels.clone();
    pod_labels.extend(labels(seq, component));
    pod_labels.remove(LABEL_MANAGED_BY);
    let mut pod_annotations = seq.spec.pod.annotations.clone();
    pod_annotations.extend(annotations.into_iter().map(|(k, v)| (k.to_string(), v)));
    ObjectMeta { labels: Some(pod_labels), annotations: Some(pod_annotations), ..Default::default() }
}

/// The restricted-profile security context of every container the operator runs.
pub(super) fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), ..Default::default() }),
        ..Default::default()
    }
}

/// The writable /tmp of a read-only root filesystem.
fn tmp_mount() -> VolumeMount {
    VolumeMount { name: "tmp".to_string(), mount_path: "/tmp".to_string(), ..Default::default() }
}

/// The spec's resources, or modest requests when unset.
pub(super) fn resources(seq: &Sequencer) -> ResourceRequirements {
    seq.spec.resources.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".to_string())),
            ("memory".to_string(), Quantity("128Mi".to_string())),
        ])),
        ..Default::default()
    })
}

fn http_probe(path: &str, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(PORT_NAME.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Default::default()
    }
}

/// Default affinity: prefer replicas on different nodes, so one node loss takes one replica.
fn spread_over_nodes(seq: &Sequencer) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".to_string(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(selector_labels(seq, COMPONENT_SERVER)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
