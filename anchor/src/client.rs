//! The anchoring client: sends commitments to the registry and reads them back, every call through
//! the circuit breaker and a short retry of transient transport failures.
//!
//! It never touches the database and never decides when to anchor; the sequencer's worker and
//! endpoints do. One whole retried call counts as one call for the breaker (as in ves-wire.md §6.3).

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use backon::{ExponentialBuilder, Retryable};
use secrecy::SecretString;
use uuid::Uuid;

use crate::breaker::{BreakerConfig, CircuitBreaker, CircuitSnapshot};
use crate::contract::StateSetAnchor::{self, StateSetAnchorInstance};
use crate::error::{AnchorError, Result};
use crate::rpc::{self, Attempt, Redactor};
use crate::uuid_to_bytes32;

/// Chain id of the Set Chain testnet, the existing service's default for `L2_CHAIN_ID`.
pub const DEFAULT_CHAIN_ID: u64 = 84_532_001;

/// Default limit for one HTTP request to the RPC endpoint.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Default limit for waiting on the receipt of a sent transaction.
pub const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and as whom to anchor.
#[derive(Clone)]
pub struct AnchorConfig {
    /// HTTP(S) JSON-RPC endpoint of the L2 (`L2_RPC_URL`). Only its origin is ever logged.
    pub rpc_url: String,
    /// Address of the deployed StateSetAnchor registry (`SET_REGISTRY_ADDRESS`).
    pub registry_address: Address,
    /// Hex secp256k1 key of the anchoring account (`SEQUENCER_PRIVATE_KEY`); never logged.
    pub private_key: SecretString,
    /// Chain id the registry lives on (`L2_CHAIN_ID`); checked against the node before the first
    /// anchor and reported in every [`AnchorReceipt`].
    pub chain_id: u64,
    /// When the circuit breaker opens and how it recovers.
    pub breaker: BreakerConfig,
    /// Limit for one HTTP request to the RPC endpoint.
    pub rpc_timeout: Duration,
}

impl AnchorConfig {
    /// A configuration with the default breaker and RPC timeout.
    pub fn new(
        rpc_url: impl Into<String>,
        registry_address: Address,
        private_key: SecretString,
        chain_id: u64,
    ) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            registry_address,
            private_key,
            chain_id,
            breaker: BreakerConfig::default(),
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
        }
    }
}

impl fmt::Debug for AnchorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnchorConfig")
            .field("rpc_url", &Redactor::new(&self.rpc_url, None).origin())
            .field("registry_address", &self.registry_address)
            .field("private_key", &"[REDACTED]")
            .field("chain_id", &self.chain_id)
            .field("breaker", &self.breaker)
            .field("rpc_timeout", &self.rpc_timeout)
            .finish()
    }
}

/// A local commitment to anchor (ves-wire.md §6.2 mapping: `eventsRoot = merkle_root`,
/// `stateRoot = new_state_root`, `eventCount = leaf_count`; `prev_state_root` is not sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitmentToAnchor {
    /// The commitment's batch id; the registry key.
    pub batch_id: Uuid,
    /// Tenant of the stream.
    pub tenant_id: Uuid,
    /// Store of the stream.
    pub store_id: Uuid,
    /// Merkle root over the batch's leaves.
    pub merkle_root: [u8; 32],
    /// State root after the batch.
    pub new_state_root: [u8; 32],
    /// First sequence number covered.
    pub sequence_start: u64,
    /// Last sequence number covered (inclusive).
    pub sequence_end: u64,
    /// Number of leaves (events) in the batch; the registry rejects 0.
    pub leaf_count: u32,
}

/// Where a commitment landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorReceipt {
    /// The configured (and verified) chain id.
    pub chain_id: u64,
    /// Hash of the anchoring transaction.
    pub tx_hash: [u8; 32],
    /// Block the transaction was included in.
    pub block_number: u64,
}

