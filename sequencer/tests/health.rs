//! `/health`, `/ready` and `/metrics`.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn health_answers_without_the_database_and_ready_reports_the_pool() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let health: Value = http.get(server.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["service"], "stateset-sequencer");
    let resp = http.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ready: Value = resp.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "connected");
    assert_eq!(ready["pool"]["max"], 8);
    assert!(ready["pool"]["size"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn ready_is_a_json_503_when_the_database_is_unreachable() {
    // Port 1 on loopback refuses connections at once.
    let config = sequencer::config::Config::from_map(
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere"),
            ("BOOTSTRAP_ADMIN_API_KEY", ADMIN_KEY),
            ("DB_ACQUIRE_TIMEOUT_MS", "500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .unwrap();
    let metrics = std::sync::Arc::new(sequencer::metrics::Metrics::new());
    let store = sequencer::server::open_store(&config, &metrics).unwrap();
    let state = sequencer::server::build_state(config, store, metrics).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sequencer::server::serve(listener, state, std::future::pending()));
    let http = reqwest::Client::new();
    let resp = http.get(format!("{url}/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["error"]["code"], "DATABASE_UNAVAILABLE");
    // Ingest answers a JSON 503 too, not a 500 and not a hang.
    let agent = Agent::random();
    let resp = http
        .post(format!("{url}/api/v1/ves/events/ingest"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .json(&serde_json::json!({"agentId": agent.agent_id, "events": [agent.event(1)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{body}");
    // /health does not need the database.
    assert_eq!(http.get(format!("{url}/health")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn metrics_expose_the_series_the_runbook_greps_for() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let mut bad = agent.event(2);
    bad.agent_signature.0[0] ^= 1;
    api.ingest(agent.agent_id, &[agent.event(1), bad]).await;
    let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    for needle in [
        "sequencer_ingest_latency_seconds_bucket",
        "sequencer_events_rejected_total{reason=\"invalid_signature\"} 1",
        "sequencer_events_sequenced_total 1",
        "sequencer_db_pool_size",
        "sequencer_db_pool_idle",
        "sequencer_db_pool_in_use",
        "sequencer_db_pool_waiting",
        "sequencer_cache_hits_total{cache=\"api_key\"}",
        "sequencer_cache_misses_total{cache=\"agent_key\"} 1",
        "sequencer_cache_size{cache=\"agent_key\"} 1",
        "sequencer_dead_letter_events 1",
        "sequencer_http_requests_total{method=\"POST\",route=\"/api/v1/ves/events/ingest\",status=\"200\"} 1",
        "sequencer_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/ves/events/ingest\"} 1",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    // The runbook's greps.
    assert!(text.lines().any(|l| l.contains("db_pool")));
    assert!(text.lines().any(|l| l.contains("cache")));
}
