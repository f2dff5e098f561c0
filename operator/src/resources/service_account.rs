//! The ServiceAccount of the sequencer pods. The sequencer never calls the Kubernetes API, so it
//! gets no token and no role.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;

use super::{Names, child_meta};
use crate::crd::Sequencer;
use crate::labels::COMPONENT_SERVER;

/// The ServiceAccount of `seq`'s pods and migration Jobs.
pub fn service_account(seq: &Sequencer) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(seq, Names(&seq.name_any()).workload(), COMPONENT_SERVER),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
