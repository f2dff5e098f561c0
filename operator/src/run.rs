//! The long-running operator: connect, check the CRDs, serve health and metrics, win the leader
//! lease, run the controllers until a signal or the loss of the lease.
//!
//! Only the replica holding the Lease reconciles. Losing the lease stops the controllers (waiting
//! for reconciles in flight) and returns the process to standby, competing for the lease again:
//! two leaders never write at once, and no restart is needed.

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
use crate::server::{self, Health, Liveness};
use crate::{Error, Result};

/// Seconds a lease stays valid without renewal; a new leader takes over at most this long after
/// the old one vanished.
const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry at which the leader renews (also the tolerated clock skew).
const LEASE_GRACE_SECONDS: u64 = 5;
/// How long a stopping leader waits to release the lease for a quick hand-over.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of `sequencer-operator run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch only this namespace (None: all namespaces).
    pub watch_namespace: Option<String>,
    /// Address of the health and metrics endpoints.
    pub listen: SocketAddr,
    /// Name and namespace of the leader Lease (the watched namespace in a least-privilege install).
    pub lease_name: String,
    pub lease_namespace: String,
    /// Identity in the Lease and in events (the pod name).
    pub identity: String,
    /// Where sequencers' admin APIs are reached.
    pub admin_endpoint: AdminEndpoint,
}

/// Runs the operator until SIGTERM/SIGINT (Ok) or a failure of leader election itself (Err).
/// Losing the lease stops the controllers and returns this replica to standby.
pub async fn run(options: RunOptions) -> Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let liveness = Arc::new(Liveness::default());
    let health =
        Health { metrics: metrics.clone(), liveness: liveness.clone(), ready: Arc::new(AtomicBool::new(false)) };
    let listener = server::bind(options.listen).await?;
    info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /healthz, /readyz and /metrics");
    tokio::spawn(server::serve(listener, health.clone()));

    controller::check_crds_installed(&client, options.watch_namespace.as_deref()).await?;
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

    loop {
        // Stand by until this replica holds the lease (or is told to stop).
        info!(lease = %options.lease_name, namespace = %options.lease_namespace, identity = %options.identity, "standing by for the leader lease");
        let mut signal = signal_rx.clone();
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() {
                        return Err(lease_task_error(lease_task).await);
                    }
                }
                _ = signal.wait_for(|stop| *stop) => {
                    info!("stopping while standing by");
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
        let ctx = Arc::new(
            Context::new(
                client.clone(),
                metrics.clone(),
                options.admin_endpoint.clone(),
                Some(options.identity.clone()),
            )
            .with_liveness(liveness.clone()),
        );
        // NB: graceful: a reconcile in flight (an admin call of at most `action::CALL_TIMEOUT_MAX`)
        // finishes before this returns; the chart's terminationGracePeriodSeconds outlives it.
        controller::run_controllers(ctx, options.watch_namespace.clone(), stop).await;
        metrics.set_leader(false);

        if !lost_lease.load(Ordering::Relaxed) {
            break;
        }
        // Back to standby: the lease task keeps competing for the lease.
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
