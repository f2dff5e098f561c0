//! The ConfigMap of non-secret settings, read by the pods through `envFrom`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::{Names, UNASSIGNED_UID, child_meta};
use crate::crd::{MigrationsMode, Sequencer};
use crate::labels::{COMPONENT_SERVER, HTTP_PORT};

/// The ConfigMap of `seq`. It never holds a secret: those reach pods only through `secretKeyRef`.
pub fn config_map(seq: &Sequencer) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(seq, Names(&seq.name_any()).config_map(), COMPONENT_SERVER),
        data: Some(settings(seq)),
        ..Default::default()
    }
}

/// The sequencer's non-secret environment, derived from the spec.
fn settings(seq: &Sequencer) -> BTreeMap<String, String> {
    let spec = &seq.spec;
    let mut env = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        env.insert(key.to_string(), value);
    };
    set("HOST", "0.0.0.0".into());
    set("PORT", HTTP_PORT.to_string());
    set("MAX_DB_CONNECTIONS", spec.database.pool.max_connections.to_string());
    set("MIN_DB_CONNECTIONS", spec.database.pool.min_connections.to_string());
    set("DB_ACQUIRE_TIMEOUT_MS", spec.database.pool.acquire_timeout_ms.to_string());
    set("DB_MIGRATE_ON_STARTUP", (spec.migrations.mode == MigrationsMode::OnStartup).to_string());
    if let Some(limit) = spec.rate_limits.per_tenant_per_minute {
        set("RATE_LIMIT_PER_MINUTE", limit.to_string());
    }
    if !spec.rate_limits.tenant_overrides.is_empty() {
        // NB: collected into a BTreeMap so the JSON has sorted keys and the config hash is stable.
        let overrides: BTreeMap<&str, u32> =
            spec.rate_limits.tenant_overrides.iter().map(|t| (t.tenant_id.as_str(), t.per_minute)).collect();
        set("RATE_LIMIT_TENANT_OVERRIDES", serde_json::to_string(&overrides).expect("a map of numbers serialises"));
    }
    if spec.anchoring.enabled {
        if let Some(chain_id) = spec.anchoring.chain_id {
            set("L2_CHAIN_ID", chain_id.to_string());
        }
        if let Some(address) = &spec.anchoring.registry_address {
            set("SET_REGISTRY_ADDRESS", address.clone());
        }
        set("ANCHOR_INTERVAL_SECS", spec.anchoring.interval_seconds.to_string());
    }
    let tlog = &spec.transparency_log;
    set("TLOG_ENABLED", tlog.enabled.to_string());
    for (key, value) in [
        ("TLOG_INTEGRATE_INTERVAL_MS", tlog.integrate_interval_ms),
        ("TLOG_INTEGRATE_MAX_EVENTS", tlog.integrate_max_events),
        ("TLOG_WITNESS_INTERVAL_MS", tlog.witness_interval_ms),
        ("TLOG_WITNESS_TIMEOUT_MS", tlog.witness_timeout_ms),
    ] {
        if let Some(value) = value {
            set(key, value.to_string());
        }
    }
    if !tlog.witnesses.is_empty() {
        set("TLOG_WITNESSES", serde_json::to_string(&tlog.witnesses).expect("witnesses serialise"));
    }
    if !tlog.public_read.is_empty() {
        set("TLOG_PUBLIC_READ", tlog.public_read.join(","));
    }
    if let Some(rate) = tlog.public_read_rate_per_second {
        set("TLOG_PUBLIC_READ_RATE_PER_SECOND", rate.to_string());
    }
    if let Some(max) = spec.ingest.max_events_per_batch {
        set("MAX_EVENTS_PER_BATCH", max.to_string());
    }
    if let Some(max) = spec.ingest.max_body_size_bytes {
        set("MAX_BODY_SIZE_BYTES", max.to_string());
    }
    set("VES_SEQUENCER_ID", sequencer_id(seq));
    set("VES_CHECKPOINT_ORIGIN", checkpoint_origin(seq));
    let timeouts = &spec.database.timeouts;
    for (key, value) in [
        ("DB_STATEMENT_TIMEOUT_MS", timeouts.statement_timeout_ms),
        ("DB_LOCK_TIMEOUT_MS", timeouts.lock_timeout_ms),
        ("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", timeouts.idle_in_transaction_timeout_ms),
    ] {
        if let Some(ms) = value {
            set(key, ms.to_string());
        }
    }
    if let Some(replica) = &spec.database.read_replica {
        for (key, value) in [
            ("READ_REPLICA_MAX_LAG_MS", replica.max_lag_ms),
            ("READ_REPLICA_CHECK_INTERVAL_MS", replica.check_interval_ms),
        ] {
            if let Some(ms) = value {
                set(key, ms.to_string());
            }
        }
    }
    set("LOG_FORMAT", spec.logging.format.as_str().into());
    set("RUST_LOG", spec.logging.level.clone());
    env
}

/// VES_SEQUENCER_ID: `spec.identity.sequencerId`, else the Sequencer's UID (a UUID), so receipts
/// name one sequencer across restarts and replicas. A Sequencer never stored (render) gets the
/// placeholder UID.
pub fn sequencer_id(seq: &Sequencer) -> String {
    seq.spec.identity.sequencer_id.clone().unwrap_or_else(|| seq.uid().unwrap_or_else(|| UNASSIGNED_UID.to_string()))
}

/// VES_CHECKPOINT_ORIGIN: `spec.identity.checkpointOrigin`, else `stateset-sequencer/<namespace>/<name>`
/// (no spaces or '+', as a signed-note key name requires).
pub fn checkpoint_origin(seq: &Sequencer) -> String {
    seq.spec.identity.checkpoint_origin.clone().unwrap_or_else(|| {
        format!("stateset-sequencer/{}/{}", seq.namespace().unwrap_or_else(|| "default".into()), seq.name_any())
    })
}

/// SHA-256 of the ConfigMap's data. Stamped on the pod template so that a change rolls the pods.
pub fn config_hash(config_map: &ConfigMap) -> String {
    let data = config_map.data.clone().unwrap_or_default();
    let canonical = serde_json::to_vec(&data).expect("a map of strings serialises");
    hex::encode(Sha256::digest(canonical))
}
