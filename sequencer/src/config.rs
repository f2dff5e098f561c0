//! Every environment variable the sequencer reads, parsed once into [`Config`].
//!
//! Names follow the operations runbook and the existing StateSet Sequencer, so that deployments and
//! runbooks written for it keep working. An invalid value stops start-up with an error naming the
//! variable; the value itself is shown only for variables that are not secrets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::SigningKey;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The variable is set but its value does not parse or is out of range.
    #[error("invalid value for {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    /// Two variables contradict each other, or a required one is missing.
    #[error("{0}")]
    Inconsistent(String),
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every `/api` request needs a credential (the default).
    Required,
    /// Requests without a credential act as the bootstrap admin. Only for local development; needs
    /// `ALLOW_AUTH_DISABLED=true`.
    Disabled,
}

/// Request rate limits (`RATE_LIMIT_PER_MINUTE`, `RATE_LIMIT_TENANT_OVERRIDES`), applied by
/// the `ratelimit` module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_tenant_per_minute: Option<std::num::NonZeroU32>,
    pub tenant_overrides: HashMap<Uuid, std::num::NonZeroU32>,
}

/// Parses `RATE_LIMIT_TENANT_OVERRIDES`.
pub fn parse_rate_limit_overrides(value: &str) -> std::result::Result<HashMap<Uuid, std::num::NonZeroU32>, String> {
    let map: HashMap<String, u32> = serde_json::from_str(value)
        .map_err(|e| format!("must be a JSON object of tenant UUID to requests per minute ({e})"))?;
    map.into_iter()
        .map(|(k, v)| {
            let tenant = Uuid::parse_str(&k).map_err(|_| format!("{k:?} is not a tenant UUID"))?;
            let n = std::num::NonZeroU32::new(v).ok_or_else(|| format!("the limit for {k} must be greater than 0"))?;
            Ok((tenant, n))
        })
        .collect()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The sequencer's whole configuration.
#[derive(Clone)]
pub struct Config {
    /// `DATABASE_URL`. When unset the sequencer starts a private, throw-away PostgreSQL.
    pub database_url: Option<SecretString>,
    /// `READ_DATABASE_URL`: a streaming standby of `DATABASE_URL` that serves reads while it is fresh
    /// enough (`READ_REPLICA_*`, see [`crate::reads`]); every read goes to the primary when unset.
    pub read_database_url: Option<SecretString>,
    /// `READ_REPLICA_MAX_LAG_MS` and `READ_REPLICA_CHECK_INTERVAL_MS`.
    pub read_replica: ReadReplicaConfig,
    pub host: IpAddr,
    pub port: u16,
    pub max_db_connections: u32,
    pub min_db_connections: u32,
    pub db_acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS` (30 s), `DB_LOCK_TIMEOUT_MS` (5 s), `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`
    /// (60 s); 0 turns one off.
    pub db_session_guards: crate::store::SessionGuards,
    pub db_migrate_on_startup: bool,
    pub bootstrap_admin_api_key: Option<SecretString>,
    pub auth_mode: AuthMode,
    pub jwt: Option<JwtConfig>,
    /// `VES_SEQUENCER_SIGNING_KEY`: the Ed25519 key that signs receipts (unsigned receipts without it).
    pub sequencer_signing_key: Option<SigningKey>,
    /// `VES_CHECKPOINT_ORIGIN`: the key name of signed checkpoints and the prefix of each stream's
    /// checkpoint origin (`<origin>/<tenant_id>/<store_id>`).
    pub checkpoint_origin: String,
    /// `VES_SEQUENCER_ID`: the id written into receipts (random per process when unset, as upstream).
    pub sequencer_id: Uuid,
    pub max_events_per_batch: usize,
    pub max_body_size_bytes: usize,
    pub max_event_payload_size: usize,
    pub request_timeout: Duration,
    /// `HTTP_HEADER_READ_TIMEOUT_SECS`: a connection must send a request's headers within this long,
    /// including while idle between keep-alive requests (so it is also the idle timeout).
    pub http_header_read_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open client connections at most (further ones are closed at once).
    pub http_max_connections: usize,
    /// `MAX_INFLIGHT_BODY_BYTES`: request body bytes held at once across all requests (at least
    /// `MAX_BODY_SIZE_BYTES`); a request that would exceed it waits briefly, then gets a 503.
    pub max_inflight_body_bytes: usize,
    /// `REQUIRE_SIGNED_EXECUTION_CONTROLS`: reject new `ves_version` 1 events.
    pub require_signed_execution_controls: bool,
    pub log_format: LogFormat,
    /// `CACHE_AGENT_KEY_MAX` / `CACHE_AGENT_KEY_TTL_SECS`.
    pub agent_key_cache: CacheConfig,
    /// `CACHE_VERIFY_TABLES_MAX`: agent keys that keep a precomputed verification table (30 KiB each).
    pub verify_tables_max: u64,
    /// `CACHE_API_KEY_MAX` / `CACHE_API_KEY_TTL_SECS`.
    pub api_key_cache: CacheConfig,
    /// `INGEST_MAX_QUEUED_EVENTS`: events waiting for sequencing in this process before ingest answers
    /// 503 with `Retry-After`.
    pub ingest_max_queued_events: usize,
    /// `INGEST_MAX_GROUP_EVENTS`: the most events one sequencing transaction takes from a stream's queue.
    pub ingest_max_group_events: usize,

    /// `RATE_LIMIT_PER_MINUTE` and `RATE_LIMIT_TENANT_OVERRIDES`.
    pub rate_limits: RateLimitConfig,
    /// `MAX_CLOCK_SKEW_SECS`: refuse events whose `created_at` is further than this from server time
    /// (off when unset).
    pub max_clock_skew: Option<Duration>,
    /// `DEAD_LETTER_RETENTION_DAYS`: dead letters older than this are purged.
    pub dead_letter_retention_days: u32,
    /// Anchoring on the L2: set when `L2_RPC_URL`, `SET_REGISTRY_ADDRESS` and `SEQUENCER_PRIVATE_KEY`
    /// are all set.
    pub anchor: Option<crate::anchoring::AnchorSettings>,
    /// The background commitment and anchoring worker.
    pub worker: WorkerConfig,
    /// The transparency log (`TLOG_*`, see `tlog::TlogConfig`).
    pub tlog: crate::tlog::TlogConfig,
}

/// The leader-elected background worker (`COMMIT_INTERVAL_MS`, `COMMIT_MAX_EVENTS`,
/// `ANCHOR_INTERVAL_SECS`, `ANCHOR_BATCH_SIZE`, `EVENT_ID_EPOCH_EVENTS`, `WORKER_ENABLED`).
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub enabled: bool,
    /// How often streams with new events get a commitment.
    pub commit_interval: Duration,
    /// The most events one automatic commitment covers.
    pub commit_max_events: i64,
    /// How often pending commitments are anchored.
    pub anchor_interval: Duration,
    /// The most commitments anchored per round.
    pub anchor_batch_size: i64,
    /// How many events the log takes before the leader closes the current event id epoch
    /// (`EVENT_ID_EPOCH_EVENTS`, `store::epochs`).
    pub event_id_epoch_events: i64,
}

/// When reads go to the replica (`READ_REPLICA_MAX_LAG_MS`, `READ_REPLICA_CHECK_INTERVAL_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadReplicaConfig {
    /// The replica serves reads only while it is known to hold everything the primary had committed
    /// this long ago (default 5 s); otherwise reads go to the primary.
    pub max_lag: Duration,
    /// How often the replica's replay position is compared with the primary's (default 500 ms).
    pub check_interval: Duration,
}

impl Default for ReadReplicaConfig {
    fn default() -> Self {
        ReadReplicaConfig { max_lag: Duration::from_secs(5), check_interval: Duration::from_millis(500) }
    }
}

/// HS256 JWT validation settings (`JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`).
#[derive(Clone)]
pub struct JwtConfig {
    pub secret: SecretString,
    pub issuer: String,
    pub audience: String,
}

/// Size and time-to-live of one in-memory cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub max_entries: u64,
    pub ttl: Duration,
}

impl std::fmt::Debug for Config {
    // NB: hand-written so that no secret (database password, keys) can reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("read_database_url", &self.read_database_url.as_ref().map(|_| "<set>"))
            .field("read_replica", &self.read_replica)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("max_db_connections", &self.max_db_connections)
            .field("min_db_connections", &self.min_db_connections)
            .field("db_acquire_timeout", &self.db_acquire_timeout)
            .field("db_session_guards", &self.db_session_guards)
            .field("db_migrate_on_startup", &self.db_migrate_on_startup)
            .field("bootstrap_admin_api_key", &self.bootstrap_admin_api_key.as_ref().map(|_| "<set>"))
            .field("auth_mode", &self.auth_mode)
            .field("jwt", &self.jwt.as_ref().map(|_| "<set>"))
            .field("sequencer_signing_key", &self.sequencer_signing_key.as_ref().map(|_| "<set>"))
            .field("checkpoint_origin", &self.checkpoint_origin)
            .field("sequencer_id", &self.sequencer_id)
            .field("max_events_per_batch", &self.max_events_per_batch)
            .field("max_body_size_bytes", &self.max_body_size_bytes)
            .field("max_event_payload_size", &self.max_event_payload_size)
            .field("request_timeout", &self.request_timeout)
            .field("http_header_read_timeout", &self.http_header_read_timeout)
            .field("http_max_connections", &self.http_max_connections)
            .field("max_inflight_body_bytes", &self.max_inflight_body_bytes)
            .field("require_signed_execution_controls", &self.require_signed_execution_controls)
            .field("log_format", &self.log_format)
            .field("ingest_max_queued_events", &self.ingest_max_queued_events)
            .field("ingest_max_group_events", &self.ingest_max_group_events)
            .field("rate_limits", &self.rate_limits)
            .field("anchor", &self.anchor)
            .field("worker", &self.worker)
            .field("tlog", &self.tlog)
            .finish_non_exhaustive()
    }
}

