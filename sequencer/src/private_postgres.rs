//! The default set-up's database: a private, throw-away PostgreSQL started from the machine's own
//! server binaries (through the `pgtemp` crate) when `DATABASE_URL` is not set. Its data lives in a
//! temporary directory and is gone when the sequencer stops.

use std::path::{Path, PathBuf};

/// A running private PostgreSQL; stopped and deleted on drop.
pub struct PrivatePostgres {
    db: pgtemp::PgTempDB,
}

/// Where the PostgreSQL server binaries (`initdb`, `postgres`) are, if anywhere.
pub fn find_server_binaries() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // NB: resolve symlinks so that createdb and postgres come from the same installation.
                if let Some(real) = std::fs::canonicalize(&initdb).ok().and_then(|p| p.parent().map(Path::to_path_buf))
                    && has_initdb(&real)
                {
                    return Some(real);
                }
            }
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| has_initdb(p))
        .collect();
    // Highest major version first.
    candidates.sort_by_key(|p| {
        std::cmp::Reverse(
            p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()),
        )
    });
    candidates.into_iter().next().or_else(|| {
        ["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"]
            .iter()
            .map(PathBuf::from)
            .find(|p| has_initdb(p))
    })
}

/// What to tell a user who has no PostgreSQL server binaries.
pub const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres) were not found on PATH or in \
     /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`; macOS: \
     `brew install postgresql`) or point the sequencer at an existing database with DATABASE_URL.";

fn running_as_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Prepares the process environment for `pgtemp`. Call before any thread is started.
///
/// PostgreSQL refuses to run as root, so when we are root `pgtemp` runs its commands through
/// `sudo -u postgres`. Machines without sudo get a stand-in on PATH that does the same with
/// util-linux's `setpriv`, in a temporary directory that lives as long as the returned guard: keep
/// it until the private PostgreSQL has stopped.
pub fn prepare_environment() -> Result<Option<tempfile::TempDir>, String> {
    if !running_as_root() || on_path("sudo") {
        return Ok(None);
    }
    if !on_path("setpriv") {
        return Err("running as root without sudo or setpriv: PostgreSQL cannot be started as another user; \
                    install sudo or set DATABASE_URL"
            .into());
    }
    // NB: removed when the guard drops; before, every start as root without sudo left its directory
    // behind in the temporary directory.
    let guard = tempfile::Builder::new()
        .prefix("stateset-sequencer-sudo-")
        .tempdir()
        .map_err(|e| format!("cannot create a directory in {}: {e}", std::env::temp_dir().display()))?;
    let dir = guard.path().to_path_buf();
    let shim = dir.join("sudo");
    std::fs::write(
        &shim,
        "#!/bin/sh\n# Stand-in for `sudo -u USER COMMAND...` (used to run PostgreSQL as its own user).\n\
         [ \"$1\" = \"-u\" ] || { echo \"sudo stand-in: only -u USER is supported\" >&2; exit 1; }\n\
         user=\"$2\"; shift 2\nexec setpriv --reuid=\"$user\" --regid=\"$user\" --init-groups \"$@\"\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", shim.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir];
    dirs.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs).map_err(|e| e.to_string())?;
    // SAFETY: called from `main` before the async runtime or any other thread exists.
    unsafe { std::env::set_var("PATH", joined) };
    Ok(Some(guard))
}

impl PrivatePostgres {
    /// Starts a server (blocking: initdb takes a few seconds).
    pub fn start() -> Result<Self, String> {
        let bin = find_server_binaries().ok_or_else(|| INSTALL_HINT.to_string())?;
        let builder = pgtemp::PgTempDB::builder().with_bin_path(&bin).with_dbname("stateset_sequencer");
        // NB: pgtemp panics on failure; turn that into an error with its message.
        std::panic::catch_unwind(move || builder.start()).map(|db| PrivatePostgres { db }).map_err(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            format!("could not start a private PostgreSQL from {}: {msg}", bin.display())
        })
    }

    /// Connection URL of the private database.
    pub fn url(&self) -> String {
        self.db.connection_uri()
    }
}
