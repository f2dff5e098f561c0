//! Faults as a repeatable run: two sequencer replicas under load on a private PostgreSQL reached
//! through a TCP proxy; a random replica is SIGKILLed and restarted, PostgreSQL is restarted, and the
//! proxy black-holes the database connection. Clients resend every batch until it is answered (an
//! answered resend is the original receipt). At the end every stream is exactly 1..N of the events
//! sent, every receipt is stored with its number, and `POST /api/v1/admin/verify` is clean.
//!
//! Bounded here (`CHAOS_KILLS`, `CHAOS_PG_RESTARTS`, `CHAOS_BLACKHOLES`, default 3, 1, 1);
//! `scripts/chaos` runs 20, 5 and 3 on a release build and prints the figures the README quotes.

mod common;
#[path = "common/private_pg.rs"]
mod private_pg;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use private_pg::PrivatePg;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

const STREAMS: usize = 4;
const CLIENTS: usize = 8;
const RECEIPTS_BETWEEN_FAULTS: usize = 40;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const ENV: [(&str, &str); 3] =
    [("DB_MIGRATE_ON_STARTUP", "false"), ("MAX_DB_CONNECTIONS", "8"), ("DB_ACQUIRE_TIMEOUT_MS", "1000")];

async fn start_replica(db_url: &str) -> SequencerProcess {
    let url = db_url.to_owned();
    tokio::task::spawn_blocking(move || SequencerProcess::spawn(&url, &ENV)).await.expect("spawn task")
}

#[derive(Default)]
struct Seen {
    receipts: Vec<(usize, Value)>,
    sent: Vec<(usize, Uuid)>,
    /// The longest a batch waited for an answer through faults.
    longest_wait: Duration,
    retries: usize,
}

