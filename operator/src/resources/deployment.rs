//! The Deployment of the sequencer pods, and the pod settings migration Jobs share with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    HTTPGetAction, Lifecycle, LifecycleHandler, LocalObjectReference, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    SleepAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{Names, child_meta, labels, secret_env, selector_labels};
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
    if spec.anchoring.enabled {
        if let Some(url) = &spec.anchoring.rpc_url_secret {
            env.push(secret_env("L2_RPC_URL", url));
        }
        if let Some(key) = &spec.anchoring.private_key_secret {
            env.push(secret_env("SEQUENCER_PRIVATE_KEY", key));
        }
    }

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
        volume_mounts: Some(vec![tmp_mount()]),
        ..Default::default()
    };

    let mut pod_labels = labels(seq, COMPONENT_SERVER);
    pod_labels.remove(LABEL_MANAGED_BY);
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
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        (ANNOTATION_CONFIG_HASH.to_string(), config_hash.to_string()),
                        (ANNOTATION_DEFAULT_CONTAINER.to_string(), CONTAINER_SEQUENCER.to_string()),
                    ])),
                    ..Default::default()
                }),
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
        volumes: Some(vec![Volume {
            name: "tmp".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
        ..Default::default()
    }
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
pub(super) fn tmp_mount() -> VolumeMount {
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
