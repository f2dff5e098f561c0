//! The commitment engine: Merkle commitments over contiguous ranges of a stream, chained by state
//! root (ves-wire.md §2.6–2.8), correction without deletion, and inclusion proofs served from the
//! stored tree levels.
//!
//! Commitment creation for a stream is serialised by a transaction-scoped advisory lock, so two
//! replicas (or a replica and the background worker) can never commit overlapping ranges.

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use ves::merkle::{MerkleTree, pad_root};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::commitments::{self as db, CommitmentRow};
use crate::store::events::StreamKey;

/// The largest range one commitment may cover.
pub const MAX_COMMITMENT_EVENTS: i64 = 1 << 20;

/// An inclusion proof of one event in one commitment.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub sequence_number: i64,
    pub batch_id: Uuid,
    pub merkle_root: [u8; 32],
    pub leaf_hash: [u8; 32],
    pub leaf_index: u64,
    pub proof_path: Vec<[u8; 32]>,
}

impl InclusionProof {
    /// The wire shape of ves-wire.md §1.10.
    pub fn to_json(&self) -> Value {
        let depth = self.proof_path.len();
        json!({
            "sequence_number": self.sequence_number,
            "batch_id": self.batch_id,
            "merkle_root": hex::encode(self.merkle_root),
            "leaf_hash": hex::encode(self.leaf_hash),
            "leaf_index": self.leaf_index,
            "proof_path": self.proof_path.iter().map(hex::encode).collect::<Vec<_>>(),
            "directions": ves::merkle::directions(self.leaf_index as usize, depth),
        })
    }
}

/// A commitment as the API shows it (hex bare lowercase, as ves-wire.md §1.9).
pub fn commitment_json(c: &CommitmentRow) -> Value {
    json!({
        "batch_id": c.batch_id,
        "tenant_id": c.tenant_id,
        "store_id": c.store_id,
        "ves_version": c.ves_version,
        "tree_depth": c.tree_depth,
        "leaf_count": c.leaf_count,
        "padded_leaf_count": c.padded_leaf_count,
        "merkle_root": hex::encode(&c.merkle_root),
        "prev_state_root": hex::encode(&c.prev_state_root),
        "new_state_root": hex::encode(&c.new_state_root),
        "sequence_start": c.sequence_start,
        "sequence_end": c.sequence_end,
        "committed_at": c.committed_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "chain_id": c.chain_id,
        "chain_tx_hash": c.chain_tx_hash.as_deref().map(hex::encode),
        "chain_block_number": c.chain_block_number,
        "anchored_at": c.anchored_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        "is_anchored": c.chain_tx_hash.is_some(),
        "corrects_batch_id": c.corrects_batch_id,
        "superseded_by": c.superseded_by,
        "metadata": c.metadata,
    })
}

fn non_contiguous(message: String) -> Error {
    Error::Invalid { code: "NON_CONTIGUOUS_SEQUENCE", message }
}

/// A stored 32-byte hash as an array.
fn hash32(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| Error::Internal("stored hash is not 32 bytes".into()))
}

/// The leaves of `start..=end` read from the log itself, failing on any gap.
async fn leaves_from_log(
    conn: &mut sqlx::PgConnection,
    stream: StreamKey,
    start: i64,
    end: i64,
) -> Result<Vec<[u8; 32]>> {
    let rows = db::range_leaves(conn, stream, start, end).await?;
    let mut leaves = Vec::with_capacity(rows.len());
    for (i, (seq, leaf)) in rows.iter().enumerate() {
        let expected = start + i as i64;
        if *seq != expected {
            return Err(non_contiguous(format!(
                "non-contiguous sequence in commitment range {start}..={end}: expected {expected}, found {seq}"
            )));
        }
        leaves.push(hash32(leaf)?);
    }
    let expected = start + rows.len() as i64;
    if expected <= end {
        return Err(non_contiguous(format!(
            "non-contiguous sequence in commitment range {start}..={end}: event {expected} is missing"
        )));
    }
    Ok(leaves)
}

