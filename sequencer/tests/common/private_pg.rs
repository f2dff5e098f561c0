//! A PostgreSQL server of one test only, in a temporary directory, on a free port, run as the
//! `postgres` OS user when the test runs as root (through util-linux's `setpriv`); stopped and deleted
//! on drop. For tests that need a server of their own (TLS, start-up timing, streaming replication) so
//! the shared one is never disturbed.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use uuid::Uuid;

pub struct PrivatePg {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePg {
    /// The `postgres` options a primary needs so that [`PrivatePg::standby_of`] can stream from it.
    /// (`initdb --auth=trust` already lets 127.0.0.1 connect for replication: `host replication all
    /// 127.0.0.1/32 trust` is in its default `pg_hba.conf`.)
    pub const PRIMARY: &str = "-c wal_level=replica -c max_wal_senders=4";

    /// An empty directory and a free port; no data directory yet.
    fn empty() -> Self {
        let bin = sequencer::private_postgres::find_server_binaries().expect(sequencer::private_postgres::INSTALL_HINT);
        let dir = std::env::temp_dir().join(format!("seq-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: getuid has no preconditions.
        let as_postgres = unsafe { libc::getuid() } == 0;
        // A free port: bound and released at once; only this test starts a server on it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = PrivatePg { dir, port, bin, as_postgres };
        pg.chown(&pg.dir);
        pg
    }

    /// `initdb` (trust authentication); the server is not started.
    pub fn init() -> Self {
        let pg = Self::empty();
        let out = pg.run("initdb", &["-D", &pg.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        pg
    }

    /// A streaming standby of `primary` (running, started with [`PrivatePg::PRIMARY`]): a base backup
    /// taken with `pg_basebackup -R`, which writes `standby.signal` and the `primary_conninfo` to
    /// stream from; not started. Hot standby (read-only queries) is PostgreSQL's default.
    pub fn standby_of(primary: &PrivatePg) -> Self {
        let pg = Self::empty();
        let port = primary.port.to_string();
        let out = pg.run(
            "pg_basebackup",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", &pg.data(), "-R", "--checkpoint=fast"],
        );
        assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        pg
    }

    pub fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the server with extra `postgres` options; returns once it accepts connections.
    pub fn start(&self, extra: &str) {
        let options =
            format!("-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off {extra}", self.port, self.dir.display());
        let log = self.dir.join("postgres.log").display().to_string();
        let out = self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "-t", "60", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown: sessions are ended, as when a replica is taken down).
    pub fn stop(&self) {
        self.stop_with("fast");
    }

    /// Stops the server in a `pg_ctl` shutdown mode (`smart`, `fast`, `immediate`), waiting until it is
    /// down.
    pub fn stop_with(&self, mode: &str) {
        let out = self.run("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"]);
        assert!(out.status.success(), "pg_ctl stop -m {mode}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Hands a path to the server's user.
    pub fn chown(&self, path: &Path) {
        if self.as_postgres {
            let status = Command::new("chown").arg("postgres:postgres").arg(path).status().expect("chown");
            assert!(status.success(), "chown {} to postgres", path.display());
        }
    }

    /// Writes a file only the server's user may read (PostgreSQL refuses a world-readable key).
    pub fn write_private(&self, path: &Path, contents: &str) {
        std::fs::write(path, contents).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.chown(path);
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(&self.dir).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// URL of the `postgres` database, with `query` appended (e.g. `?sslmode=require`).
    pub fn url(&self, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres{query}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "-t", "60", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
