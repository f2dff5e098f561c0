//! Operator's command line: migrations and administrative actions straight against the database
//! (`DATABASE_URL`), so they work when the HTTP service does not.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sequencer::{admin, backup};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "stateset-sequencer-admin", version, about = "Administer a StateSet sequencer database")]
struct Cli {
    /// PostgreSQL URL of the sequencer's database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://localhost/stateset_sequencer",
        hide_env_values = true
    )]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every pending database migration (idempotent). Waits for the database to accept
    /// connections first; over a schema a newer release migrated compatibly, applies nothing.
    Migrate {
        /// Longest wait, in seconds, for the database to accept connections.
        #[arg(long, env = "DB_CONNECT_WAIT_SECS", default_value_t = 60)]
        wait_secs: u64,
    },
    /// Check streams for gaps, duplicates, bad hashes or signatures and commitments that do not match
    /// their events. Exits 1 when anything is found.
    Verify {
        #[arg(long)]
        tenant_id: Option<Uuid>,
        #[arg(long)]
        store_id: Option<Uuid>,
        /// Check sequencer signatures against this receipt public key (hex; repeat for keys before and
        /// after a rotation) instead of the keys the database recorded.
        #[arg(long = "receipt-key", value_name = "HEX", value_parser = sequencer::verify::parse_receipt_key)]
        receipt_keys: Vec<ed25519_dalek::VerifyingKey>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect, replay and delete dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Pause or resume ingestion of one stream.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Correct commitments.
    #[command(subcommand)]
    Commitments(CommitmentsCommand),
    /// The runbook's database maintenance.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Manage API keys.
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
    /// Write a stream's (or every stream's) events as NDJSON, one event per line, from a sequence
    /// number on (to resume an export). Streams; memory stays constant.
    ExportEvents {
        #[arg(long)]
        tenant_id: Option<Uuid>,
        #[arg(long)]
        store_id: Option<Uuid>,
        /// First sequence number to write.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// File to write (default: standard output).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// At backup time: save every stream's signed checkpoint and commitment ranges to a file kept
    /// outside the database (the evidence `verify-backup` checks a restore against).
    SaveCheckpoints {
        #[arg(long)]
        output: std::path::PathBuf,
        /// The sequencer's receipt and checkpoint signing key (never printed).
        #[arg(long, env = "VES_SEQUENCER_SIGNING_KEY", hide_env_values = true)]
        signing_key: String,
        #[arg(long, env = "VES_CHECKPOINT_ORIGIN", default_value = "stateset-sequencer")]
        origin: String,
    },
    /// Check a restored database (or an export, with --export) against saved checkpoints, verified
    /// with the sequencer's verifier key and, when anchoring is configured (L2_RPC_URL,
    /// SET_REGISTRY_ADDRESS, SEQUENCER_PRIVATE_KEY), the roots anchored on the L2. Exits 1 on any
    /// disagreement, naming the stream and range.
    VerifyBackup {
        /// The file `save-checkpoints` wrote.
        #[arg(long)]
        checkpoints: std::path::PathBuf,
        /// The signed-note verifier key (`GET /api/v1/ves/sequencer` -> `checkpoint_verifier_key`);
        /// default: derived from VES_SEQUENCER_SIGNING_KEY and VES_CHECKPOINT_ORIGIN.
        #[arg(long, env = "VES_CHECKPOINT_VERIFIER_KEY")]
        verifier_key: Option<String>,
        /// Verify this export instead of the database.
        #[arg(long)]
        export: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Deploy the StateSetAnchor registry contract and print its address.
    DeployRegistry {
        /// JSON-RPC URL of the L2 (its path and query often hold a provider key: never printed).
        #[arg(long, env = "L2_RPC_URL", hide_env_values = true)]
        rpc_url: String,
        /// Hex private key of the deploying account (never printed).
        #[arg(long, env = "SEQUENCER_PRIVATE_KEY", hide_env_values = true)]
        private_key: String,
        /// Let any account anchor (default: only the deployer).
        #[arg(long)]
        permissionless: bool,
    },
    /// Verify a transparency-log proof bundle (C2SP tlog-proof) offline, with only keys: exits 0 when
    /// the log signed the checkpoint, enough witnesses cosigned it and the entry is included.
    VerifyBundle {
        /// The bundle file (`-` for standard input).
        file: String,
        /// The log's signed-note verifier key (`GET /api/v1/ves/sequencer`: `checkpoint_verifier_key`).
        #[arg(long = "log-key", required = true)]
        log_keys: Vec<String>,
        /// A witness's cosignature verifier key (repeatable).
        #[arg(long = "witness-key")]
        witness_keys: Vec<String>,
        /// Witness cosignatures required.
        #[arg(long, default_value_t = 0)]
        min_witnesses: usize,
        /// The origin the checkpoint must have (`<VES_CHECKPOINT_ORIGIN>/tlog/<tenant>/<store>`).
        #[arg(long)]
        origin: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// List entries, newest first.
    List {
        #[arg(long)]
        tenant_id: Option<Uuid>,
        #[arg(long)]
        store_id: Option<Uuid>,
        #[arg(long)]
        reason: Option<String>,
        /// pending or resolved.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Re-run the full ingest checks on entries (by id, or every pending one matching the filters).
    Retry {
        ids: Vec<Uuid>,
        #[arg(long)]
        tenant_id: Option<Uuid>,
        #[arg(long)]
        store_id: Option<Uuid>,
        #[arg(long)]
        reason: Option<String>,
        /// Retry every pending entry matching the filters (needed when no ids are given).
        #[arg(long)]
        all: bool,
    },
    /// Delete entries by id.
    Delete { ids: Vec<Uuid> },
    /// Delete every entry matching the filters; by default the resolved ones (after a replay).
    Purge {
        /// resolved or pending.
        #[arg(long, default_value = "resolved")]
        status: String,
        #[arg(long)]
        tenant_id: Option<Uuid>,
        #[arg(long)]
        store_id: Option<Uuid>,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum CommitmentsCommand {
    /// Create a correcting commitment for a bad one, which is marked superseded and kept.
    Correct {
        batch_id: Uuid,
        /// Why the commitment is wrong.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum MaintenanceCommand {
    /// VACUUM ANALYZE of the runbook's tables (events, ves_events, commitments) or of the named ones.
    Vacuum {
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
    },
    /// Terminate connections to the database idle longer than the given time.
    TerminateIdleConnections {
        #[arg(long, default_value_t = 600)]
        idle_longer_than_seconds: u32,
    },
}

#[derive(Subcommand)]
enum StreamsCommand {
    /// Refuse new events for the stream (503) until it is resumed.
    Pause {
        #[arg(long)]
        tenant_id: Uuid,
        #[arg(long)]
        store_id: Uuid,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Accept events for the stream again.
    Resume {
        #[arg(long)]
        tenant_id: Uuid,
        #[arg(long)]
        store_id: Uuid,
    },
    /// List streams with their heads.
    List {
        #[arg(long)]
        tenant_id: Option<Uuid>,
    },
}

#[derive(Subcommand)]
enum ApiKeysCommand {
    /// Mint a key and print it once.
    Create {
        /// Tenant the key belongs to (the nil UUID for a bootstrap admin).
        #[arg(long)]
        tenant_id: Uuid,
        /// Comma-separated: read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        permissions: Vec<String>,
        /// Limit the key to these stores (default: all of the tenant's).
        #[arg(long, value_delimiter = ',')]
        store_ids: Vec<Uuid>,
        /// Requests per minute for this key.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant_id: Option<Uuid>,
    },
    /// Revoke a key by id.
    Revoke { id: Uuid },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sequencer::telemetry::init_cli();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Command::VerifyBundle { file, log_keys, witness_keys, min_witnesses, origin } = &cli.command {
        return verify_bundle(file, log_keys, witness_keys, *min_witnesses, origin.as_deref());
    }
    let result = runtime.block_on(async {
        if let Command::DeployRegistry { rpc_url, private_key, permissionless } = &cli.command {
            return admin::deploy_registry(rpc_url, private_key, *permissionless).await;
        }
        if let Command::VerifyBackup { checkpoints, verifier_key, export, json } = &cli.command {
            let verifier_key = match verifier_key {
                Some(k) => k.clone(),
                None => {
                    let seed = std::env::var("VES_SEQUENCER_SIGNING_KEY").map_err(|_| {
                        anyhow::anyhow!(
                            "give --verifier-key (GET /api/v1/ves/sequencer) or set VES_SEQUENCER_SIGNING_KEY"
                        )
                    })?;
                    let key = sequencer::config::parse_signing_key(&seed)
                        .map_err(|e| anyhow::anyhow!("VES_SEQUENCER_SIGNING_KEY {e}"))?;
                    let origin =
                        std::env::var("VES_CHECKPOINT_ORIGIN").unwrap_or_else(|_| "stateset-sequencer".to_owned());
                    sequencer::checkpoint::CheckpointSigner::new(&origin, key).verifier_key().to_owned()
                }
            };
            let anchor = match sequencer::config::Config::from_env()?.anchor {
                Some(settings) => Some(anchor::AnchorClient::new(settings)?),
                None => None,
            };
            let source = match export {
                Some(path) => backup::cli::open_export(path)?,
                None => backup::BackupSource::Database(admin::connect(&cli.database_url).await?),
            };
            return backup::cli::verify_backup(source, checkpoints, &verifier_key, anchor.as_ref(), *json).await;
        }
        if let Command::Migrate { wait_secs } = cli.command {
            let store = admin::connect_waiting(&cli.database_url, std::time::Duration::from_secs(wait_secs)).await?;
            return admin::migrate(&store).await;
        }
        let store = admin::connect(&cli.database_url).await?;
        match cli.command {
            Command::Migrate { .. } => unreachable!("handled above"),
            Command::Verify { tenant_id, store_id, receipt_keys, json } => {
                let trust = sequencer::verify::ReceiptKeyTrust::pinned(receipt_keys);
                admin::verify(&store, tenant_id, store_id, &trust, json).await
            }
            Command::DeadLetters(DeadLettersCommand::List { tenant_id, store_id, reason, status, limit }) => {
                admin::list_dead_letters(&store, tenant_id, store_id, reason, status, limit).await
            }
            Command::DeadLetters(DeadLettersCommand::Retry { ids, tenant_id, store_id, reason, all }) => {
                admin::retry_dead_letters(&cli.database_url, ids, tenant_id, store_id, reason, all).await
            }
            Command::DeadLetters(DeadLettersCommand::Delete { ids }) => admin::delete_dead_letters(&store, ids).await,
            Command::DeadLetters(DeadLettersCommand::Purge { status, tenant_id, store_id, reason }) => {
                admin::purge_dead_letters(&store, status, tenant_id, store_id, reason).await
            }
            Command::Commitments(CommitmentsCommand::Correct { batch_id, reason }) => {
                admin::correct_commitment(&store, batch_id, &reason).await
            }
            Command::Maintenance(MaintenanceCommand::Vacuum { tables }) => admin::vacuum(&store, tables).await,
            Command::Maintenance(MaintenanceCommand::TerminateIdleConnections { idle_longer_than_seconds }) => {
                admin::terminate_idle_connections(&store, idle_longer_than_seconds).await
            }
            Command::Streams(StreamsCommand::Pause { tenant_id, store_id, reason }) => {
                admin::set_paused(&store, tenant_id, store_id, true, reason).await
            }
            Command::Streams(StreamsCommand::Resume { tenant_id, store_id }) => {
                admin::set_paused(&store, tenant_id, store_id, false, None).await
            }
            Command::Streams(StreamsCommand::List { tenant_id }) => admin::list_streams(&store, tenant_id).await,
            Command::ApiKeys(ApiKeysCommand::Create { tenant_id, permissions, store_ids, rate_limit }) => {
                admin::create_api_key(&store, tenant_id, &permissions, store_ids, rate_limit).await
            }
            Command::ApiKeys(ApiKeysCommand::List { tenant_id }) => admin::list_api_keys(&store, tenant_id).await,
            Command::ApiKeys(ApiKeysCommand::Revoke { id }) => admin::revoke_api_key(&store, id).await,
            Command::ExportEvents { tenant_id, store_id, from, output } => {
                backup::cli::export_events(&store, tenant_id, store_id, from, output.as_deref()).await
            }
            Command::SaveCheckpoints { output, signing_key, origin } => {
                let key = sequencer::config::parse_signing_key(&signing_key)
                    .map_err(|e| anyhow::anyhow!("VES_SEQUENCER_SIGNING_KEY {e}"))?;
                let signer = sequencer::checkpoint::CheckpointSigner::new(&origin, key);
                backup::cli::save_checkpoints(&store, &signer, &output).await
            }
            Command::DeployRegistry { .. } | Command::VerifyBackup { .. } | Command::VerifyBundle { .. } => {
                unreachable!("handled above")
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stateset-sequencer-admin: {}", sequencer::telemetry::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn verify_bundle(
    file: &str,
    log_keys: &[String],
    witness_keys: &[String],
    min: usize,
    origin: Option<&str>,
) -> ExitCode {
    let text = if file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("stateset-sequencer-admin: cannot read {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match sequencer::tlog::bundle::verify(&text, log_keys, witness_keys, min) {
        Ok(v) if origin.is_some_and(|o| o != v.origin) => {
            eprintln!("INVALID: the checkpoint's origin is {:?}, not {:?}", v.origin, origin.unwrap_or_default());
            ExitCode::FAILURE
        }
        Ok(v) => {
            println!(
                "OK: entry {} (sequence number {}) is in {} at tree size {}, cosigned by {} witness(es){}",
                v.index,
                v.index + 1,
                v.origin,
                v.tree_size,
                v.witnesses.len(),
                if v.witnesses.is_empty() { String::new() } else { format!(": {}", v.witnesses.join(", ")) }
            );
            println!("{}", String::from_utf8_lossy(&v.entry));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("INVALID: {e}");
            ExitCode::FAILURE
        }
    }
}
