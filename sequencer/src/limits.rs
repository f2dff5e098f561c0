//! What keeps the service from being starved: a budget of request-body bytes held at once, a watch on
//! whether the database answers at all (so requests stuck behind a black-holed network end with a
//! 503 instead of waiting out TCP retransmissions), and the file-descriptor limit raised at start-up.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::error::{Error, Result};

/// How long a request waits for body budget before it is answered 503.
pub const BODY_BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Request-body bytes that may be held at once, across all requests.
pub struct BodyBudget {
    semaphore: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    /// A budget of `total` bytes (capped at what a semaphore can count).
    pub fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        BodyBudget { semaphore: Arc::new(Semaphore::new(total)), total }
    }

    /// Reserves `bytes` (at most the whole budget) for one request, waiting at most `wait`.
    pub async fn admit(&self, bytes: usize, wait: Duration) -> Result<Option<OwnedSemaphorePermit>> {
        if bytes == 0 {
            return Ok(None);
        }
        let n = bytes.min(self.total) as u32;
        match tokio::time::timeout(wait, self.semaphore.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Error::unavailable("SERVER_BUSY", "Too many request bytes in flight; retry shortly", 1)),
        }
    }

    /// Bytes currently reserved.
    pub fn in_use(&self) -> usize {
        self.total - self.semaphore.available_permits()
    }
}

/// Whether the database answers. A task holds its own connection (not one of the pool's, so that a
/// busy pool is not mistaken for a dead database) and pings it; a ping or reconnection that takes
/// longer than `DB_ACQUIRE_TIMEOUT_MS` marks the database unreachable until one succeeds again.
#[derive(Clone)]
pub struct DbWatch {
    tx: Arc<watch::Sender<bool>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Default for DbWatch {
    fn default() -> Self {
        DbWatch { tx: Arc::new(watch::channel(true).0), wake: Arc::new(tokio::sync::Notify::new()) }
    }
}

impl DbWatch {
    /// Whether the last probe reached the database.
    pub fn reachable(&self) -> bool {
        *self.tx.borrow()
    }

    /// For a request arriving while the database is marked unreachable: asks for a probe now and waits
    /// up to `wait` for the database to answer again. `false`: still unreachable.
    pub async fn recheck(&self, wait: Duration) -> bool {
        let mut rx = self.tx.subscribe();
        self.wake.notify_one();
        matches!(tokio::time::timeout(wait, rx.wait_for(|up| *up)).await, Ok(Ok(_)))
    }

    /// Resolves when the database is (or becomes) unreachable.
    pub async fn unreachable(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|up| !up).await;
    }

    fn set(&self, up: bool) {
        self.tx.send_if_modified(|v| {
            let changed = *v != up;
            *v = up;
            changed
        });
        if !up {
            tracing::warn!("database unreachable: requests waiting on it are answered 503");
        }
    }

    /// Probes every `interval`, each probe bounded by `timeout`, until the task is aborted.
    pub fn spawn(&self, url: SecretString, timeout: Duration, interval: Duration) -> tokio::task::JoinHandle<()> {
        let watch = self.clone();
        tokio::spawn(async move {
            let Ok(options) = crate::store::connect_options(url.expose_secret()) else {
                return;
            };
            let mut conn: Option<sqlx::PgConnection> = None;
            loop {
                let alive = match conn.as_mut() {
                    Some(c) => matches!(tokio::time::timeout(timeout, c.ping()).await, Ok(Ok(()))),
                    None => false,
                };
                if !alive {
                    if conn.take().is_some() {
                        // The old connection may be stuck behind a black hole: mark the database
                        // unreachable before trying a new one, which may take the whole timeout.
                        watch.set(false);
                    }
                    let fresh = tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&options)).await;
                    conn = fresh.ok().and_then(|c| c.ok());
                }
                let up = conn.is_some();
                if up != watch.reachable() {
                    watch.set(up);
                    if up {
                        tracing::info!("database reachable again");
                    }
                }
                // While the database is unreachable, probe often (and at once when a request asks), so
                // that recovery is seen within milliseconds.
                let pause = if watch.reachable() { interval } else { Duration::from_millis(50) };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = watch.wake.notified() => {}
                }
            }
        })
    }
}

/// Raises the soft limit on open files to the hard limit (where the system allows) and returns the
/// soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    let soft = limit.rlim_cur as u64;
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_body_budget_admits_up_to_its_total_then_answers_503() {
        let budget = BodyBudget::new(100);
        let a = budget.admit(60, Duration::from_millis(10)).await.unwrap();
        assert_eq!(budget.in_use(), 60);
        let refused = budget.admit(60, Duration::from_millis(10)).await.unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        drop(a);
        assert!(budget.admit(1000, Duration::from_millis(10)).await.unwrap().is_some(), "capped at the total");
        assert!(budget.admit(0, Duration::from_millis(10)).await.unwrap().is_none());
    }

    #[test]
    fn the_fd_limit_is_at_least_what_it_was() {
        let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) };
        let after = raise_fd_limit();
        #[allow(clippy::unnecessary_cast)]
        let (soft, hard) = (before.rlim_cur as u64, before.rlim_max as u64);
        assert!(after >= soft);
        assert_eq!(after, hard, "raised to the hard limit");
    }
}
