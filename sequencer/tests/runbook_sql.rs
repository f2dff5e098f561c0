//! The runbook's SQL, run verbatim (placeholders filled in), answers the question it asks about the
//! signed event log.

mod common;

use common::*;
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

const LOCK_CONTENTION: &str = "SELECT pid, now() - pg_stat_activity.query_start AS duration, query
   FROM pg_stat_activity
   WHERE state != 'idle'
   ORDER BY duration DESC;";
const COUNTER_LOCKS: &str = "SELECT * FROM pg_locks
   WHERE relation = 'sequence_counters'::regclass;";
const TENANT_VOLUME: &str = "SELECT tenant_id, COUNT(*)
   FROM events
   WHERE created_at > NOW() - INTERVAL '1 hour'
   GROUP BY tenant_id
   ORDER BY COUNT(*) DESC;";
const AGENT_ACTIVE_KEYS: &str = "SELECT * FROM agent_keys
   WHERE agent_id = '<agent-id>' AND active = true;";
const KEY_ROTATION: &str = "SELECT agent_id, key_id, created_at
   FROM agent_keys
   ORDER BY created_at DESC
   LIMIT 10;";
const GAPS: &str = "-- Find gaps in sequence
WITH seq AS (
  SELECT sequence_number,
         LAG(sequence_number) OVER (ORDER BY sequence_number) as prev_seq
  FROM events
  WHERE tenant_id = '<tenant>' AND store_id = '<store>'
)
SELECT * FROM seq WHERE sequence_number != prev_seq + 1;";
const RANGE_COUNT: &str = "SELECT COUNT(*) FROM events
   WHERE tenant_id = '<tenant>'
     AND store_id = '<store>'
     AND sequence_number BETWEEN <start> AND <end>;";
const DEAD_LETTERS: &str = "SELECT * FROM dead_letter_events
   ORDER BY created_at DESC
   LIMIT 100;";

fn fill(sql: &str, agent: &Agent) -> String {
    sql.replace("<agent-id>", &agent.agent_id.to_string())
        .replace("<tenant>", &agent.tenant_id.to_string())
        .replace("<store>", &agent.store_id.to_string())
        .replace("<start>", "1")
        .replace("<end>", "5")
}

#[tokio::test]
async fn the_runbook_sql_answers_its_questions_about_the_signed_log() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let pool = server.state.store.pool().clone();
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<_> = (0..5).map(|i| agent.event(i)).collect();
    let (_, body) = api.ingest(agent.agent_id, &events).await;
    assert_eq!(body["eventsAccepted"], 5);
    let mut unknown = Agent::random();
    unknown.tenant_id = agent.tenant_id;
    unknown.store_id = agent.store_id;
    api.ingest(unknown.agent_id, &[unknown.event(1)]).await;

    // Lock contention: runs and lists active queries.
    let rows = sqlx::raw_sql(LOCK_CONTENTION).fetch_all(&pool).await.unwrap();
    assert!(!rows.is_empty(), "at least this query itself is active");

    // Counter locks: a writer holding the stream's counter row shows up.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE")
        .bind(agent.tenant_id)
        .bind(agent.store_id)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    let rows = sqlx::raw_sql(COUNTER_LOCKS).fetch_all(&pool).await.unwrap();
    assert!(!rows.is_empty(), "the held counter row lock is visible in pg_locks");
    holder.rollback().await.unwrap();

    // Per-tenant volume over the last hour counts the signed events.
    let rows = sqlx::raw_sql(TENANT_VOLUME).fetch_all(&pool).await.unwrap();
    let ours = rows.iter().find(|r| r.get::<uuid::Uuid, _>("tenant_id") == agent.tenant_id).expect("tenant listed");
    assert_eq!(ours.get::<i64, _>("count"), 5);

    // Agent keys.
    let rows = sqlx::raw_sql(AssertSqlSafe(fill(AGENT_ACTIVE_KEYS, &agent))).fetch_all(&pool).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<i64, _>("key_id"), 1);
    let rows = sqlx::raw_sql(KEY_ROTATION).fetch_all(&pool).await.unwrap();
    assert_eq!(rows[0].get::<uuid::Uuid, _>("agent_id"), agent.agent_id);

    // Commitment range count.
    let rows = sqlx::raw_sql(AssertSqlSafe(fill(RANGE_COUNT, &agent))).fetch_all(&pool).await.unwrap();
    assert_eq!(rows[0].get::<i64, _>(0), 5);

    // Dead letters: the unknown agent's event is there.
    let rows = sqlx::raw_sql(DEAD_LETTERS).fetch_all(&pool).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<String, _>("reason"), "agent_key_invalid");

    // Gaps: none in a healthy stream; one after a row is removed behind the sequencer's back.
    let gaps = sqlx::raw_sql(AssertSqlSafe(fill(GAPS, &agent))).fetch_all(&pool).await.unwrap();
    assert!(gaps.is_empty(), "a healthy stream has no gap");
    let deleted = sqlx::raw_sql(AssertSqlSafe(delete_event_sql(&agent, 3))).execute(&pool).await;
    assert!(deleted.is_err(), "the log is append-only: {deleted:?}");
    // NB: only a superuser bypassing triggers can make a gap; the runbook's query must then find it.
    tamper(&pool, &delete_event_sql(&agent, 3)).await;
    let gaps = sqlx::raw_sql(AssertSqlSafe(fill(GAPS, &agent))).fetch_all(&pool).await.unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].get::<i64, _>("sequence_number"), 4);
    assert_eq!(gaps[0].get::<i64, _>("prev_seq"), 2);
    // A reader never silently skips the hole.
    let (status, body) =
        api.get(&format!("/api/v1/ves/events?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "SEQUENCE_GAP");
    let _ = json!(null);
}

#[tokio::test]
async fn vacuum_analyze_runs_on_the_tables_the_runbook_names() {
    let server = TestServer::start().await;
    let pool = server.state.store.pool();
    for table in ["events", "ves_events", "dead_letter_events", "sequence_counters", "agent_keys"] {
        sqlx::raw_sql(AssertSqlSafe(format!("VACUUM ANALYZE {table};"))).execute(pool).await.unwrap();
    }
}

#[tokio::test]
async fn the_runbook_index_usage_query_runs_verbatim_in_a_new_session() {
    let server = TestServer::start().await;
    // A new connection picks up the database's search_path.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server.db.url).await.unwrap();
    let rows = sqlx::raw_sql(
        "SELECT schemaname, tablename, indexname, idx_scan, idx_tup_read
FROM pg_stat_user_indexes
ORDER BY idx_scan DESC;",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(rows.iter().any(|r| r.get::<String, _>("indexname") == "uq_ves_events_epoch_event_id"));
    assert!(rows.iter().any(|r| r.get::<String, _>("tablename") == "ves_events"));
}
