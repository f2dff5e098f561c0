//! Rate limits hold for the deployment, not per process: two sequencer processes on one database
//! admit together no more than the declared limit per minute (and, within the stated tolerance, no
//! fewer), refusing the rest with 429, `Retry-After` and the metric.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use uuid::Uuid;

fn seconds_into_minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() % 60
}

/// The counters are per calendar minute: start early in one so that the run stays inside it.
async fn wait_for_the_start_of_a_minute() {
    let deadline = std::time::Instant::now() + Duration::from_secs(65);
    while seconds_into_minute() > 40 {
        assert!(std::time::Instant::now() < deadline, "the clock did not reach a new minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn two_replicas_together_admit_the_declared_tenant_limit_and_no_more() {
    const LIMIT: u32 = 40;
    let db = TestDb::migrated().await;
    let env = [("RATE_LIMIT_PER_MINUTE", "40"), ("DB_MIGRATE_ON_STARTUP", "false")];
    let a = SequencerProcess::spawn(&db.url, &env);
    let b = SequencerProcess::spawn(&db.url, &env);
    let (tenant, store) = (Uuid::new_v4(), Uuid::new_v4());
    let key = Api::new(a.base_url.clone(), ADMIN_KEY).mint_key(tenant, &[store], &["read"]).await;
    let replicas = [Api::new(a.base_url.clone(), key.clone()), Api::new(b.base_url.clone(), key.clone())];
    let path = format!("/api/v1/ves/head?tenant_id={tenant}&store_id={store}");

    wait_for_the_start_of_a_minute().await;
    let (mut admitted, mut refused) = ([0u32; 2], [0u32; 2]);
    for i in 0..(3 * LIMIT) as usize {
        let api = &replicas[i % 2];
        let resp = api
            .http
            .get(format!("{}{path}", api.base))
            .header("authorization", format!("ApiKey {key}"))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => admitted[i % 2] += 1,
            429 => {
                let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
                refused[i % 2] += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let total = admitted[0] + admitted[1];
    // The stated tolerance: never more than the limit; at most (lease - 1) tokens per replica unused.
    let tolerance = 2 * (sequencer::ratelimit::lease_size(LIMIT) as u32 - 1);
    assert!(total <= LIMIT, "admitted {total} > {LIMIT} ({admitted:?})");
    assert!(total >= LIMIT - tolerance, "admitted only {total} of {LIMIT} ({admitted:?})");
    assert!(admitted[0] > 0 && admitted[1] > 0, "both replicas served: {admitted:?}");
    assert!(refused[0] > 0 && refused[1] > 0, "both replicas refused: {refused:?}");
    for p in [&a, &b] {
        let metrics = reqwest::get(format!("{}/metrics", p.base_url)).await.unwrap().text().await.unwrap();
        assert!(
            metrics.lines().any(|l| l.contains("ratelimit_rejected") && l.contains("scope=\"tenant\"")),
            "{metrics}"
        );
    }
}
