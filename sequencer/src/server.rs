//! Start-up and shutdown: the database (private in the default set-up), migrations, the bootstrap
//! admin key, the HTTP listener, and draining in-flight requests on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use ed25519_dalek::SigningKey;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

use crate::anchoring::AnchorService;
use crate::api;
use crate::auth::{Authenticator, generate_api_key, hash_api_key};
use crate::commitments::CommitmentEngine;
use crate::config::{AuthMode, Config};
use crate::error::{Error, Result};
use crate::ingest::keys::AgentKeyCache;
use crate::ingest::{Ingest, IngestLimits};
use crate::metrics::Metrics;
use crate::private_postgres::PrivatePostgres;
use crate::reads::ReadRouter;
use crate::sequencing::{ReceiptSigner, Sequencer};
use crate::state::{AppState, SharedState};
use crate::store::{PoolSettings, Store};

/// Builds the shared state of a running sequencer.
pub fn build_state(config: Config, store: Store, metrics: Arc<Metrics>) -> Result<SharedState> {
    let signer = ReceiptSigner { sequencer_id: config.sequencer_id, key: config.sequencer_signing_key.clone() };
    let sequencer = Sequencer::new(
        store.clone(),
        metrics.clone(),
        signer,
        config.ingest_max_queued_events,
        config.ingest_max_group_events,
        config.tlog.enabled && config.sequencer_signing_key.is_some(),
    );
    let keys = AgentKeyCache::new(store.clone(), config.agent_key_cache, config.verify_tables_max, metrics.clone());
    let limits = IngestLimits {
        max_events_per_batch: config.max_events_per_batch,
        max_event_payload_size: config.max_event_payload_size,
        require_signed_execution_controls: config.require_signed_execution_controls,
        max_clock_skew: config.max_clock_skew,
    };
    let ingest = Ingest::new(store.clone(), keys, sequencer, metrics.clone(), limits);
    let auth = Authenticator::new(&config, store.clone(), metrics.clone());
    let commitments = CommitmentEngine::new(store.clone());
    let limits = crate::ratelimit::RateLimiters::new(&config.rate_limits, metrics.ratelimit_rejected.clone())
        .shared_through(store.clone())
        .with_public_read(config.tlog.public_read_per_second);
    let anchor = match &config.anchor {
        Some(settings) => Some(Arc::new(AnchorService::new(settings.clone(), store.clone())?)),
        None => None,
    };
    let checkpoints = config
        .sequencer_signing_key
        .clone()
        .map(|key| crate::checkpoint::CheckpointSigner::new(&config.checkpoint_origin, key));
    let max_inflight_body_bytes = config.max_inflight_body_bytes.max(config.max_body_size_bytes);
    // NB: the replica's lookups by event id use this process's filters of closed epochs: a closed
    // epoch never changes, so they hold for the replica's copy of it too.
    let replica = open_read_store(&config)?.map(|r| r.with_id_epochs_of(&store));
    let reads = ReadRouter::new(store.clone(), replica, config.read_replica, &metrics);
    Ok(Arc::new(AppState {
        config,
        store,
        reads,
        metrics,
        auth,
        limits,
        ingest,
        commitments,
        anchor,
        checkpoints,
        started: Instant::now(),
        verify_jobs: Default::default(),
        body_budget: crate::limits::BodyBudget::new(max_inflight_body_bytes),
        db_watch: Default::default(),
    }))
}

/// Opens the pool described by the configuration.
pub fn open_store(config: &Config, metrics: &Metrics) -> Result<Store> {
    let url = config.database_url.as_ref().ok_or_else(|| Error::Internal("DATABASE_URL is not set".into()))?;
    Store::connect_lazy(
        url.expose_secret(),
        PoolSettings {
            max_connections: config.max_db_connections,
            min_connections: config.min_db_connections,
            acquire_timeout: config.db_acquire_timeout,
            guards: config.db_session_guards,
        },
        metrics.db_waiting.clone(),
    )
}

