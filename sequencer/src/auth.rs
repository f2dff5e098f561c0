//! Credentials and what they may do.
//!
//! Accepted forms (SPEC §2): `Authorization: ApiKey <key>`, `Authorization: Bearer <api key or HS256 JWT>`,
//! `X-API-Key: <key>`, or a raw `ss_` key in `Authorization`. API keys are looked up by the SHA-256 of
//! the key, so the key itself is never stored; lookups are cached briefly (`CACHE_API_KEY_*`), and a
//! revocation through this process takes effect at once (other replicas: within the cache TTL).

use std::sync::Arc;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{AuthMode, Config};
use crate::error::{Error, Result};
use crate::metrics::{CacheName, Metrics};
use crate::store::Store;
use crate::store::api_keys::ApiKeyRecord;
use crate::store::events::StreamKey;

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: Uuid,
    /// Stores the credential is limited to; empty means every store of the tenant.
    pub store_ids: Vec<Uuid>,
    pub can_read: bool,
    pub can_write: bool,
    pub can_admin: bool,
    /// Set for credentials bound to one agent: they may only ingest as that agent.
    pub agent_id: Option<Uuid>,
    /// Per-credential requests per minute, if the key has one.
    pub rate_limit: Option<u32>,
    /// The API key's id, when the credential is an API key.
    pub api_key_id: Option<Uuid>,
}

impl Caller {
    /// An admin of the nil tenant: may act on every tenant.
    pub fn is_bootstrap_admin(&self) -> bool {
        self.can_admin && self.tenant_id.is_nil()
    }

    fn check_scope(&self, tenant_id: Uuid, store_id: Option<Uuid>) -> Result<()> {
        if self.is_bootstrap_admin() {
            return Ok(());
        }
        if self.tenant_id != tenant_id {
            return Err(Error::Forbidden("Tenant access denied".into()));
        }
        if let Some(store_id) = store_id
            && !self.store_ids.is_empty()
            && !self.store_ids.contains(&store_id)
        {
            return Err(Error::Forbidden("Store access denied".into()));
        }
        Ok(())
    }

    /// May read this stream.
    pub fn require_read(&self, stream: StreamKey) -> Result<()> {
        if !(self.can_read || self.can_admin) {
            return Err(Error::Forbidden("Read permission required".into()));
        }
        self.check_scope(stream.tenant_id, Some(stream.store_id))
    }

    /// May write to this stream.
    pub fn require_write(&self, stream: StreamKey) -> Result<()> {
        if !(self.can_write || self.can_admin) {
            return Err(Error::Forbidden("Write permission required".into()));
        }
        self.check_scope(stream.tenant_id, Some(stream.store_id))
    }

    /// May administer this whole tenant (tenant-wide resources such as agent keys): an admin
    /// credential of the tenant that is not limited to some of its stores.
    pub fn require_admin_of(&self, tenant_id: Uuid) -> Result<()> {
        self.require_admin()?;
        self.check_scope(tenant_id, None)?;
        if !self.is_bootstrap_admin() && !self.store_ids.is_empty() {
            return Err(Error::Forbidden("A tenant-wide admin credential is required".into()));
        }
        Ok(())
    }

    /// May administer this stream (pause it, retry its dead letters, verify it...).
    pub fn require_admin_of_stream(&self, stream: StreamKey) -> Result<()> {
        self.require_admin()?;
        self.check_scope(stream.tenant_id, Some(stream.store_id))
    }

    /// Any admin credential (results are then filtered to its tenant and stores unless it is the
    /// bootstrap admin).
    pub fn require_admin(&self) -> Result<()> {
        if !self.can_admin {
            return Err(Error::Forbidden("Admin permission required".into()));
        }
        Ok(())
    }

    /// The tenant an admin listing is limited to (`None` = all, for the bootstrap admin).
    pub fn tenant_filter(&self) -> Option<Uuid> {
        (!self.is_bootstrap_admin()).then_some(self.tenant_id)
    }

