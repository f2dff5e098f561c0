//! The admin CLI's commands, as library functions (the binary only parses arguments).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::auth::{generate_api_key, hash_api_key};
use crate::store::Store;
use crate::store::api_keys::NewApiKey;

/// Connects to the database named by `url` (the password never appears in errors).
pub async fn connect(url: &str) -> anyhow::Result<Store> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database (DATABASE_URL): {e}"))?;
    Ok(Store::from_pool(pool))
}

/// `migrate`: applies pending migrations and prints the schema version.
pub async fn migrate(store: &Store) -> anyhow::Result<ExitCode> {
    store.migrate().await.context("migration failed")?;
    println!("migrations applied; schema version {}", store.schema_version().await?);
    Ok(ExitCode::SUCCESS)
}

/// `api-keys create`.
pub async fn create_api_key(
    store: &Store,
    tenant_id: Uuid,
    permissions: &[String],
    store_ids: Vec<Uuid>,
    rate_limit: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let has = |p: &str| permissions.iter().any(|x| x == p);
    if let Some(bad) = permissions.iter().find(|p| !["read", "write", "admin"].contains(&p.as_str())) {
        anyhow::bail!("unknown permission {bad:?}: use read, write or admin");
    }
    let key = generate_api_key(tenant_id);
    let record = store
        .insert_api_key(&NewApiKey {
            key_hash: hash_api_key(&key),
            tenant_id,
            store_ids,
            can_read: has("read"),
            can_write: has("write"),
            can_admin: has("admin"),
            agent_id: None,
            rate_limit: rate_limit.map(|r| r as i32),
            label: Some("admin cli".into()),
        })
        .await?;
    println!("id: {}\napi key (shown once): {key}", record.id);
    Ok(ExitCode::SUCCESS)
}

/// `api-keys list`.
pub async fn list_api_keys(store: &Store, tenant_id: Option<Uuid>) -> anyhow::Result<ExitCode> {
    for k in store.list_api_keys(tenant_id).await? {
        println!(
            "{}  tenant={}  prefix={}  read={} write={} admin={}  active={}",
            k.id,
            k.tenant_id,
            k.key_hash_prefix(),
            k.can_read,
            k.can_write,
            k.can_admin,
            k.active
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `api-keys revoke`.
pub async fn revoke_api_key(store: &Store, id: Uuid) -> anyhow::Result<ExitCode> {
    match store.revoke_api_key(id).await? {
        Some(_) => {
            println!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
        None => anyhow::bail!("no API key with id {id}"),
    }
}
