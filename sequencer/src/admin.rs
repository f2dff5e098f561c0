//! The admin CLI's commands, as library functions (the binary only parses arguments).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::auth::{generate_api_key, hash_api_key};
use crate::store::Store;
use crate::store::api_keys::NewApiKey;
use crate::store::dead_letters::DeadLetterFilter;

/// Connects to the database named by `url` (the password never appears in errors).
pub async fn connect(url: &str) -> anyhow::Result<Store> {
    let options =
        crate::store::connect_options(url).map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database (DATABASE_URL): {e}"))?;
    Ok(Store::from_pool(pool))
}

/// Like [`connect`], but waits up to `wait` for a database that does not accept connections yet (a
/// migration Job may start before its database): retried with backoff while the server is
/// unreachable or starting up, never when it refused us (bad password, TLS, unknown database).
pub async fn connect_waiting(url: &str, wait: Duration) -> anyhow::Result<Store> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(200);
    loop {
        let options = crate::store::connect_options(url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
        match PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
        {
            Ok(pool) => return Ok(Store::from_pool(pool)),
            Err(e) if retry_connect(&e) && tokio::time::Instant::now() + delay < deadline => {
                eprintln!("the database does not accept connections yet ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                anyhow::bail!("cannot connect to the database (DATABASE_URL) within {}s: {e}", wait.as_secs())
            }
        }
    }
}

/// Worth waiting for: the server is not there or not ready yet (not: it refused our credentials or
/// certificate).
fn retry_connect(e: &sqlx::Error) -> bool {
    !matches!(e, sqlx::Error::Tls(_)) && crate::error::database_unavailable(e)
}

/// `migrate`: applies pending migrations and says what it did. Over a schema that a newer release
/// migrated compatibly it applies nothing and says so; over an incompatible one it fails.
pub async fn migrate(store: &Store) -> anyhow::Result<ExitCode> {
    migrate_with(store, &crate::store::MIGRATOR).await
}

/// [`migrate`] with a given migration set (tests run it as an older release).
pub async fn migrate_with(store: &Store, migrations: &sqlx::migrate::Migrator) -> anyhow::Result<ExitCode> {
    let report = store.migrate_with(migrations).await.context("migration failed")?;
    println!("{report}");
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

/// `verify`: prints the findings; exit code 1 when there are any.
pub async fn verify(
    store: &Store,
    tenant_id: Option<Uuid>,
    store_id: Option<Uuid>,
    trust: &crate::verify::ReceiptKeyTrust,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Progress goes to stderr as the streams are checked (stdout keeps only the report).
    let streams = store.streams(tenant_id, store_id, i64::MAX).await?;
    let total = streams.len();
    let mut last = std::time::Instant::now();
    let report = crate::verify::verify_streams_with(store, streams, trust, |r| {
        if last.elapsed() >= std::time::Duration::from_secs(1) || r.streams_checked as usize == total {
            last = std::time::Instant::now();
            eprintln!(
                "verify: {}/{total} streams, {} events, {} findings so far",
                r.streams_checked,
                r.events_checked,
                r.findings.len()
            );
        }
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            let at = f.sequence_number.map(|s| format!(" at {s}")).unwrap_or_default();
            println!("{}  {}/{}{at}: {}", f.kind, f.tenant_id, f.store_id, f.detail);
        }
        println!(
            "{}: {} streams, {} events, {} commitments checked, {} findings",
            if report.ok { "OK" } else { "FAILED" },
            report.streams_checked,
            report.events_checked,
            report.commitments_checked,
            report.findings.len()
        );
        if report.receipt_keys_pinned {
            println!("{} receipt signatures checked against the pinned keys", report.receipt_signatures_checked);
        } else if report.receipt_signatures_unchecked > 0 {
            println!(
                "{} receipt signatures checked; {} not checked: their sequencer recorded no receipt key \
                 (sequenced by a release before migration 0023; pin the keys with --receipt-key to check them)",
                report.receipt_signatures_checked, report.receipt_signatures_unchecked
            );
        }
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `dead-letters list`.
pub async fn list_dead_letters(
    store: &Store,
    tenant_id: Option<Uuid>,
    store_id: Option<Uuid>,
    reason: Option<String>,
    status: Option<String>,
    limit: i64,
) -> anyhow::Result<ExitCode> {
    let filter = DeadLetterFilter { tenant_id, store_id, reason, status, ..Default::default() };
    for l in store.list_dead_letters(&filter, limit, 0).await? {
        println!(
            "{}  event={}  {}/{}  {}  {}  attempts={}  {}",
            l.id,
            l.event_id,
            l.tenant_id,
            l.store_id,
            l.status,
            l.reason,
            l.retry_count,
            l.created_at.to_rfc3339()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dead-letters retry`: runs the full ingest path in this process (receipts are signed with
/// `VES_SEQUENCER_SIGNING_KEY` when it is set). Exit code 1 when any entry is still refused.
pub async fn retry_dead_letters(
    database_url: &str,
    ids: Vec<Uuid>,
    tenant_id: Option<Uuid>,
    store_id: Option<Uuid>,
    reason: Option<String>,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    vars.insert("DATABASE_URL".into(), database_url.into());
    vars.insert("DB_MIGRATE_ON_STARTUP".into(), "false".into());
    vars.insert("MAX_DB_CONNECTIONS".into(), "4".into());
    let config = crate::config::Config::from_map(&vars)?;
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let store = crate::server::open_store(&config, &metrics)?;
    let state = crate::server::build_state(config, store.clone(), metrics)?;
    let letters = if !ids.is_empty() {
        let mut letters = Vec::new();
        for id in ids {
            letters.push(store.dead_letter(id).await?.ok_or_else(|| anyhow::anyhow!("no dead letter with id {id}"))?);
        }
        letters
    } else if all || tenant_id.is_some() || store_id.is_some() || reason.is_some() {
        let filter =
            DeadLetterFilter { tenant_id, store_id, reason, status: Some("pending".into()), ..Default::default() };
        store.list_dead_letters(&filter, 10_000, 0).await?
    } else {
        anyhow::bail!("give dead-letter ids, or filters (--tenant-id, --store-id, --reason) or --all");
    };
    let mut summary = crate::dead_letter::RetrySummary::default();
    for letter in &letters {
        let result = crate::dead_letter::retry(&store, &state.ingest, letter).await?;
        println!(
            "{}  {}  {}",
            result.id,
            result.outcome,
            result.reason.clone().or(result.sequence_number.map(|s| format!("sequence {s}"))).unwrap_or_default()
        );
        summary.push(result);
    }
    println!("{} attempted, {} succeeded, {} failed", summary.attempted, summary.succeeded, summary.failed);
    Ok(if summary.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `dead-letters delete`.
pub async fn delete_dead_letters(store: &Store, ids: Vec<Uuid>) -> anyhow::Result<ExitCode> {
    let mut missing = 0;
    for id in ids {
        if store.delete_dead_letter(id).await? {
            println!("deleted {id}");
        } else {
            eprintln!("no dead letter with id {id}");
            missing += 1;
        }
    }
    Ok(if missing == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `dead-letters purge`: deletes the entries matching the filters, by default the resolved ones.
pub async fn purge_dead_letters(
    store: &Store,
    status: String,
    tenant_id: Option<Uuid>,
    store_id: Option<Uuid>,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    if status != "resolved" && status != "pending" {
        anyhow::bail!("--status must be resolved or pending, not {status:?}");
    }
    let filter = DeadLetterFilter { tenant_id, store_id, reason, status: Some(status.clone()), ..Default::default() };
    let deleted = store.delete_dead_letters_matching(&filter).await?;
    println!("deleted {deleted} {status} dead letters");
    Ok(ExitCode::SUCCESS)
}

/// `maintenance vacuum`: VACUUM ANALYZE of the runbook's tables (or `tables`).
pub async fn vacuum(store: &Store, tables: Vec<String>) -> anyhow::Result<ExitCode> {
    let tables = crate::store::maintenance::vacuum_tables(Some(&tables)).map_err(|e| anyhow::anyhow!("{e}"))?;
    store.vacuum_analyze(&tables).await?;
    println!("VACUUM ANALYZE done: {}", tables.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// `maintenance terminate-idle-connections`: the runbook's "Kill idle connections".
pub async fn terminate_idle_connections(store: &Store, idle_longer_than_seconds: u32) -> anyhow::Result<ExitCode> {
    if idle_longer_than_seconds < 60 {
        anyhow::bail!("--idle-longer-than-seconds must be at least 60");
    }
    let ended = store.terminate_idle_connections(idle_longer_than_seconds).await?;
    for c in &ended {
        println!(
            "terminated pid {}  {}  idle {:.0}s",
            c.pid,
            c.application_name.as_deref().unwrap_or(""),
            c.idle_seconds
        );
    }
    println!("{} idle connections terminated", ended.len());
    Ok(ExitCode::SUCCESS)
}

/// `commitments correct`: a correcting commitment for a bad one (as `POST .../correct`).
pub async fn correct_commitment(store: &Store, batch_id: Uuid, reason: &str) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why the commitment is wrong");
    }
    let engine = crate::commitments::CommitmentEngine::new(store.clone());
    let correction = engine.correct(batch_id, reason.trim()).await?;
    println!("commitment {batch_id} corrected by {}", correction.batch_id);
    Ok(ExitCode::SUCCESS)
}

/// `streams pause|resume`.
pub async fn set_paused(
    store: &Store,
    tenant_id: Uuid,
    store_id: Uuid,
    paused: bool,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    store.set_paused(crate::store::events::StreamKey { tenant_id, store_id }, paused, reason.as_deref()).await?;
    println!("stream {tenant_id}/{store_id} {}", if paused { "paused" } else { "resumed" });
    Ok(ExitCode::SUCCESS)
}

/// `streams list`.
pub async fn list_streams(store: &Store, tenant_id: Option<Uuid>) -> anyhow::Result<ExitCode> {
    for s in store.streams(tenant_id, None, 100_000).await? {
        println!(
            "{}/{}  head={}  committed={}  {}",
            s.tenant_id,
            s.store_id,
            s.head,
            s.last_committed_sequence.unwrap_or(0),
            if s.paused { "PAUSED" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `deploy-registry`: deploys the contract and prints its address alone on stdout.
pub async fn deploy_registry(rpc_url: &str, private_key: &str, permissionless: bool) -> anyhow::Result<ExitCode> {
    let key = secrecy::SecretString::from(private_key.to_owned());
    let address = ::anchor::deploy_registry(rpc_url, &key, permissionless).await?;
    println!("{address}");
    Ok(ExitCode::SUCCESS)
}
