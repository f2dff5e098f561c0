//! The Kubernetes operator of the StateSet sequencer.
//!
//! It owns two custom resources: [`Sequencer`](crd::Sequencer), one sequencer deployment with its
//! database, keys and anchoring settings, and [`SequencerAction`](crd::SequencerAction), one runbook
//! action (anchor retry, dead-letter replay, stream verification) run through a sequencer's admin API.
//!
//! Layout: `crd/` holds the API types (the CRDs are generated from them), `resources/` the pure
//! builders of every object the operator applies, `conditions` the pure status computation,
//! `admin` the typed client of the sequencer's admin API, `controller/` the two reconcilers.
//! The operator never copies a secret value into a ConfigMap, status, event or log line.

pub mod action_state;
pub mod admin;
pub mod chart_rbac;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod labels;
pub mod metrics;
pub mod render;
pub mod resources;
pub mod run;
pub mod server;
pub mod telemetry;

#[cfg(test)]
pub mod fixtures;
#[cfg(test)]
mod kstatus;
#[cfg(test)]
mod rbac_contract;

/// Everything that can make a reconcile (or the operator's start-up) fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),

    /// The custom resource cannot be turned into objects (a bug or a spec the schema should reject).
    #[error("invalid {kind} {name}: {reason}")]
    InvalidSpec { kind: &'static str, name: String, reason: String },

    /// The operator's RBAC does not allow a request it needs (the API server answered 403).
    #[error(
        "RBAC: the operator may not {verb} {resource} {scope}: {reason}. Check the operator's (Cluster)Role: the chart grants it, in watchNamespace mode only in that namespace"
    )]
    Forbidden { verb: &'static str, resource: &'static str, scope: String, reason: String },

    /// An object the Sequencer would own exists and is not controlled by it; nothing is written to it.
    #[error(
        "{kind} {namespace}/{name} exists and is not controlled by this Sequencer ({controller}); rename the Sequencer, or delete that object if it is not needed"
    )]
    NameConflict { kind: String, namespace: String, name: String, controller: String },

    /// The operator's CRDs are not installed.
    #[error(
        "listing {kind} failed: {reason}. CRD not installed? run `kubectl apply --server-side --force-conflicts -f crds/` (or `sequencer-operator crd | kubectl apply --server-side --force-conflicts -f -`)"
    )]
    CrdsMissing { kind: &'static str, reason: String },

    /// A Secret the operator itself needs (the admin API key) is missing or incomplete.
    #[error("Secret {namespace}/{name}: {reason}")]
    Secret { namespace: String, name: String, reason: String },

    /// Serialising an object failed (a bug).
    #[error("serialising {what} failed: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// Reading or parsing a manifest for `render` failed.
    #[error("{path}: {reason}")]
    Manifest { path: String, reason: String },

    /// Leader election failed.
    #[error("leader election failed: {0}")]
    LeaderElection(#[source] kube_lease_manager::LeaseManagerError),

    /// The operator's own HTTP endpoints (health, metrics) could not start.
    #[error("serving health and metrics on {addr} failed: {source}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

impl Error {
    /// A short, stable label for the failure metric (never contains object names or values).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => "invalid",
            Error::Kube(_) => "kube",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::CrdsMissing { .. } => "crds_missing",
            Error::Forbidden { .. } => "forbidden",
            Error::NameConflict { .. } => "name_conflict",
            Error::Secret { .. } => "secret",
            Error::Serialize { .. } => "serialize",
            Error::Manifest { .. } => "manifest",
            Error::LeaderElection(_) => "leader_election",
            Error::Serve { .. } => "serve",
        }
    }
}

impl Error {
    /// The reason and message a failed reconcile writes into the `Ready` condition. Reasons for
    /// what will not resolve by itself (see [`conditions::reason_is_stalled`]) make it `Stalled`.
    pub fn status_reason(&self) -> (conditions::Reason, String) {
        use conditions::Reason;
        let reason = match self {
            Error::NameConflict { .. } => Reason::NameConflict,
            Error::Forbidden { .. } => Reason::Forbidden,
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => Reason::Forbidden,
            Error::Kube(kube::Error::Api(status)) if status.code == 400 || status.code == 422 => Reason::SpecRejected,
            Error::InvalidSpec { .. } => Reason::SpecRejected,
            _ => Reason::ReconcileFailed,
        };
        (reason, self.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