/// A commitment as the registry stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnChainCommitment {
    /// Batch id as bytes32 (see [`uuid_to_bytes32`]).
    pub batch_id: [u8; 32],
    /// Tenant id as bytes32.
    pub tenant_id: [u8; 32],
    /// Store id as bytes32.
    pub store_id: [u8; 32],
    /// The anchored Merkle root (`merkle_root`).
    pub events_root: [u8; 32],
    /// The anchored state root (`new_state_root`).
    pub state_root: [u8; 32],
    /// First sequence number covered.
    pub sequence_start: u64,
    /// Last sequence number covered.
    pub sequence_end: u64,
    /// Number of events (`leaf_count`).
    pub event_count: u32,
    /// Block timestamp (Unix seconds) of the anchoring transaction.
    pub anchored_at: u64,
    /// Account that sent the anchoring transaction.
    pub anchored_by: Address,
}

/// How transient transport failures are retried within one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: usize,
    /// Delay before the first retry; doubles (with jitter) up to `max_delay`.
    pub min_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 3 retries from 250 ms up to 2 s: short, because the worker retries on its own schedule and
    /// the REST endpoints answer synchronously.
    fn default() -> Self {
        Self { max_retries: 3, min_delay: Duration::from_millis(250), max_delay: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// Client of one StateSetAnchor registry on one chain.
pub struct AnchorClient {
    provider: DynProvider,
    registry: StateSetAnchorInstance<DynProvider>,
    chain_id: u64,
    breaker: CircuitBreaker,
    retry: RetryPolicy,
    receipt_timeout: Duration,
    redactor: Redactor,
    /// Serialises nonce assignment and sending within this process.
    send_lock: tokio::sync::Mutex<()>,
    /// Set once the node's chain id was seen to match `chain_id`.
    chain_verified: tokio::sync::OnceCell<()>,
}

impl AnchorClient {
    /// Builds the client. Checks the URL and the key; does not contact the node.
    pub fn new(cfg: AnchorConfig) -> Result<Self> {
        let redactor = Redactor::new(&cfg.rpc_url, Some(&cfg.private_key));
        let signer = rpc::signer(&cfg.private_key)?;
        let provider = rpc::provider(&cfg.rpc_url, signer, cfg.rpc_timeout, &redactor)?;
        let registry = StateSetAnchor::new(cfg.registry_address, provider.clone());
        Ok(Self {
            provider,
            registry,
            chain_id: cfg.chain_id,
            breaker: CircuitBreaker::new(cfg.breaker),
            retry: RetryPolicy::default(),
            receipt_timeout: DEFAULT_RECEIPT_TIMEOUT,
            redactor,
            send_lock: tokio::sync::Mutex::new(()),
            chain_verified: tokio::sync::OnceCell::new(),
        })
    }

    /// Replaces the retry policy for transient failures (default: [`RetryPolicy::default`]).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces how long [`AnchorClient::anchor`] waits for a receipt (default 120 s).
    pub fn with_receipt_timeout(mut self, timeout: Duration) -> Self {
        self.receipt_timeout = timeout;
        self
    }

    /// Anchors one commitment and waits for its receipt.
    ///
    /// [`AnchorError::AlreadyAnchored`] means the registry already holds this batch id (possibly from
    /// an earlier attempt whose answer was lost); read it with [`AnchorClient::get_commitment`].
    /// Once the transaction is sent it is never re-sent: if its receipt does not arrive within the
    /// receipt timeout the call fails with [`AnchorError::Rpc`] and the transaction may still land.
    pub async fn anchor(&self, c: &CommitmentToAnchor) -> Result<AnchorReceipt> {
        let receipt = self.guarded("anchor", || self.send_and_confirm(c)).await?;
        tracing::info!(
            batch_id = %c.batch_id,
            tx_hash = %B256::from(receipt.tx_hash),
            block_number = receipt.block_number,
            chain_id = receipt.chain_id,
            "anchored commitment"
        );
        Ok(receipt)
    }

    /// Whether the registry holds a commitment for `batch_id` (`isAnchored`).
    pub async fn is_anchored(&self, batch_id: Uuid) -> Result<bool> {
        let id = B256::from(uuid_to_bytes32(batch_id));
        self.guarded("is_anchored", || async {
            self.registry.isAnchored(id).call().await.map_err(|e| self.redactor.contract_failure("isAnchored", &e))
        })
        .await
    }

    /// The registry's commitment for `batch_id`, or `None` when it holds none.
    pub async fn get_commitment(&self, batch_id: Uuid) -> Result<Option<OnChainCommitment>> {
        let id = B256::from(uuid_to_bytes32(batch_id));
        let stored = self
            .guarded("get_commitment", || async {
                self.registry
                    .commitments(id)
                    .call()
                    .await
                    .map_err(|e| self.redactor.contract_failure("commitments", &e))
            })
            .await?;
        if stored.anchoredAt.is_zero() {
            return Ok(None);
        }
        Ok(Some(OnChainCommitment {
            batch_id: stored.batchId.0,
            tenant_id: stored.tenantId.0,
            store_id: stored.storeId.0,
            events_root: stored.eventsRoot.0,
            state_root: stored.stateRoot.0,
            sequence_start: stored.sequenceStart,
            sequence_end: stored.sequenceEnd,
            event_count: stored.eventCount,
            anchored_at: saturating_u64(stored.anchoredAt),
            anchored_by: stored.anchoredBy,
        }))
    }

    /// Highest anchored sequence number of the stream (`getLatestSequence`); 0 when none.
    pub async fn latest_sequence(&self, tenant_id: Uuid, store_id: Uuid) -> Result<u64> {
        let (tenant, store) = (B256::from(uuid_to_bytes32(tenant_id)), B256::from(uuid_to_bytes32(store_id)));
        self.guarded("latest_sequence", || async {
            self.registry
                .getLatestSequence(tenant, store)
                .call()
                .await
                .map_err(|e| self.redactor.contract_failure("getLatestSequence", &e))
        })
        .await
    }

    /// The node's latest block number; a cheap liveness probe.
    pub async fn block_number(&self) -> Result<u64> {
        self.guarded("block_number", || async {
            self.provider.get_block_number().await.map_err(|e| self.redactor.rpc_failure("eth_blockNumber", &e))
        })
        .await
    }

    /// The circuit breaker's state and counters.
    pub fn circuit(&self) -> CircuitSnapshot {
        self.breaker.snapshot()
    }

    /// The configured chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The registry's address.
    pub fn registry_address(&self) -> Address {
        *self.registry.address()
    }

    /// The raw contract binding, signing with the configured key. NB: calls made through it bypass
    /// the circuit breaker and the retries; meant for tests and one-off admin tooling.
    pub fn registry(&self) -> &StateSetAnchorInstance<DynProvider> {
        &self.registry
    }

    /// Runs `op` under the breaker, retrying transient failures.
    async fn guarded<T, F, Fut>(&self, call: &'static str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let before = self.breaker.snapshot().state;
        let permit = self.breaker.try_acquire().map_err(|retry_in| {
            tracing::debug!(call, retry_in_ms = retry_in.as_millis() as u64, "anchor circuit open; call rejected");
            AnchorError::CircuitOpen { retry_in }
        })?;
        let result = op
            .retry(self.retry.backoff())
            .when(Attempt::is_transient)
            .notify(|attempt, delay| {
                if let Attempt::Transient(message) = attempt {
                    tracing::warn!(call, retry_in_ms = delay.as_millis() as u64, error = %message, "L2 RPC call failed; retrying");
                }
            })
            .await
            .map_err(Attempt::into_error);
        match &result {
            Err(error) if error.counts_against_endpoint() => permit.failure(),
            _ => permit.success(),
        }
        let after = self.breaker.snapshot();
        if after.state != before {
            tracing::warn!(
                call,
                from = before.as_str(),
                to = after.state.as_str(),
                consecutive_failures = after.consecutive_failures,
                "anchor circuit breaker changed state"
            );
        }
        result
    }

    async fn send_and_confirm(&self, c: &CommitmentToAnchor) -> Result<AnchorReceipt, Attempt> {
        self.verify_chain_id().await?;
        let call = self.registry.anchor(
            B256::from(uuid_to_bytes32(c.batch_id)),
            B256::from(uuid_to_bytes32(c.tenant_id)),
            B256::from(uuid_to_bytes32(c.store_id)),
            B256::from(c.merkle_root),
            B256::from(c.new_state_root),
            c.sequence_start,
            c.sequence_end,
            c.leaf_count,
        );
        let tx_hash = {
            // NB: held from nonce lookup to send, so concurrent anchors never reuse a nonce.
            let _sending = self.send_lock.lock().await;
            let pending =
                call.send().await.map_err(|e| self.redactor.contract_failure("sending the anchor transaction", &e))?;
            *pending.tx_hash()
        };
        self.await_receipt(tx_hash, c.batch_id).await
    }

    /// Polls for the receipt of a sent transaction. Transport failures are tolerated until the
    /// deadline; the transaction is never re-sent from here (that could anchor twice or burn gas).
    async fn await_receipt(&self, tx_hash: B256, batch_id: Uuid) -> Result<AnchorReceipt, Attempt> {
        let deadline = Instant::now() + self.receipt_timeout;
        let poll = self.provider.client().poll_interval();
        let mut last_error = None;
        loop {
            match self.provider.get_transaction_receipt(tx_hash).await {
                Ok(Some(receipt)) => {
                    let block_number = receipt.block_number.unwrap_or_default();
                    if receipt.status() {
                        return Ok(AnchorReceipt { chain_id: self.chain_id, tx_hash: tx_hash.0, block_number });
                    }
                    return Err(Attempt::Fatal(self.explain_failed_transaction(tx_hash, block_number, batch_id).await));
                }
                Ok(None) => {}
                Err(error) => match self.redactor.rpc_failure("eth_getTransactionReceipt", &error) {
                    Attempt::Transient(message) => last_error = Some(message),
                    fatal => return Err(fatal),
                },
            }
            if Instant::now() >= deadline {
                let cause = last_error.map(|m| format!(" (last error: {m})")).unwrap_or_default();
                return Err(Attempt::Fatal(AnchorError::Rpc(format!(
                    "anchor transaction {tx_hash} was sent but no receipt arrived within {:?}{cause}; it may still \
                     be mined, check is_anchored before sending again",
                    self.receipt_timeout
                ))));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// A mined transaction failed: most likely another transaction anchored the batch first.
    async fn explain_failed_transaction(&self, tx_hash: B256, block_number: u64, batch_id: Uuid) -> AnchorError {
        let id = B256::from(uuid_to_bytes32(batch_id));
        match self.registry.isAnchored(id).call().await {
            Ok(true) => AnchorError::AlreadyAnchored,
            _ => AnchorError::Reverted(format!("anchor transaction {tx_hash} reverted in block {block_number}")),
        }
    }

    /// Checks once that the node serves the configured chain, so receipts never name the wrong one.
    async fn verify_chain_id(&self) -> Result<(), Attempt> {
        self.chain_verified
            .get_or_try_init(|| async {
                let actual =
                    self.provider.get_chain_id().await.map_err(|e| self.redactor.rpc_failure("eth_chainId", &e))?;
                if actual == self.chain_id {
                    Ok(())
                } else {
                    Err(Attempt::Fatal(AnchorError::Config(format!(
                        "L2_CHAIN_ID is {} but the node at {} serves chain {actual}; set L2_CHAIN_ID={actual} or \
                         point L2_RPC_URL at chain {}",
                        self.chain_id,
                        self.redactor.origin(),
                        self.chain_id
                    ))))
                }
            })
            .await
            .map(|_| ())
    }
}

impl fmt::Debug for AnchorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnchorClient")
            .field("rpc", &self.redactor.origin())
            .field("registry", self.registry.address())
            .field("chain_id", &self.chain_id)
            .field("circuit", &self.breaker.snapshot())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Deploys a new StateSetAnchor registry owned by the key's account and returns its address.
/// `permissionless` lets any account anchor. Not guarded by a breaker; meant for set-up and tests.
pub async fn deploy_registry(rpc_url: &str, private_key: &SecretString, permissionless: bool) -> Result<Address> {
    use alloy::sol_types::SolConstructor;

    let redactor = Redactor::new(rpc_url, Some(private_key));
    let signer = rpc::signer(private_key)?;
    let provider = rpc::provider(rpc_url, signer, DEFAULT_RPC_TIMEOUT, &redactor)?;
    let mut code = crate::contract::bytecode().to_vec();
    code.extend(StateSetAnchor::constructorCall { _permissionless: permissionless }.abi_encode());
    let address = alloy::contract::RawCallBuilder::new_raw_deploy(provider, code.into())
        .deploy()
        .await
        .map_err(|e| redactor.contract_failure("deploying StateSetAnchor", &e).into_error())?;
    tracing::info!(registry = %address, permissionless, rpc = redactor.origin(), "deployed StateSetAnchor registry");
    Ok(address)
}

fn saturating_u64(value: U256) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}
