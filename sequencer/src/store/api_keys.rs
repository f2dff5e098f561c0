//! API keys (`api_keys`), stored only as the hex SHA-256 of the key.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;

/// An API key's grants, as stored (never the key itself).
#[derive(Debug, Clone, FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: Uuid,
    #[serde(skip)]
    pub key_hash: String,
    pub tenant_id: Uuid,
    pub store_ids: Vec<Uuid>,
    pub can_read: bool,
    pub can_write: bool,
    pub can_admin: bool,
    pub agent_id: Option<Uuid>,
    pub rate_limit: Option<i32>,
    pub label: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// The first 16 hex characters of the key's hash: enough to tell keys apart, useless to an attacker.
    pub fn key_hash_prefix(&self) -> &str {
        &self.key_hash[..16]
    }
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key_hash: String,
    pub tenant_id: Uuid,
    pub store_ids: Vec<Uuid>,
    pub can_read: bool,
    pub can_write: bool,
    pub can_admin: bool,
    pub agent_id: Option<Uuid>,
    pub rate_limit: Option<i32>,
    pub label: Option<String>,
}

const COLUMNS: &str = "id, key_hash, tenant_id, store_ids, can_read, can_write, can_admin, agent_id, rate_limit, \
                       label, active, created_at, revoked_at";

impl Store {
    pub async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord> {
        let sql = format!(
            "INSERT INTO api_keys (id, key_hash, tenant_id, store_ids, can_read, can_write, can_admin, agent_id, \
             rate_limit, label) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(Uuid::new_v4())
            .bind(&key.key_hash)
            .bind(key.tenant_id)
            .bind(&key.store_ids)
            .bind(key.can_read)
            .bind(key.can_write)
            .bind(key.can_admin)
            .bind(key.agent_id)
            .bind(key.rate_limit)
            .bind(&key.label)
            .fetch_one(self.pool())
            .await?)
    }

    /// Makes sure the bootstrap admin key exists and is active (called at start-up; idempotent).
    pub async fn upsert_bootstrap_key(&self, key_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, key_hash, tenant_id, store_ids, can_read, can_write, can_admin, label) \
             VALUES ($1, $2, '00000000-0000-0000-0000-000000000000', '{}', TRUE, TRUE, TRUE, 'bootstrap admin') \
             ON CONFLICT (key_hash) DO UPDATE SET active = TRUE, revoked_at = NULL, can_read = TRUE, \
             can_write = TRUE, can_admin = TRUE",
        )
        .bind(Uuid::new_v4())
        .bind(key_hash)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(key_hash).fetch_optional(self.pool()).await?)
    }

    pub async fn api_key_by_id(&self, id: Uuid) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Keys of one tenant, or of all tenants when `tenant_id` is `None`; newest first.
    pub async fn list_api_keys(&self, tenant_id: Option<Uuid>) -> Result<Vec<ApiKeyRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE ($1::uuid IS NULL OR tenant_id = $1) ORDER BY created_at DESC LIMIT 1000"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(tenant_id).fetch_all(self.pool()).await?)
    }

    /// Revokes a key (idempotent).
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>> {
        let sql = format!(
            "UPDATE api_keys SET active = FALSE, revoked_at = COALESCE(revoked_at, NOW()) WHERE id = $1 RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Whether any active key exists (start-up refuses to run with no way to authenticate).
    pub async fn any_active_api_key(&self) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE active)").fetch_one(self.pool()).await?)
    }
}
