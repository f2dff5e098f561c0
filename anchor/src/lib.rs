//! Anchoring of sequencer commitments on an Ethereum L2.
//!
//! A commitment's Merkle root, state root and sequence range are recorded in the StateSetAnchor
//! registry contract (source and checked-in bytecode under `contracts/`), whose ABI is the one of
//! ves-wire.md §6.5, so one deployed registry serves this sequencer and the existing one.
//!
//! - [`AnchorClient`] sends `anchor(...)` and reads the registry through a [`breaker`] (fail fast
//!   while the RPC is down) with a short retry of transient transport failures.
//! - [`deploy_registry`] deploys the registry; [`contract`] holds the binding and the bytecode.
//! - [`testing::Anvil`] runs a real local chain for tests.
//!
//! The crate never logs or returns the private key, and shows RPC URLs only as `scheme://host:port`.
//! It never touches the database: what to anchor and when is the sequencer's business.

#![warn(missing_docs)]

pub mod breaker;
mod client;
pub mod contract;
mod error;
mod rpc;
pub mod testing;

pub use breaker::{BreakerConfig, CircuitSnapshot, CircuitState};
pub use client::{
    AnchorClient, AnchorConfig, AnchorReceipt, CommitmentToAnchor, DEFAULT_CHAIN_ID, DEFAULT_RECEIPT_TIMEOUT,
    DEFAULT_RPC_TIMEOUT, OnChainCommitment, RetryPolicy, deploy_registry,
};
pub use error::{AnchorError, Result};

use uuid::Uuid;

/// A UUID as the registry's bytes32 key: the 16 UUID bytes followed by 16 zero bytes
/// (left-aligned), as the existing service sends it (ves-wire.md §6.2).
pub fn uuid_to_bytes32(u: Uuid) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(u.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_becomes_its_sixteen_bytes_followed_by_sixteen_zero_bytes() {
        let u = Uuid::parse_str("0195f3a0-7c1e-7d2b-9a4f-3c5d6e7f8091").unwrap();
        let b = uuid_to_bytes32(u);
        assert_eq!(alloy::hex::encode(b), "0195f3a07c1e7d2b9a4f3c5d6e7f809100000000000000000000000000000000");
        assert_eq!(uuid_to_bytes32(Uuid::nil()), [0u8; 32]);
        assert_eq!(uuid_to_bytes32(Uuid::max())[..16], [0xff; 16]);
        assert_eq!(uuid_to_bytes32(Uuid::max())[16..], [0u8; 16]);
    }
}
