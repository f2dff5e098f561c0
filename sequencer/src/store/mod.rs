//! PostgreSQL, and nothing else: the signed event log, stream counters, agent signing keys, API keys
//! and the dead-letter queue. The store knows SQL and rows; it knows nothing of HTTP.

pub mod api_keys;
pub mod backup;
pub mod commitments;
pub mod cursors;
pub mod dead_letters;
pub mod epochs;
pub mod events;
pub mod keys;
pub mod maintenance;
pub mod policies;
pub mod rate_limits;
pub mod replica;
pub mod scope;
pub mod tlog;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::Result;

/// The migrations in the repository's top-level `migrations/` folder, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Parses a PostgreSQL URL. Like libpq, a URL without a user (and no `PGUSER`) means the
/// operating-system user, so `postgres://localhost/stateset_sequencer` works as it does for psql.
///
/// TLS follows libpq: the URL's `sslmode` (`disable`, `prefer` (the default), `require`, `verify-ca`,
/// `verify-full`) and `sslrootcert`, else the `PGSSLMODE` and `PGSSLROOTCERT` variables (sqlx reads
/// both; URL parameters win). An invalid `PGSSLMODE` is an error here, where sqlx would silently fall
/// back to `prefer`.
///
/// Every connection runs with `jit = off`. The sequencer's statements each take a millisecond or less,
/// and PostgreSQL compiles a statement with LLVM whenever its estimated cost passes `jit_above_cost`,
/// on every run, generic plans included. The estimates of the statements that read an entity epoch by
/// epoch pass it: PostgreSQL cannot tell how many rows `generate_series` between two looked-up epochs
/// gives and guesses 1,000. A checked group of 100 events then cost 840,000 (16.8 million for a
/// statement shared by 20 streams' groups), and each run compiled 113 functions in about 590 ms to run
/// for about 1 ms (`auto_explain`): `loadgen --spawn --streams 64 --batch 100 --base-version` ran at
/// 2,786 events/s with PostgreSQL at 628 µs of CPU per event, and with JIT off at 18,814 with 29 µs on
/// the same machine. Those statements came with migration 0028.
pub fn connect_options(url: &str) -> std::result::Result<PgConnectOptions, sqlx::Error> {
    if let Ok(mode) = std::env::var("PGSSLMODE")
        && mode.parse::<sqlx::postgres::PgSslMode>().is_err()
    {
        return Err(sqlx::Error::Configuration(
            format!("PGSSLMODE={mode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full").into(),
        ));
    }
    let options = url.parse::<PgConnectOptions>()?.options([("jit", "off")]);
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
    pub guards: SessionGuards,
}

/// Session limits set on every pooled connection (`DB_STATEMENT_TIMEOUT_MS`, `DB_LOCK_TIMEOUT_MS`,
/// `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`; zero turns one off), so that a stuck query or transaction
/// cannot hold a stream's counter lock forever and a request waiting on it fails with a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionGuards {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
}

impl Default for SessionGuards {
    fn default() -> Self {
        SessionGuards {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl SessionGuards {
    /// The guards as startup parameters: no extra round trip per connection.
    pub fn apply(self, options: PgConnectOptions) -> PgConnectOptions {
        options.options([
            ("statement_timeout", self.statement_timeout.as_millis()),
            ("lock_timeout", self.lock_timeout.as_millis()),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout.as_millis()),
        ])
    }
}

/// Handle to the database: a connection pool plus the count of tasks waiting for a connection.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    waiting: Arc<AtomicI64>,
    max_connections: u32,
    tiles: Arc<tlog::TileCache>,
    /// The filters of closed event id epochs ([`epochs`]), shared by the pools of one process.
    epochs: Arc<epochs::IdEpochs>,
}

/// The `application_name` of the request pool's connections (background pools name theirs apart).
pub const APPLICATION_NAME: &str = "stateset-sequencer";

impl Store {
    /// Opens a pool. Connections are made lazily, so a database that is down at start-up shows up as
    /// `/ready` answering 503 rather than as a crash loop.
    pub fn connect_lazy(url: &str, settings: PoolSettings, waiting: Arc<AtomicI64>) -> Result<Self> {
        let options = settings.guards.apply(connect_options(url)?.application_name(APPLICATION_NAME));
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            // NB: a connection that died while the database was down is noticed on checkout, so the
            // pool recovers by itself once the database is back.
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(Store {
            pool,
            waiting,
            max_connections: settings.max_connections,
            tiles: new_tile_cache(),
            epochs: Default::default(),
        })
    }

    /// Wraps an existing pool (tests, admin CLI).
    pub fn from_pool(pool: PgPool) -> Self {
        let max_connections = pool.options().get_max_connections();
        Store {
            pool,
            waiting: Arc::new(AtomicI64::new(0)),
            max_connections,
            tiles: new_tile_cache(),
            epochs: Default::default(),
        }
    }

