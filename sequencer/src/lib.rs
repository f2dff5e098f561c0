//! # StateSet sequencer
//!
//! A verifiable event sequencer. Agents sign events with Ed25519 (VES signing versions 1 and 2, byte
//! for byte as the existing StateSet Sequencer defines them); the sequencer checks each signature
//! against the agent's registered key and gives every accepted event the next number of its
//! (tenant_id, store_id) stream.
//!
//! What it promises:
//! - **Gap-free**: per stream, accepted events are numbered 1, 2, 3, ... with no gap and no
//!   duplicate, across any number of replicas on one database and across crashes. A receipt is only
//!   returned once its event is committed; an event without a receipt is stored whole or not at all.
//! - **Append-only**: the log is never updated or deleted (the database refuses it too).
//! - **Idempotent**: replaying an identical event returns its original receipt.
//! - **Nothing refused is lost**: events refused for a cause that can be fixed (unknown, revoked or
//!   expired key, bad signature, version conflict) are kept in the dead-letter queue for replay.

pub mod admin;
pub mod anchoring;
pub mod api;
pub mod auth;
pub mod backup;
pub mod checkpoint;
pub mod commitments;
pub mod compute;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod fuzzing;
pub mod ingest;
pub mod json_out;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod private_postgres;
pub mod ratelimit;
pub mod reads;
pub mod reason;
pub mod sequencing;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod tlog;
pub mod validate;
pub mod verify;
pub mod worker;

pub use error::{Error, Result};

/// The crate version, reported by `/health` and the admin status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
