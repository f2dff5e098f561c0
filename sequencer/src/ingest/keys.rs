//! The agent-key cache in front of `agent_keys`.
//!
//! Entries hold the key record, never a verdict: validity windows and revocation are judged against
//! server time on every use. Unknown keys are not cached, so a newly registered key works at once.
//! Revocation and rotation through this process invalidate the entry immediately; on other replicas
//! they take effect within `CACHE_AGENT_KEY_TTL_SECS`.
//!
//! Keys that sign many events also get a precomputed verification table ([`PreparedKey`]), which
//! makes each signature check about a quarter cheaper with the same verdict. A table costs as much
//! as ~30 checks to build and 30 KiB to keep, so a key earns one only after
//! [`PREPARE_AFTER_USES`] signatures, and at most `CACHE_VERIFY_TABLES_MAX` tables are kept (the
//! cache's frequency-aware admission keeps the busiest keys).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use moka::future::Cache;
use uuid::Uuid;
use ves::verify::PreparedKey;

use crate::config::CacheConfig;
use crate::error::Result;
use crate::metrics::{CacheName, Metrics};
use crate::store::Store;
use crate::store::keys::{AgentKey, KeyProblem};

/// Signatures a key checks before it gets a precomputed table (and, when its table was evicted,
/// the interval after which it tries again).
pub const PREPARE_AFTER_USES: u32 = 64;
const PREPARE_RETRY_EVERY: u32 = 4096;

/// 0 before a key has earned a table, then one more at each retry interval.
fn preparation_round(uses: u32) -> u32 {
    uses.checked_sub(PREPARE_AFTER_USES).map_or(0, |n| 1 + n / PREPARE_RETRY_EVERY)
}

/// A registered key with its parsed public key.
#[derive(Debug)]
pub struct KnownKey {
    pub record: AgentKey,
    pub verifying_key: VerifyingKey,
    /// Signatures checked with this key since it was cached.
    uses: AtomicU32,
}

/// How to check signatures of one key: plainly, or with its precomputed table.
#[derive(Debug, Clone)]
pub enum SignatureCheck {
    Plain(VerifyingKey),
    Prepared(Arc<PreparedKey>),
}

impl SignatureCheck {
    /// Whether `sig` is a valid signature of `msg` (always `ves::verify::verify_one`'s verdict).
    pub fn verify(&self, sig: &[u8; 64], msg: &[u8; 32]) -> bool {
        match self {
            SignatureCheck::Plain(key) => ves::verify::verify_one(sig, msg, key),
            SignatureCheck::Prepared(key) => key.verify(sig, msg),
        }
    }
}

impl KnownKey {
    pub fn new(record: AgentKey, verifying_key: VerifyingKey) -> Self {
        KnownKey { record, verifying_key, uses: AtomicU32::new(0) }
    }

    pub fn usable_at(&self, now: DateTime<Utc>) -> std::result::Result<(), KeyProblem> {
        self.record.usable_at(now)
    }
}

type KeyId = (Uuid, Uuid, u32);

/// Caches agent keys by (tenant, agent, key id).
pub struct AgentKeyCache {
    store: Store,
    cache: Cache<KeyId, Arc<KnownKey>>,
    /// Precomputed verification tables, by public key.
    tables: moka::sync::Cache<[u8; 32], Arc<PreparedKey>>,
    tables_enabled: bool,
    metrics: Arc<Metrics>,
}

impl AgentKeyCache {
    pub fn new(store: Store, config: CacheConfig, verify_tables_max: u64, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::builder().max_capacity(config.max_entries).time_to_live(config.ttl).build();
        let tables = moka::sync::Cache::builder().max_capacity(verify_tables_max).build();
        AgentKeyCache { store, cache, tables, tables_enabled: verify_tables_max > 0, metrics }
    }

    /// How to check `signatures` more signatures of `key`; builds the key's table when it has
    /// become busy enough to earn one.
    pub fn signature_check(&self, key: &KnownKey, signatures: u32) -> SignatureCheck {
        let public = key.verifying_key.to_bytes();
        if let Some(prepared) = self.tables.get(&public) {
            self.metrics.cache_lookup(CacheName::VerifyTable, true);
            return SignatureCheck::Prepared(prepared);
        }
        self.metrics.cache_lookup(CacheName::VerifyTable, false);
        let before = key.uses.fetch_add(signatures, Ordering::Relaxed);
        let after = before.saturating_add(signatures);
        if self.tables_enabled && preparation_round(after) > preparation_round(before) {
            let prepared = Arc::new(PreparedKey::new(&key.verifying_key));
            self.tables.insert(public, prepared.clone());
            return SignatureCheck::Prepared(prepared);
        }
        SignatureCheck::Plain(key.verifying_key)
    }

    /// The key, or `None` when no such key is registered.
    pub async fn get(&self, tenant_id: Uuid, agent_id: Uuid, key_id: u32) -> Result<Option<Arc<KnownKey>>> {
        let id = (tenant_id, agent_id, key_id);
        if let Some(k) = self.cache.get(&id).await {
            self.metrics.cache_lookup(CacheName::AgentKey, true);
            return Ok(Some(k));
        }
        self.metrics.cache_lookup(CacheName::AgentKey, false);
        let Some(record) = self.store.agent_key(tenant_id, agent_id, key_id).await? else {
            return Ok(None);
        };
        let Ok(bytes) = <[u8; 32]>::try_from(record.public_key.as_slice()) else {
            return Ok(None);
        };
        let Ok(verifying_key) = VerifyingKey::from_bytes(&bytes) else {
            tracing::warn!(%tenant_id, %agent_id, key_id, "stored agent public key is not a valid Ed25519 point");
            return Ok(None);
        };
        let known = Arc::new(KnownKey::new(record, verifying_key));
        self.cache.insert(id, known.clone()).await;
        Ok(Some(known))
    }

    /// Drops a key from the cache after it changed.
    pub async fn invalidate(&self, tenant_id: Uuid, agent_id: Uuid, key_id: u32) {
        self.cache.invalidate(&(tenant_id, agent_id, key_id)).await;
    }

    /// Precomputed verification tables held.
    pub fn prepared_tables(&self) -> u64 {
        self.tables.run_pending_tasks();
        self.tables.entry_count()
    }

    /// Entries held (after applying pending inserts and evictions, so the figure is current).
    pub async fn size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}
