//! PostgreSQL, and nothing else: the signed event log, stream counters, agent signing keys, API keys
//! and the dead-letter queue. The store knows SQL and rows; it knows nothing of HTTP.

pub mod api_keys;
pub mod commitments;
pub mod dead_letters;
pub mod events;
pub mod keys;
pub mod scope;
pub mod tlog;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::Result;

/// The migrations in the repository's top-level `migrations/` folder, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Parses a PostgreSQL URL. Like libpq, a URL without a user (and no `PGUSER`) means the
/// operating-system user, so `postgres://localhost/stateset_sequencer` works as it does for psql.
pub fn connect_options(url: &str) -> std::result::Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    if !url.contains('@')
        && std::env::var_os("PGUSER").is_none()
        && let Some(user) = os_user()
    {
        return Ok(options.username(&user));
    }
    Ok(options)
}

/// The name of the user this process runs as, from the password database (as libpq does).
fn os_user() -> Option<String> {
    // SAFETY: getpwuid returns null or a pointer to a record that stays valid until the next call; the
    // name is copied out at once. Called at start-up, before concurrent getpw* use could overwrite it.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_str().ok().map(str::to_owned)
    }
}

/// Pool settings taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
}

/// Handle to the database: a connection pool plus the count of tasks waiting for a connection.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    waiting: Arc<AtomicI64>,
    max_connections: u32,
}

impl Store {
    /// Opens a pool. Connections are made lazily, so a database that is down at start-up shows up as
    /// `/ready` answering 503 rather than as a crash loop.
    pub fn connect_lazy(url: &str, settings: PoolSettings, waiting: Arc<AtomicI64>) -> Result<Self> {
        let options = connect_options(url)?.application_name("stateset-sequencer");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            // NB: a connection that died while the database was down is noticed on checkout, so the
            // pool recovers by itself once the database is back.
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(Store { pool, waiting, max_connections: settings.max_connections })
    }

    /// Wraps an existing pool (tests, admin CLI).
    pub fn from_pool(pool: PgPool) -> Self {
        let max_connections = pool.options().get_max_connections();
        Store { pool, waiting: Arc::new(AtomicI64::new(0)), max_connections }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Applies every pending migration (idempotent; sqlx serialises concurrent runs with a lock).
    ///
    /// Also (re)applies the database's `search_path` that migration 0003 sets, because a database
    /// restored with `pg_restore` into a fresh `createdb` does not carry database-level settings.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| crate::Error::Internal(format!("migration failed: {e}")))?;
        sqlx::raw_sql(
            "DO $$ BEGIN \
               EXECUTE format('ALTER DATABASE %I SET search_path = \"$user\", public, pg_catalog', current_database()); \
             EXCEPTION WHEN insufficient_privilege THEN NULL; END $$",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The highest applied migration version (0 when none).
    pub async fn schema_version(&self) -> Result<i64> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await?;
        Ok(version.unwrap_or(0))
    }

    /// Starts a transaction, counting the caller as waiting until it has a connection.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        let _waiting = WaitGuard::new(&self.waiting);
        Ok(self.pool.begin().await?)
    }

    /// One round trip to the database; used by `/ready`.
    pub async fn ping(&self) -> Result<()> {
        let _waiting = WaitGuard::new(&self.waiting);
        let mut conn = self.pool.acquire().await?;
        drop(_waiting);
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }
}

struct WaitGuard<'a>(&'a AtomicI64);

impl<'a> WaitGuard<'a> {
    fn new(counter: &'a AtomicI64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        WaitGuard(counter)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
