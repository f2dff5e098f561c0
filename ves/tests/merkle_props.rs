//! Invariants of the Merkle tree: every leaf of every tree proves, nothing else does, and every
//! way of computing a root agrees with the plain definition of ves-wire §2.6.

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use ves::Hash32;
use ves::merkle::{self, MerkleTree, PAD_LEAF, directions, merkle_root, node_hash, tree_depth, verify_proof};

/// ves-wire §2.6 read literally: pad to the next power of two, hash level by level with
/// `SHA256("VES_NODE_V1" || l || r)` written out here, not through the crate.
fn naive_root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level = leaves.to_vec();
    level.resize(leaves.len().next_power_of_two(), Sha256::digest(b"VES_PAD_LEAF_V1").into());
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| Sha256::new().chain_update(b"VES_NODE_V1").chain_update(p[0]).chain_update(p[1]).finalize().into())
            .collect();
    }
    level[0]
}

fn leaves(n: usize, seed: u64) -> Vec<Hash32> {
    (0..n as u64).map(|i| Sha256::digest([seed.to_be_bytes(), i.to_be_bytes()].concat()).into()).collect()
}

fn flip(mut h: Hash32, bit: usize) -> Hash32 {
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

#[test]
fn every_leaf_of_every_tree_up_to_300_leaves_proves() {
    for n in 1..=300 {
        let leaves = leaves(n, n as u64);
        let tree = MerkleTree::new(leaves.clone());
        let root = tree.root();
        assert_eq!(root, naive_root(&leaves), "n={n}");
        assert_eq!(root, merkle_root(&leaves), "n={n}");
        for (i, leaf) in leaves.iter().enumerate() {
            let path = tree.proof(i).unwrap();
            assert_eq!(path.len(), tree_depth(n) as usize);
            assert!(verify_proof(leaf, i, &path, &root), "n={n} i={i}");
        }
        assert_eq!(tree.proof(n), None);
    }
}

#[test]
fn flipping_any_bit_or_changing_the_index_breaks_proofs_in_every_tree_up_to_300_leaves() {
    // NB: every bit of every element of every proof would be ~10^9 hashes; each tree size gets
    // its first, middle and last leaf with a bit position that moves with the case, and the
    // proptest below samples the rest.
    for n in 1..=300 {
        let leaves = leaves(n, n as u64);
        let tree = MerkleTree::new(leaves.clone());
        let root = tree.root();
        let depth = tree_depth(n) as usize;
        for i in [0, n / 2, n - 1] {
            let (leaf, path) = (&leaves[i], tree.proof(i).unwrap());
            let bit = (n * 31 + i * 7) % 256;
            assert!(!verify_proof(&flip(*leaf, bit), i, &path, &root), "n={n} i={i} leaf");
            assert!(!verify_proof(leaf, i, &path, &flip(root, bit)), "n={n} i={i} root");
            for k in 0..depth {
                let mut bad = path.clone();
                bad[k] = flip(bad[k], (bit + k) % 256);
                assert!(!verify_proof(leaf, i, &bad, &root), "n={n} i={i} path[{k}]");
            }
            // Any other index: each single-bit change, and the aliases past the tree.
            for k in 0..depth {
                assert!(!verify_proof(leaf, i ^ (1 << k), &path, &root), "n={n} i={i} index bit {k}");
            }
            assert!(!verify_proof(leaf, i + (1 << depth), &path, &root), "n={n} i={i} aliased index");
            assert!(!verify_proof(leaf, i | (1 << 40), &path, &root), "n={n} i={i} high index bit");
        }
    }
}

#[test]
fn every_bit_of_a_proof_matters() {
    let leaves = leaves(11, 3);
    let tree = MerkleTree::new(leaves.clone());
    let (root, path) = (tree.root(), tree.proof(9).unwrap());
    for bit in 0..256 {
        assert!(!verify_proof(&flip(leaves[9], bit), 9, &path, &root), "leaf bit {bit}");
        assert!(!verify_proof(&leaves[9], 9, &path, &flip(root, bit)), "root bit {bit}");
        for k in 0..path.len() {
            let mut bad = path.clone();
            bad[k] = flip(bad[k], bit);
            assert!(!verify_proof(&leaves[9], 9, &bad, &root), "path[{k}] bit {bit}");
        }
    }
}

#[test]
fn large_trees_hashed_in_parallel_match_the_naive_root() {
    for n in [1023, 1024, 1025, 2047, 4097, 10_000] {
        let leaves = leaves(n, 7);
        let expected = naive_root(&leaves);
        assert_eq!(merkle_root(&leaves), expected, "n={n}");
        let tree = MerkleTree::new(leaves.clone());
        assert_eq!(tree.root(), expected, "n={n}");
        for i in [0, n / 2, n - 1] {
            assert!(verify_proof(&leaves[i], i, &tree.proof(i).unwrap(), &expected), "n={n} i={i}");
        }
    }
}

#[test]
fn proofs_pad_with_the_roots_of_all_padding_subtrees() {
    // Leaf 4 of 5: its siblings are PAD, node(PAD, PAD), then the root of the first four leaves.
    let leaves = leaves(5, 1);
    let path = MerkleTree::new(leaves.clone()).proof(4).unwrap();
    let pad2 = node_hash(&PAD_LEAF, &PAD_LEAF);
    assert_eq!(path, vec![PAD_LEAF, pad2, naive_root(&leaves[..4])]);
    assert_eq!(directions(4, 3), vec![true, true, false]);
}

#[test]
fn a_proof_is_valid_for_exactly_one_index() {
    let leaves = vec![[5u8; 32]; 8];
    let tree = MerkleTree::new(leaves.clone());
    // Equal leaves give equal paths at some indices; the index still decides the fold order.
    let valid: Vec<usize> =
        (0..16).filter(|&i| verify_proof(&leaves[0], i, &tree.proof(0).unwrap(), &tree.root())).collect();
    assert!(valid.contains(&0));
    assert!(valid.iter().all(|&i| i < 8));
}

#[derive(Debug, Clone)]
enum Tamper {
    Leaf(usize),
    Root(usize),
    PathElement(usize, usize),
    Index(usize),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (0..256usize).prop_map(Tamper::Leaf),
        (0..256usize).prop_map(Tamper::Root),
        (any::<usize>(), 0..256usize).prop_map(|(k, b)| Tamper::PathElement(k, b)),
        (1..usize::MAX).prop_map(Tamper::Index),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn all_roots_agree_with_the_naive_definition(n in 0usize..=1024, seed in any::<u64>()) {
        let leaves = leaves(n, seed);
        let expected = naive_root(&leaves);
        prop_assert_eq!(merkle_root(&leaves), expected);
        prop_assert_eq!(MerkleTree::new(leaves).root(), expected);
    }

    #[test]
    fn proofs_verify_and_any_tampering_fails(
        n in 1usize..=1024, seed in any::<u64>(), pick in any::<usize>(), how in tamper()
    ) {
        let leaves = leaves(n, seed);
        let i = pick % n;
        let tree = MerkleTree::new(leaves.clone());
        let (root, path) = (tree.root(), tree.proof(i).unwrap());
        prop_assert!(verify_proof(&leaves[i], i, &path, &root));
        prop_assert_eq!(directions(i, path.len()).len(), path.len());

        let (mut leaf, mut root, mut path, mut index) = (leaves[i], root, path, i);
        match how {
            Tamper::Leaf(bit) => leaf = flip(leaf, bit),
            Tamper::Root(bit) => root = flip(root, bit),
            Tamper::PathElement(k, bit) => {
                prop_assume!(!path.is_empty());
                let k = k % path.len();
                path[k] = flip(path[k], bit);
            }
            Tamper::Index(delta) => index = i.wrapping_add(delta),
        }
        prop_assert!(!verify_proof(&leaf, index, &path, &root));
    }
}

#[test]
fn padded_leaf_count_is_a_power_of_two_covering_the_leaves() {
    for n in 1..=2049 {
        let padded = merkle::padded_leaf_count(n);
        assert!(padded.is_power_of_two() && padded >= n && padded < 2 * n.max(1), "n={n}");
        assert_eq!(1usize << tree_depth(n), padded);
    }
}
