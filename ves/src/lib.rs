//! Pure, I/O-free VES (Verifiable Event Sync) byte layouts.
//!
//! This crate owns every byte that a VES client, the sequencer and an independent verifier must
//! agree on: the domain tags, the payload hashes (RFC 8785 JCS), the v1 and v2 event signing
//! hashes, receipts, Merkle leaves, the domain-separated Merkle tree and its inclusion proofs,
//! stream ids and commitment state roots, the encrypted-payload cipher hash, and the JSON wire
//! envelope. Layouts follow `ves-wire.md` §2 and SPEC §2 and are pinned by the golden vectors in
//! `testdata/ves-golden.json`.
//!
//! It never performs I/O, never reads a clock except to default an envelope's `created_at` in
//! [`envelope::EventBuilder`], and never decrypts: the sequencer checks cipher hashes, it does
//! not hold payload keys.

#![warn(missing_docs)]

pub mod chain;
pub mod cipher;
pub mod domain;
pub mod envelope;
pub mod hash;
pub mod jcs;
pub mod merkle;
pub mod verify;

mod encode;
mod node_lanes;

pub use cipher::{CipherError, PayloadEncrypted};
pub use envelope::{EventBuilder, Hex32, RawPayload, Sig64, VesEventEnvelope};
pub use hash::SigningInput;
pub use merkle::MerkleTree;

/// A SHA-256 digest: every hash, root and id of the VES layouts is one of these.
pub type Hash32 = [u8; 32];

/// The all-zero hash: the cipher hash of a plaintext event, the `prev_state_root` of a stream's
/// first commitment and the Merkle root of an empty leaf list.
pub const ZERO_HASH: Hash32 = [0; 32];
