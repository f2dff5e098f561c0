//! The long-running operator: connect, check the CRDs, serve health and metrics, win the leader
//! lease, run the controllers until a signal or the loss of the lease.
//!
//! Only the replica holding the Lease reconciles. Losing the lease stops the controllers and ends
//! the process with an error, so Kubernetes restarts it as a standby: two leaders never write at
//! once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controller::{self, AdminEndpoint, Context};
use crate::metrics::Metrics;
use crate::server::{self, Health};
use crate::{Error, Result};

/// Seconds a lease stays valid without renewal; a new leader takes over at most this long after
/// the old one vanished.
const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry at which the leader renews (also the tolerated clock skew).
const LEASE_GRACE_SECONDS: u64 = 5;
/// How long a stopping leader waits to release the lease for a quick hand-over.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of `sequencer-operator run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch only this namespace (None: all namespaces).
    pub watch_namespace: Option<String>,
    /// Address of the health and metrics endpoints.
    pub listen: SocketAddr,
    /// Name and namespace of the leader Lease.
    pub lease_name: String,
    pub lease_namespace: String,
    /// Identity in the Lease and in events (the pod name).
    pub identity: String,
    /// Where sequencers' admin APIs are reached.
    pub admin_endpoint: AdminEndpoint,
}

/// Runs the operator until SIGTERM/SIGINT (Ok) or the loss of the leader lease (Err).
pub async fn run(options: RunOptions) -> Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let health = Health { metrics: metrics.clone(), ready: Arc::new(AtomicBool::new(false)) };
    let listener = server::bind(options.listen).await?;
    tokio::spawn(server::serve(listener, health.clone()));
    info!(listen = %options.listen, "serving /healthz, /readyz and /metrics");

    controller::check_crds_installed(&client).await?;
    health.ready.store(true, Ordering::Relaxed);

    let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&options.lease_namespace)
        .with_identity(&options.identity)
        .with_duration(LEASE_DURATION_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await
        .map_err(Error::LeaderElection)?;
    let (mut leading, lease_task) = manager.watch().await;

    let (signal_tx, signal_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });

    // Stand by until this replica holds the lease (or is told to stop).
    info!(lease = %options.lease_name, namespace = %options.lease_namespace, identity = %options.identity, "waiting for the leader lease");
    let mut signal = signal_rx.clone();
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    return Err(lease_task_error(lease_task).await);
                }
            }
            _ = signal.wait_for(|stop| *stop) => {
                info!("stopping before becoming leader");
                return Ok(());
            }
        }
    }
    metrics.set_leader(true);
    info!("leading: starting the controllers");

    let lost_lease = Arc::new(AtomicBool::new(false));
    let stop = {
        let lost_lease = lost_lease.clone();
        let mut signal = signal_rx.clone();
        let mut leading = leading.clone();
        async move {
            tokio::select! {
                _ = signal.wait_for(|stop| *stop) => info!("signal received: stopping the controllers"),
                _ = leading.wait_for(|leads| !*leads) => {
                    warn!("lost the leader lease: stopping the controllers");
                    lost_lease.store(true, Ordering::Relaxed);
                }
            }
        }
    };
    let ctx =
        Arc::new(Context::new(client, metrics.clone(), options.admin_endpoint.clone(), Some(options.identity.clone())));
    controller::run_controllers(ctx, options.watch_namespace.clone(), stop).await;
    metrics.set_leader(false);

    if lost_lease.load(Ordering::Relaxed) {
        return Err(Error::LostLease);
    }
    // Closing the channel makes the lease task release the lease: the next leader need not wait.
    drop(leading);
    match tokio::time::timeout(RELEASE_TIMEOUT, lease_task).await {
        Ok(Ok(Ok(_))) => info!("leader lease released"),
        Ok(Ok(Err(error))) => warn!(%error, "releasing the leader lease failed"),
        Ok(Err(error)) => warn!(%error, "the lease task panicked"),
        Err(_) => warn!("releasing the leader lease timed out"),
    }
    Ok(())
}

async fn lease_task_error(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) -> Error {
    match task.await {
        Ok(Err(error)) => Error::LeaderElection(error),
        _ => Error::LeaderElection(kube_lease_manager::LeaseManagerError::InconsistentState(
            "the lease task ended".into(),
        )),
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
