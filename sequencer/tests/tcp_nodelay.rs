//! Every TCP connection to PostgreSQL has `TCP_NODELAY`. sqlx 0.9.0 stopped setting it (the
//! workspace patches it back, vendor/README.md); without it a group append whose protocol messages
//! span two writes waits for the server's delayed ACK, ~40 ms, and single-stream ingest falls to a
//! fifth. This test fails if the patch is dropped before sqlx releases the fix.

mod common;

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use common::*;
use sequencer::store::{PoolSettings, SessionGuards, Store};

/// The process's TCP sockets whose peer is `port`, with whether each has `TCP_NODELAY`.
fn sockets_to(port: u16) -> Vec<(i32, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(fd) = entry.expect("fd entry").file_name().to_string_lossy().parse::<i32>() else { continue };
        // SAFETY: the descriptor is open for the duration of this loop (nothing here closes it), and
        // the borrow does not outlive it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let Ok(peer) = socket.peer_addr() else { continue };
        if peer.as_socket().is_some_and(|a| a.port() == port) {
            found.push((fd, socket.tcp_nodelay().expect("TCP_NODELAY readable on a TCP socket")));
        }
    }
    found
}

#[tokio::test]
async fn every_pooled_connection_to_postgres_disables_nagle() {
    let db = TestDb::migrated().await;
    let url = url::Url::parse(&db.url).expect("database URL");
    let port = url.port().unwrap_or(5432);
    let settings = PoolSettings {
        max_connections: 4,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        guards: SessionGuards::default(),
    };
    let store = Store::connect_lazy(&db.url, settings, Arc::new(AtomicI64::new(0))).expect("pool");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(store.pool().acquire().await.expect("connection"));
    }
    let sockets = sockets_to(port);
    assert!(sockets.len() >= 3, "expected the 3 pooled TCP connections to port {port}, found {sockets:?}");
    let nagle: Vec<i32> = sockets.iter().filter(|(_, nodelay)| !nodelay).map(|(fd, _)| *fd).collect();
    assert!(
        nagle.is_empty(),
        "sockets to PostgreSQL without TCP_NODELAY (fds {nagle:?}); is the sqlx-core patch gone?"
    );
    drop(held);
    store.pool().close().await;
}