/// The tree of `start..=end` from the log itself, failing on any gap.
async fn build_tree_from_log(
    conn: &mut sqlx::PgConnection,
    stream: StreamKey,
    start: i64,
    end: i64,
) -> Result<MerkleTree> {
    Ok(MerkleTree::new(leaves_from_log(conn, stream, start, end).await?))
}

/// Builds the tree of `start..=end` from the stream's leaf runs (one row per sequencing transaction,
/// written with the events), or from the log itself when the runs do not cover the range (events
/// stored by a version without runs) or when rows of the stream's log were removed or changed behind
/// the sequencer's back (so that a gap fails the commitment, as the runbook expects).
async fn build_tree(conn: &mut sqlx::PgConnection, stream: StreamKey, start: i64, end: i64) -> Result<MerkleTree> {
    let (damaged, runs) = db::damage_and_runs(conn, stream, start, end).await?;
    if !damaged && let Some(leaves) = db::leaves_from_runs(&runs, start, end) {
        // NB: hashing ~10k leaves takes about a millisecond; done inline, it is cheaper than a hand-off.
        return Ok(MerkleTree::new(leaves));
    }
    if damaged {
        tracing::warn!(tenant_id = %stream.tenant_id, store_id = %stream.store_id,
            "rows of this stream's log were removed or changed outside the sequencer; committing from the log itself");
    }
    build_tree_from_log(conn, stream, start, end).await
}

/// A proof recomputes the lowest levels of its path from the leaves of its aligned block of
/// `2^PROOF_BLOCK_HEIGHT` events (read from the leaf runs), and reads the levels above from the
/// commitment's stored levels. So a commitment stores about `n / 16` nodes instead of `2n`: for 10,000
/// events 20 KiB instead of 640 KiB, which keeps creating one to a few milliseconds.
pub const PROOF_BLOCK_HEIGHT: u32 = 5;

/// The levels a proof reads from storage: from [`PROOF_BLOCK_HEIGHT`] up to the one below the root
/// (the root is the commitment's `merkle_root`), as `(level number, nodes concatenated)`.
fn stored_levels(tree: &MerkleTree) -> Vec<(i32, Vec<u8>)> {
    let levels = tree.levels();
    let inner = levels.len().saturating_sub(1);
    levels
        .iter()
        .enumerate()
        .take(inner)
        .skip(PROOF_BLOCK_HEIGHT as usize)
        .map(|(n, level)| (n as i32, level.concat()))
        .collect()
}

/// The most commitments one consistency proof lists.
pub const MAX_CONSISTENCY_LINKS: i64 = 10_000;

/// The commitments that lead a stream's state root at `from_size` to its state root at `to_size`.
#[derive(Debug, Clone)]
pub struct ConsistencyProof {
    pub from_size: i64,
    pub from_root: [u8; 32],
    pub to_size: i64,
    pub to_root: [u8; 32],
    pub links: Vec<CommitmentRow>,
}

/// Creates, corrects and proves commitments.
#[derive(Clone)]
pub struct CommitmentEngine {
    store: Store,
}

impl CommitmentEngine {
    pub fn new(store: Store) -> Self {
        CommitmentEngine { store }
    }

