//! Agent signing keys (`agent_keys`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::Store;

/// One registered agent signing key.
#[derive(Debug, Clone, FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentKey {
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub key_id: i64,
    #[serde(serialize_with = "hex_bytes")]
    pub public_key: Vec<u8>,
    pub key_algorithm: i16,
    pub active: bool,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_to: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revocation_reason: Option<String>,
    pub rotated_to_key_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{}", hex::encode(bytes)))
}

/// Why a key cannot verify an event right now. The strings are upstream's rejection messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    NotFound,
    Revoked,
    Expired,
    NotYetValid,
}

impl KeyProblem {
    pub fn message(self) -> &'static str {
        match self {
            KeyProblem::NotFound => "Agent key not found",
            KeyProblem::Revoked => "Agent key has been revoked",
            KeyProblem::Expired => "Agent key has expired",
            KeyProblem::NotYetValid => "Agent key is not yet valid",
        }
    }
}

impl AgentKey {
    /// Whether the key may verify an event at `now` (server time, never the event's own timestamp).
    pub fn usable_at(&self, now: DateTime<Utc>) -> std::result::Result<(), KeyProblem> {
        if !self.active || self.revoked_at.is_some_and(|r| r <= now) {
            return Err(KeyProblem::Revoked);
        }
        if self.valid_from.is_some_and(|f| now < f) {
            return Err(KeyProblem::NotYetValid);
        }
        if self.valid_to.is_some_and(|t| now > t) {
            return Err(KeyProblem::Expired);
        }
        Ok(())
    }
}

/// A key to register.
#[derive(Debug, Clone)]
pub struct NewAgentKey {
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub key_id: u32,
    pub public_key: [u8; 32],
    pub key_algorithm: i16,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_to: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "tenant_id, agent_id, key_id, public_key, key_algorithm, active, valid_from, valid_to, \
                       revoked_at, revocation_reason, rotated_to_key_id, created_at";

fn map_unique_violation(e: sqlx::Error, key: &NewAgentKey) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(format!(
            "agent key {} of agent {} in tenant {} is already registered",
            key.key_id, key.agent_id, key.tenant_id
        )),
        sqlx::Error::Database(db) if db.is_check_violation() => {
            Error::BadRequest("validTo must be later than validFrom".into())
        }
        _ => Error::Database(e),
    }
}

impl Store {
    /// Registers a key; an existing (tenant, agent, key id) is a conflict.
    pub async fn insert_agent_key(&self, key: &NewAgentKey) -> Result<AgentKey> {
        let sql = format!(
            "INSERT INTO agent_keys (tenant_id, agent_id, key_id, public_key, key_algorithm, valid_from, valid_to) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(key.tenant_id)
            .bind(key.agent_id)
            .bind(i64::from(key.key_id))
            .bind(key.public_key.as_slice())
            .bind(key.key_algorithm)
            .bind(key.valid_from)
            .bind(key.valid_to)
            .fetch_one(self.pool())
            .await
            .map_err(|e| map_unique_violation(e, key))
    }

    pub async fn agent_key(&self, tenant_id: Uuid, agent_id: Uuid, key_id: u32) -> Result<Option<AgentKey>> {
        let sql = format!("SELECT {COLUMNS} FROM agent_keys WHERE tenant_id = $1 AND agent_id = $2 AND key_id = $3");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(agent_id)
            .bind(i64::from(key_id))
            .fetch_optional(self.pool())
            .await?)
    }

