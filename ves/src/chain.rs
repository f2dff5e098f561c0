//! Consistency between two commitments of a stream (SPEC §5, beyond upstream).
//!
//! A stream's commitments cover contiguous ranges `1..=e1`, `e1+1..=e2`, ... and chain by state
//! root (ves-wire §2.8): each `new_state_root` hashes the previous one with the range's Merkle root.
//! A stream's state after `size` events is therefore the `new_state_root` of the commitment ending at
//! `size` (the zero hash for size 0), and it commits to every event before it.
//!
//! The proof that the state at `to_size` extends the state at `from_size` is the list of commitments
//! between them, in order; [`verify_consistency`] folds their state roots from one to the other.
//! It is linear in the number of commitments between the two sizes, which the sequencer bounds.

use uuid::Uuid;

use crate::Hash32;
use crate::hash::state_root;

/// One commitment of a consistency proof: its range and Merkle root (its previous state root is the
/// running value of the fold, its new one is recomputed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLink {
    /// First sequence number covered.
    pub sequence_start: u64,
    /// Last sequence number covered.
    pub sequence_end: u64,
    /// Root of the range's Merkle tree.
    pub merkle_root: Hash32,
}

/// Why a chain does not lead from one state to the other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A link does not start right after the previous one ends (or after `from_size`).
    #[error("commitment {index} covers {start}..={end}, expected it to start at {expected}")]
    NotContiguous {
        /// Position of the link in the proof.
        index: usize,
        /// Its first sequence number.
        start: u64,
        /// Its last sequence number.
        end: u64,
        /// The sequence number it should start at.
        expected: u64,
    },
    /// A link's range is empty or larger than a commitment can be.
    #[error("commitment {index} has an invalid range {start}..={end}")]
    BadRange {
        /// Position of the link in the proof.
        index: usize,
        /// Its first sequence number.
        start: u64,
        /// Its last sequence number.
        end: u64,
    },
    /// The links end somewhere else than `to_size`.
    #[error("the commitments end at {end}, not at {expected}")]
    WrongEnd {
        /// Where the last link ends (`from_size` when there is none).
        end: u64,
        /// The size the proof was for.
        expected: u64,
    },
    /// The fold reaches another state root.
    #[error("the commitments lead to another state root")]
    RootMismatch,
}

/// The state root after `links`, starting from `from_root` at `from_size`; also checks that the
/// links tile `from_size + 1 ..= to_size` exactly.
pub fn extend(
    tenant_id: Uuid,
    store_id: Uuid,
    from_size: u64,
    from_root: &Hash32,
    to_size: u64,
    links: &[ChainLink],
) -> Result<Hash32, ChainError> {
    let mut root = *from_root;
    let mut next = from_size + 1;
    for (index, link) in links.iter().enumerate() {
        let (start, end) = (link.sequence_start, link.sequence_end);
        if start != next {
            return Err(ChainError::NotContiguous { index, start, end, expected: next });
        }
        let count = end.checked_sub(start).and_then(|d| u32::try_from(d + 1).ok());
        let Some(count) = count else {
            return Err(ChainError::BadRange { index, start, end });
        };
        root = state_root(tenant_id, store_id, &root, &link.merkle_root, start, end, count);
        next = end + 1;
    }
    if next - 1 != to_size {
        return Err(ChainError::WrongEnd { end: next - 1, expected: to_size });
    }
    Ok(root)
}

/// Whether `links` prove that the stream's state `to_root` at `to_size` extends its state
/// `from_root` at `from_size` (use the zero hash for size 0).
pub fn verify_consistency(
    tenant_id: Uuid,
    store_id: Uuid,
    (from_size, from_root): (u64, &Hash32),
    (to_size, to_root): (u64, &Hash32),
    links: &[ChainLink],
) -> Result<(), ChainError> {
    let root = extend(tenant_id, store_id, from_size, from_root, to_size, links)?;
    if &root != to_root {
        return Err(ChainError::RootMismatch);
    }
    Ok(())
}
