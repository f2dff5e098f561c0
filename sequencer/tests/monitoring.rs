//! The monitoring files name real series: a running sequencer, after ingest, a signature rejection, a
//! paused stream and a non-contiguous commitment request, exports every `sequencer_*` metric that the
//! alerting rules (monitoring/sequencer-rules.yaml) and the dashboard (monitoring/sequencer-dashboard.json)
//! use, so renaming a metric breaks this test rather than silently blinding an alert.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

const RULES: &str = include_str!("../../monitoring/sequencer-rules.yaml");
const DASHBOARD: &str = include_str!("../../monitoring/sequencer-dashboard.json");

/// Every `sequencer_…` metric name in a PromQL-bearing text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("sequencer_") {
        let start = i + at;
        let word_start = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            text[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |n| start + n);
        if word_start {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The PromQL of the dashboard's panels and variables.
fn dashboard_queries() -> String {
    let board: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut out = String::new();
    for panel in board["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push_str(target["expr"].as_str().expect("expr"));
            out.push('\n');
        }
    }
    for var in board["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["query"].as_str() {
            out.push_str(q);
            out.push('\n');
        }
    }
    out
}

/// The PromQL of the rules (their `expr:` blocks; annotations mention no series).
fn rule_queries() -> String {
    let mut out = String::new();
    let mut in_expr = false;
    for line in RULES.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("expr:") {
            in_expr = true;
            out.push_str(trimmed.trim_start_matches("expr:"));
        } else if in_expr && line.starts_with("          ") && !trimmed.contains(':') {
            out.push_str(trimmed);
        } else {
            in_expr = false;
        }
        out.push('\n');
    }
    out
}

/// The sample value of `series` (name plus labels exactly as exported) in an exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported() {
    let server = TestServer::start_with(&[("WORKER_ENABLED", "false")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    for n in 1..=3 {
        let (status, body) = api.ingest(agent.agent_id, &[agent.event(n)]).await;
        assert_eq!(status, 200, "{body}");
    }
    // A signature that does not verify.
    let impostor = Agent { key: Agent::random().key, ..agent.clone() };
    let (_, body) = api.ingest(agent.agent_id, &[impostor.event(4)]).await;
    assert_eq!(body["events_rejected"].as_u64().or(body["eventsRejected"].as_u64()), Some(1), "{body}");
    // A commitment past the head: "non-contiguous sequence".
    let (status, body) = api
        .post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": 1, "sequence_end": 10}),
        )
        .await;
    assert_eq!(body["error"]["code"], "NON_CONTIGUOUS_SEQUENCE", "{status} {body}");
    // A paused stream refuses ingest.
    let stream = agent.stream();
    server.state.store.set_paused(stream, true, Some("test")).await.unwrap();
    let (status, body) = api.ingest(agent.agent_id, &[agent.event(5)]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("STREAM_PAUSED")), "{body}");
    let (status, _) = api.get("/ready").await;
    assert_eq!(status, 200);

    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let exposition = response.text().await.unwrap();
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();

    let rules = metric_names(&rule_queries());
    let dashboard = metric_names(&dashboard_queries());
    assert!(rules.len() >= 10 && dashboard.len() >= 20, "names found: {rules:?} {dashboard:?}");
    let missing: Vec<&String> = rules.union(&dashboard).filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "series the monitoring uses but /metrics does not export: {missing:?}");

    // And the new series count what they say they count.
    assert_eq!(sample(&exposition, "sequencer_commitment_failures_total{reason=\"non_contiguous\"}"), Some(1.0));
    assert_eq!(sample(&exposition, "sequencer_events_rejected_total{reason=\"invalid_signature\"}"), Some(1.0));
    assert_eq!(sample(&exposition, "sequencer_ingest_paused_rejections_total"), Some(1.0));
    assert_eq!(sample(&exposition, "sequencer_ready"), Some(1.0));
    assert_eq!(sample(&exposition, "sequencer_ready_failures_total{reason=\"unreachable\"}"), Some(0.0));

    // The sizes SequencerLogIndexesOutgrowSharedBuffers compares: the server's shared_buffers, and the
    // log's indexes whose keys are random, found here by their definitions: legacy events' entity and
    // event id indexes (the signed events' are keyed by epoch since migrations 0024 and 0028, so their new
    // keys go into one small region, and they are not counted).
    let pool = server.state.store.pool();
    let buffers: i64 =
        sqlx::query_scalar("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetch_one(pool).await.unwrap();
    assert_eq!(sample(&exposition, "sequencer_database_shared_buffers_bytes"), Some(buffers as f64));
    let random_key: i64 = sqlx::query_scalar(
        "SELECT SUM(pg_relation_size(i.indexrelid))::bigint FROM pg_index i \
         WHERE i.indrelid = 'legacy_events'::regclass \
           AND (pg_get_indexdef(i.indexrelid) LIKE '%(tenant_id, event_id)' \
             OR pg_get_indexdef(i.indexrelid) LIKE '%entity_id%')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    // Two indexes, each at least its metapage.
    assert!(random_key >= 2 * 8192, "{random_key}");
    assert_eq!(sample(&exposition, "sequencer_log_random_key_index_bytes"), Some(random_key as f64));
    server.stop().await;
}

#[test]
fn the_name_scanner_finds_whole_metric_names_only() {
    let names = metric_names("rate(sequencer_a_total[5m]) / stateset_sequencer_b + sequencer_c_bucket{le=\"1\"}");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["sequencer_a_total", "sequencer_c_bucket"]);
}
