//! `sequencer-operator`: run the operator, print its CRDs, or render a Sequencer's objects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sequencer_operator::controller::AdminEndpoint;
use sequencer_operator::run::{RunOptions, run};
use sequencer_operator::telemetry::{self, LogFormat};
use sequencer_operator::{crd, render};

#[derive(Parser)]
#[command(version, about = "Kubernetes operator of the StateSet sequencer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (leader-elected) against the cluster of the current kubeconfig or pod.
    Run {
        /// Watch only this namespace; all namespaces when unset.
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Address of /healthz, /readyz and /metrics; `[::]` listens on IPv6 and IPv4.
        #[arg(long, env = "LISTEN_ADDR", default_value = "[::]:8080")]
        listen: SocketAddr,
        /// Name of the leader-election Lease.
        #[arg(long, env = "LEASE_NAME", default_value = "sequencer-operator")]
        lease_name: String,
        /// Namespace of the leader-election Lease; the operator's own namespace (POD_NAMESPACE) when
        /// unset. The chart puts it in watchNamespace when that is set, so that every request of a
        /// least-privilege install stays in that one namespace.
        #[arg(long, env = "LEASE_NAMESPACE")]
        lease_namespace: Option<String>,
        /// The operator's own namespace.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        pod_namespace: String,
        /// Identity in the Lease and in events; the pod name in a cluster.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Reach every sequencer's admin API at this base URL instead of its Service (for an
        /// operator run outside the cluster against a port-forward).
        #[arg(long, env = "ADMIN_URL_OVERRIDE")]
        admin_url: Option<String>,
        /// Log format of the operator.
        #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
        log_format: LogFormat,
    },
    /// Print the CRDs generated from the operator's types (what crds/ holds).
    Crd,
    /// Print, offline, every object the operator would apply for the Sequencers in a manifest.
    Render {
        /// The manifest holding one or more Sequencers ("-" for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", crd::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Render { file } => {
            let path = file.display().to_string();
            let manifest =
                if path == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(&file) };
            let rendered = manifest
                .map_err(|e| sequencer_operator::Error::Manifest { path: path.clone(), reason: e.to_string() })
                .and_then(|m| render::render(&m, &path));
            match rendered {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            namespace,
            listen,
            lease_name,
            lease_namespace,
            pod_namespace,
            identity,
            admin_url,
            log_format,
        } => {
            telemetry::init(log_format);
            let identity = identity.unwrap_or_else(default_identity);
            let options = RunOptions {
                watch_namespace: namespace.filter(|n| !n.is_empty()),
                listen,
                lease_name,
                lease_namespace: lease_namespace.filter(|n| !n.is_empty()).unwrap_or(pod_namespace),
                identity,
                admin_endpoint: admin_url.map_or(AdminEndpoint::ServiceDns, AdminEndpoint::Fixed),
            };
            match run(options).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "the operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Host name plus process id: unique enough among replicas outside a pod.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sequencer-operator".to_string());
    format!("{host}-{}", std::process::id())
}
