//! Operator's command line: migrations and administrative actions straight against the database.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sequencer::admin;

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
    /// Apply every pending database migration (idempotent).
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
}

#[derive(Subcommand)]
enum ApiKeysCommand {
    /// Mint a key and print it once.
    Create {
        /// Tenant the key belongs to (the nil UUID for a bootstrap admin).
        #[arg(long)]
        tenant_id: uuid::Uuid,
        /// Comma-separated: read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        permissions: Vec<String>,
        /// Limit the key to these stores (default: all of the tenant's).
        #[arg(long, value_delimiter = ',')]
        store_ids: Vec<uuid::Uuid>,
        /// Requests per minute for this key.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant_id: Option<uuid::Uuid>,
    },
    /// Revoke a key by id.
    Revoke { id: uuid::Uuid },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sequencer::telemetry::init(sequencer::config::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        let store = admin::connect(&cli.database_url).await?;
        match cli.command {
            Command::Migrate => admin::migrate(&store).await,
            Command::ApiKeys(ApiKeysCommand::Create { tenant_id, permissions, store_ids, rate_limit }) => {
                admin::create_api_key(&store, tenant_id, &permissions, store_ids, rate_limit).await
            }
            Command::ApiKeys(ApiKeysCommand::List { tenant_id }) => admin::list_api_keys(&store, tenant_id).await,
            Command::ApiKeys(ApiKeysCommand::Revoke { id }) => admin::revoke_api_key(&store, id).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stateset-sequencer-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
