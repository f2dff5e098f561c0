//! Crash safety: the sequencer process is SIGKILLed again and again while clients ingest, and restarted
//! on the same database each time. Nothing that was receipted is lost or renumbered, no stream gets a
//! gap or a duplicate, and an event whose answer was lost is stored whole or not at all (resending it
//! answers with its original receipt if it was stored).

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

const STREAMS: usize = 4;
const CLIENTS: usize = 16;
const KILLS: usize = 6;
/// Receipts to observe after each (re)start before the next kill.
const RECEIPTS_PER_ROUND: usize = 60;
const ENV: [(&str, &str); 2] = [("DB_MIGRATE_ON_STARTUP", "false"), ("MAX_DB_CONNECTIONS", "8")];

/// Where clients should send, and whether to stop.
#[derive(Clone)]
struct Target {
    generation: u64,
    base_url: String,
    stop: bool,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// (stream index, receipt).
    receipts: Vec<(usize, Value)>,
    /// Batches whose answer was lost: the process died under them.
    unknown: Vec<(usize, Vec<VesEventEnvelope>)>,
    sent: Vec<(usize, Uuid)>,
}

async fn start(db_url: &str) -> SequencerProcess {
    let url = db_url.to_owned();
    tokio::task::spawn_blocking(move || SequencerProcess::spawn(&url, &ENV)).await.expect("spawn task")
}

async fn client(
    c: usize,
    agents: Vec<Agent>,
    mut target: watch::Receiver<Target>,
    receipts: watch::Sender<usize>,
) -> Seen {
    let http = procs::client();
    let stream = c % agents.len();
    let agent = &agents[stream];
    let batch = if c.is_multiple_of(2) { 1 } else { 4 };
    let mut seen = Seen::default();
    for r in 0.. {
        let Target { generation, base_url, stop } = target.borrow_and_update().clone();
        if stop {
            break;
        }
        let events: Vec<VesEventEnvelope> =
            (0..batch).map(|i| agent.event((c * 1_000_000 + r * 10 + i) as u64)).collect();
        seen.sent.extend(events.iter().map(|e| (stream, e.event_id)));
        match procs::ingest(&http, &base_url, agent.agent_id, &events).await {
            Ok(answer) => {
                assert_eq!(answer.status, 200, "{}", answer.body);
                assert_eq!(answer.body["eventsAccepted"], batch as u64, "{}", answer.body);
                let got = answer.body["receipts"].as_array().expect("receipts").clone();
                receipts.send_modify(|n| *n += got.len());
                seen.receipts.extend(got.into_iter().map(|r| (stream, r)));
            }
            Err(_) => {
                // The process was killed under this request: wait for its successor.
                seen.unknown.push((stream, events));
                tokio::time::timeout(
                    Duration::from_secs(120),
                    target.wait_for(|t| t.generation > generation || t.stop),
                )
                .await
                .expect("a restarted sequencer within 120 s")
                .expect("target channel open");
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_sequencers_lose_no_receipted_event_and_leave_no_gap() {
    let db = TestDb::migrated().await;
    let mut process = start(&db.url).await;
    let agents: Vec<Agent> = (0..STREAMS).map(|_| Agent::random()).collect();
    let admin = Api::new(process.base_url.clone(), ADMIN_KEY);
    for a in &agents {
        admin.register_key(a).await;
    }

    let (target_tx, target_rx) =
        watch::channel(Target { generation: 0, base_url: process.base_url.clone(), stop: false });
    let (receipts_tx, mut receipts_rx) = watch::channel(0usize);
    let clients: Vec<_> =
        (0..CLIENTS).map(|c| tokio::spawn(client(c, agents.clone(), target_rx.clone(), receipts_tx.clone()))).collect();

    let mut kills = 0;
    for round in 1..=KILLS + 1 {
        // Kill only after this process has handed out receipts of its own.
        let target = round * RECEIPTS_PER_ROUND;
        tokio::time::timeout(Duration::from_secs(120), receipts_rx.wait_for(|&n| n >= target))
            .await
            .unwrap_or_else(|_| panic!("{target} receipts within 120 s (round {round})"))
            .expect("receipt counter open");
        if round > KILLS {
            break;
        }
        process.child.kill().expect("SIGKILL the sequencer");
        process.child.wait().expect("reap the sequencer");
        kills += 1;
        drop(process);
        process = start(&db.url).await;
        let url = process.base_url.clone();
        target_tx.send_modify(|t| {
            t.generation += 1;
            t.base_url = url;
        });
    }
    target_tx.send_modify(|t| t.stop = true);
    let mut seen = Seen::default();
    for c in clients {
        let s = c.await.expect("client task");
        seen.receipts.extend(s.receipts);
        seen.unknown.extend(s.unknown);
        seen.sent.extend(s.sent);
    }
    assert_eq!(kills, KILLS);

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let sent: HashSet<Uuid> = seen.sent.iter().map(|(_, id)| *id).collect();
    let receipts_of = |seen: &Seen, s: usize| -> Vec<Value> {
        seen.receipts.iter().filter(|(stream, _)| *stream == s).map(|(_, r)| r.clone()).collect()
    };
    let mut stored_before = Vec::new();
    for (s, a) in agents.iter().enumerate() {
        let n = procs::assert_stream(&pool, a.tenant_id, a.store_id, &receipts_of(&seen, s), &sent).await;
        assert!(n >= receipts_of(&seen, s).len());
        stored_before.push(n);
    }

    // Every batch whose answer was lost is either stored whole (its replay returns the receipts of the
    // stored events) or not at all (its replay sequences it now, after the head).
    let http = procs::client();
    let lost = seen.unknown.len();
    let mut stored_anyway = 0;
    for (s, events) in std::mem::take(&mut seen.unknown) {
        let stored_ids: HashSet<Uuid> =
            procs::stored(&pool, agents[s].tenant_id, agents[s].store_id).await.into_iter().map(|r| r.1).collect();
        let already = events.iter().filter(|e| stored_ids.contains(&e.event_id)).count();
        assert!(already == 0 || already == events.len(), "a batch was stored in part: {already} of {}", events.len());
        stored_anyway += usize::from(already > 0);
        let answer = procs::ingest(&http, &process.base_url, agents[s].agent_id, &events).await.expect("resend");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let receipts = answer.body["receipts"].as_array().expect("receipts");
        assert_eq!(receipts.len(), events.len(), "{}", answer.body);
        let fresh = answer.body["eventsAccepted"].as_u64().unwrap() as usize;
        assert_eq!(fresh, if already == 0 { events.len() } else { 0 }, "{}", answer.body);
        seen.receipts.extend(receipts.iter().map(|r| (s, r.clone())));
    }

    // Now every event sent has exactly one receipt, and each stream is exactly those events, 1..N.
    for (s, a) in agents.iter().enumerate() {
        let receipts = receipts_of(&seen, s);
        let distinct: HashSet<&str> = receipts.iter().map(|r| r["eventId"].as_str().unwrap()).collect();
        let n = procs::assert_stream(&pool, a.tenant_id, a.store_id, &receipts, &sent).await;
        assert_eq!(n, distinct.len(), "stream {s}: one stored event per event sent");
        assert_eq!(
            n,
            seen.sent.iter().filter(|(stream, _)| *stream == s).count(),
            "stream {s}: every event sent is stored once"
        );
    }
    eprintln!(
        "{KILLS} kills; {lost} batches lost their answer ({stored_anyway} of them had been stored); \
         streams {stored_before:?} before resending them"
    );
    pool.close().await;
}