    /// The stores a listing is limited to (`None` = every store of [`Self::tenant_filter`]).
    pub fn store_filter(&self) -> Option<Vec<Uuid>> {
        (!self.is_bootstrap_admin() && !self.store_ids.is_empty()).then(|| self.store_ids.clone())
    }

    /// What an admin listing or aggregate of this caller covers.
    pub fn scope(&self) -> crate::store::scope::Scope {
        crate::store::scope::Scope { tenant_id: self.tenant_filter(), store_ids: self.store_filter() }
    }

    /// Whether a credential of `scope` grants nothing this caller lacks: same tenant (or the caller is
    /// the bootstrap admin), stores within the caller's, permissions within the caller's, bound to the
    /// caller's agent when the caller is. Minting and revoking keys can only narrow, never widen.
    pub fn covers(&self, scope: &Caller) -> bool {
        if self.is_bootstrap_admin() {
            return true;
        }
        let stores_within = self.store_ids.is_empty()
            || (!scope.store_ids.is_empty() && scope.store_ids.iter().all(|s| self.store_ids.contains(s)));
        let perms_within = (self.can_admin || !scope.can_admin)
            && (self.can_admin || self.can_write || !scope.can_write)
            && (self.can_admin || self.can_read || !scope.can_read);
        let agent_within = self.agent_id.is_none() || self.agent_id == scope.agent_id;
        let rate_within = match (self.rate_limit, scope.rate_limit) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => theirs <= mine,
            (Some(_), None) => false,
        };
        self.tenant_id == scope.tenant_id && stores_within && perms_within && agent_within && rate_within
    }

    /// A credential that may write to one stream only (dead-letter retries replay as it).
    pub fn writer_of(stream: StreamKey) -> Self {
        Caller {
            tenant_id: stream.tenant_id,
            store_ids: vec![stream.store_id],
            can_read: true,
            can_write: true,
            can_admin: false,
            agent_id: None,
            rate_limit: None,
            api_key_id: None,
        }
    }

    /// Whoever reads the transparency log of a stream listed in `TLOG_PUBLIC_READ`, without a
    /// credential: a reader of that one stream and nothing else.
    pub fn public_reader_of(stream: StreamKey) -> Self {
        Caller {
            tenant_id: stream.tenant_id,
            store_ids: vec![stream.store_id],
            can_read: true,
            can_write: false,
            can_admin: false,
            agent_id: None,
            rate_limit: None,
            api_key_id: None,
        }
    }

    fn bootstrap() -> Self {
        Caller {
            tenant_id: Uuid::nil(),
            store_ids: Vec::new(),
            can_read: true,
            can_write: true,
            can_admin: true,
            agent_id: None,
            rate_limit: None,
            api_key_id: None,
        }
    }
}

impl From<&ApiKeyRecord> for Caller {
    fn from(r: &ApiKeyRecord) -> Self {
        Caller {
            tenant_id: r.tenant_id,
            store_ids: r.store_ids.clone(),
            can_read: r.can_read,
            can_write: r.can_write,
            can_admin: r.can_admin,
            agent_id: r.agent_id,
            rate_limit: r.rate_limit.and_then(|l| u32::try_from(l).ok()),
            api_key_id: Some(r.id),
        }
    }
}

/// Hex SHA-256 of an API key: what `api_keys.key_hash` stores.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh API key: `ss_` + the first 8 characters of the tenant id + 32 random bytes (base64url).
pub fn generate_api_key(tenant_id: Uuid) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let tenant = tenant_id.simple().to_string();
    format!("ss_{}{}", &tenant[..8], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    stores: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    perms: Option<String>,
}

/// Resolves request headers to a [`Caller`].
pub struct Authenticator {
    store: Store,
    mode: AuthMode,
    jwt: Option<(DecodingKey, Validation)>,
    cache: Cache<String, Option<Arc<ApiKeyRecord>>>,
    metrics: Arc<Metrics>,
    /// Hash of `BOOTSTRAP_ADMIN_API_KEY`: recognised without the database while it is unreachable,
    /// so the admin status can still say "database not connected" to the operator.
    bootstrap_hash: Option<String>,
}

