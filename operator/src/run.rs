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

use futures::FutureExt;
use futures::future::BoxFuture;
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
    let (leading, lease_task) = manager.watch().await;

    let (signal_tx, signal_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });

    info!(lease = %options.lease_name, namespace = %options.lease_namespace, identity = %options.identity, "standing by for the leader lease");
    let lead = |stop: BoxFuture<'static, ()>| {
        metrics.set_leader(true);
        info!("leading: starting the controllers");
        let ctx = Arc::new(
            Context::new(
                client.clone(),
                metrics.clone(),
                options.admin_endpoint.clone(),
                Some(options.identity.clone()),
            )
            .with_liveness(liveness.clone()),
        );
        let metrics = metrics.clone();
        let namespace = options.watch_namespace.clone();
        async move {
            // NB: graceful: a reconcile in flight (an admin call of at most
            // `action::CALL_TIMEOUT_MAX`) finishes before this returns; the chart's
            // terminationGracePeriodSeconds outlives it.
            controller::run_controllers(ctx, namespace, stop).await;
            metrics.set_leader(false);
        }
    };
    if alternate_standby_and_leading(leading.clone(), signal_rx, lead).await == Ended::LeaseTaskGone {
        return Err(lease_task_error(lease_task).await);
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

/// Why [`alternate_standby_and_leading`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// A stop signal (SIGTERM/SIGINT).
    Signal,
    /// The lease task ended (its channel closed).
    LeaseTaskGone,
}

/// Stands by until `leading` says this replica holds the lease, then runs `lead(stop)` until
/// `stop` resolves, which it does on a signal or when the lease is lost; a lost lease returns to
/// standby (the lease task keeps competing), a signal ends it.
pub async fn alternate_standby_and_leading<F, Fut>(
    mut leading: watch::Receiver<bool>,
    signal: watch::Receiver<bool>,
    mut lead: F,
) -> Ended
where
    F: FnMut(BoxFuture<'static, ()>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let mut stop_signal = signal.clone();
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() {
                        return Ended::LeaseTaskGone;
                    }
                }
                _ = stop_signal.wait_for(|stop| *stop) => {
                    info!("stopping while standing by");
                    return Ended::Signal;
                }
            }
        }
        let lost_lease = Arc::new(AtomicBool::new(false));
        let stop = {
            let lost_lease = lost_lease.clone();
            let mut signal = signal.clone();
            let mut leading = leading.clone();
            async move {
                tokio::select! {
                    _ = signal.wait_for(|stop| *stop) => info!("signal received: stopping the controllers"),
                    _ = leading.wait_for(|leads| !*leads) => {
                        warn!("lost the leader lease: stopping the controllers and standing by");
                        lost_lease.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        lead(stop.boxed()).await;
        if !lost_lease.load(Ordering::Relaxed) {
            return Ended::Signal;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn losing_the_lease_returns_to_standby_and_leads_again_when_it_comes_back() {
        let (lease_tx, lease_rx) = watch::channel(false);
        let (signal_tx, signal_rx) = watch::channel(false);
        let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (stopped_tx, mut stopped_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut terms = 0;
        let runner = tokio::spawn(alternate_standby_and_leading(lease_rx, signal_rx, move |stop| {
            terms += 1;
            let term = terms;
            let (started, stopped) = (started_tx.clone(), stopped_tx.clone());
            async move {
                started.send(term).unwrap();
                stop.await;
                stopped.send(term).unwrap();
            }
        }));
        let step = Duration::from_secs(5);

        lease_tx.send(true).unwrap();
        assert_eq!(tokio::time::timeout(step, started_rx.recv()).await.expect("leading within 5s"), Some(1));
        lease_tx.send(false).unwrap();
        assert_eq!(tokio::time::timeout(step, stopped_rx.recv()).await.expect("stopping within 5s"), Some(1));
        assert!(!runner.is_finished(), "a lost lease must not end the process");
        lease_tx.send(true).unwrap();
        assert_eq!(tokio::time::timeout(step, started_rx.recv()).await.expect("leading again within 5s"), Some(2));
        signal_tx.send(true).unwrap();
        assert_eq!(tokio::time::timeout(step, stopped_rx.recv()).await.expect("stopping within 5s"), Some(2));
        let ended = tokio::time::timeout(step, runner).await.expect("ending within 5s").unwrap();
        assert_eq!(ended, Ended::Signal);
    }
}
