//! The Service in front of the sequencer pods (HTTP API, health and metrics on one port).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{Names, child_meta, selector_labels};
use crate::crd::Sequencer;
use crate::labels::{COMPONENT_SERVER, HTTP_PORT, PORT_NAME};

/// The Service of `seq`. The operator reaches the admin API through it.
pub fn service(seq: &Sequencer) -> Service {
    let mut metadata = child_meta(seq, Names(&seq.name_any()).workload(), COMPONENT_SERVER);
    if !seq.spec.service.annotations.is_empty() {
        metadata.annotations = Some(seq.spec.service.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(seq.spec.service.type_.as_str().to_string()),
            selector: Some(selector_labels(seq, COMPONENT_SERVER)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_string()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.to_string())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
