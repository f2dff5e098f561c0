//! Test support, shared by this crate's integration tests and the e2e suite: a fresh database per
//! test on the local PostgreSQL, and an in-process sequencer on an ephemeral port.
//!
//! `TEST_DATABASE_URL` names the server's maintenance database (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates and drops its own database so
//! tests run in parallel.

use sqlx::AssertSqlSafe;
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server;
use crate::state::SharedState;

/// The bootstrap admin key every test server accepts.
pub const ADMIN_KEY: &str = "ss_test_bootstrap_admin_key_0123456789";

/// The Ed25519 seed test servers sign receipts with.
pub const SEQUENCER_SEED_HEX: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

fn maintenance_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test, dropped when this value is dropped.
pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub async fn create() -> Self {
        let admin = maintenance_url();
        let name = format!("seqtest_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin} (TEST_DATABASE_URL): {e}"));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let (base, _) = admin.rsplit_once('/').expect("URL has a database path");
        TestDb { url: format!("{base}/{name}"), name }
    }

    /// Creates a database and applies the migrations.
    pub async fn migrated() -> Self {
        let db = Self::create().await;
        let pool = sqlx::PgPool::connect(&db.url).await.expect("connect test database");
        crate::store::MIGRATOR.run(&pool).await.expect("migrate test database");
        pool.close().await;
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let name = self.name.clone();
        let admin = maintenance_url();
        // NB: Drop cannot be async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A sequencer serving on 127.0.0.1 with its own database.
pub struct TestServer {
    pub base_url: String,
    pub state: SharedState,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    worker: crate::worker::Background,
}

impl TestServer {
    /// A server with the default test configuration.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server whose configuration is the test defaults overridden by `vars`.
    pub async fn start_with(vars: &[(&str, &str)]) -> Self {
        let db = TestDb::migrated().await;
        Self::start_on(db, vars).await
    }

    /// A server on an existing (migrated) database.
    pub async fn start_on(db: TestDb, vars: &[(&str, &str)]) -> Self {
        Self::start_as_release(db, vars, &crate::store::MIGRATOR).await
    }

    /// A server whose embedded migration set is `migrations` (an older release's, say).
    pub async fn start_as_release(db: TestDb, vars: &[(&str, &str)], migrations: &sqlx::migrate::Migrator) -> Self {
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", db.url.as_str()),
            ("BOOTSTRAP_ADMIN_API_KEY", ADMIN_KEY),
            ("VES_SEQUENCER_SIGNING_KEY", SEQUENCER_SEED_HEX),
            ("DB_MIGRATE_ON_STARTUP", "false"),
            ("MAX_DB_CONNECTIONS", "8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_map(&env).expect("test configuration");
        let metrics = Arc::new(Metrics::new());
        let store = server::open_store(&config, &metrics).expect("open store");
        server::prepare_database_with(&config, &store, migrations).await.expect("prepare database");
        let state = server::build_state(config, store, metrics).expect("build state");
        let worker = crate::worker::spawn(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer { base_url, state, db, shutdown: Some(tx), task: Some(task), worker }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops serving and waits for in-flight requests to finish.
    pub async fn stop(mut self) -> TestDb {
        self.worker.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.state.store.pool().close().await;
        let db = TestDb { url: self.db.url.clone(), name: self.db.name.clone() };
        // NB: ownership of the database moves to the returned value; keep this one from dropping it.
        self.db.name = String::new();
        db
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.worker.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
