//! The PodDisruptionBudget that keeps all but one replica up through voluntary disruptions.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{Names, child_meta, selector_labels};
use crate::crd::Sequencer;
use crate::labels::COMPONENT_SERVER;

/// The PodDisruptionBudget of `seq`, only when it has more than one replica: with one, a budget
/// would block node drains forever.
pub fn pod_disruption_budget(seq: &Sequencer) -> Option<PodDisruptionBudget> {
    (seq.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: child_meta(seq, Names(&seq.name_any()).workload(), COMPONENT_SERVER),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(seq, COMPONENT_SERVER)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
