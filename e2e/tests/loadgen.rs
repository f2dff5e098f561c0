//! The load generator writing into streams that already hold events (`--into-stream`), as the growth
//! benchmark's runs into the fill's growing streams do: its check must read each stream from where the
//! run began, and its JSON must name the streams so that a later run can find them.

use std::process::Command;

use e2e::spawn::{SpawnedSequencer, ThrowawayDb, sequencer_binary};
use serde_json::Value;

const ADMIN_KEY: &str = "ss_e2e_loadgen_admin_key_0123456789abcdef";

fn maintenance_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs the load generator against `url` with `args`; its JSON summary, or what it said when it failed.
fn loadgen(url: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--url", url, "--api-key", ADMIN_KEY, "--clients", "2", "--warmup", "1", "--json"])
        .args(args)
        .output()
        .expect("the load generator runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("a JSON summary"))
}

fn head(url: &str, stream: &str) -> u64 {
    let (tenant, store) = stream.split_once('/').expect("TENANT/STORE");
    let body: Value = reqwest::blocking::Client::new()
        .get(format!("{url}/api/v1/ves/head?tenant_id={tenant}&store_id={store}"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("the stream's head");
    body["head_sequence"].as_u64().expect("a head")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_writes_into_the_first_runs_streams_and_checks_only_its_own_events() {
    let bin = sequencer_binary(None, false).expect("the sequencer binary");
    let db = ThrowawayDb::create(&maintenance_url()).await.expect("a throw-away database");
    let sequencer = SpawnedSequencer::start(&bin, &db.url, ADMIN_KEY, false).expect("the sequencer starts");
    let url = sequencer.base_url.clone();

    let first = tokio::task::spawn_blocking({
        let url = url.clone();
        move || loadgen(&url, &["--streams", "2", "--batch", "10", "--events", "200"])
    })
    .await
    .unwrap()
    .expect("the first run");
    let streams: Vec<String> =
        first["stream_ids"].as_array().expect("stream_ids").iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    assert_eq!(streams.len(), 2);
    // 200 timed events and one warm-up request of 10 per client.
    assert_eq!(first["check"]["stored"], 220, "{first}");

    let (url2, streams2) = (url.clone(), streams.clone());
    let heads: Vec<u64> =
        tokio::task::spawn_blocking(move || streams2.iter().map(|s| head(&url2, s)).collect()).await.unwrap();
    assert_eq!(heads.iter().sum::<u64>(), 220);

    let (url2, streams2) = (url.clone(), streams.clone());
    let second = tokio::task::spawn_blocking(move || {
        let mut args = vec!["--batch", "10", "--events", "100"];
        for s in &streams2 {
            args.extend(["--into-stream", s.as_str()]);
        }
        loadgen(&url2, &args)
    })
    .await
    .unwrap()
    .expect("the second run, into the first run's streams");
    assert_eq!(second["stream_ids"].as_array().unwrap().len(), 2);
    assert_eq!(second["streams"], 2);
    // Only its own events are read back: from each stream's head before it.
    assert_eq!(second["check"]["stored"], 120, "{second}");
    assert_eq!(second["check"]["receipts"], 120, "{second}");
    let (url2, streams2) = (url.clone(), streams.clone());
    let after: Vec<u64> =
        tokio::task::spawn_blocking(move || streams2.iter().map(|s| head(&url2, s)).collect()).await.unwrap();
    assert_eq!(after.iter().sum::<u64>(), 340);
    assert!(after.iter().zip(&heads).all(|(a, b)| a > b), "both streams grew: {heads:?} -> {after:?}");

    // A stream that is not TENANT/STORE is refused before anything is sent.
    let url2 = url.clone();
    let refused =
        tokio::task::spawn_blocking(move || loadgen(&url2, &["--events", "10", "--into-stream", "not-a-stream"]))
            .await
            .unwrap()
            .expect_err("a malformed --into-stream");
    assert!(refused.contains("expected TENANT/STORE"), "{refused}");
    drop(sequencer);
    db.drop_db().await;
}