    /// Commits `start..=end` of a stream. Returns the commitment and whether it is new (an identical
    /// request for the same range answers the existing commitment).
    pub async fn create(&self, stream: StreamKey, start: i64, end: i64) -> Result<(CommitmentRow, bool)> {
        if start < 1 || end < start {
            return Err(Error::Invalid {
                code: "INVALID_SEQUENCE_RANGE",
                message: format!(
                    "invalid sequence range {start}..={end}: sequence_start must be >= 1 and <= sequence_end"
                ),
            });
        }
        if end - start + 1 > MAX_COMMITMENT_EVENTS {
            return Err(Error::Invalid {
                code: "INVALID_SEQUENCE_RANGE",
                message: format!("a commitment covers at most {MAX_COMMITMENT_EVENTS} events; split {start}..={end}"),
            });
        }
        let mut tx = self.store.begin().await?;
        db::lock_stream_commitments(&mut tx, stream).await?;
        let last = db::last_commitment(&mut tx, stream).await?;
        if let Some(last) = &last {
            if last.sequence_start == start {
                if last.sequence_end == end {
                    return Ok((last.clone(), false));
                }
                return Err(Error::Conflict(format!(
                    "commitment already exists for start {start} but ends at {} (requested {end})",
                    last.sequence_end
                )));
            }
            if start != last.sequence_end + 1 {
                return Err(non_contiguous(format!(
                    "non-contiguous sequence: commitment range must start at {} (next after last committed sequence {})",
                    last.sequence_end + 1,
                    last.sequence_end
                )));
            }
        }
        let head = db::head(&mut tx, stream).await?;
        if end > head {
            return Err(non_contiguous(format!(
                "non-contiguous sequence: range {start}..={end} extends beyond the stream head ({head})"
            )));
        }
        let tree = build_tree(&mut tx, stream, start, end).await?;
        let prev = match &last {
            Some(l) => hash32(&l.new_state_root)?,
            None => [0u8; 32],
        };
        let row = self.row(stream, start, end, &tree, prev, None);
        db::insert_commitment(&mut tx, &row, &stored_levels(&tree)).await?;
        tx.commit().await?;
        tracing::info!(batch_id = %row.batch_id, tenant_id = %stream.tenant_id, store_id = %stream.store_id,
            start, end, "commitment created");
        Ok((row, true))
    }

