//! The domain-separated Merkle tree of ves-wire §2.6–2.7: padding, inner nodes, roots, inclusion
//! proofs and their verification.
//!
//! NB: hand-written rather than taken from a Merkle crate because the contract fixes the byte
//! layout: tagged leaves and nodes (`VES_NODE_V1`), padding to the next power of two with
//! `PAD_LEAF` (never odd-node promotion), a single leaf being its own root and an empty tree
//! having the all-zero root. Generic crates get at least one of these wrong.
//!
//! Only the real part of a tree is ever hashed: the root of an all-padding subtree of height `h`
//! is a constant, computed once. This module must stay pure (no I/O, no clock).

use std::sync::LazyLock;

use sha2::Sha256;

use crate::encode::{Sink, finish, tagged};
use crate::{Hash32, ZERO_HASH, domain, node_lanes};

/// `SHA256("VES_PAD_LEAF_V1")`: fills the leaf list up to the next power of two.
pub const PAD_LEAF: Hash32 = hex32("d9dd0e003ba5370a698013c48ed69c6c41d9ebc1236d44b280c52ceacfdad524");

/// Levels at least this wide are hashed on the rayon pool (with the `parallel` feature); below
/// it, thread hand-off costs more than it saves.
#[cfg(feature = "parallel")]
const PARALLEL_MIN_NODES: usize = 1024;

/// `SHA256("VES_NODE_V1" || left || right)`: an inner node.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h: Sha256 = tagged(domain::NODE);
    h.put(left);
    h.put(right);
    finish(h)
}

/// The root of a list of leaves ordered by sequence number: 32 zero bytes for no leaves, the
/// leaf itself for one, otherwise the root of the list padded with [`PAD_LEAF`] to
/// [`padded_leaf_count`] leaves.
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    match leaves {
        [] => ZERO_HASH,
        [leaf] => *leaf,
        _ => {
            let mut level = hash_level(leaves, 0);
            let mut height = 1;
            while level.len() > 1 {
                level = hash_level(&level, height);
                height += 1;
            }
            level[0]
        }
    }
}

/// `next_power_of_two(n)`: the leaf count after padding; 0 for an empty list.
///
/// # Panics
/// When `n` exceeds the largest power of two a `usize` holds (debug builds).
pub fn padded_leaf_count(n: usize) -> usize {
    if n == 0 { 0 } else { n.next_power_of_two() }
}

/// `log2(padded_leaf_count(n))`: the number of levels above the leaves, which is also the
/// length of every inclusion proof. 0 for one leaf (and for none).
pub fn tree_depth(n: usize) -> u32 {
    if n <= 1 { 0 } else { padded_leaf_count(n).trailing_zeros() }
}

/// A Merkle tree that keeps every level of its real (non-padding) nodes, so that proofs are
/// `O(depth)` lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves; `levels[h]` the `ceil(n / 2^h)` nodes of height `h` that cover
    /// at least one real leaf; the last level holds the root (when there are leaves).
    levels: Vec<Vec<Hash32>>,
}

impl MerkleTree {
    /// Builds the tree over `leaves` (ordered by sequence number).
    pub fn new(leaves: Vec<Hash32>) -> Self {
        let mut levels = vec![leaves];
        while levels[levels.len() - 1].len() > 1 {
            let height = (levels.len() - 1) as u32;
            let next = hash_level(&levels[levels.len() - 1], height);
            levels.push(next);
        }
        Self { levels }
    }

    /// The root; equal to [`merkle_root`] of the leaves.
    pub fn root(&self) -> Hash32 {
        match self.levels[self.levels.len() - 1].as_slice() {
            [root] => *root,
            _ => ZERO_HASH,
        }
    }

    /// The number of (real) leaves.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// The leaves, in order.
    pub fn leaves(&self) -> &[Hash32] {
        &self.levels[0]
    }