/// Reads typed values out of an environment map, naming the variable in every error.
struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    fn raw(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| ConfigError::Invalid { var, reason: format!("{v:?} is not valid ({e})") }),
        }
    }

    fn positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default + Copy,
        T::Err: std::fmt::Display,
    {
        let v = self.parse(var, default)?;
        if v <= T::default() {
            return Err(ConfigError::Invalid { var, reason: "must be greater than 0".into() });
        }
        Ok(v)
    }

    fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => {
                Err(ConfigError::Invalid { var, reason: format!("{other:?} is not a boolean (use true or false)") })
            }
        }
    }

    fn secret(&self, var: &str) -> Option<SecretString> {
        self.raw(var).map(|v| SecretString::from(v.to_owned()))
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads the configuration from an explicit map of variables (tests use this).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let max_db_connections = env.positive("MAX_DB_CONNECTIONS", 10u32)?;
        let min_db_connections = env.parse("MIN_DB_CONNECTIONS", 0u32)?;
        if min_db_connections > max_db_connections {
            return Err(ConfigError::Invalid {
                var: "MIN_DB_CONNECTIONS",
                reason: format!("{min_db_connections} is larger than MAX_DB_CONNECTIONS ({max_db_connections})"),
            });
        }

        let bootstrap_admin_api_key = env.secret("BOOTSTRAP_ADMIN_API_KEY");
        if let Some(key) = &bootstrap_admin_api_key {
            let key = key.expose_secret();
            if !key.starts_with("ss_") || key.len() < 20 {
                return Err(ConfigError::Invalid {
                    var: "BOOTSTRAP_ADMIN_API_KEY",
                    reason: "must start with \"ss_\" and be at least 20 characters long (value not shown)".into(),
                });
            }
        }

        let auth_mode = match env.raw("AUTH_MODE").map(str::to_ascii_lowercase).as_deref() {
            None | Some("required") => AuthMode::Required,
            Some("disabled") => AuthMode::Disabled,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "AUTH_MODE",
                    reason: format!("{other:?} is not one of required, disabled"),
                });
            }
        };
        if auth_mode == AuthMode::Disabled && !env.flag("ALLOW_AUTH_DISABLED", false)? {
            return Err(ConfigError::Inconsistent(
                "AUTH_MODE=disabled lets anyone act as admin; set ALLOW_AUTH_DISABLED=true as well if you really mean it".into(),
            ));
        }

        let jwt = env.secret("JWT_SECRET").map(|secret| JwtConfig {
            secret,
            issuer: env.raw("JWT_ISSUER").unwrap_or("stateset-sequencer").to_owned(),
            audience: env.raw("JWT_AUDIENCE").unwrap_or("stateset-api").to_owned(),
        });
        if let Some(jwt) = &jwt
            && jwt.secret.expose_secret().len() < 16
        {
            return Err(ConfigError::Invalid {
                var: "JWT_SECRET",
                reason: "must be at least 16 characters long (value not shown)".into(),
            });
        }

        let checkpoint_origin = env.raw("VES_CHECKPOINT_ORIGIN").unwrap_or("stateset-sequencer").to_owned();
        if checkpoint_origin.is_empty()
            || checkpoint_origin.chars().any(|c| c.is_whitespace() || c.is_control())
            || checkpoint_origin.contains('+')
        {
            return Err(ConfigError::Invalid {
                var: "VES_CHECKPOINT_ORIGIN",
                reason: format!(
                    "{checkpoint_origin:?} must be non-empty, without spaces or '+' (a signed-note key name)"
                ),
            });
        }
        let tlog = crate::tlog::TlogConfig::from_vars(|k| env.raw(k).map(str::to_owned))
            .map_err(|(var, reason)| ConfigError::Invalid { var, reason })?;
        for w in &tlog.witnesses {
            let name = w.key.split('+').next().unwrap_or_default();
            crate::tlog::witness::check_cosigner_name(name, &checkpoint_origin)
                .map_err(|reason| ConfigError::Invalid { var: "TLOG_WITNESSES", reason })?;
        }
        let sequencer_signing_key = match env.raw("VES_SEQUENCER_SIGNING_KEY") {
            None => None,
            Some(v) => Some(parse_signing_key(v).map_err(|reason| ConfigError::Invalid {
                var: "VES_SEQUENCER_SIGNING_KEY",
                reason: format!("{reason} (value not shown)"),
            })?),
        };

        let log_format = match env.raw("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("text" | "pretty" | "plain") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "LOG_FORMAT",
                    reason: format!("{other:?} is not one of text, json"),
                });
            }
        };

        if let Some(filter) = env.raw("RUST_LOG") {
            tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| ConfigError::Invalid {
                var: "RUST_LOG",
                reason: format!("{filter:?} is not a valid log filter ({e})"),
            })?;
        }

        let per_tenant = match env.raw("RATE_LIMIT_PER_MINUTE") {
            None => None,
            Some(_) => Some(env.positive("RATE_LIMIT_PER_MINUTE", 1u32)?),
        };
        let tenant_overrides = match env.raw("RATE_LIMIT_TENANT_OVERRIDES") {
            None => Default::default(),
            Some(v) => parse_rate_limit_overrides(v)
                .map_err(|reason| ConfigError::Invalid { var: "RATE_LIMIT_TENANT_OVERRIDES", reason })?,
        };
        let max_clock_skew = match env.raw("MAX_CLOCK_SKEW_SECS") {
            None => None,
            Some(_) => Some(Duration::from_secs(env.positive("MAX_CLOCK_SKEW_SECS", 1u64)?)),
        };

        let anchor = match (env.raw("L2_RPC_URL"), env.raw("SET_REGISTRY_ADDRESS"), env.secret("SEQUENCER_PRIVATE_KEY"))
        {
            (Some(rpc), Some(address), Some(key)) => {
                let registry: alloy::primitives::Address = address.parse().map_err(|_| ConfigError::Invalid {
                    var: "SET_REGISTRY_ADDRESS",
                    reason: format!("{address:?} is not a 20-byte hex address"),
                })?;
                let mut settings =
                    crate::anchoring::AnchorSettings::new(rpc, registry, key, env.parse("L2_CHAIN_ID", 84_532_001u64)?);
                settings.breaker.failure_threshold = env.positive("ANCHOR_BREAKER_FAILURES", 5u32)?;
                settings.breaker.open_timeout =
                    Duration::from_millis(env.positive("ANCHOR_BREAKER_OPEN_MS", 60_000u64)?);
                settings.rpc_timeout = Duration::from_millis(env.positive("ANCHOR_RPC_TIMEOUT_MS", 10_000u64)?);
                Some(settings)
            }
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::Inconsistent(
                    "anchoring needs all of L2_RPC_URL, SET_REGISTRY_ADDRESS and SEQUENCER_PRIVATE_KEY (some are missing)"
                        .into(),
                ));
            }
        };
        let worker = WorkerConfig {
            enabled: env.flag("WORKER_ENABLED", true)?,
            commit_interval: Duration::from_millis(env.positive("COMMIT_INTERVAL_MS", 60_000u64)?),
            commit_max_events: env.positive("COMMIT_MAX_EVENTS", 1024i64)?,
            anchor_interval: Duration::from_millis(env.positive("ANCHOR_INTERVAL_SECS", 60u64)? * 1000),
            anchor_batch_size: env.positive("ANCHOR_BATCH_SIZE", 10i64)?,
            event_id_epoch_events: env.positive("EVENT_ID_EPOCH_EVENTS", crate::store::epochs::DEFAULT_EPOCH_EVENTS)?,
        };
        let worker = match env.raw("ANCHOR_INTERVAL_MS") {
            Some(_) => WorkerConfig {
                anchor_interval: Duration::from_millis(env.positive("ANCHOR_INTERVAL_MS", 1u64)?),
                ..worker
            },
            None => worker,
        };

        let database_url = env.secret("DATABASE_URL");
        let read_database_url = env.secret("READ_DATABASE_URL");
        if read_database_url.is_some() && database_url.is_none() {
            return Err(ConfigError::Inconsistent(
                "READ_DATABASE_URL names a replica of DATABASE_URL, which is not set (without it the sequencer \
                 starts a private PostgreSQL that has no replica)"
                    .into(),
            ));
        }
        let read_replica = ReadReplicaConfig {
            max_lag: Duration::from_millis(
                env.positive("READ_REPLICA_MAX_LAG_MS", ReadReplicaConfig::default().max_lag.as_millis() as u64)?,
            ),
            check_interval: Duration::from_millis(env.positive(
                "READ_REPLICA_CHECK_INTERVAL_MS",
                ReadReplicaConfig::default().check_interval.as_millis() as u64,
            )?),
        };

        Ok(Config {
            database_url,
            read_database_url,
            read_replica,
            host: env.parse("HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("PORT", 8080u16)?,
            max_db_connections,
            min_db_connections,
            db_acquire_timeout: Duration::from_millis(env.positive("DB_ACQUIRE_TIMEOUT_MS", 5_000u64)?),
            db_session_guards: {
                let d = crate::store::SessionGuards::default();
                let ms = |var, default: Duration| env.parse(var, default.as_millis() as u64).map(Duration::from_millis);
                crate::store::SessionGuards {
                    statement_timeout: ms("DB_STATEMENT_TIMEOUT_MS", d.statement_timeout)?,
                    lock_timeout: ms("DB_LOCK_TIMEOUT_MS", d.lock_timeout)?,
                    idle_in_transaction_timeout: ms(
                        "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                        d.idle_in_transaction_timeout,
                    )?,
                }
            },
            db_migrate_on_startup: env.flag("DB_MIGRATE_ON_STARTUP", true)?,
            bootstrap_admin_api_key,
            auth_mode,
            jwt,
            sequencer_signing_key,
            checkpoint_origin,
            sequencer_id: env.parse("VES_SEQUENCER_ID", Uuid::new_v4())?,
            max_events_per_batch: env.positive("MAX_EVENTS_PER_BATCH", 1_000usize)?,
            max_body_size_bytes: env.positive("MAX_BODY_SIZE_BYTES", 10 * 1024 * 1024usize)?,
            max_event_payload_size: env.positive("MAX_EVENT_PAYLOAD_SIZE", 1024 * 1024usize)?,
            request_timeout: Duration::from_secs(env.positive("REQUEST_TIMEOUT_SECS", 30u64)?),
            http_header_read_timeout: Duration::from_secs(env.positive("HTTP_HEADER_READ_TIMEOUT_SECS", 10u64)?),
            http_max_connections: env.positive("HTTP_MAX_CONNECTIONS", 2048usize)?,
            max_inflight_body_bytes: env.positive("MAX_INFLIGHT_BODY_BYTES", 64 * 1024 * 1024usize)?,
            require_signed_execution_controls: env.flag("REQUIRE_SIGNED_EXECUTION_CONTROLS", false)?,
            log_format,
            agent_key_cache: CacheConfig {
                max_entries: env.positive("CACHE_AGENT_KEY_MAX", 10_000u64)?,
                ttl: Duration::from_secs(env.positive("CACHE_AGENT_KEY_TTL_SECS", 60u64)?),
            },
            verify_tables_max: env.parse("CACHE_VERIFY_TABLES_MAX", 256u64)?,
            api_key_cache: CacheConfig {
                max_entries: env.positive("CACHE_API_KEY_MAX", 10_000u64)?,
                ttl: Duration::from_secs(env.positive("CACHE_API_KEY_TTL_SECS", 30u64)?),
            },
            ingest_max_queued_events: env.positive("INGEST_MAX_QUEUED_EVENTS", 50_000usize)?,
            ingest_max_group_events: env.positive("INGEST_MAX_GROUP_EVENTS", 2_000usize)?,

            rate_limits: RateLimitConfig {
                per_tenant_per_minute: per_tenant.and_then(std::num::NonZeroU32::new),
                tenant_overrides,
            },
            max_clock_skew,
            dead_letter_retention_days: env.positive("DEAD_LETTER_RETENTION_DAYS", 30u32)?,
            anchor,
            worker,
            tlog,
        })
    }
}