/// One client: sends batches to the replicas in turn and resends each until it is answered.
async fn client(
    c: usize,
    agents: Vec<Agent>,
    urls: watch::Receiver<Vec<String>>,
    stop: watch::Receiver<bool>,
    count: watch::Sender<usize>,
) -> Seen {
    let http = procs::client();
    let stream = c % agents.len();
    let agent = &agents[stream];
    let mut seen = Seen::default();
    for r in 0.. {
        if *stop.borrow() {
            break;
        }
        let events: Vec<VesEventEnvelope> =
            (0..1 + c % 3).map(|i| agent.event((c * 1_000_000 + r * 10 + i) as u64)).collect();
        seen.sent.extend(events.iter().map(|e| (stream, e.event_id)));
        let started = Instant::now();
        for attempt in 0.. {
            let base = {
                let u = urls.borrow();
                u[(c + r + attempt) % u.len()].clone()
            };
            match procs::ingest(&http, &base, agent.agent_id, &events).await {
                Ok(answer) if answer.status == 200 => {
                    let got = answer.body["receipts"].as_array().expect("receipts").clone();
                    assert_eq!(got.len(), events.len(), "{}", answer.body);
                    count.send_modify(|n| *n += got.len());
                    seen.receipts.extend(got.into_iter().map(|r| (stream, r)));
                    break;
                }
                Ok(answer) => {
                    assert!(answer.status == 503 || answer.status == 429, "{} {}", answer.status, answer.body)
                }
                Err(_) => {}
            }
            seen.retries += 1;
            assert!(started.elapsed() < Duration::from_secs(180), "a batch went unanswered for 180 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.longest_wait = seen.longest_wait.max(started.elapsed());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_survive_kills_database_restarts_and_black_holes_with_every_stream_whole() {
    let kills = setting("CHAOS_KILLS", 3);
    let restarts = setting("CHAOS_PG_RESTARTS", 1);
    let black_holes = setting("CHAOS_BLACKHOLES", 1);
    let started = Instant::now();
    let pg = PrivatePg::init();
    pg.start("-c max_connections=60");
    let direct = pg.url("");
    let pool = sqlx::PgPool::connect(&direct).await.expect("connect the private PostgreSQL");
    sequencer::store::MIGRATOR.run(&pool).await.expect("migrate");
    pool.close().await;
    let hole = Arc::new(AtomicBool::new(false));
    let port = proxy::start(format!("127.0.0.1:{}", pg.port), hole.clone()).await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{port}/postgres");

    let mut replicas = [start_replica(&via_proxy).await, start_replica(&via_proxy).await];
    let agents: Vec<Agent> = (0..STREAMS).map(|_| Agent::random()).collect();
    let admin = Api::new(replicas[0].base_url.clone(), ADMIN_KEY);
    for a in &agents {
        admin.register_key(a).await;
    }
    let (urls_tx, urls_rx) = watch::channel(replicas.iter().map(|r| r.base_url.clone()).collect::<Vec<_>>());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(c, agents.clone(), urls_rx.clone(), stop_rx.clone(), count_tx.clone())))
        .collect();

    let mut faults: Vec<&str> =
        [vec!["kill"; kills], vec!["restart-postgres"; restarts], vec!["black-hole"; black_holes]].concat();
    {
        use rand::seq::SliceRandom;
        faults.shuffle(&mut rand::thread_rng());
    }
    let mut outage = Duration::ZERO;
    for (i, fault) in faults.iter().enumerate() {
        let target = (i + 1) * RECEIPTS_BETWEEN_FAULTS;
        tokio::time::timeout(Duration::from_secs(180), count_rx.wait_for(|&n| n >= target))
            .await
            .unwrap_or_else(|_| panic!("{target} receipts within 180 s (before fault {i}: {fault})"))
            .expect("receipt counter open");
        let begun = Instant::now();
        match *fault {
            "kill" => {
                let victim = rand::thread_rng().gen_range(0..replicas.len());
                replicas[victim].child.kill().expect("SIGKILL a replica");
                replicas[victim].child.wait().expect("reap it");
                replicas[victim] = start_replica(&via_proxy).await;
                let url = replicas[victim].base_url.clone();
                urls_tx.send_modify(|u| u[victim] = url);
            }
            "restart-postgres" => {
                pg.stop_with("immediate");
                pg.start("-c max_connections=60");
                outage += begun.elapsed();
            }
            _ => {
                hole.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await;
                hole.store(false, Ordering::SeqCst);
                outage += begun.elapsed();
            }
        }
    }
    let last = (faults.len() + 1) * RECEIPTS_BETWEEN_FAULTS;
    tokio::time::timeout(Duration::from_secs(180), count_rx.wait_for(|&n| n >= last))
        .await
        .expect("receipts after the last fault")
        .expect("receipt counter open");
    stop_tx.send(true).unwrap();
    let mut seen = Seen::default();
    for c in clients {
        let s = c.await.expect("client task");
        seen.receipts.extend(s.receipts);
        seen.sent.extend(s.sent);
        seen.longest_wait = seen.longest_wait.max(s.longest_wait);
        seen.retries += s.retries;
    }

    let pool = sqlx::PgPool::connect(&direct).await.unwrap();
    let sent: HashSet<Uuid> = seen.sent.iter().map(|(_, id)| *id).collect();
    let mut total = 0;
    for (s, a) in agents.iter().enumerate() {
        let receipts: Vec<Value> = seen.receipts.iter().filter(|(x, _)| *x == s).map(|(_, r)| r.clone()).collect();
        let n = procs::assert_stream(&pool, a.tenant_id, a.store_id, &receipts, &sent).await;
        assert_eq!(n, seen.sent.iter().filter(|(x, _)| *x == s).count(), "stream {s}: every event sent stored once");
        total += n;
    }
    pool.close().await;
    let (status, report) =
        Api::new(replicas[1].base_url.clone(), ADMIN_KEY).post("/api/v1/admin/verify", json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    eprintln!(
        "chaos: {kills} replica kills, {restarts} PostgreSQL restarts, {black_holes} black holes of 3 s; \
         {total} events in {STREAMS} streams from {CLIENTS} clients, {} resends; longest a batch waited: {:.1} s; \
         database down {:.1} s in all; run took {:.0} s; verify ok over {} events",
        seen.retries,
        seen.longest_wait.as_secs_f64(),
        outage.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report["eventsChecked"]
    );
}