    /// Every level of real nodes: `levels()[0]` are the leaves, `levels()[h]` the nodes of height
    /// `h` that cover at least one real leaf, the last level the root. Nodes a proof needs beyond a
    /// level's end are all-padding subtrees ([`pad_root`]).
    pub fn levels(&self) -> &[Vec<Hash32>] {
        &self.levels
    }

    /// [`tree_depth`] of the leaf count.
    pub fn depth(&self) -> u32 {
        (self.levels.len() - 1) as u32
    }

    /// The inclusion proof of the leaf at `leaf_index`: its sibling at each level from the
    /// leaves upward (ves-wire §2.7), padding siblings included. `None` when out of range.
    pub fn proof(&self, leaf_index: usize) -> Option<Vec<Hash32>> {
        if leaf_index >= self.len() {
            return None;
        }
        let depth = self.levels.len() - 1;
        let path = (0..depth)
            .map(|height| {
                let sibling = (leaf_index >> height) ^ 1;
                // A sibling past the real nodes of its level covers only padding.
                self.levels[height].get(sibling).copied().unwrap_or_else(|| pad_root(height as u32))
            })
            .collect();
        Some(path)
    }
}

/// Checks an inclusion proof: folds `leaf` with `proof_path` (bit `i` of `leaf_index` set means
/// the running node is the right child at level `i`) and compares with `root`.
///
/// Rejects a `leaf_index` that does not fit in a tree of depth `proof_path.len()`, so one proof
/// cannot be presented for several indices.
pub fn verify_proof(leaf: &Hash32, leaf_index: usize, proof_path: &[Hash32], root: &Hash32) -> bool {
    let depth = proof_path.len();
    if depth >= usize::BITS as usize || leaf_index >> depth != 0 {
        return false;
    }
    let running = proof_path.iter().enumerate().fold(*leaf, |running, (i, sibling)| {
        if (leaf_index >> i) & 1 == 0 { node_hash(&running, sibling) } else { node_hash(sibling, &running) }
    });
    running == *root
}

/// For each level `0..depth`, `true` when the running node of `leaf_index`'s path is the LEFT
/// child there (its sibling is on the right).
pub fn directions(leaf_index: usize, depth: usize) -> Vec<bool> {
    (0..depth).map(|i| i >= usize::BITS as usize || (leaf_index >> i) & 1 == 0).collect()
}

/// Roots of all-padding subtrees: `PAD_ROOTS[h]` is the root of `2^h` [`PAD_LEAF`]s.
static PAD_ROOTS: LazyLock<[Hash32; usize::BITS as usize]> = LazyLock::new(|| {
    let mut roots = [PAD_LEAF; usize::BITS as usize];
    for h in 1..roots.len() {
        roots[h] = node_hash(&roots[h - 1], &roots[h - 1]);
    }
    roots
});

/// The root of an all-padding subtree of height `height` (`PAD_LEAF` for height 0).
///
/// # Panics
/// When `height >= usize::BITS` (no tree that tall can be indexed).
pub fn pad_root(height: u32) -> Hash32 {
    PAD_ROOTS[height as usize]
}

/// Hashes the nodes of height `height` (at least two) into the level above. An odd last node is
/// paired with the all-padding subtree of the same height.
fn hash_level(nodes: &[Hash32], height: u32) -> Vec<Hash32> {
    let pad = pad_root(height);
    let mut parents = vec![ZERO_HASH; nodes.len().div_ceil(2)];
    #[cfg(feature = "parallel")]
    if nodes.len() >= PARALLEL_MIN_NODES {
        use rayon::prelude::*;
        nodes
            .par_chunks(2 * PARALLEL_CHUNK)
            .zip(parents.par_chunks_mut(PARALLEL_CHUNK))
            .for_each(|(nodes, parents)| hash_pairs_into(nodes, &pad, parents));
        return parents;
    }
    hash_pairs_into(nodes, &pad, &mut parents);
    parents
}

