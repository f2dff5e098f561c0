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
