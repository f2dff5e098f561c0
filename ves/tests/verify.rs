//! Batch signature verification reports exactly which items are bad.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ves::Hash32;
use ves::verify::{verify_batch, verify_one};

fn items(n: u8) -> Vec<(Hash32, [u8; 64], VerifyingKey)> {
    (0..n)
        .map(|i| {
            let key = SigningKey::from_bytes(&[i.wrapping_add(1); 32]);
            let msg = [i; 32];
            (msg, key.sign(&msg).to_bytes(), key.verifying_key())
        })
        .collect()
}

#[test]
fn a_batch_of_good_signatures_is_all_true() {
    assert_eq!(verify_batch(&items(64)), vec![true; 64]);
}

#[test]
fn verify_batch_returns_exact_per_item_results_when_some_items_are_bad() {
    let mut batch = items(64);
    batch[3].1[5] ^= 1; // corrupted R
    batch[17].0[0] ^= 1; // different message
    batch[40].2 = batch[41].2; // someone else's key
    batch[63].1[63] ^= 0x10; // corrupted s (may become non-canonical)
    let expected: Vec<bool> = (0..64).map(|i| ![3, 17, 40, 63].contains(&i)).collect();
    assert_eq!(verify_batch(&batch), expected);
    let one_by_one: Vec<bool> = batch.iter().map(|(m, s, k)| verify_one(s, m, k)).collect();
    assert_eq!(one_by_one, expected);
}

#[test]
fn a_batch_where_every_item_is_bad_is_all_false() {
    let mut batch = items(5);
    for item in &mut batch {
        item.0[31] ^= 0xff;
    }
    assert_eq!(verify_batch(&batch), vec![false; 5]);
}

#[test]
fn empty_and_single_item_batches_are_handled() {
    assert_eq!(verify_batch(&[]), Vec::<bool>::new());
    let mut one = items(1);
    assert_eq!(verify_batch(&one), vec![true]);
    one[0].1[0] ^= 1;
    assert_eq!(verify_batch(&one), vec![false]);
}

/// Documents the caveat on `verify_batch`: a signer can hide a small-order point in `R`.
/// The cofactorless single check rejects such a signature; the randomized batch equation
/// accepts it whenever the batch's coefficient for it is a multiple of the point's order
/// (1 in 8 here), and the coefficients are derived from the inputs, so a signer can grind
/// messages until it does. If this test ever fails, ed25519-dalek's batch became exact and the
/// caveat in `verify_batch`'s docs can go.
#[test]
fn batch_verification_can_accept_a_small_order_r_that_verify_one_rejects() {
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::{Scalar, clamp_integer};
    use sha2::{Digest, Sha512};

    let seed = [9u8; 32];
    let expanded = Sha512::digest(seed);
    let a = Scalar::from_bytes_mod_order(clamp_integer(expanded[..32].try_into().unwrap()));
    let public = VerifyingKey::from(&SigningKey::from_bytes(&seed));
    assert_eq!(EdwardsPoint::mul_base(&a).compress().to_bytes(), public.to_bytes());

    let r = Scalar::from(123_456_789u64);
    let r_point = (EdwardsPoint::mul_base(&r) + EIGHT_TORSION[1]).compress().to_bytes();
    let sign_with_torsion = |msg: &Hash32| -> [u8; 64] {
        let k =
            Scalar::from_hash(Sha512::new().chain_update(r_point).chain_update(public.as_bytes()).chain_update(msg));
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_point);
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    };

    let honest = items(1).remove(0);
    let diverging = (0..=255u8).find(|&i| {
        let msg = [i; 32];
        let sig = sign_with_torsion(&msg);
        assert!(!verify_one(&sig, &msg, &public), "the single check rejects a small-order R");
        verify_batch(&[(msg, sig, public), honest]) == [true, true]
    });
    assert!(diverging.is_some(), "no message in 256 made the batch accept (expected about 1 in 8)");
}
