//! The service cannot be starved: header-read and idle timeouts, a connection cap, an immediate 413
//! for a declared oversize body, a budget of in-flight body bytes, JSON answers from the framework,
//! and a 503 within `DB_ACQUIRE_TIMEOUT_MS` when the network to the database black-holes.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(server: &TestServer) -> String {
    server.base_url.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes (or `limit` passes); returns what was read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

#[tokio::test]
async fn an_idle_connection_and_an_idle_keep_alive_connection_are_closed_after_the_header_read_timeout() {
    let server = TestServer::start_with(&[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut silent = TcpStream::connect(addr(&server)).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a connection that sends nothing is closed");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

    let mut slow = TcpStream::connect(addr(&server)).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed, "a connection that never finishes its headers is closed");

    let mut kept = TcpStream::connect(addr(&server)).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (text, closed) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "the idle keep-alive connection is closed after its request");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_the_service_answers_again_when_idle_ones_time_out() {
    let server =
        TestServer::start_with(&[("HTTP_MAX_CONNECTIONS", "20"), ("HTTP_HEADER_READ_TIMEOUT_SECS", "2")]).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr(&server)).await.unwrap());
    }
    // Let the server accept all twenty before the next one.
    tokio::task::yield_now().await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut refused = false;
    while Instant::now() < deadline && !refused {
        let mut extra = TcpStream::connect(addr(&server)).await.unwrap();
        let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (text, closed) = read_until_closed(&mut extra, Duration::from_millis(500)).await;
        refused = closed && text.is_empty();
    }
    assert!(refused, "the 21st connection is closed without an answer");
    let started = Instant::now();
    let health = loop {
        if let Ok(r) = reqwest::get(server.url("/health")).await {
            break r.status();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "/health never answered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health, 200);
    assert!(started.elapsed() < Duration::from_secs(6), "answered once the idle ones timed out");
    drop(idle);
}

#[tokio::test]
async fn a_declared_oversize_body_is_refused_at_once_with_a_json_413() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    let request = format!(
        "POST /api/v1/ves/events/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: ApiKey {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"agentId\":",
        100 * 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await.expect("answered at once").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("PAYLOAD_TOO_LARGE"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn framework_answers_carry_the_json_error_shape() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let cases = [
        (reqwest::Method::DELETE, "/health", 405),
        (reqwest::Method::PUT, "/api/v1/ves/events/ingest", 405),
        (reqwest::Method::GET, "/api/v1/nothing-here", 404),
        (reqwest::Method::GET, "/nothing", 404),
        (reqwest::Method::GET, "/api/v1/admin/dead-letters/not-a-uuid", 400),
        (reqwest::Method::GET, "/api/v1/head?tenant_id=x", 400),
    ];
    for (method, path, expected) in cases {
        let resp = http
            .request(method.clone(), server.url(path))
            .header("authorization", format!("ApiKey {ADMIN_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected, "{method} {path}");
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
        assert!(body["error"]["message"].is_string(), "{method} {path}: {body}");
    }
}

#[tokio::test]
async fn request_bodies_in_flight_are_bounded_by_the_budget_and_a_request_over_it_gets_a_503() {
    let server = TestServer::start_with(&[("MAX_BODY_SIZE_BYTES", "1000"), ("MAX_INFLIGHT_BODY_BYTES", "1000")]).await;
    // A slow client holds the whole budget: it declares 1000 bytes and sends only a few.
    let mut holder = TcpStream::connect(addr(&server)).await.unwrap();
    let head = format!(
        "POST /api/v1/admin/verify HTTP/1.1\r\nHost: x\r\nAuthorization: ApiKey {ADMIN_KEY}\r\nContent-Length: 1000\r\n\r\n{{"
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    let budget_taken = || server.state.body_budget.in_use() == 1000;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !budget_taken() {
        assert!(Instant::now() < deadline, "the slow request never reserved its bytes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(server.url("/api/v1/admin/verify"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .body(vec![b' '; 600])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVER_BUSY", "{body}");
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.state.body_budget.in_use() != 0 {
        assert!(Instant::now() < deadline, "the budget was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = Api::admin(&server).post("/api/v1/admin/verify", json!({})).await;
    assert_eq!(status, 200, "the budget is free again");
}

#[tokio::test]
async fn requests_end_with_a_json_503_within_the_acquire_timeout_when_the_database_network_black_holes() {
    let db = TestDb::migrated().await;
    let black_hole = Arc::new(AtomicBool::new(false));
    let (_, target) = proxy::through(&db.url, 0);
    let port = proxy::start(target, black_hole.clone()).await;
    let proxied = TestDb { url: proxy::through(&db.url, port).0, name: db.name.clone() };
    // NB: the proxied value owns the database from here (dropping it drops the database).
    std::mem::forget(db);
    let server = TestServer::start_on(proxied, &[("DB_ACQUIRE_TIMEOUT_MS", "1000")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let (status, body) = api.ingest(agent.agent_id, &[agent.event(1)]).await;
    assert_eq!(status, 200, "{body}");

    black_hole.store(true, Ordering::SeqCst);
    for path in ["ingest", "head"] {
        let started = Instant::now();
        let (status, body) = if path == "ingest" {
            api.ingest(agent.agent_id, &[agent.event(2)]).await
        } else {
            api.get(&format!("/api/v1/head?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await
        };
        let took = started.elapsed();
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
        assert!(took < Duration::from_millis(1000 + 2500), "{path} took {took:?}");
    }

    black_hole.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api.ingest(agent.agent_id, &[agent.event(3)]).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The peak resident memory of a process, from `/proc/<pid>/status` (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// The memory bound the README states for the default limits (`MAX_BODY_SIZE_BYTES` 10 MiB,
/// `MAX_INFLIGHT_BODY_BYTES` 64 MiB).
const STATED_PEAK_RSS_MIB: f64 = 512.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_maximum_size_ingests_stay_under_the_stated_memory_bound() {
    let db = TestDb::migrated().await;
    // A debug build on a busy machine takes tens of seconds per 9 MiB batch: give requests the time.
    let process =
        SequencerProcess::spawn(&db.url, &[("DB_MIGRATE_ON_STARTUP", "false"), ("REQUEST_TIMEOUT_SECS", "300")]);
    let api = Api::new(process.base_url.clone(), ADMIN_KEY);
    let agent = Agent::random();
    api.register_key(&agent).await;
    // Nine events of just under 1 MiB (MAX_EVENT_PAYLOAD_SIZE) each: a body just under 10 MiB.
    let filler = "x".repeat(1024 * 1024 - 1024);
    // Four distinct batches (signing is slow in a debug build), each sent eight times.
    let batches: Vec<Vec<u8>> = (0..4u64)
        .map(|r| {
            let events: Vec<_> = (0..9)
                .map(|i| agent.builder().payload(json!({"n": r * 10 + i, "fill": filler})).sign(&agent.key))
                .collect();
            serde_json::to_vec(&json!({"agentId": agent.agent_id, "events": events})).unwrap()
        })
        .collect();
    let bodies: Vec<Vec<u8>> = (0..32).map(|i| batches[i % 4].clone()).collect();
    assert!(bodies.iter().all(|b| b.len() < 10 * 1024 * 1024 && b.len() > 8 * 1024 * 1024));
    let before = peak_rss_mib(process.child.id());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let answers: Vec<u16> = futures::future::join_all(bodies.into_iter().map(|body| {
        let http = http.clone();
        let url = format!("{}/api/v1/ves/events/ingest", process.base_url);
        async move {
            let resp = http
                .post(url)
                .header("authorization", format!("ApiKey {ADMIN_KEY}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("an answer");
            resp.status().as_u16()
        }
    }))
    .await;
    let peak = peak_rss_mib(process.child.id());
    let ok = answers.iter().filter(|s| **s == 200).count();
    let busy = answers.iter().filter(|s| **s == 503).count();
    eprintln!(
        "32 concurrent ~9 MiB ingests: {ok} answered 200, {busy} answered 503 SERVER_BUSY in {:.1} s; \
         peak RSS {peak:.0} MiB (before: {before:.0} MiB)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ok + busy, 32, "{answers:?}");
    assert!(ok >= 1, "the budget admits requests: {answers:?}");
    assert!(peak < STATED_PEAK_RSS_MIB, "peak RSS {peak:.0} MiB over the stated {STATED_PEAK_RSS_MIB} MiB");
}