    /// Commits the next range of a stream (at most `max_events` after its last commitment), if the
    /// stream has uncommitted events.
    pub async fn create_next(&self, stream: StreamKey, max_events: i64) -> Result<Option<CommitmentRow>> {
        let (start, head) = {
            let mut conn = self.store.pool().acquire().await?;
            let last = db::last_commitment(&mut conn, stream).await?;
            (last.map_or(1, |l| l.sequence_end + 1), db::head(&mut conn, stream).await?)
        };
        if head < start {
            return Ok(None);
        }
        let end = head.min(start + max_events - 1);
        match self.create(stream, start, end).await {
            Ok((row, true)) => Ok(Some(row)),
            Ok((_, false)) => Ok(None),
            // Another replica committed first; the next round picks up from its end.
            Err(Error::Invalid { code: "NON_CONTIGUOUS_SEQUENCE", .. }) | Err(Error::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces a bad commitment by one recomputed from the log over the same range. The bad one is
    /// marked superseded (with the reason in its metadata) and stays readable; nothing is deleted.
    pub async fn correct(&self, batch_id: Uuid, reason: &str) -> Result<CommitmentRow> {
        let bad =
            self.store.commitment(batch_id).await?.ok_or_else(|| Error::NotFound("Commitment not found".into()))?;
        let stream = bad.stream();
        let mut tx = self.store.begin().await?;
        db::lock_stream_commitments(&mut tx, stream).await?;
        let bad = self.store.commitment(batch_id).await?.expect("commitments are never deleted");
        if let Some(by) = bad.superseded_by {
            return Err(Error::Conflict(format!("commitment {batch_id} was already corrected by {by}")));
        }
        // NB: from the log itself, not the leaf runs: a correction must not trust anything derived.
        let tree = build_tree_from_log(&mut tx, stream, bad.sequence_start, bad.sequence_end).await?;
        let prev: Option<[u8; 32]> = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT new_state_root FROM commitments WHERE tenant_id = $1 AND store_id = $2 \
             AND superseded_by IS NULL AND sequence_end = $3",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(bad.sequence_start - 1)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| hash32(&r))
        .transpose()?;
        let prev = prev.unwrap_or([0u8; 32]);
        let row = self.row(stream, bad.sequence_start, bad.sequence_end, &tree, prev, Some(batch_id));
        if row.merkle_root == bad.merkle_root && row.new_state_root == bad.new_state_root {
            return Err(Error::Conflict(format!(
                "commitment {batch_id} matches the log (same Merkle and state roots); there is nothing to correct"
            )));
        }
        db::mark_superseded(&mut tx, batch_id, row.batch_id, reason).await?;
        db::insert_commitment(&mut tx, &row, &stored_levels(&tree)).await?;
        tx.commit().await?;
        tracing::warn!(bad = %batch_id, correction = %row.batch_id, reason, "commitment corrected");
        Ok(row)
    }

    fn row(
        &self,
        stream: StreamKey,
        start: i64,
        end: i64,
        tree: &MerkleTree,
        prev: [u8; 32],
        corrects: Option<Uuid>,
    ) -> CommitmentRow {
        let leaf_count = (end - start + 1) as u32;
        let merkle_root = tree.root();
        let new_state_root = ves::hash::state_root(
            stream.tenant_id,
            stream.store_id,
            &prev,
            &merkle_root,
            start as u64,
            end as u64,
            leaf_count,
        );
        CommitmentRow {
            batch_id: Uuid::new_v4(),
            tenant_id: stream.tenant_id,
            store_id: stream.store_id,
            ves_version: 1,
            tree_depth: tree.depth() as i32,
            leaf_count: leaf_count as i32,
            padded_leaf_count: ves::merkle::padded_leaf_count(leaf_count as usize) as i32,
            merkle_root: merkle_root.to_vec(),
            prev_state_root: prev.to_vec(),
            new_state_root: new_state_root.to_vec(),
            sequence_start: start,
            sequence_end: end,
            committed_at: Utc::now().trunc_subsecs(6),
            chain_id: None,
            chain_tx_hash: None,
            chain_block_number: None,
            anchored_at: None,
            corrects_batch_id: corrects,
            superseded_by: None,
            metadata: match corrects {
                Some(bad) => json!({"corrects": bad}),
                None => json!({}),
            },
        }
    }

    /// The consistency proof between the stream's states at `from_size` (0 or a live commitment's
    /// end) and `to_size` (a live commitment's end; default the last) (SPEC §5). Only a chain that
    /// `ves::chain::verify_consistency` accepts is returned: a broken one is a finding for `verify`.
    pub async fn consistency(
        &self,
        stream: StreamKey,
        from_size: i64,
        to_size: Option<i64>,
    ) -> Result<ConsistencyProof> {
        let not_a_checkpoint = |size: i64| Error::Invalid {
            code: "INVALID_SEQUENCE_RANGE",
            message: format!(
                "{size} is not the end of a commitment of this stream; checkpoints are at commitment ends"
            ),
        };
        let to = self.store.commitment_ending(stream, to_size).await?.ok_or_else(|| match to_size {
            Some(size) => not_a_checkpoint(size),
            None => Error::NotFound("This stream has no commitment yet".into()),
        })?;
        if from_size < 0 || from_size > to.sequence_end {
            return Err(Error::Invalid {
                code: "INVALID_SEQUENCE_RANGE",
                message: format!("from_size must be between 0 and to_size ({}), got {from_size}", to.sequence_end),
            });
        }
        let from_root = match from_size {
            0 => [0; 32],
            size => {
                let from =
                    self.store.commitment_ending(stream, Some(size)).await?.ok_or_else(|| not_a_checkpoint(size))?;
                hash32(&from.new_state_root)?
            }
        };
        let links =
            self.store.commitments_between(stream, from_size, to.sequence_end, MAX_CONSISTENCY_LINKS + 1).await?;
        if links.len() as i64 > MAX_CONSISTENCY_LINKS {
            return Err(Error::Invalid {
                code: "INVALID_SEQUENCE_RANGE",
                message: format!(
                    "more than {MAX_CONSISTENCY_LINKS} commitments lie between {from_size} and {}; ask for a shorter span",
                    to.sequence_end
                ),
            });
        }
        let chain = links
            .iter()
            .map(|c| {
                Ok(ves::chain::ChainLink {
                    sequence_start: c.sequence_start as u64,
                    sequence_end: c.sequence_end as u64,
                    merkle_root: hash32(&c.merkle_root)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let to_root = hash32(&to.new_state_root)?;
        if let Err(e) = ves::chain::verify_consistency(
            stream.tenant_id,
            stream.store_id,
            (from_size as u64, &from_root),
            (to.sequence_end as u64, &to_root),
            &chain,
        ) {
            return Err(Error::Conflict(format!(
                "the stored commitments between {from_size} and {} do not chain ({e}); run verify",
                to.sequence_end
            )));
        }
        Ok(ConsistencyProof { from_size, from_root, to_size: to.sequence_end, to_root, links })
    }

    /// The stream's signed checkpoint at its last live commitment (see [`crate::checkpoint`]).
    pub async fn checkpoint(&self, signer: &crate::checkpoint::CheckpointSigner, stream: StreamKey) -> Result<Vec<u8>> {
        let last = self
            .store
            .commitment_ending(stream, None)
            .await?
            .ok_or_else(|| Error::NotFound("This stream has no commitment yet".into()))?;
        signer.sign(stream, last.sequence_end as u64, hash32(&last.new_state_root)?, last.batch_id)
    }

    /// The inclusion proof of `sequence_number` in commitment `c`: the lower levels of its path
    /// recomputed from the leaves of its block ([`PROOF_BLOCK_HEIGHT`]), the upper ones from the
    /// commitment's stored levels; one database round trip.
    pub async fn proof(&self, c: &CommitmentRow, sequence_number: i64) -> Result<InclusionProof> {
        if sequence_number < c.sequence_start || sequence_number > c.sequence_end {
            return Err(Error::BadRequest(format!(
                "Sequence number not in commitment range: {sequence_number} is outside {}..={}",
                c.sequence_start, c.sequence_end
            )));
        }
        let stream = c.stream();
        let index = sequence_number - c.sequence_start;
        let depth = c.tree_depth.max(0) as u32;
        let block_height = depth.min(PROOF_BLOCK_HEIGHT);
        let block_start = index >> block_height << block_height;
        let lo = c.sequence_start + block_start;
        let hi = (lo + (1 << block_height) - 1).min(c.sequence_end);
        let wanted: Vec<(i32, i64)> = (block_height..depth).map(|h| (h as i32, (index >> h) ^ 1)).collect();

        let mut conn = self.store.pool().acquire().await?;
        let reads = db::proof_reads(&mut conn, stream, (lo, hi), c.batch_id, &wanted).await?;
        let mut runs = Vec::new();
        let mut nodes = std::collections::HashMap::new();
        for read in reads {
            match read {
                db::ProofRead::Run(run) => runs.push(run),
                db::ProofRead::Node { level, index, node } => {
                    nodes.insert((level, index), node);
                }
            }
        }
        let block = match db::leaves_from_runs(&runs, lo, hi) {
            Some(leaves) => leaves,
            // Events without leaf runs (stored before runs existed): from the log.
            None => leaves_from_log(&mut conn, stream, lo, hi).await?,
        };
        drop(conn);

        // The block's own tree is the commitment's tree restricted to the block: same alignment, same
        // padding of the last, partial block.
        let block_tree = MerkleTree::new(block);
        let in_block = (index - block_start) as usize;
        let leaf = block_tree.leaves().get(in_block).copied();
        let mut path = Vec::with_capacity(depth as usize);
        for h in 0..block_height {
            // A sibling past the real nodes of its level covers only padding.
            let sibling = block_tree.levels().get(h as usize).and_then(|level| level.get((in_block >> h) ^ 1));
            path.push(sibling.copied().unwrap_or_else(|| pad_root(h)));
        }
        for h in block_height..depth {
            let node = nodes.get(&(h as i32, (index >> h) ^ 1)).cloned().flatten();
            path.push(match node {
                Some(n) => hash32(&n)?,
                None => pad_root(h),
            });
        }
        let leaf = leaf.ok_or_else(|| Error::Internal(format!("event {sequence_number} has no stored leaf")))?;
        let merkle_root = hash32(&c.merkle_root)?;
        // NB: a proof that does not verify is a storage fault; say so instead of serving it.
        if !ves::merkle::verify_proof(&leaf, index as usize, &path, &merkle_root) {
            tracing::error!(batch_id = %c.batch_id, sequence_number, "stored tree does not prove the event; run verify");
            return Err(Error::Internal(format!(
                "the stored tree of commitment {} does not prove event {sequence_number}",
                c.batch_id
            )));
        }
        Ok(InclusionProof {
            sequence_number,
            batch_id: c.batch_id,
            merkle_root,
            leaf_hash: leaf,
            leaf_index: index as u64,
            proof_path: path,
        })
    }
}