    /// Keys of a tenant, optionally of one agent, newest first.
    pub async fn list_agent_keys(&self, tenant_id: Uuid, agent_id: Option<Uuid>) -> Result<Vec<AgentKey>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM agent_keys WHERE tenant_id = $1 AND ($2::uuid IS NULL OR agent_id = $2) \
             ORDER BY created_at DESC, key_id DESC LIMIT 1000"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(tenant_id).bind(agent_id).fetch_all(self.pool()).await?)
    }

    /// Revokes a key (idempotent); `None` when it does not exist.
    pub async fn revoke_agent_key(
        &self,
        tenant_id: Uuid,
        agent_id: Uuid,
        key_id: u32,
        reason: Option<&str>,
    ) -> Result<Option<AgentKey>> {
        let sql = format!(
            "UPDATE agent_keys SET active = FALSE, revoked_at = COALESCE(revoked_at, NOW()), \
             revocation_reason = COALESCE(revocation_reason, $4), updated_at = NOW() \
             WHERE tenant_id = $1 AND agent_id = $2 AND key_id = $3 RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(agent_id)
            .bind(i64::from(key_id))
            .bind(reason)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Registers `new_key` and retires the old key at `old_valid_to` (now, or after a grace period),
    /// in one transaction: either both happen or neither.
    pub async fn rotate_agent_key(
        &self,
        old_key_id: u32,
        new_key: &NewAgentKey,
        old_valid_to: DateTime<Utc>,
    ) -> Result<Option<(AgentKey, AgentKey)>> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "UPDATE agent_keys SET valid_to = LEAST(COALESCE(valid_to, $4), $4), rotated_to_key_id = $5, \
             updated_at = NOW() WHERE tenant_id = $1 AND agent_id = $2 AND key_id = $3 AND active \
             RETURNING {COLUMNS}"
        );
        let old: Option<AgentKey> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(new_key.tenant_id)
            .bind(new_key.agent_id)
            .bind(i64::from(old_key_id))
            .bind(old_valid_to)
            .bind(i64::from(new_key.key_id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_unique_violation(e, new_key))?;
        let Some(old) = old else {
            return Ok(None);
        };
        let sql = format!(
            "INSERT INTO agent_keys (tenant_id, agent_id, key_id, public_key, key_algorithm, valid_from, valid_to) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let new: AgentKey = sqlx::query_as(AssertSqlSafe(sql))
            .bind(new_key.tenant_id)
            .bind(new_key.agent_id)
            .bind(i64::from(new_key.key_id))
            .bind(new_key.public_key.as_slice())
            .bind(new_key.key_algorithm)
            .bind(new_key.valid_from)
            .bind(new_key.valid_to)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| map_unique_violation(e, new_key))?;
        tx.commit().await?;
        Ok(Some((old, new)))
    }
}

/// A public key that receipts were signed with (migration 0023), and when a process first and last
/// started with it.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ReceiptKey {
    /// Hex, as `GET /api/v1/ves/sequencer` shows the current `public_key`.
    pub public_key: String,
    pub first_started_at: DateTime<Utc>,
    pub last_started_at: DateTime<Utc>,
}

impl Store {
    /// Records that the process `sequencer_id` signs receipts with `public_key`. Called at start-up,
    /// before the process signs anything, so that every receipt it signs has its key on record.
    pub async fn record_receipt_key(&self, sequencer_id: Uuid, public_key: &[u8; 32]) -> Result<()> {
        sqlx::query(
            "INSERT INTO receipt_keys (sequencer_id, public_key) VALUES ($1, $2) \
             ON CONFLICT (sequencer_id, public_key) DO UPDATE SET last_started_at = NOW()",
        )
        .bind(sequencer_id)
        .bind(&public_key[..])
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The distinct public keys on record, the oldest first.
    pub async fn receipt_keys(&self) -> Result<Vec<ReceiptKey>> {
        Ok(sqlx::query_as(
            "SELECT encode(public_key, 'hex') AS public_key, MIN(first_started_at) AS first_started_at, \
               MAX(last_started_at) AS last_started_at \
             FROM receipt_keys GROUP BY public_key ORDER BY 2, 1",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// The public keys the process `sequencer_id` recorded (none for a process of a release before 0023).
    pub async fn receipt_keys_of(&self, sequencer_id: Uuid) -> Result<Vec<[u8; 32]>> {
        let keys: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT public_key FROM receipt_keys WHERE sequencer_id = $1 ORDER BY last_started_at DESC",
        )
        .bind(sequencer_id)
        .fetch_all(self.pool())
        .await?;
        Ok(keys.into_iter().filter_map(|k| <[u8; 32]>::try_from(k.as_slice()).ok()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn key() -> AgentKey {
        AgentKey {
            tenant_id: Uuid::nil(),
            agent_id: Uuid::nil(),
            key_id: 1,
            public_key: vec![0; 32],
            key_algorithm: 1,
            active: true,
            valid_from: None,
            valid_to: None,
            revoked_at: None,
            revocation_reason: None,
            rotated_to_key_id: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn validity_is_judged_at_server_time() {
        let now = Utc::now();
        assert_eq!(key().usable_at(now), Ok(()));
        let k = AgentKey { valid_from: Some(now + Duration::hours(1)), ..key() };
        assert_eq!(k.usable_at(now), Err(KeyProblem::NotYetValid));
        let k = AgentKey { valid_to: Some(now - Duration::seconds(1)), ..key() };
        assert_eq!(k.usable_at(now), Err(KeyProblem::Expired));
        let k = AgentKey { active: false, revoked_at: Some(now), ..key() };
        assert_eq!(k.usable_at(now), Err(KeyProblem::Revoked));
    }
}