enum Presented<'a> {
    ApiKey(&'a str),
    Jwt(&'a str),
}

/// Whether the request presents a credential at all, valid or not (the headers [`Authenticator::authenticate`]
/// reads; it judges them).
pub fn presents_credential(headers: &HeaderMap) -> bool {
    !matches!(presented(headers), Ok(None))
}

fn presented(headers: &HeaderMap) -> Result<Option<Presented<'_>>> {
    let invalid = || Error::Unauthorized { code: "AUTH_REQUIRED", message: "Missing authentication".into() };
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| invalid())?.trim();
        let (scheme, rest) = value.split_once(' ').map(|(s, r)| (s, r.trim())).unwrap_or(("", value));
        return match scheme.to_ascii_lowercase().as_str() {
            "apikey" => Ok(Some(Presented::ApiKey(rest))),
            "bearer" if rest.starts_with("ss_") => Ok(Some(Presented::ApiKey(rest))),
            "bearer" => Ok(Some(Presented::Jwt(rest))),
            "" if rest.starts_with("ss_") => Ok(Some(Presented::ApiKey(rest))),
            _ => Err(invalid()),
        };
    }
    if let Some(value) = headers.get("x-api-key") {
        return Ok(Some(Presented::ApiKey(value.to_str().map_err(|_| invalid())?.trim())));
    }
    Ok(None)
}

impl Authenticator {
    pub fn new(config: &Config, store: Store, metrics: Arc<Metrics>) -> Self {
        let jwt = config.jwt.as_ref().map(|j| {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_issuer(&[j.issuer.as_str()]);
            validation.set_audience(&[j.audience.as_str()]);
            // NB: a claim that is absent is not checked at all unless it is required.
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            validation.leeway = 60;
            (DecodingKey::from_secret(j.secret.expose_secret().as_bytes()), validation)
        });
        let cache = Cache::builder()
            .max_capacity(config.api_key_cache.max_entries)
            .time_to_live(config.api_key_cache.ttl)
            .build();
        let bootstrap_hash = config.bootstrap_admin_api_key.as_ref().map(|k| hash_api_key(k.expose_secret()));
        Authenticator { store, mode: config.auth_mode, jwt, cache, metrics, bootstrap_hash }
    }

    /// Entries currently cached (for `/metrics`).
    pub async fn cache_size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// Forgets a key so that its revocation takes effect at once in this process.
    pub async fn forget(&self, key_hash: &str) {
        self.cache.invalidate(key_hash).await;
    }

