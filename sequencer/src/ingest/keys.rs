//! The agent-key cache in front of `agent_keys`.
//!
//! Entries hold the key record, never a verdict: validity windows and revocation are judged against
//! server time on every use. Unknown keys are not cached, so a newly registered key works at once.
//! Revocation and rotation through this process invalidate the entry immediately; on other replicas
//! they take effect within `CACHE_AGENT_KEY_TTL_SECS`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use moka::future::Cache;
use uuid::Uuid;

use crate::config::CacheConfig;
use crate::error::Result;
use crate::metrics::{CacheName, Metrics};
use crate::store::Store;
use crate::store::keys::{AgentKey, KeyProblem};

/// A registered key with its parsed public key.
#[derive(Debug, Clone)]
pub struct KnownKey {
    pub record: AgentKey,
    pub verifying_key: VerifyingKey,
}

impl KnownKey {
    pub fn usable_at(&self, now: DateTime<Utc>) -> std::result::Result<(), KeyProblem> {
        self.record.usable_at(now)
    }
}

type KeyId = (Uuid, Uuid, u32);

/// Caches agent keys by (tenant, agent, key id).
pub struct AgentKeyCache {
    store: Store,
    cache: Cache<KeyId, Arc<KnownKey>>,
    metrics: Arc<Metrics>,
}

impl AgentKeyCache {
    pub fn new(store: Store, config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::builder().max_capacity(config.max_entries).time_to_live(config.ttl).build();
        AgentKeyCache { store, cache, metrics }
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
        let known = Arc::new(KnownKey { record, verifying_key });
        self.cache.insert(id, known.clone()).await;
        Ok(Some(known))
    }

    /// Drops a key from the cache after it changed.
    pub async fn invalidate(&self, tenant_id: Uuid, agent_id: Uuid, key_id: u32) {
        self.cache.invalidate(&(tenant_id, agent_id, key_id)).await;
    }

    /// Entries held (after applying pending inserts and evictions, so the figure is current).
    pub async fn size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}