/// Parses a 32-byte Ed25519 seed given as 64 hex characters (optionally `0x`-prefixed) or base64.
pub fn parse_signing_key(value: &str) -> Result<SigningKey, String> {
    let hex_part = value.strip_prefix("0x").unwrap_or(value);
    let bytes = if hex_part.len() == 64 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(hex_part).map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
            .map_err(|_| "must be a 32-byte Ed25519 seed as 64 hex characters or base64".to_string())?
    };
    let seed: [u8; 32] = bytes.try_into().map_err(|_| "must decode to exactly 32 bytes".to_string())?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_existing_service() {
        let c = Config::from_map(&vars(&[])).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.max_db_connections, 10);
        assert_eq!(c.max_events_per_batch, 1000);
        assert_eq!(c.max_body_size_bytes, 10 * 1024 * 1024);
        assert_eq!(c.max_event_payload_size, 1024 * 1024);
        assert!(c.db_migrate_on_startup);
        assert_eq!(c.auth_mode, AuthMode::Required);
        assert_eq!(c.db_session_guards, crate::store::SessionGuards::default());
        assert!(!c.db_session_guards.lock_timeout.is_zero(), "a stuck lock holder must not block a stream forever");
    }

    #[test]
    fn session_guards_come_from_the_environment_and_zero_turns_one_off() {
        let c = Config::from_map(&vars(&[("DB_LOCK_TIMEOUT_MS", "250"), ("DB_STATEMENT_TIMEOUT_MS", "0")])).unwrap();
        assert_eq!(c.db_session_guards.lock_timeout, Duration::from_millis(250));
        assert!(c.db_session_guards.statement_timeout.is_zero());
        let err = Config::from_map(&vars(&[("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn an_invalid_number_names_the_variable() {
        let err = Config::from_map(&vars(&[("MAX_DB_CONNECTIONS", "lots")])).unwrap_err();
        assert!(err.to_string().contains("MAX_DB_CONNECTIONS"), "{err}");
        let err = Config::from_map(&vars(&[("PORT", "99999")])).unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
        let err = Config::from_map(&vars(&[("DB_MIGRATE_ON_STARTUP", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("DB_MIGRATE_ON_STARTUP"), "{err}");
        let err = Config::from_map(&vars(&[("MAX_DB_CONNECTIONS", "0")])).unwrap_err();
        assert!(err.to_string().contains("MAX_DB_CONNECTIONS"), "{err}");
        let err = Config::from_map(&vars(&[("RATE_LIMIT_PER_MINUTE", "0")])).unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_PER_MINUTE"), "{err}");
        let err = Config::from_map(&vars(&[("RATE_LIMIT_TENANT_OVERRIDES", "{\"x\": 1}")])).unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_TENANT_OVERRIDES"), "{err}");
        for origin in ["two words", "a+b"] {
            let err = Config::from_map(&vars(&[("VES_CHECKPOINT_ORIGIN", origin)])).unwrap_err();
            assert!(err.to_string().contains("VES_CHECKPOINT_ORIGIN"), "{err}");
        }
        let c = Config::from_map(&vars(&[("VES_CHECKPOINT_ORIGIN", "ledger.example.com/sequencer")])).unwrap();
        assert_eq!(c.checkpoint_origin, "ledger.example.com/sequencer");
    }

    #[test]
    fn a_witness_named_like_the_log_is_refused_at_start_up() {
        use base64::Engine;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut pk = vec![0x04];
        pk.extend_from_slice(key.verifying_key().as_bytes());
        let witnesses = |name: &str| {
            let vkey = format!(
                "{name}+{:08x}+{}",
                signed_note::key_id(name, &pk),
                base64::engine::general_purpose::STANDARD.encode(&pk)
            );
            format!(r#"[{{"url":"https://w.example/sub","key":"{vkey}"}}]"#)
        };
        let origin = ("VES_CHECKPOINT_ORIGIN", "ledger.example.com");
        let ok = witnesses("witness.example.org/w1");
        assert!(Config::from_map(&vars(&[origin, ("TLOG_WITNESSES", &ok)])).is_ok());
        for name in ["ledger.example.com", "ledger.example.com/tlog/x/y"] {
            let bad = witnesses(name);
            let err = Config::from_map(&vars(&[origin, ("TLOG_WITNESSES", &bad)])).unwrap_err();
            assert!(err.to_string().contains("TLOG_WITNESSES"), "{err}");
        }
    }

    #[test]
    fn a_bad_secret_is_named_but_never_shown() {
        let err = Config::from_map(&vars(&[("BOOTSTRAP_ADMIN_API_KEY", "hunter2-not-a-key")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("BOOTSTRAP_ADMIN_API_KEY"));
        assert!(!msg.contains("hunter2"));
        let err = Config::from_map(&vars(&[("VES_SEQUENCER_SIGNING_KEY", "deadbeefsecret")])).unwrap_err();
        assert!(err.to_string().contains("VES_SEQUENCER_SIGNING_KEY"));
        assert!(!err.to_string().contains("deadbeefsecret"));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = Config::from_map(&vars(&[
            ("DATABASE_URL", "postgres://u:topsecretpw@db/x"),
            ("BOOTSTRAP_ADMIN_API_KEY", "ss_bootstrap_key_0123456789"),
            ("JWT_SECRET", "jwt-secret-0123456789"),
        ]))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("topsecretpw") && !dbg.contains("ss_bootstrap") && !dbg.contains("jwt-secret"));
    }

    #[test]
    fn a_read_replica_is_a_secret_url_with_a_lag_bound() {
        let c = Config::from_map(&vars(&[])).unwrap();
        assert!(c.read_database_url.is_none());
        assert_eq!(c.read_replica, ReadReplicaConfig::default());
        assert_eq!(c.read_replica.max_lag, Duration::from_secs(5));
        let c = Config::from_map(&vars(&[
            ("DATABASE_URL", "postgres://u:primarypw@db/x"),
            ("READ_DATABASE_URL", "postgres://u:replicapw-secret@db-ro/x"),
            ("READ_REPLICA_MAX_LAG_MS", "1500"),
            ("READ_REPLICA_CHECK_INTERVAL_MS", "100"),
        ]))
        .unwrap();
        assert_eq!(c.read_database_url.as_ref().unwrap().expose_secret(), "postgres://u:replicapw-secret@db-ro/x");
        assert_eq!(c.read_replica.max_lag, Duration::from_millis(1500));
        assert_eq!(c.read_replica.check_interval, Duration::from_millis(100));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("replicapw-secret") && !dbg.contains("db-ro"), "{dbg}");
        let err = Config::from_map(&vars(&[("DATABASE_URL", "postgres://db/x"), ("READ_REPLICA_MAX_LAG_MS", "0")]))
            .unwrap_err();
        assert!(err.to_string().contains("READ_REPLICA_MAX_LAG_MS"), "{err}");
        let err =
            Config::from_map(&vars(&[("READ_DATABASE_URL", "postgres://u:replicapw-secret@db-ro/x")])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL") && !err.to_string().contains("replicapw"), "{err}");
    }

    #[test]
    fn anchoring_needs_all_three_settings_and_never_shows_the_key() {
        let err = Config::from_map(&vars(&[("L2_RPC_URL", "http://127.0.0.1:8545")])).unwrap_err();
        assert!(err.to_string().contains("SEQUENCER_PRIVATE_KEY"), "{err}");
        let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let c = Config::from_map(&vars(&[
            ("L2_RPC_URL", "http://127.0.0.1:8545"),
            ("SET_REGISTRY_ADDRESS", "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
            ("SEQUENCER_PRIVATE_KEY", key),
        ]))
        .unwrap();
        assert!(c.anchor.is_some());
        assert!(!format!("{c:?}").contains(&key[2..]));
        let err = Config::from_map(&vars(&[
            ("L2_RPC_URL", "http://127.0.0.1:8545"),
            ("SET_REGISTRY_ADDRESS", "nope"),
            ("SEQUENCER_PRIVATE_KEY", key),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("SET_REGISTRY_ADDRESS"));
    }

    #[test]
    fn auth_can_only_be_disabled_explicitly() {
        assert!(Config::from_map(&vars(&[("AUTH_MODE", "disabled")])).is_err());
        let c = Config::from_map(&vars(&[("AUTH_MODE", "disabled"), ("ALLOW_AUTH_DISABLED", "true")])).unwrap();
        assert_eq!(c.auth_mode, AuthMode::Disabled);
    }

    #[test]
    fn signing_key_accepts_hex_and_base64() {
        let hex_seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let a = parse_signing_key(hex_seed).unwrap();
        let b = parse_signing_key(&format!("0x{hex_seed}")).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_seed).unwrap());
        let c = parse_signing_key(&b64).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.to_bytes(), c.to_bytes());
        assert!(parse_signing_key("abcd").is_err());
    }
}
