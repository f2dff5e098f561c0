//! The crate's one error type.
//!
//! NB: messages are built only from values that are safe to log. The private key never reaches an
//! error, and RPC URLs are cut down to scheme, host and port (hosted RPC URLs often carry an API key
//! in the path or query) before any transport message is stored here; see `rpc::Redactor`.

use std::time::Duration;

/// What went wrong while anchoring or reading the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// The circuit breaker is open: the RPC endpoint failed repeatedly and is not being called.
    #[error(
        "anchor circuit breaker is open: the L2 RPC endpoint is unavailable; next attempt allowed in {retry_in:.1?}"
    )]
    CircuitOpen {
        /// How long until the breaker admits a trial call.
        retry_in: Duration,
    },
    /// The registry already holds a commitment for this batch id (read it with `get_commitment`).
    #[error("batch is already anchored in the registry")]
    AlreadyAnchored,
    /// The registry rejected the transaction; the registry's revert reason or a description.
    #[error("the registry reverted the transaction: {0}")]
    Reverted(String),
    /// The RPC endpoint could not be reached or answered with an error.
    #[error("L2 RPC call failed: {0}")]
    Rpc(String),
    /// The anchoring configuration is invalid or does not match the chain.
    #[error("invalid anchoring configuration: {0}")]
    Config(String),
}

impl AnchorError {
    /// A stable machine-readable code for API error bodies and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CircuitOpen { .. } => "circuit_open",
            Self::AlreadyAnchored => "already_anchored",
            Self::Reverted(_) => "reverted",
            Self::Rpc(_) => "rpc",
            Self::Config(_) => "config",
        }
    }

    /// True when the failure says the endpoint is unhealthy (counted by the circuit breaker).
    /// Reverts and configuration errors come from an endpoint that answered.
    pub(crate) fn counts_against_endpoint(&self) -> bool {
        matches!(self, Self::Rpc(_))
    }
}

/// `Result` with [`AnchorError`] as the default error.
pub type Result<T, E = AnchorError> = std::result::Result<T, E>;
