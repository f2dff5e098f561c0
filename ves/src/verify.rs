//! Ed25519 signature checks over 32-byte VES digests (signing hashes, receipt hashes).
//!
//! Verification is ed25519-dalek's `Verifier::verify` (cofactorless, not `verify_strict`),
//! exactly as upstream, so that every implementation accepts the same signatures.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha512};

use crate::Hash32;

/// Why a text is not an Ed25519 public key in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKeyHexError {
    /// Not hex digits.
    NotHex,
    /// Hex, but not 32 bytes.
    NotThirtyTwoBytes,
    /// 32 bytes that are not a point of the curve.
    NotAKey,
}

/// An Ed25519 public key from its hex encoding, with or without a `0x` (or `0X`) prefix: how agent keys
/// are registered and how `GET /api/v1/ves/sequencer` shows the receipt keys.
pub fn public_key_from_hex(value: &str) -> Result<VerifyingKey, PublicKeyHexError> {
    let digits = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")).unwrap_or(value);
    let bytes = const_hex::decode(digits).map_err(|_| PublicKeyHexError::NotHex)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| PublicKeyHexError::NotThirtyTwoBytes)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| PublicKeyHexError::NotAKey)
}

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

/// A verifying key prepared for many verifications: it carries a precomputed multiples table of
/// `-A`, so that checking a signature costs two fixed-base scalar multiplications (about 21 µs on
/// the CI machine) instead of ed25519-dalek's variable-base double multiplication (about 29 µs).
///
/// The verdict is [`verify_one`]'s, bit for bit: the same canonical-`s` check, the same challenge
/// `k = SHA-512(R || A || M) mod L` over the key bytes as registered, the same group element
/// `[s]B - [k]A`, and the same comparison of its canonical encoding with the `R` bytes. Only the
/// way that element is computed differs (a property test compares the two on valid, corrupted and
/// crafted small-order signatures).
///
/// Building the table costs about 30 verifications and it takes 30 KiB, so it pays off only for
/// keys that sign many events; callers decide which keys get one.
///
/// NB: hand-written on curve25519-dalek's public primitives because neither ed25519-dalek nor any
/// other maintained crate offers verification against a precomputed key table.
pub struct PreparedKey {
    key: VerifyingKey,
    minus_a: EdwardsBasepointTable,
}

impl PreparedKey {
    /// Precomputes the table for `key`.
    pub fn new(key: &VerifyingKey) -> Self {
        PreparedKey { key: *key, minus_a: EdwardsBasepointTable::create(&-key.to_edwards()) }
    }

    /// The key this table was built for.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `sig` is a valid Ed25519 signature of the 32 bytes `msg`: exactly [`verify_one`].
    #[allow(non_snake_case)]
    pub fn verify(&self, sig: &[u8; 64], msg: &Hash32) -> bool {
        let (R, s) = sig.split_at(32);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s.try_into().expect("32 bytes"))) else {
            return false;
        };
        let mut h = Sha512::new();
        h.update(R);
        h.update(self.key.as_bytes());
        h.update(msg);
        let k = Scalar::from_hash(h);
        let expected_R: CompressedEdwardsY = (ED25519_BASEPOINT_TABLE * &s + &self.minus_a * &k).compress();
        expected_R.as_bytes() == R
    }
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedKey").field("key", &self.key).finish_non_exhaustive()
    }
}
