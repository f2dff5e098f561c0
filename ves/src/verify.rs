//! Ed25519 signature checks over 32-byte VES digests (signing hashes, receipt hashes).
//!
//! Verification is ed25519-dalek's `Verifier::verify` (cofactorless, not `verify_strict`),
//! exactly as upstream, so that every implementation accepts the same signatures.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::Hash32;

/// Whether `sig` is a valid Ed25519 signature of the 32 bytes `msg` under `key`.
pub fn verify_one(sig: &[u8; 64], msg: &Hash32, key: &VerifyingKey) -> bool {
    key.verify(msg, &Signature::from_bytes(sig)).is_ok()
}

/// Checks many `(message, signature, key)` triples, returning one verdict per item in order.
///
/// Tries ed25519-dalek's batch verification first (roughly twice as fast per signature); if the
/// batch fails, every item is re-checked with [`verify_one`], so the verdicts say exactly which
/// items are bad.
///
/// NB: for signatures made by any correct signer the verdicts equal [`verify_one`]'s. The batch
/// equation, like every randomized batch check, can however accept a signature deliberately
/// built with a small-order component in `R` or in the key (or a non-canonical `R`) that the
/// cofactorless single check rejects ("Taming the many EdDSAs", Chalkias et al., 2020). Callers
/// that must agree with `verify_one` on hostile input bit for bit should call it directly.
pub fn verify_batch(items: &[(Hash32, [u8; 64], VerifyingKey)]) -> Vec<bool> {
    if items.len() <= 1 {
        return items.iter().map(|(msg, sig, key)| verify_one(sig, msg, key)).collect();
    }
    let messages: Vec<&[u8]> = items.iter().map(|(msg, _, _)| msg.as_slice()).collect();
    let signatures: Vec<Signature> = items.iter().map(|(_, sig, _)| Signature::from_bytes(sig)).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(_, _, key)| *key).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return vec![true; items.len()];
    }
    items.iter().map(|(msg, sig, key)| verify_one(sig, msg, key)).collect()
}
