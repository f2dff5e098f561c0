//! Routes of the upstream 0.8/0.9 sequencer that this one deliberately does not serve: they answer a
//! JSON 501 naming why, so that a client written against upstream fails clearly instead of with 404.

use axum::extract::OriginalUri;

use crate::error::Error;

/// STARK validity and compliance proofs (`/api/v1/ves/validity/...`, `/api/v1/ves/compliance/...`).
pub async fn stark_proofs(OriginalUri(uri): OriginalUri) -> Error {
    Error::NotImplemented {
        code: "STARK_PROOFS_NOT_SUPPORTED",
        message: format!(
            "{} is not served: STARK validity and compliance proofs are out of scope for this sequencer; \
             use Merkle inclusion proofs (GET /api/v1/ves/proofs/{{sequence_number}}) and signed checkpoints \
             (GET /api/v1/ves/checkpoint)",
            uri.path()
        ),
    }
}

/// x402 payments (`/api/v1/x402/...`).
pub async fn x402(OriginalUri(uri): OriginalUri) -> Error {
    Error::NotImplemented {
        code: "X402_NOT_SUPPORTED",
        message: format!("{} is not served: x402 payments are out of scope for this sequencer", uri.path()),
    }
}

/// Materialised projections (`GET /api/v1/projections/{entity_type}/{entity_id}`).
pub async fn projections(OriginalUri(uri): OriginalUri) -> Error {
    Error::NotImplemented {
        code: "PROJECTIONS_NOT_SUPPORTED",
        message: format!(
            "{} is not served: this sequencer keeps no materialised projections; fold the entity's history \
             (GET /api/v1/ves/entities/{{entity_type}}/{{entity_id}}) instead",
            uri.path()
        ),
    }
}
