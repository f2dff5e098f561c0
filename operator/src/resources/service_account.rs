//! The ServiceAccount of the sequencer pods. The sequencer never calls the Kubernetes API, so it
//! gets no token and no role;
//! its annotations (workload identity) come from `spec.serviceAccount`.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;

use super::{Names, child_meta};
use crate::crd::Sequencer;
use crate::labels::COMPONENT_SERVER;

/// The ServiceAccount of `seq`'s pods and migration Jobs.
pub fn service_account(seq: &Sequencer) -> ServiceAccount {
    let mut metadata = child_meta(seq, Names(&seq.name_any()).workload(), COMPONENT_SERVER);
    if !seq.spec.service_account.annotations.is_empty() {
        metadata.annotations = Some(seq.spec.service_account.annotations.clone());
    }
    ServiceAccount { metadata, automount_service_account_token: Some(false), ..Default::default() }
}