    /// Authenticates a request.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller> {
        let presented = match presented(headers) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) if self.mode == AuthMode::Disabled => return Ok(Caller::bootstrap()),
            Ok(None) => {
                return Err(Error::Unauthorized { code: "AUTH_REQUIRED", message: "Missing authentication".into() });
            }
            Err(e) => return Err(e),
        };
        let result = match presented {
            Presented::ApiKey(key) => self.api_key(key).await,
            Presented::Jwt(token) => self.jwt(token),
        };
        match result {
            Err(Error::Unauthorized { .. }) if self.mode == AuthMode::Disabled => Ok(Caller::bootstrap()),
            other => other,
        }
    }

    async fn api_key(&self, key: &str) -> Result<Caller> {
        let invalid = || Error::Unauthorized { code: "INVALID_API_KEY", message: "Invalid API key".into() };
        if !key.starts_with("ss_") {
            return Err(invalid());
        }
        let hash = hash_api_key(key);
        let record = match self.cache.get(&hash).await {
            Some(record) => {
                self.metrics.cache_lookup(CacheName::ApiKey, true);
                record
            }
            None => {
                self.metrics.cache_lookup(CacheName::ApiKey, false);
                let record = match self.store.api_key_by_hash(&hash).await {
                    Ok(record) => record,
                    Err(_) if self.bootstrap_hash.as_deref() == Some(hash.as_str()) => return Ok(Caller::bootstrap()),
                    Err(e) => {
                        tracing::warn!(error = %e, "API key lookup failed");
                        return Err(Error::unavailable(
                            "AUTH_BACKEND_UNAVAILABLE",
                            "Authentication backend unavailable",
                            1,
                        ));
                    }
                };
                let record = record.map(Arc::new);
                self.cache.insert(hash, record.clone()).await;
                record
            }
        };
        match record {
            Some(r) if r.active => Ok(Caller::from(r.as_ref())),
            _ => Err(invalid()),
        }
    }

    fn jwt(&self, token: &str) -> Result<Caller> {
        let invalid = || Error::Unauthorized { code: "INVALID_JWT", message: "Invalid JWT".into() };
        let Some((key, validation)) = &self.jwt else {
            return Err(invalid());
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                Error::Unauthorized { code: "TOKEN_EXPIRED", message: "Token expired".into() }
            }
            _ => invalid(),
        })?;
        let claims = data.claims;
        let tenant_id = Uuid::parse_str(&claims.sub).map_err(|_| invalid())?;
        let store_ids = match claims.stores.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| Uuid::parse_str(s.trim()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| invalid())?,
        };
        let agent_id = match claims.agent {
            None => None,
            Some(a) => Some(Uuid::parse_str(&a).map_err(|_| invalid())?),
        };
        let perms = claims.perms.unwrap_or_else(|| "read".into());
        let has = |p: &str| perms.split(',').any(|x| x.trim().eq_ignore_ascii_case(p));
        Ok(Caller {
            tenant_id,
            store_ids,
            can_read: has("read"),
            can_write: has("write"),
            can_admin: has("admin"),
            agent_id,
            rate_limit: None,
            api_key_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn every_credential_form_is_recognised() {
        let key = "ss_abcdefgh0123456789";
        for (name, value) in [
            ("authorization", format!("ApiKey {key}")),
            ("authorization", format!("Bearer {key}")),
            ("authorization", key.to_string()),
            ("x-api-key", key.to_string()),
        ] {
            let h = headers(name, &value);
            assert!(matches!(presented(&h).unwrap(), Some(Presented::ApiKey(k)) if k == key), "{name}: {value}");
        }
        let h = headers("authorization", "Bearer eyJhbGciOi.x.y");
        assert!(matches!(presented(&h).unwrap(), Some(Presented::Jwt(_))));
        assert!(presented(&headers("authorization", "Basic dXNlcjpwYXNz")).is_err());
        assert!(presented(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn generated_keys_start_with_the_tenant_prefix_and_differ() {
        let tenant = Uuid::parse_str("64527dd3-a654-4410-9327-e58a1492ce77").unwrap();
        let a = generate_api_key(tenant);
        let b = generate_api_key(tenant);
        assert!(a.starts_with("ss_64527dd3"));
        assert_ne!(a, b);
        assert_eq!(hash_api_key(&a).len(), 64);
    }

    #[test]
    fn a_tenant_credential_cannot_reach_another_tenant() {
        let t = Uuid::new_v4();
        let s = Uuid::new_v4();
        let caller = Caller { tenant_id: t, store_ids: vec![s], ..Caller::bootstrap() };
        assert!(caller.require_read(StreamKey { tenant_id: t, store_id: s }).is_ok());
        assert!(caller.require_read(StreamKey { tenant_id: Uuid::new_v4(), store_id: s }).is_err());
        assert!(caller.require_write(StreamKey { tenant_id: t, store_id: Uuid::new_v4() }).is_err());
        assert!(caller.require_admin_of(Uuid::new_v4()).is_err());
        assert!(Caller::bootstrap().require_admin_of(Uuid::new_v4()).is_ok());
    }
}
