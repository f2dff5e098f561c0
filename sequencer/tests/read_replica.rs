//! Reads scale out to a streaming replica (issue 15, item 5): a private primary and a real hot standby
//! of it (`pg_basebackup -R`), sequencers with `DATABASE_URL` on the primary and `READ_DATABASE_URL`
//! on the standby. With the standby's replay paused, what the sequencers answer tells where each read
//! was served: the standby still has the old head, the primary the new one.
//!
//! Two sequencers share the databases: `patient` (a lag bound of an hour) keeps reading the paused
//! standby, which shows reads are served from it and what the read-your-writes caveat means; `strict`
//! (1.5 s) falls back to the primary once the standby lags past its bound and goes back to the standby
//! when it catches up. Stopping the standby then costs neither a single error.

#[path = "common/private_pg.rs"]
mod private_pg;

mod common;

use std::time::{Duration, Instant};

use common::*;
use private_pg::PrivatePg;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// Polls `check` until it answers `Some`, for at most `within`; panics naming `what` otherwise.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sequencer_reads_routed_total` by target: (primary, replica).
async fn routed(api: &Api) -> (u64, u64) {
    let text = reqwest::get(format!("{}/metrics", api.base)).await.unwrap().text().await.unwrap();
    let count = |target: &str| {
        let series = format!("sequencer_reads_routed_total{{target=\"{target}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[series.len()..].trim().parse::<u64>().unwrap()
    };
    (count("primary"), count("replica"))
}

/// The admin status's `database.readReplica`.
async fn replica_status(api: &Api) -> Value {
    let (status, body) = api.get("/api/v1/admin/status").await;
    assert_eq!(status, 200, "{body}");
    body["database"]["readReplica"].clone()
}

/// Waits until reads of `api` go to the replica (`true`) or to the primary (`false`).
async fn wait_in_use(api: &Api, replica: bool) -> Value {
    eventually(&format!("readReplica.inUse == {replica}"), Duration::from_secs(20), || async {
        let status = replica_status(api).await;
        (status["inUse"] == replica).then_some(status)
    })
    .await
}

/// The stream's events as a read answers them: (head_sequence, sequence numbers returned).
async fn events(api: &Api, agent: &Agent) -> (i64, Vec<i64>) {
    let (status, body) =
        api.get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await;
    assert_eq!(status, 200, "{body}");
    let seqs = body["events"].as_array().unwrap().iter().map(|e| e["sequence_number"].as_i64().unwrap()).collect();
    (body["head_sequence"].as_i64().unwrap(), seqs)
}

async fn proof_status(api: &Api, agent: &Agent, seq: i64) -> u16 {
    let (status, body) =
        api.get(&format!("/api/v1/ves/proofs/{seq}?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await;
    assert!(status == 200 || status == 404, "proof of {seq}: {status} {body}");
    status
}

async fn ingest_and_commit(api: &Api, agent: &Agent, first: u64, last: u64) {
    let batch: Vec<_> = (first..=last).map(|n| agent.event(n)).collect();
    let (status, body) = api.ingest(agent.agent_id, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], batch.len(), "{body}");
    let (status, body) = api
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id,
                   "sequence_start": first, "sequence_end": last}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Runs `sql` on the standby and returns its one text answer.
async fn on_standby(url: &str, sql: &str) -> String {
    let mut conn = PgConnection::connect(url).await.expect("connect to the standby");
    let answer: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_fresh_standby_and_to_the_primary_when_it_lags_or_stops() {
    let primary = PrivatePg::init();
    primary.start(PrivatePg::PRIMARY);
    let standby = PrivatePg::standby_of(&primary);
    standby.start("");
    let (primary_url, standby_url) = (primary.url(""), standby.url(""));
    let pool = sqlx::PgPool::connect(&primary_url).await.unwrap();
    sequencer::store::MIGRATOR.run(&pool).await.expect("migrate the primary");
    pool.close().await;

    let start = |max_lag_ms: &'static str| {
        let db = TestDb { url: primary_url.clone(), name: String::new() };
        let vars = [
            ("READ_DATABASE_URL", standby_url.as_str()),
            ("READ_REPLICA_MAX_LAG_MS", max_lag_ms),
            ("READ_REPLICA_CHECK_INTERVAL_MS", "100"),
            ("WORKER_ENABLED", "false"),
        ]
        .map(|(k, v)| (k, v.to_owned()));
        async move {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            TestServer::start_on(db, &vars).await
        }
    };
    let patient_server = start("3600000").await;
    let strict_server = start("1500").await;
    let (patient, strict) = (Api::admin(&patient_server), Api::admin(&strict_server));

    // Writes go to the primary; once the standby has replayed them, both read them from the standby.
    let agent = Agent::random();
    strict.register_key(&agent).await;
    ingest_and_commit(&strict, &agent, 1, 3).await;
    for api in [&patient, &strict] {
        let status = wait_in_use(api, true).await;
        assert_eq!(status["configured"], true);
        assert_eq!((&status["state"], &status["standby"]), (&json!("fresh"), &json!(true)), "{status}");
        eventually("the standby replays events 1..3 and their commitment", Duration::from_secs(20), || async {
            (events(api, &agent).await.0 == 3 && proof_status(api, &agent, 3).await == 200).then_some(())
        })
        .await;
        let before = routed(api).await;
        assert_eq!(events(api, &agent).await, (3, vec![1, 2, 3]));
        let after = routed(api).await;
        assert_eq!((after.0 - before.0, after.1 - before.1), (0, 1), "one read, served by the replica");
    }

    // Replay paused: the standby keeps the old state while the primary moves on.
    on_standby(&standby_url, "SELECT pg_wal_replay_pause()::text").await;
    eventually("replay pauses", Duration::from_secs(20), || async {
        (on_standby(&standby_url, "SELECT pg_get_wal_replay_pause_state()").await == "paused").then_some(())
    })
    .await;
    ingest_and_commit(&strict, &agent, 4, 5).await;

    // Within its bound, `patient` still reads the standby: the new events are not there yet, and the
    // proof of a just-sequenced event answers 404 (the read-your-writes caveat).
    let before = routed(&patient).await;
    assert_eq!(events(&patient, &agent).await, (3, vec![1, 2, 3]), "served by the paused standby");
    assert_eq!(proof_status(&patient, &agent, 5).await, 404);
    let after = routed(&patient).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (0, 2));
    let status = replica_status(&patient).await;
    assert_eq!(status["inUse"], true, "{status}");

    // Past its bound, `strict` reads the primary: the new events and their proof are there.
    let status = wait_in_use(&strict, false).await;
    // NB: the status rounds the lag to milliseconds, so a lag just past the bound can read as 1.5.
    assert!(status["lagSeconds"].as_f64().unwrap() >= 1.5, "{status}");
    assert_eq!((&status["state"], &status["reachable"]), (&json!("lags"), &json!(true)), "{status}");
    let before = routed(&strict).await;
    assert_eq!(events(&strict, &agent).await, (5, vec![1, 2, 3, 4, 5]), "served by the primary");
    assert_eq!(proof_status(&strict, &agent, 5).await, 200);
    let after = routed(&strict).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (2, 0));

    // Replay resumed: the standby catches up and serves `strict` again.
    on_standby(&standby_url, "SELECT pg_wal_replay_resume()::text").await;
    wait_in_use(&strict, true).await;
    let before = routed(&strict).await;
    assert_eq!(events(&strict, &agent).await.0, 5);
    let after = routed(&strict).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (0, 1), "served by the caught-up standby");
    assert_eq!(events(&patient, &agent).await.0, 5);

    // The standby stops: every read still answers, from the primary, on both.
    tokio::task::block_in_place(|| standby.stop());
    eventually("both fall back to the primary", Duration::from_secs(20), || async {
        for api in [&patient, &strict] {
            assert_eq!(events(api, &agent).await.0, 5, "a read while the standby is down");
            assert_eq!(proof_status(api, &agent, 5).await, 200);
        }
        let (p, s) = (replica_status(&patient).await, replica_status(&strict).await);
        (p["state"] == "unreachable" && s["state"] == "unreachable").then_some(())
    })
    .await;
    for api in [&patient, &strict] {
        let before = routed(api).await;
        assert_eq!(events(api, &agent).await.0, 5);
        let after = routed(api).await;
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "served by the primary");
    }
}
