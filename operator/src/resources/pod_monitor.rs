//! The Prometheus Operator PodMonitor of the sequencer pods (`spec.monitoring.podMonitor`).
//!
//! Built as a `DynamicObject`: the monitoring.coreos.com CRDs may be absent, and the operator does
//! not depend on their Rust types.

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{Names, child_meta, selector_labels};
use crate::crd::Sequencer;
use crate::labels::{COMPONENT_SERVER, PORT_NAME};

/// The PodMonitor's API resource (monitoring.coreos.com/v1).
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    )
}

/// The PodMonitor of `seq`, scraping `/metrics` on the pods' HTTP port; None when not enabled.
pub fn pod_monitor(seq: &Sequencer) -> Option<DynamicObject> {
    let spec = &seq.spec.monitoring.pod_monitor;
    if !spec.enabled {
        return None;
    }
    let mut metadata = child_meta(seq, Names(&seq.name_any()).workload(), COMPONENT_SERVER);
    // NB: the user's labels (so that their Prometheus selects it) under the operator's own.
    let mut labels = spec.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    let mut object = DynamicObject::new(&seq.name_any(), &pod_monitor_resource()).data(json!({
        "spec": {
            "selector": {"matchLabels": selector_labels(seq, COMPONENT_SERVER)},
            "podMetricsEndpoints": [{"port": PORT_NAME, "path": "/metrics", "interval": spec.interval}],
        }
    }));
    object.metadata = metadata;
    Some(object)
}
