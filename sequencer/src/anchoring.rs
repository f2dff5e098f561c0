//! Anchoring commitments on the L2 through the `anchor` crate (alloy client + circuit breaker), and
//! recording where each landed. While the chain is unreachable the breaker fails calls fast;
//! commitments stay valid and queryable locally and are anchored later (worker or retry endpoint).

use std::sync::Mutex;

use ::anchor::{AnchorClient, AnchorError, CircuitSnapshot, CommitmentToAnchor, uuid_to_bytes32};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::commitments::CommitmentRow;

/// Anchoring settings from the environment (`L2_RPC_URL`, `SET_REGISTRY_ADDRESS`,
/// `SEQUENCER_PRIVATE_KEY`, `L2_CHAIN_ID`).
pub type AnchorSettings = ::anchor::AnchorConfig;

/// Anchors commitments and records the result.
pub struct AnchorService {
    client: AnchorClient,
    store: Store,
    last_seen: Mutex<CircuitSnapshot>,
}

fn hash32(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| Error::Internal("stored hash is not 32 bytes".into()))
}

/// The API error for an anchoring failure.
pub fn anchor_error(e: AnchorError) -> Error {
    match e {
        AnchorError::CircuitOpen { retry_in } => Error::Unavailable {
            code: "ANCHOR_CIRCUIT_OPEN",
            message: format!("{e}; the commitment stays valid locally, retry later"),
            retry_after_secs: Some(retry_in.as_secs().max(1)),
        },
        AnchorError::Rpc(_) => Error::Unavailable {
            code: "ANCHOR_UNAVAILABLE",
            message: format!("{e}; the commitment stays valid locally, retry later"),
            retry_after_secs: Some(5),
        },
        AnchorError::Reverted(_) | AnchorError::AlreadyAnchored => Error::Conflict(e.to_string()),
        AnchorError::Config(_) => Error::Internal(e.to_string()),
    }
}

impl AnchorService {
    pub fn new(settings: AnchorSettings, store: Store) -> Result<Self> {
        let client = AnchorClient::new(settings).map_err(|e| Error::Internal(format!("anchoring: {e}")))?;
        let last_seen = Mutex::new(client.circuit());
        Ok(AnchorService { client, store, last_seen })
    }

    pub fn client(&self) -> &AnchorClient {
        &self.client
    }

    /// The breaker's state, for status and metrics.
    pub fn circuit(&self) -> CircuitSnapshot {
        self.client.circuit()
    }

    /// Copies the breaker's figures into the metrics (counters advance by what changed since the
    /// last call).
    pub fn export_metrics(&self, metrics: &Metrics) {
        let now = self.client.circuit();
        let mut last = self.last_seen.lock().expect("anchor metrics lock");
        metrics.anchor_circuit_state.set(now.state.as_gauge());
        metrics.anchor_circuit_transitions.inc_by(now.transitions_total.saturating_sub(last.transitions_total));
        metrics.anchor_circuit_opened.inc_by(now.opened_total.saturating_sub(last.opened_total));
        metrics.anchor_circuit_rejected.inc_by(now.rejected_total.saturating_sub(last.rejected_total));
        *last = now;
    }

    /// Anchors one commitment (the runbook's retry). Returns the commitment as stored afterwards and
    /// whether this call anchored it.
    pub async fn anchor_batch(&self, batch_id: Uuid) -> Result<(CommitmentRow, bool)> {
        let row =
            self.store.commitment(batch_id).await?.ok_or_else(|| Error::NotFound("Commitment not found".into()))?;
        self.anchor_row(row).await
    }

    /// Anchors a loaded commitment.
    pub async fn anchor_row(&self, row: CommitmentRow) -> Result<(CommitmentRow, bool)> {
        if let Some(by) = row.superseded_by {
            return Err(Error::Conflict(format!(
                "commitment {} was corrected by {by}; anchor the correction instead",
                row.batch_id
            )));
        }
        if row.chain_tx_hash.is_some() {
            return Ok((row, false));
        }
        let c = CommitmentToAnchor {
            batch_id: row.batch_id,
            tenant_id: row.tenant_id,
            store_id: row.store_id,
            merkle_root: hash32(&row.merkle_root)?,
            new_state_root: hash32(&row.new_state_root)?,
            sequence_start: row.sequence_start as u64,
            sequence_end: row.sequence_end as u64,
            leaf_count: row.leaf_count as u32,
        };
        let (tx_hash, block) = match self.client.anchor(&c).await {
            Ok(receipt) => (receipt.tx_hash, receipt.block_number),
            Err(AnchorError::AlreadyAnchored) => {
                // Anchored by an earlier attempt whose result was not recorded (a crash, a lost
                // answer): accept it only if the chain holds exactly our roots.
                let on_chain = self.client.get_commitment(row.batch_id).await.map_err(anchor_error)?;
                match on_chain {
                    Some(o) if o.events_root == c.merkle_root && o.state_root == c.new_state_root => {
                        let (tx, block) = self.find_anchor_tx(row.batch_id).await.unwrap_or(([0u8; 32], 0));
                        (tx, block)
                    }
                    _ => {
                        return Err(Error::Conflict(format!(
                            "batch {} is anchored on chain with different roots than the local commitment",
                            row.batch_id
                        )));
                    }
                }
            }
            Err(e) => return Err(anchor_error(e)),
        };
        let newly =
            self.store.mark_anchored(row.batch_id, self.client.chain_id() as i64, &tx_hash, block as i64).await?;
        let row = self.store.commitment(row.batch_id).await?.expect("commitments are never deleted");
        if newly {
            tracing::info!(batch_id = %row.batch_id, tx = %hex::encode(tx_hash), block, "commitment anchored");
        }
        Ok((row, newly))
    }

    /// The transaction that emitted `CommitmentAnchored` for this batch, from the registry's logs.
    async fn find_anchor_tx(&self, batch_id: Uuid) -> Option<([u8; 32], u64)> {
        let topic = alloy::primitives::B256::from(uuid_to_bytes32(batch_id));
        let logs = self.client.registry().CommitmentAnchored_filter().topic1(topic).from_block(0).query().await.ok()?;
        let (_, log) = logs.into_iter().next()?;
        Some((log.transaction_hash?.0, log.block_number?))
    }

    /// Whether the registry holds this batch, and whether its roots match ours.
    pub async fn verify_on_chain(&self, row: &CommitmentRow) -> Result<(bool, Option<bool>)> {
        let on_chain = self.client.get_commitment(row.batch_id).await.map_err(anchor_error)?;
        Ok(match on_chain {
            None => (false, None),
            Some(o) => {
                (true, Some(o.events_root[..] == row.merkle_root[..] && o.state_root[..] == row.new_state_root[..]))
            }
        })
    }
}