/// Parents per rayon task.
#[cfg(feature = "parallel")]
const PARALLEL_CHUNK: usize = 512;

/// Writes `parents[i] = node_hash(nodes[2i], nodes[2i+1] or pad)`.
fn hash_pairs_into(nodes: &[Hash32], pad: &Hash32, parents: &mut [Hash32]) {
    debug_assert_eq!(parents.len(), nodes.len().div_ceil(2));
    // Complete pairs go through the SIMD kernel first; whatever it leaves is hashed here.
    let complete = nodes.len() / 2;
    let done = node_lanes::hash_pairs(nodes, &mut parents[..complete]);
    for (pair, out) in nodes[2 * done..].chunks(2).zip(&mut parents[done..]) {
        *out = node_hash(&pair[0], pair.get(1).unwrap_or(pad));
    }
}

/// Decodes 64 hex digits at compile time.
const fn hex32(s: &str) -> Hash32 {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lowercase hex digit"),
        }
    }
    let s = s.as_bytes();
    assert!(s.len() == 64, "expected 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(s[2 * i]) << 4) | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn pad_leaf_is_the_hash_of_its_tag() {
        let computed: Hash32 = Sha256::digest(domain::PAD_LEAF).into();
        assert_eq!(PAD_LEAF, computed);
    }

    #[test]
    fn pad_roots_are_roots_of_all_padding_trees() {
        for h in 0..6u32 {
            let pads = vec![PAD_LEAF; 1 << h];
            assert_eq!(pad_root(h), merkle_root(&pads), "height {h}");
        }
    }

    #[test]
    fn sizes_and_depths_follow_the_next_power_of_two() {
        let cases = [(0, 0, 0), (1, 1, 0), (2, 2, 1), (3, 4, 2), (4, 4, 2), (5, 8, 3), (1025, 2048, 11)];
        for (n, padded, depth) in cases {
            assert_eq!(padded_leaf_count(n), padded, "n={n}");
            assert_eq!(tree_depth(n), depth, "n={n}");
            assert_eq!(MerkleTree::new(vec![[1; 32]; n]).depth(), depth, "n={n}");
        }
    }

    #[test]
    fn an_empty_tree_has_the_zero_root_and_no_proofs() {
        let tree = MerkleTree::new(Vec::new());
        assert!(tree.is_empty());
        assert_eq!(tree.root(), ZERO_HASH);
        assert_eq!(merkle_root(&[]), ZERO_HASH);
        assert_eq!(tree.proof(0), None);
    }

    #[test]
    fn a_single_leaf_is_its_own_root_with_an_empty_proof() {
        let leaf = [9; 32];
        let tree = MerkleTree::new(vec![leaf]);
        assert_eq!(tree.root(), leaf);
        assert_eq!(tree.proof(0), Some(vec![]));
        assert!(verify_proof(&leaf, 0, &[], &leaf));
        assert!(!verify_proof(&leaf, 1, &[], &leaf));
    }

    #[test]
    fn levels_hold_only_real_nodes_and_end_at_the_root() {
        let tree = MerkleTree::new((0..5u8).map(|i| [i; 32]).collect());
        let widths: Vec<usize> = tree.levels().iter().map(Vec::len).collect();
        assert_eq!(widths, vec![5, 3, 2, 1]);
        assert_eq!(tree.levels()[3][0], tree.root());
        assert_eq!(tree.levels()[1][2], node_hash(&[4; 32], &pad_root(0)));
    }

    #[test]
    fn directions_read_the_index_bits_from_the_bottom() {
        assert_eq!(directions(0b110, 4), vec![true, false, false, true]);
        assert_eq!(directions(0, 0), Vec::<bool>::new());
    }

    #[test]
    fn absurdly_long_proofs_are_rejected() {
        let path = vec![PAD_LEAF; usize::BITS as usize];
        assert!(!verify_proof(&PAD_LEAF, 0, &path, &PAD_LEAF));
    }
}