    /// A pool of its own, of at most `max_connections`, to the same database with the same options
    /// (and tile cache) but its own `application_name`: for background work that must not queue behind
    /// requests for connections.
    pub fn sibling(&self, max_connections: u32, application_name: &str) -> Store {
        let options = (*self.pool.connect_options()).clone().application_name(application_name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(self.pool.options().get_acquire_timeout())
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Store {
            pool,
            waiting: Arc::new(AtomicI64::new(0)),
            max_connections,
            tiles: self.tiles.clone(),
            epochs: self.epochs.clone(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Applies every pending migration of the embedded set (see [`Store::migrate_with`]).
    pub async fn migrate(&self) -> Result<MigrationReport> {
        self.migrate_with(&MIGRATOR).await
    }

    /// Applies every pending migration of `migrations` (idempotent; concurrent runs take turns under
    /// [`lock_migrations`]), after checking that this binary may run on the schema at all.
    ///
    /// Migrations a newer release applied are ignored when the recorded compatibility floor allows
    /// it (migrations/README.md: expand/contract), so an image can be rolled back over an additive
    /// change. Also (re)applies the database's `search_path` that migration 0003 sets, because a
    /// database restored with `pg_restore` into a fresh `createdb` does not carry database settings.
    pub async fn migrate_with(&self, migrations: &Migrator) -> Result<MigrationReport> {
        let mut conn = self.pool.acquire().await?;
        // NB: a migration may rewrite a large table: the request guards do not apply to it. The
        // connection keeps these settings, so it is closed rather than returned to the pool.
        conn.close_on_drop();
        sqlx::raw_sql("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0")
            .execute(&mut *conn)
            .await?;
        let binary_version = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        // The lock is held until the connection closes (it is not returned to the pool). The floor is
        // read under it: a run this one waited for may have raised it.
        lock_migrations(&mut conn).await?;
        check_floor(&mut conn, binary_version).await?;
        drop_failed_concurrent_builds(&mut conn).await?;
        let before = applied_versions(&mut conn).await?;
        let mut migrator = Migrator::with_migrations(migrations.iter().cloned().collect());
        migrator.set_ignore_missing(true);
        migrator.run(&mut *conn).await.map_err(|e| crate::Error::Internal(format!("migration failed: {e}")))?;
        sqlx::raw_sql(
            "DO $$ BEGIN \
               EXECUTE format('ALTER DATABASE %I SET search_path = \"$user\", public, pg_catalog', current_database()); \
             EXCEPTION WHEN insufficient_privilege THEN NULL; END $$",
        )
        .execute(&mut *conn)
        .await?;
        let after = applied_versions(&mut conn).await?;
        Ok(MigrationReport {
            applied: after.iter().copied().filter(|v| !before.contains(v)).collect(),
            unknown: after.iter().copied().filter(|v| !migrations.version_exists(*v)).collect(),
            schema_version: after.last().copied().unwrap_or(0),
            binary_version,
        })
    }

    /// Refuses a schema that a newer release contracted past what `migrations` (this binary's set)
    /// knows; used at start-up when migrations are not run.
    pub async fn check_compatibility(&self, migrations: &Migrator) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        check_floor(&mut conn, migrations.iter().map(|m| m.version).max().unwrap_or(0)).await
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

    /// A connection of its own, counting the caller as waiting until it has one.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>> {
        let _waiting = WaitGuard::new(&self.waiting);
        Ok(self.pool.acquire().await?)
    }

    /// Whether another caller could get a connection now without waiting for one to be returned: one
    /// is idle, or the pool may still open one.
    pub fn has_spare_connection(&self) -> bool {
        self.pool.num_idle() > 0 || self.pool.size() < self.max_connections
    }

    /// One round trip to the database; used by `/ready`.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.acquire().await?;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }
}

fn new_tile_cache() -> Arc<tlog::TileCache> {
    Arc::new(tlog::TileCache::new(tlog::TILE_CACHE_BYTES))
}

/// What a migration run found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions this run applied.
    pub applied: Vec<i64>,
    /// Applied versions this binary does not know: a newer release migrated the schema.
    pub unknown: Vec<i64>,
    /// The highest applied version.
    pub schema_version: i64,
    /// The highest version this binary embeds.
    pub binary_version: i64,
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.applied.as_slice(), self.unknown.as_slice()) {
            ([], []) => write!(f, "no migration to apply; schema version {}", self.schema_version),
            ([], newer) => write!(
                f,
                "no migration to apply: the schema (version {}) is newer than this binary (version {}); \
                 migrations {newer:?} are additive, so this binary runs on it unchanged",
                self.schema_version, self.binary_version
            ),
            (applied, _) => write!(f, "applied migrations {applied:?}; schema version {}", self.schema_version),
        }
    }
}

/// Indexes that a migration builds `CONCURRENTLY` (0015). A build that fails (a cancelled statement,
/// a lost connection, a deadlock) leaves the index behind marked INVALID, and the migration is not
/// recorded; its `IF NOT EXISTS` would then skip the rebuild on the next run and keep the invalid index.
const CONCURRENTLY_BUILT_INDEXES: &[&str] = &[
    "uq_ves_events_sequence_new",
    "uq_ves_events_epoch_event_id",
    "idx_ves_events_entity",
    "idx_legacy_events_entity",
];

/// The advisory lock key that serialises this binary's migration runs (the ASCII of "ssseqmig").
const MIGRATION_LOCK: i64 = 0x7373_7365_716d_6967;

/// Takes [`MIGRATION_LOCK`] for the session, polling instead of waiting inside a statement.
///
/// NB: not sqlx's own lock (which `Migrator::run` also takes, uncontended once this one is held): a
/// session blocked in `pg_advisory_lock()` sits in a statement with a snapshot, and `CREATE INDEX
/// CONCURRENTLY` waits for every older snapshot to end. A second migrating pod blocked on the lock
/// while the first builds an index would be a deadlock, which PostgreSQL resolves by cancelling one
/// of the two, possibly the build. Polling holds no snapshot between tries.
async fn lock_migrations(conn: &mut PgConnection) -> Result<()> {
    let mut told = false;
    loop {
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(MIGRATION_LOCK).fetch_one(&mut *conn).await?;
        if locked {
            return Ok(());
        }
        if !told {
            tracing::info!("another migration run holds the migration lock; waiting for it to finish");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Drops what a failed `CREATE INDEX CONCURRENTLY` of a migration left behind (see
/// [`CONCURRENTLY_BUILT_INDEXES`]), so that the migration builds it again. Runs under
/// [`lock_migrations`]: no other run of ours can be building the index meanwhile.
async fn drop_failed_concurrent_builds(conn: &mut PgConnection) -> Result<()> {
    let invalid: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE NOT i.indisvalid AND c.relname = ANY($1) AND pg_table_is_visible(c.oid)",
    )
    .bind(CONCURRENTLY_BUILT_INDEXES)
    .fetch_all(&mut *conn)
    .await?;
    for name in invalid {
        tracing::warn!(index = %name, "dropping an index whose concurrent build failed, to build it again");
        // NB: the name comes from CONCURRENTLY_BUILT_INDEXES, a constant; quoted all the same.
        let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS \"{}\"", name.replace('"', "\"\""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Applied migration versions, ascending (none before the first migration).
async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i64>> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(conn)
        .await?)
}

/// The compatibility floor (migration 0005): the oldest migration a binary must embed to run on this
/// schema. A contracting migration raises it; an additive one leaves it.
async fn check_floor(conn: &mut PgConnection, binary_version: i64) -> Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('schema_compatibility') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !exists {
        return Ok(());
    }
    let floor: Option<(i64, String)> =
        sqlx::query_as("SELECT min_binary_version, reason FROM schema_compatibility").fetch_optional(conn).await?;
    match floor {
        Some((floor, reason)) => compatible(binary_version, floor, &reason),
        None => Ok(()),
    }
}

/// Whether a binary whose newest migration is `binary_version` may run on a schema whose floor is
/// `floor`, and if not, an error that says why and what to do.
fn compatible(binary_version: i64, floor: i64, reason: &str) -> Result<()> {
    if binary_version >= floor {
        return Ok(());
    }
    Err(crate::Error::Invalid {
        code: "SCHEMA_INCOMPATIBLE",
        message: format!(
            "this binary knows migrations up to {binary_version}, but a newer release changed the schema \
             incompatibly (it needs migration {floor} or newer: {reason}); deploy an image of that release \
             or newer instead of rolling back"
        ),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_runs_at_or_above_the_floor_and_is_told_why_below_it() {
        assert!(compatible(4, 4, "").is_ok());
        assert!(compatible(9, 4, "").is_ok());
        let err = compatible(4, 7, "migration 0007 drops a column").unwrap_err().to_string();
        assert!(
            err.contains("up to 4") && err.contains("needs migration 7") && err.contains("drops a column"),
            "{err}"
        );
    }

    #[test]
    fn the_report_says_when_a_newer_release_migrated_the_schema() {
        let report = MigrationReport { applied: vec![], unknown: vec![6], schema_version: 6, binary_version: 5 };
        let said = report.to_string();
        assert!(said.contains("no migration to apply") && said.contains("newer than this binary"), "{said}");
        let report = MigrationReport { applied: vec![4, 5], unknown: vec![], schema_version: 5, binary_version: 5 };
        assert_eq!(report.to_string(), "applied migrations [4, 5]; schema version 5");
    }
}
