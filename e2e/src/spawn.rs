//! Starting a `stateset-sequencer` for a benchmark: the binary next to the running one (built first
//! when run by cargo), on a throw-away database of a local PostgreSQL.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use uuid::Uuid;

/// The sequencer a benchmark talks to: a running one (`--url`, `--api-key`) or one it starts
/// (`--spawn`) on a throw-away database. Every benchmark flattens it into its own arguments, so the
/// flags mean the same in each.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Base URL of a running sequencer (ignored with --spawn).
    #[arg(long, env = "SEQUENCER_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin API key of that sequencer (it registers the agents' keys and ingests).
    #[arg(long, env = "SEQUENCER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Start a stateset-sequencer from this target directory (building it first when run by cargo)
    /// on a throw-away database, and stop it afterwards.
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: the sequencer binary to start instead of the one next to this program.
    #[arg(long)]
    pub sequencer_bin: Option<PathBuf>,
    /// With --spawn: do not run `cargo build` for the sequencer first.
    #[arg(long)]
    pub no_build: bool,
    /// With --spawn: the server where the throw-away database is created and dropped.
    #[arg(long, env = "LOADGEN_ADMIN_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub admin_database_url: String,
}

impl Target {
    /// `--url` without a trailing slash.
    pub fn base_url(&self) -> String {
        self.url.trim_end_matches('/').to_owned()
    }

    /// `--api-key`, which a running sequencer needs.
    pub fn api_key(&self) -> Result<String> {
        self.api_key.clone().ok_or_else(|| anyhow!("--api-key (or SEQUENCER_API_KEY) is required"))
    }

    /// The sequencer binary to spawn ([`sequencer_binary`] with `--sequencer-bin` and `--no-build`).
    pub fn binary(&self) -> Result<PathBuf> {
        sequencer_binary(self.sequencer_bin.as_deref(), self.no_build)
    }
}

/// Finds (and, under cargo, builds) the sequencer binary that sits next to this one.
pub fn sequencer_binary(override_bin: Option<&Path>, no_build: bool) -> Result<PathBuf> {
    if let Some(bin) = override_bin {
        return Ok(bin.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    // A test executable lives in target/<profile>/deps; the binaries one level up.
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().ok_or_else(|| anyhow!("no directory above {}", dir.display()))?;
    }
    let bin = dir.join("stateset-sequencer");
    if let (Some(cargo), false) = (std::env::var_os("CARGO"), no_build) {
        let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug").to_owned();
        let target = dir.parent().ok_or_else(|| anyhow!("no target directory above {}", dir.display()))?;
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "stateset-sequencer", "--bin", "stateset-sequencer"]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        cmd.arg("--manifest-path").arg(manifest).env("CARGO_TARGET_DIR", target);
        eprintln!("e2e: building stateset-sequencer ({profile}) in {}", target.display());
        let status = cmd.stdout(Stdio::null()).status().context("running cargo build")?;
        ensure!(status.success(), "cargo build of stateset-sequencer failed");
    }
    ensure!(
        bin.is_file(),
        "{} does not exist: build it with `cargo build --release -p stateset-sequencer` or pass --sequencer-bin",
        bin.display()
    );
    Ok(bin)
}

/// A database created for this run, dropped afterwards.
pub struct ThrowawayDb {
    admin_url: String,
    name: String,
    pub url: String,
}

impl ThrowawayDb {
    pub async fn create(admin_url: &str) -> Result<Self> {
        use sqlx::Connection;
        let name = format!("loadgen_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url} (--admin-database-url) to create a database"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&mut conn).await?;
        eprintln!("e2e: created database {name} (synchronous_commit = {synchronous_commit})");
        let _ = conn.close().await;
        let (base, _) = admin_url.rsplit_once('/').ok_or_else(|| anyhow!("{admin_url} has no database path"))?;
        Ok(ThrowawayDb { admin_url: admin_url.to_owned(), url: format!("{base}/{name}"), name })
    }

    pub async fn drop_db(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                eprintln!("e2e: could not drop database {}: {e}", self.name);
            }
        }
    }
}

/// Runs `f` against a sequencer started from `target`'s binary on `database_url`, or on a throw-away
/// database (dropped afterwards) when that is `None`, and stops the sequencer when `f` returns. `f` gets
/// the sequencer, its binary and its database URL.
pub fn with_spawned<T>(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    database_url: Option<&str>,
    admin_key: &str,
    unsigned: bool,
    f: impl FnOnce(&SpawnedSequencer, &Path, &str) -> Result<T>,
) -> Result<T> {
    let bin = target.binary()?;
    let (url, throwaway) = match database_url {
        Some(url) => (url.to_owned(), None),
        None => {
            let db = runtime.block_on(ThrowawayDb::create(&target.admin_database_url))?;
            (db.url.clone(), Some(db))
        }
    };
    let result = (|| {
        let server = SpawnedSequencer::start(&bin, &url, admin_key, unsigned)?;
        let result = f(&server, &bin, &url);
        server.stop().context("stopping the sequencer")?;
        result
    })();
    if let Some(db) = throwaway {
        runtime.block_on(db.drop_db());
    }
    result
}

/// A `stateset-sequencer` child process.
pub struct SpawnedSequencer {
    pub child: Child,
    pub base_url: String,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl SpawnedSequencer {
    pub fn start(bin: &Path, database_url: &str, admin_key: &str, unsigned: bool) -> Result<Self> {
        Self::start_with_env(bin, database_url, admin_key, unsigned, &[])
    }

    /// As [`SpawnedSequencer::start`], with more environment variables (anchoring, worker timings).
    pub fn start_with_env(
        bin: &Path,
        database_url: &str,
        admin_key: &str,
        unsigned: bool,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().copied());
        cmd.env("DATABASE_URL", database_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("BOOTSTRAP_ADMIN_API_KEY", admin_key)
            .env("DB_MIGRATE_ON_STARTUP", "true")
            .env("LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        if unsigned {
            cmd.env_remove("VES_SEQUENCER_SIGNING_KEY");
        } else if std::env::var_os("VES_SEQUENCER_SIGNING_KEY").is_none() {
            cmd.env("VES_SEQUENCER_SIGNING_KEY", hex::encode(rand::random::<[u8; 32]>()));
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let tail = tail.clone();
            std::thread::spawn(move || {
                let mut announced = false;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if !announced && line.contains("listening on http://") {
                        announced = true;
                        let _ = tx.send(line.clone());
                    }
                    let mut t = tail.lock().expect("log tail");
                    if t.len() == 50 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        let mut server = SpawnedSequencer { child, base_url: String::new(), tail };
        // The reader thread sends the line, or drops the sender when the process exits first.
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(e) => {
                let _ = server.child.kill();
                bail!("the sequencer did not report that it listens ({e}); its last log lines:\n{}", server.log_tail());
            }
        };
        let i = line.find("listening on http://").expect("matched");
        server.base_url =
            line[i + "listening on ".len()..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
        Ok(server)
    }

    pub fn log_tail(&self) -> String {
        self.tail.lock().expect("log tail").iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then waits for the drain (SIGKILL after 30 s).
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "the sequencer exited with {status}; last log lines:\n{}", self.log_tail());
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the sequencer did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SpawnedSequencer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
