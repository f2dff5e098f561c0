//! Logging: structured `tracing` output, JSON when `LOG_FORMAT=json`, filtered by `RUST_LOG`.
//!
//! Field names are stable (`sequencer`, `action`, `namespace`, `reason`, `error`). Secret values
//! are never logged: the only secret the operator reads (the admin API key) is wrapped in a type
//! whose `Debug` redacts it.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Log line format of the operator itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default filter (`info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => {
            registry.with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false)).init()
        }
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
}
