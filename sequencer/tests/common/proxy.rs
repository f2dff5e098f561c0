//! A TCP proxy in the test process that can black-hole: while set, it holds every byte (nothing
//! arrives, nothing is refused, as on a dropped network path); when cleared, the bytes flow again.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    black_hole: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while black_hole.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy to `target` (`host:port`); returns its port.
pub async fn start(target: String, black_hole: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, black_hole) = (target.clone(), black_hole.clone());
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(&target).await else { return };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::join!(pipe(cr, uw, black_hole.clone()), pipe(ur, cw, black_hole));
            });
        }
    });
    port
}

/// `url` (`scheme://user@host:port/db`) with its host and port replaced by the proxy's.
pub fn through(url: &str, port: u16) -> (String, String) {
    let (user, rest) = url.split_once('@').expect("a URL with a user");
    let (host_port, name) = rest.split_once('/').expect("a URL with a database");
    (format!("{user}@127.0.0.1:{port}/{name}"), host_port.to_string())
}
