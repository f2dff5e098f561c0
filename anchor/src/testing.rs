//! A real local chain for tests: runs `anvil` as a child process.
//!
//! Finding the binary, in order: `ANVIL_BIN`; the native binary that `scripts/install-tools` puts
//! under `$STATESET_TOOLS_DIR/node_modules/@foundry-rs/anvil-<os>-<arch>/bin/anvil` (default tools
//! dir `~/.cache/stateset-sequencer/tools`); the npm wrapper `$STATESET_TOOLS_DIR/node_modules/.bin/anvil`;
//! `anvil` on `PATH`. The native binary is preferred because the npm wrapper is a node process that
//! spawns it, and a wrapper killed hard would leave the node running.
//!
//! Readiness is anvil's own `Listening on <addr>` line (waited for with a deadline, never a fixed
//! sleep). The chain state lives in a temporary file (`--state`) that anvil writes when it is
//! stopped, so [`Anvil::restart`] brings back the same chain on the same port. Dropping an [`Anvil`]
//! stops the process and deletes the state.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long anvil may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long anvil may take to write its state and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of anvil's output kept for failure messages.
const LOG_LINES: usize = 40;

/// A running (or stopped) anvil node on 127.0.0.1.
pub struct Anvil {
    /// `http://127.0.0.1:<port>`.
    pub rpc_url: String,
    /// The port anvil listens on; kept across [`Anvil::restart`].
    pub port: u16,
    binary: PathBuf,
    state_dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Anvil {
    /// Private key of anvil's first default account (the deployer and owner in tests).
    pub const DEV_PRIVATE_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    /// Address of anvil's first default account.
    pub const DEV_ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    /// Private key of anvil's second default account (a funded account that does not own the registry).
    pub const SECOND_PRIVATE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    /// Chain id anvil serves by default.
    pub const CHAIN_ID: u64 = 31337;

    /// Starts anvil on a port the OS picks. Panics (this is a test harness) if anvil cannot be found
    /// or does not start.
    pub fn start() -> Self {
        Self::launch(0)
    }

    /// Starts anvil on `port`.
    pub fn start_on_port(port: u16) -> Self {
        Self::launch(port)
    }

    /// Stops anvil (SIGTERM, so it writes its state; SIGKILL if it has not exited after 15 s). The
    /// port then refuses connections until [`Anvil::restart`]. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions; pid is our own unreaped child,
                // so it cannot have been recycled for another process.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    /// Stops anvil if it runs and starts it again on the same port with the chain state it had
    /// (blocks, contracts, balances, nonces).
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = spawn(&self.binary, self.port, &self.state_dir, &self.log);
        assert_eq!(port, self.port, "anvil came back on another port");
        self.child = Some(child);
    }

    /// Whether the anvil process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The anvil binary the harness runs (see the module doc for the search order).
    pub fn binary() -> PathBuf {
        if let Some(bin) = std::env::var_os("ANVIL_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "ANVIL_BIN={} is not a file", bin.display());
            return bin;
        }
        let tools = tools_dir();
        let native = native_package().map(|pkg| tools.join("node_modules/@foundry-rs").join(pkg).join("bin/anvil"));
        let wrapper = tools.join("node_modules/.bin/anvil");
        if let Some(bin) = native.iter().chain([&wrapper]).find(|p| p.is_file()) {
            return bin.clone();
        }
        if let Some(bin) = find_on_path("anvil") {
            return bin;
        }
        panic!("anvil not found: run scripts/install-tools (installs it under {}), or set ANVIL_BIN", tools.display());
    }

    fn launch(port: u16) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let binary = Self::binary();
        let state_dir = std::env::temp_dir().join(format!(
            "stateset-anvil-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&state_dir)
            .unwrap_or_else(|e| panic!("cannot create anvil state dir {}: {e}", state_dir.display()));
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (child, port) = spawn(&binary, port, &state_dir, &log);
        Self { rpc_url: format!("http://127.0.0.1:{port}"), port, binary, state_dir, child: Some(child), log }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

impl std::fmt::Debug for Anvil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anvil")
            .field("rpc_url", &self.rpc_url)
            .field("binary", &self.binary)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// Starts anvil and waits for its `Listening on 127.0.0.1:<port>` line; returns the actual port.
fn spawn(binary: &Path, port: u16, state_dir: &Path, log: &Arc<Mutex<VecDeque<String>>>) -> (Child, u16) {
    let mut child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--state"])
        .arg(state_dir.join("state.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));

    // Both streams are drained for the whole life of the process: anvil logs every request, and a
    // full pipe would block it.
    let (lines_tx, lines_rx) = mpsc::channel();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let (tx, log) = (lines_tx.clone(), Arc::clone(log));
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line.clone());
                }
                let _ = tx.send(line);
            }
        });
    }
    drop(lines_tx);

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(port) = line.strip_prefix("Listening on ").and_then(|addr| addr.trim().rsplit(':').next()) {
                    let port: u16 = port.parse().unwrap_or_else(|_| panic!("unexpected anvil line {line:?}"));
                    return (child, port);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("anvil did not listen within {START_TIMEOUT:?}; last output:\n{}", tail(log));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!("anvil exited before listening ({status:?}); last output:\n{}", tail(log));
            }
        }
    }
}

fn tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATESET_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache/stateset-sequencer/tools")
}

/// The @foundry-rs platform package holding the native anvil for this machine.
fn native_package() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("anvil-linux-amd64"),
        ("linux", "aarch64") => Some("anvil-linux-arm64"),
        ("macos", "x86_64") => Some("anvil-darwin-amd64"),
        ("macos", "aarch64") => Some("anvil-darwin-arm64"),
        _ => None,
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}