/// A read replica's pool waits at most this long for a connection: a read that cannot have one sooner
/// is served by the primary instead ([`ReadRouter::read`]).
const READ_REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens the read replica's pool (`READ_DATABASE_URL`) lazily, with the primary's pool settings;
/// `None` when no replica is configured.
pub fn open_read_store(config: &Config) -> Result<Option<Store>> {
    let Some(url) = config.read_database_url.as_ref() else { return Ok(None) };
    let store = Store::connect_lazy(
        url.expose_secret(),
        PoolSettings {
            max_connections: config.max_db_connections,
            min_connections: 0,
            acquire_timeout: config.db_acquire_timeout.min(READ_REPLICA_ACQUIRE_TIMEOUT),
            guards: config.db_session_guards,
        },
        Default::default(),
    )?;
    Ok(Some(store))
}

/// Migrations (when enabled), the bootstrap key, and a check that someone can authenticate. Retries
/// while the database is still coming up.
pub async fn prepare_database(config: &Config, store: &Store) -> Result<()> {
    prepare_database_with(config, store, &crate::store::MIGRATOR).await
}

/// [`prepare_database`] with a given migration set (tests start this binary as an older release).
/// A schema that a newer release changed incompatibly stops start-up with a message that says so.
pub async fn prepare_database_with(config: &Config, store: &Store, migrations: &sqlx::migrate::Migrator) -> Result<()> {
    let retry = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(10);
    let notify = |e: &Error, after: Duration| tracing::warn!(error = %e, retry_in = ?after, "database not ready yet");
    // NB: an incompatible schema is not retried: waiting does not fix it.
    let transient = |e: &Error| !matches!(e, Error::Invalid { code: "SCHEMA_INCOMPATIBLE", .. });
    if config.db_migrate_on_startup {
        let report = (|| store.migrate_with(migrations)).retry(retry).when(transient).notify(notify).await?;
        tracing::info!(schema_version = report.schema_version, "{report}");
    } else {
        (|| store.check_compatibility(migrations)).retry(retry).when(transient).notify(notify).await?;
    }
    if let Some(key) = &config.bootstrap_admin_api_key {
        let hash = hash_api_key(key.expose_secret());
        (|| store.upsert_bootstrap_key(&hash)).retry(retry).notify(notify).await?;
    }
    if let Some(key) = &config.sequencer_signing_key {
        // Before this process signs anything, so that `verify` and clients can check every receipt it signs.
        let public = key.verifying_key().to_bytes();
        let recorded =
            (|| store.record_receipt_key(config.sequencer_id, &public)).retry(retry).when(|e| !e.is_undefined_table());
        match recorded.notify(notify).await {
            Ok(()) => {}
            // A schema migrated only up to a release before 0023 (DB_MIGRATE_ON_STARTUP=false, the migration
            // not run yet): this process's receipts are then counted as unchecked by `verify`, not refused.
            Err(e) if e.is_undefined_table() => {
                tracing::warn!("the receipt key is not recorded: the schema has no receipt_keys table (migration 0023)")
            }
            Err(e) => return Err(e),
        }
    }
    if config.auth_mode == AuthMode::Required && config.bootstrap_admin_api_key.is_none() && config.jwt.is_none() {
        let any = (|| store.any_active_api_key()).retry(retry).notify(notify).await?;
        if !any {
            return Err(Error::Internal(
                "no way to authenticate: set BOOTSTRAP_ADMIN_API_KEY (ss_...) or JWT_SECRET, or create an API key first"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (not when the
/// future is first polled), so a signal that arrives right after start-up is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => std::future::pending::<()>().await,
        }
        tracing::info!("shutdown requested; draining in-flight requests");
    }
}

/// Serves on an already bound listener until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let fd_limit = crate::limits::raise_fd_limit();
    // Leave descriptors for the database pool, the database watch, logs and child processes.
    let max_connections = state.config.http_max_connections.min((fd_limit as usize).saturating_sub(256).max(16));
    tracing::info!(fd_limit, max_connections, "connection limits");
    let header_read_timeout = state.config.http_header_read_timeout;
    let watch = state
        .config
        .database_url
        .clone()
        .map(|url| state.db_watch.spawn(url, state.config.db_acquire_timeout, Duration::from_millis(250)));
    let replica_checks = match (&state.config.database_url, &state.config.read_database_url) {
        (Some(primary), Some(replica)) => state.reads.spawn_checks(primary, replica, state.config.db_acquire_timeout),
        _ => None,
    };
    let app = api::service(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let shutdown = shutdown;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over HTTP_MAX_CONNECTIONS: closed at once rather than left waiting.
            tracing::debug!(%peer, "connection refused: HTTP_MAX_CONNECTIONS reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone();
        let mut closed = closed.clone();
        connections.spawn(async move {
            let _slot = slot;
            // NB: hyper starts the header-read timer whenever it waits for a request head, so an idle
            // keep-alive connection is closed after the same timeout.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(service));
            tokio::pin!(conn);
            let closing = async move {
                let _ = closed.wait_for(|c| *c).await;
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                () = closing => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    if let Some(watch) = watch {
        watch.abort();
    }
    if let Some(checks) = replica_checks {
        checks.abort();
    }
    Ok(())
}

/// Runs the sequencer until SIGTERM.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let mut private = None;
    let mut generated_key_file = None;
    if config.database_url.is_none() {
        println!("DATABASE_URL is not set: starting a private PostgreSQL for this run (its data is discarded on exit)");
        let pg = tokio::task::spawn_blocking(PrivatePostgres::start).await?.map_err(anyhow::Error::msg)?;
        config.database_url = Some(SecretString::from(pg.url()));
        config.db_migrate_on_startup = true;
        if config.bootstrap_admin_api_key.is_none() && config.jwt.is_none() {
            let key = generate_api_key(uuid::Uuid::nil());
            let path = std::env::temp_dir().join(format!("stateset-sequencer-{}.admin-key", std::process::id()));
            write_private_file(&path, &key)?;
            config.bootstrap_admin_api_key = Some(SecretString::from(key));
            generated_key_file = Some(path);
        }
        if config.sequencer_signing_key.is_none() {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
            config.sequencer_signing_key = Some(SigningKey::from_bytes(&seed));
        }
        private = Some(pg);
    }
    if config.sequencer_signing_key.is_none() {
        tracing::warn!("VES_SEQUENCER_SIGNING_KEY is not set: receipts are unsigned (signatureAlg \"none\")");
    }
    tracing::info!(config = ?config, "starting stateset-sequencer {}", crate::VERSION);

    let metrics = Arc::new(Metrics::new());
    let store = open_store(&config, &metrics)?;
    prepare_database(&config, &store).await?;
    let shutdown = shutdown_signal();
    let addr = SocketAddr::new(config.host, config.port);
    let listener =
        TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} (HOST/PORT): {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "listening on http://{local}");
    if let Some(path) = &generated_key_file {
        let shown =
            if local.ip().is_unspecified() { SocketAddr::new([127, 0, 0, 1].into(), local.port()) } else { local };
        println!("stateset-sequencer is listening on http://{shown}");
        println!("A bootstrap admin API key was generated for this run and written to {}", path.display());
        println!(
            "Try: curl -H \"Authorization: ApiKey $(cat {})\" http://{shown}/api/v1/admin/api-keys",
            path.display()
        );
    }
    let state = build_state(config, store, metrics)?;
    let background = crate::worker::spawn(state.clone());
    serve(listener, state, shutdown).await?;
    background.abort();
    if let Some(path) = generated_key_file {
        let _ = std::fs::remove_file(path);
    }
    drop(private);
    tracing::info!("stopped");
    Ok(())
}

fn write_private_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
