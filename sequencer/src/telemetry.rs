//! Logging: `tracing` with `RUST_LOG` filtering, plain text or JSON (`LOG_FORMAT=json`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs a subscriber for command-line tools: logs go to stderr, so stdout carries only the
/// command's answer (e.g. the address `deploy-registry` prints).
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).try_init();
}

/// Installs the global subscriber (once; later calls are ignored, which suits tests).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
