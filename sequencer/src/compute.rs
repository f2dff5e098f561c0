//! Where the server's CPU-heavy work runs: the async workers serve connections and the database, and
//! the signature work of a large request runs on rayon's pool beside them.
//!
//! A one-event request stays on the async worker that read it, from the socket to the answer: a hand-off
//! to another thread costs a wake-up and the other thread's cold cache, more than the work itself. A
//! request of many events hands its signatures (verification, receipt signing) and its body's parse to
//! the pool, which runs them on every core.
//!
//! So the server needs fewer async workers than cores. Two workers on a two-core machine shared with
//! PostgreSQL keep waking and parking each other and moving tasks between cores: one worker there took
//! about a fifth less CPU per one-event request (README.md § Performance, "Large requests' signatures on
//! rayon, one async worker per two cores").

use std::panic::AssertUnwindSafe;

use crate::error::{Error, Result};

/// A request's signatures are verified inline, on the async worker, when it has at most this many.
pub const INLINE_VERIFY_MAX: usize = 8;

/// A group's receipts are signed inline when it has at most this many. Higher than for verification: a
/// group of one-event requests from many clients of one stream (tens of events) is signed faster where it
/// is than handed to the pool, whose threads spin a while before sleeping and take CPU from PostgreSQL
/// and the async worker on a small machine.
pub const INLINE_SIGN_MAX: usize = 32;

/// Request bodies of at most this many bytes are parsed inline; larger ones (about a dozen events and
/// more) on the pool.
pub const INLINE_PARSE_MAX: usize = 16 * 1024;

/// The async worker threads when `TOKIO_WORKER_THREADS` does not say: one per two cores (at least one),
/// the other half of the machine being for rayon's pool and PostgreSQL.
pub fn async_workers() -> usize {
    async_workers_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn async_workers_for(cores: usize) -> usize {
    cores.div_ceil(2).max(1)
}

/// Runs `f` on rayon's pool and waits for it without blocking the async worker. A panic in `f` becomes
/// an internal error of this request only (rayon would otherwise abort the process).
pub async fn run<R: Send + 'static>(what: &'static str, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) | Err(_) => Err(Error::Internal(format!("{what} failed on the compute pool"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_cores_serve_connections() {
        assert_eq!(async_workers_for(1), 1);
        assert_eq!(async_workers_for(2), 1);
        assert_eq!(async_workers_for(3), 2);
        assert_eq!(async_workers_for(8), 4);
    }

    #[tokio::test]
    async fn a_panic_on_the_pool_fails_one_call_not_the_process() {
        let failed = run("a test", || -> u8 { panic!("boom") }).await;
        assert!(matches!(failed, Err(Error::Internal(m)) if m.contains("a test")));
        assert_eq!(run("a test", || 7).await.unwrap(), 7);
    }
}
