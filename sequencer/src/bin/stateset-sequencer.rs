//! The sequencer server. Configuration comes from the environment (see `sequencer::config`).

use std::process::ExitCode;

// NB: the ingest path allocates and frees many small buffers per request (JSON, envelopes, rows);
// mimalloc does that for a fraction of glibc malloc's CPU, which profiling showed at ~15% of the
// server's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match sequencer::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            sequencer::telemetry::add_env_secrets();
            eprintln!("stateset-sequencer: configuration error: {}", sequencer::telemetry::redact(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    sequencer::telemetry::init(config.log_format);
    // The sudo stand-in's directory, if one was made: dropped (deleted) after the server, and with it
    // the private PostgreSQL, has stopped.
    let _sudo_shim = match config.database_url {
        Some(_) => None,
        None => match sequencer::private_postgres::prepare_environment() {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("stateset-sequencer: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // NB: Tokio reads `TOKIO_WORKER_THREADS` itself, unless a count is set here.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        runtime.worker_threads(sequencer::compute::async_workers());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stateset-sequencer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sequencer::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stateset-sequencer failed");
            eprintln!("stateset-sequencer: {}", sequencer::telemetry::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
