//! `PreparedKey::verify` must give `verify_one`'s verdict on every input: valid signatures, any
//! corruption of them, non-canonical scalars, and signatures crafted around small-order points.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use proptest::prelude::*;
use sha2::{Digest, Sha512};
use ves::Hash32;
use ves::verify::{PreparedKey, verify_one};

fn agree(key: &VerifyingKey, prepared: &PreparedKey, sig: &[u8; 64], msg: &Hash32) -> bool {
    let expected = verify_one(sig, msg, key);
    assert_eq!(prepared.verify(sig, msg), expected, "sig {} msg {}", hex::encode(sig), hex::encode(msg));
    expected
}

/// A signature with `R = [r]B + torsion` and `s = r + k·a`: what only the key's holder can make.
fn sign_with_r_offset(seed: [u8; 32], msg: &Hash32, r: u64, offset: EdwardsPoint) -> [u8; 64] {
    let expanded = Sha512::digest(seed);
    let a = Scalar::from_bytes_mod_order(clamp_integer(expanded[..32].try_into().unwrap()));
    let public = VerifyingKey::from(&SigningKey::from_bytes(&seed));
    let r = Scalar::from(r);
    let r_point = (EdwardsPoint::mul_base(&r) + offset).compress().to_bytes();
    let k = Scalar::from_hash(Sha512::new().chain_update(r_point).chain_update(public.as_bytes()).chain_update(msg));
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_point);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn valid_signatures_verify(seed in any::<[u8; 32]>(), msg in any::<[u8; 32]>()) {
        let signer = SigningKey::from_bytes(&seed);
        let key = signer.verifying_key();
        let prepared = PreparedKey::new(&key);
        prop_assert!(agree(&key, &prepared, &signer.sign(&msg).to_bytes(), &msg));
    }

    #[test]
    fn any_flipped_bit_gives_the_same_verdict(
        seed in any::<[u8; 32]>(), msg in any::<[u8; 32]>(), bit in 0usize..(64 * 8 + 32 * 8),
    ) {
        let signer = SigningKey::from_bytes(&seed);
        let key = signer.verifying_key();
        let prepared = PreparedKey::new(&key);
        let mut sig = signer.sign(&msg).to_bytes();
        let mut msg = msg;
        if bit < 512 {
            sig[bit / 8] ^= 1 << (bit % 8);
        } else {
            msg[(bit - 512) / 8] ^= 1 << (bit % 8);
        }
        prop_assert!(!agree(&key, &prepared, &sig, &msg));
    }

    #[test]
    fn random_bytes_give_the_same_verdict(seed in any::<[u8; 32]>(), sig in any::<[u8; 64]>(), msg in any::<[u8; 32]>()) {
        let key = SigningKey::from_bytes(&seed).verifying_key();
        let prepared = PreparedKey::new(&key);
        agree(&key, &prepared, &sig, &msg);
    }

    #[test]
    fn torsion_in_r_is_rejected_by_both(seed in any::<[u8; 32]>(), msg in any::<[u8; 32]>(), r in any::<u64>(), t in 0usize..8) {
        let key = SigningKey::from_bytes(&seed).verifying_key();
        let prepared = PreparedKey::new(&key);
        let sig = sign_with_r_offset(seed, &msg, r, EIGHT_TORSION[t]);
        // t = 0 adds the identity: an honest signature with a known nonce.
        prop_assert_eq!(agree(&key, &prepared, &sig, &msg), t == 0);
    }
}

#[test]
fn a_non_canonical_s_is_rejected_by_both() {
    let signer = SigningKey::from_bytes(&[5; 32]);
    let key = signer.verifying_key();
    let prepared = PreparedKey::new(&key);
    let msg = [1u8; 32];
    let mut sig = signer.sign(&msg).to_bytes();
    assert!(agree(&key, &prepared, &sig, &msg));
    // s + L is the same scalar mod L but not its canonical encoding.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(sig[32 + i]) + u16::from(*l) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "s + L fits in 256 bits");
    assert!(!agree(&key, &prepared, &sig, &msg));
}

#[test]
fn small_order_and_mixed_order_keys_give_the_same_verdicts() {
    let msg = [7u8; 32];
    for (t, torsion) in EIGHT_TORSION.iter().enumerate() {
        // A small-order key: [k](-A) is small order too, so R = [s]B is accepted whenever it
        // absorbs it; both implementations must agree on every such case.
        let Ok(weak) = VerifyingKey::from_bytes(&torsion.compress().to_bytes()) else { continue };
        let prepared = PreparedKey::new(&weak);
        for s in [1u64, 2, 12345] {
            let s = Scalar::from(s);
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(EdwardsPoint::mul_base(&s).compress().as_bytes());
            sig[32..].copy_from_slice(s.as_bytes());
            agree(&weak, &prepared, &sig, &msg);
        }
        // A mixed-order key: a real key plus a torsion point.
        let signer = SigningKey::from_bytes(&[t as u8 + 1; 32]);
        let mixed_point = signer.verifying_key().to_edwards() + torsion;
        let mixed = VerifyingKey::from_bytes(&mixed_point.compress().to_bytes()).expect("a curve point");
        let prepared = PreparedKey::new(&mixed);
        agree(&mixed, &prepared, &signer.sign(&msg).to_bytes(), &msg);
        for r in 1..=16u64 {
            let mut sig = sign_with_r_offset([t as u8 + 1; 32], &msg, r, EdwardsPoint::default());
            agree(&mixed, &prepared, &sig, &msg);
            sig[40] ^= 1;
            agree(&mixed, &prepared, &sig, &msg);
        }
    }
}

#[test]
fn a_non_canonical_key_encoding_is_hashed_as_registered() {
    // y = 1 (the identity) also encodes as y = p + 1, a non-canonical encoding that decompresses.
    let mut bytes = [0u8; 32];
    let p_plus_one: [u8; 32] = {
        let mut b = [0xffu8; 32];
        b[0] = 0xee;
        b[31] = 0x7f;
        b
    };
    bytes.copy_from_slice(&p_plus_one);
    assert_eq!(CompressedEdwardsY(bytes).decompress(), Some(EdwardsPoint::default()));
    let key = VerifyingKey::from_bytes(&bytes).expect("dalek accepts the encoding");
    let prepared = PreparedKey::new(&key);
    let s = Scalar::from(99u64);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(EdwardsPoint::mul_base(&s).compress().as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    agree(&key, &prepared, &sig, &[3u8; 32]);
}
