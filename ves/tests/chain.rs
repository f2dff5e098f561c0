//! Consistency proofs between two commitments of a stream: the fold reproduces the golden state
//! roots, accepts an honest chain between any two of its commitments, and rejects every alteration.

use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;
use ves::Hash32;
use ves::chain::{ChainError, ChainLink, extend, verify_consistency};

fn golden() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/ves-golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn h32(v: &Value) -> Hash32 {
    hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

#[test]
fn a_single_commitment_from_the_empty_stream_gives_the_golden_state_roots() {
    let g = golden();
    let e1 = &g["events"][0]["envelope"];
    let tenant: Uuid = e1["tenant_id"].as_str().unwrap().parse().unwrap();
    let store: Uuid = e1["store_id"].as_str().unwrap().parse().unwrap();
    for c in g["state_roots"].as_array().unwrap() {
        let (start, end) = (c["sequence_start"].as_u64().unwrap(), c["sequence_end"].as_u64().unwrap());
        let link = ChainLink { sequence_start: start, sequence_end: end, merkle_root: h32(&c["merkle_root"]) };
        let root = extend(tenant, store, start - 1, &h32(&c["prev_state_root"]), end, &[link]).unwrap();
        assert_eq!(root, h32(&c["new_state_root"]));
    }
}

/// A stream's commitments over ranges of the given lengths, with their state roots (index i is the
/// state after commitment i; index 0 the empty stream).
fn chain(tenant: Uuid, store: Uuid, lengths: &[u64]) -> (Vec<ChainLink>, Vec<(u64, Hash32)>) {
    let mut links = Vec::new();
    let mut states = vec![(0u64, [0u8; 32])];
    let mut next = 1;
    for (i, len) in lengths.iter().enumerate() {
        let link = ChainLink { sequence_start: next, sequence_end: next + len - 1, merkle_root: [i as u8 + 1; 32] };
        let (size, root) = *states.last().unwrap();
        let new_root = extend(tenant, store, size, &root, link.sequence_end, &[link]).unwrap();
        links.push(link);
        states.push((link.sequence_end, new_root));
        next += len;
    }
    (links, states)
}

proptest! {
    #[test]
    fn honest_chains_verify_between_any_two_commitments(
        lengths in prop::collection::vec(1u64..50, 1..12), a in 0usize..12, b in 0usize..12,
    ) {
        let (tenant, store) = (Uuid::from_u128(7), Uuid::from_u128(8));
        let (links, states) = chain(tenant, store, &lengths);
        let (from, to) = (a.min(b) % states.len(), a.max(b) % states.len());
        let (from, to) = (from.min(to), from.max(to));
        let proof = &links[from..to];
        prop_assert!(verify_consistency(tenant, store, (states[from].0, &states[from].1), (states[to].0, &states[to].1), proof).is_ok());
    }

    #[test]
    fn any_altered_proof_fails(lengths in prop::collection::vec(1u64..50, 2..10), which in 0usize..10, how in 0u8..6) {
        let (tenant, store) = (Uuid::from_u128(7), Uuid::from_u128(8));
        let (links, states) = chain(tenant, store, &lengths);
        let (from, to) = (states[0], *states.last().unwrap());
        let mut proof = links.clone();
        let i = which % proof.len();
        match how {
            0 => proof[i].merkle_root[0] ^= 1,
            1 => proof[i].sequence_end += 1,
            2 => { proof.remove(i); }
            3 => proof.swap(i, (i + 1) % links.len()),
            4 => { let extra = proof[i]; proof.insert(i, extra); }
            _ => {
                // Right links, wrong claim about where they start.
                let r = verify_consistency(tenant, store, (from.0, &[1u8; 32]), (to.0, &to.1), &proof);
                prop_assert_eq!(r, Err(ChainError::RootMismatch));
                return Ok(());
            }
        }
        if proof != links {
            prop_assert!(verify_consistency(tenant, store, (from.0, &from.1), (to.0, &to.1), &proof).is_err());
        }
    }
}

#[test]
fn the_errors_say_what_is_wrong() {
    let (tenant, store) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let (links, states) = chain(tenant, store, &[3, 4, 5]);
    let end = states[3];
    assert_eq!(
        verify_consistency(tenant, store, (states[0].0, &states[0].1), (end.0, &end.1), &links[1..]),
        Err(ChainError::NotContiguous { index: 0, start: 4, end: 7, expected: 1 })
    );
    assert_eq!(
        verify_consistency(tenant, store, (states[0].0, &states[0].1), (end.0, &end.1), &links[..2]),
        Err(ChainError::WrongEnd { end: 7, expected: 12 })
    );
    // Another stream's commitments do not chain to this one's states.
    assert_eq!(
        verify_consistency(Uuid::from_u128(9), store, (states[0].0, &states[0].1), (end.0, &end.1), &links),
        Err(ChainError::RootMismatch)
    );
    // No commitment between equal sizes.
    assert!(verify_consistency(tenant, store, (end.0, &end.1), (end.0, &end.1), &[]).is_ok());
}
