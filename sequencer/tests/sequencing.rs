//! Group commit's fastest path against a real database: the head a process remembers for a stream is
//! only a guess, so a stale guess (another replica wrote since, or an operator paused the stream) and a
//! replay must each fall back to the locked path without writing anything at a wrong number.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::{EventBuilder, VesEventEnvelope};

use sequencer::store::APPLICATION_NAME;
use sequencer::store::events::StreamKey;
use sequencer::testing::{ADMIN_KEY, TestDb, TestServer};

#[path = "common/proxy.rs"]
mod proxy;

struct Writer {
    stream: StreamKey,
    agent_id: Uuid,
    key: SigningKey,
}

impl Writer {
    fn new() -> Self {
        Writer {
            stream: StreamKey { tenant_id: Uuid::new_v4(), store_id: Uuid::new_v4() },
            agent_id: Uuid::new_v4(),
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    fn event(&self, n: u64) -> VesEventEnvelope {
        EventBuilder::new(self.stream.tenant_id, self.stream.store_id, self.agent_id, 1)
            .entity("InventoryItem", "SKU-1")
            .event_type("Adjusted")
            .payload(json!({"n": n}))
            .sign(&self.key)
    }

    /// An event of `entity` that checks it is at `base_version` (optimistic concurrency).
    fn checked(&self, entity: &str, base_version: u64) -> VesEventEnvelope {
        EventBuilder::new(self.stream.tenant_id, self.stream.store_id, self.agent_id, 1)
            .entity("InventoryItem", entity)
            .event_type("Adjusted")
            .base_version(base_version)
            .payload(json!({"entity": entity, "base": base_version}))
            .sign(&self.key)
    }
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn register(base: &str, w: &Writer) {
    let body = json!({
        "tenantId": w.stream.tenant_id,
        "agentId": w.agent_id,
        "keyId": 1,
        "publicKey": format!("0x{}", hex::encode(w.key.verifying_key().to_bytes())),
    });
    let (status, body) = post(base, "/api/v1/agents/keys", body).await;
    assert_eq!(status, 200, "{body}");
}

async fn ingest(base: &str, w: &Writer, events: &[VesEventEnvelope]) -> (u16, Value) {
    post(base, "/api/v1/ves/events/ingest", json!({"agentId": w.agent_id, "events": events})).await
}

/// The stream as stored: (sequence number, event id), in order, and the counter's head.
async fn stored(url: &str, stream: StreamKey) -> (Vec<(i64, Uuid)>, i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let rows = sqlx::query_as(
        "SELECT sequence_number, event_id FROM events WHERE tenant_id = $1 AND store_id = $2 ORDER BY 1",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .fetch_all(&pool)
    .await
    .expect("read the stream");
    let head =
        sqlx::query_scalar("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .fetch_one(&pool)
            .await
            .expect("read the head");
    pool.close().await;
    (rows, head)
}

/// Returns once `n` of the sequencer's statements wait for a lock (polled every 10 ms, for 5 s at most).
async fn wait_for_lock_waiters(pool: &sqlx::PgPool, n: i64) {
    let mut waited = 0;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(APPLICATION_NAME)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting == n {
            return;
        }
        assert!(waited < 5_000, "{waiting} statements wait for a lock, never {n}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 10;
    }
}

/// A transaction holding `stream`'s counter row lock, as an operator's transaction or another replica's
/// statement would: the stream's next statement waits for it until it ends.
async fn hold_counter_row(pool: &sqlx::PgPool, stream: StreamKey) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE")
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

#[tokio::test]
async fn a_head_moved_by_another_replica_is_noticed_and_nothing_is_written_at_the_stale_number() {
    let a = TestServer::start().await;
    // NB: an empty name: the database belongs to `a`.
    let b = TestServer::start_on(TestDb { url: a.db.url.clone(), name: String::new() }, &[]).await;
    let w = Writer::new();
    register(&a.base_url, &w).await;
    let events: Vec<VesEventEnvelope> = (1..=4).map(|n| w.event(n)).collect();
    // Each process writes after the other did, so each one's remembered head is stale every time.
    for (i, base) in [&a.base_url, &b.base_url, &a.base_url, &b.base_url].into_iter().enumerate() {
        let (status, body) = ingest(base, &w, &events[i..=i]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["receipts"][0]["sequenceNumber"], i as u64 + 1, "{body}");
    }
    let (rows, head) = stored(&a.db.url, w.stream).await;
    let want: Vec<(i64, Uuid)> = events.iter().enumerate().map(|(i, e)| (i as i64 + 1, e.event_id)).collect();
    assert_eq!(rows, want);
    assert_eq!(head, 4);
}

#[tokio::test]
async fn a_stream_paused_after_this_process_wrote_it_takes_no_more_events_until_resumed() {
    let server = TestServer::start().await;
    let w = Writer::new();
    register(&server.base_url, &w).await;
    let (status, body) = ingest(&server.base_url, &w, &[w.event(1)]).await;
    assert_eq!(status, 200, "{body}");

    server.state.store.set_paused(w.stream, true, Some("test")).await.unwrap();
    let (status, body) = ingest(&server.base_url, &w, &[w.event(2)]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STREAM_PAUSED", "{body}");
    assert_eq!(stored(&server.db.url, w.stream).await.1, 1, "nothing was numbered while paused");

    server.state.store.set_paused(w.stream, false, None).await.unwrap();
    let (status, body) = ingest(&server.base_url, &w, &[w.event(3)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["receipts"][0]["sequenceNumber"], 2, "{body}");
}

#[tokio::test]
async fn a_replay_in_a_group_after_the_head_is_known_answers_its_original_receipt() {
    let server = TestServer::start().await;
    let w = Writer::new();
    register(&server.base_url, &w).await;
    let (first, second) = (w.event(1), w.event(2));
    let (status, original) = ingest(&server.base_url, &w, std::slice::from_ref(&first)).await;
    assert_eq!(status, 200, "{original}");

    let (status, body) = ingest(&server.base_url, &w, &[first.clone(), second.clone()]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], 1, "{body}");
    assert_eq!(body["receipts"][0], original["receipts"][0], "the replay answers the original receipt");
    assert_eq!(body["receipts"][1]["sequenceNumber"], 2, "{body}");
    let (rows, head) = stored(&server.db.url, w.stream).await;
    assert_eq!(rows, vec![(1, first.event_id), (2, second.event_id)]);
    assert_eq!(head, 2);
}

/// A TCP proxy to PostgreSQL that counts the Sync messages (one per round trip: a statement's
/// Parse/Bind/Execute, or sqlx's ping) sent on connections whose startup message names
/// `application_name`. Only for connections without TLS.
async fn sync_counting_proxy(target: String, application_name: &'static str, syncs: Arc<AtomicUsize>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, syncs) = (target.clone(), syncs.clone());
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let to_server = async move {
                    let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 16 * 1024]);
                    let (mut started, mut counted) = (false, false);
                    loop {
                        let n = match cr.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if uw.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        loop {
                            // The startup message has no type byte; every later one has.
                            let (header, len_at) = if started { (5, 1) } else { (4, 0) };
                            if buf.len() < header {
                                break;
                            }
                            let len = u32::from_be_bytes(buf[len_at..len_at + 4].try_into().unwrap()) as usize;
                            if buf.len() < len_at + len {
                                break;
                            }
                            let message: Vec<u8> = buf.drain(..len_at + len).collect();
                            if !started {
                                started = true;
                                let needle = format!("application_name\0{application_name}\0");
                                counted = message.windows(needle.len()).any(|w| w == needle.as_bytes());
                            } else if counted && message[0] == b'S' {
                                syncs.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                };
                let to_client = async move {
                    let _ = tokio::io::copy(&mut ur, &mut cw).await;
                };
                tokio::join!(to_server, to_client);
            });
        }
    });
    port
}

/// The round trips (Sync messages) of `QUEUED` - 1 groups of one event each, made by `event(w, n)` for
/// n in 2..=QUEUED, written one after another by a stream's worker: every request queues behind the
/// first, whose group waits inside its statement for the stream's counter row (held here) until all
/// have queued. Returns them with the number of groups.
const QUEUED: i64 = 20;
async fn round_trips_of_queued_groups(event: fn(&Writer, u64) -> VesEventEnvelope) -> (usize, usize) {
    let db = TestDb::migrated().await;
    let syncs = Arc::new(AtomicUsize::new(0));
    let port = sync_counting_proxy(proxy::through(&db.url, 0).1, APPLICATION_NAME, syncs.clone()).await;
    // NB: an empty name: the database belongs to `db`. No TLS, so that the proxy can read the messages.
    let url = format!("{}?sslmode=disable", proxy::through(&db.url, port).0);
    let proxied = TestDb { url, name: String::new() };
    // One event per group, so that every request queued below is a group of its own.
    let server = TestServer::start_on(proxied, &[("INGEST_MAX_GROUP_EVENTS", "1"), ("TLOG_ENABLED", "false")]).await;
    let w = Writer::new();
    register(&server.base_url, &w).await;
    let (status, body) = ingest(&server.base_url, &w, &[w.event(0)]).await;
    assert_eq!(status, 200, "{body}");

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let lock = hold_counter_row(&pool, w.stream).await;
    let requests: Vec<_> = (1..=QUEUED as u64)
        .map(|n| {
            let (base, event, agent_id) = (server.base_url.clone(), event(&w, n), w.agent_id);
            tokio::spawn(async move {
                post(&base, "/api/v1/ves/events/ingest", json!({"agentId": agent_id, "events": [event]})).await
            })
        })
        .collect();
    let metrics = server.state.metrics.clone();
    let mut waited = 0;
    while metrics.ingest_queued_events.get() < QUEUED {
        assert!(waited < 3_000, "the requests never all queued");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 10;
    }
    // The first group's statement (and the ping that took its connection) went out before this.
    let before = syncs.load(Ordering::SeqCst);
    let transactions = metrics.sequencing_transactions.get();
    lock.commit().await.unwrap();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(1)), "{body}");
    }
    assert_eq!(metrics.sequencing_transactions.get() - transactions, QUEUED as u64, "one group per request");
    let round_trips = syncs.load(Ordering::SeqCst) - before;
    assert_eq!(stored(&db.url, w.stream).await.1, QUEUED + 1);
    pool.close().await;
    server.stop().await;
    (round_trips, QUEUED as usize - 1)
}

/// A busy stream's worker keeps its pool connection from group to group, so sqlx's pings on taking a
/// connection from the pool and on returning it (a round trip each) are paid once per busy spell
/// rather than twice per group: a group is one round trip.
#[tokio::test]
async fn a_busy_streams_groups_share_one_connection_and_one_round_trip_each() {
    let (round_trips, groups) = round_trips_of_queued_groups(Writer::event).await;
    // The other groups' statements, and two pings only where the connection went back to the pool and
    // was taken again (after HOLD_CONNECTION_MAX, on a slow machine) or at the spell's end; taken per
    // group, the connection costs three round trips a group (57 and more).
    assert!((groups..2 * groups).contains(&round_trips), "{round_trips} round trips for {groups} groups");
}

/// Events that check their entity's version (`base_version`, which newer clients send on nearly every
/// event) are written at a remembered head by one statement that counts the versions too, not by a
/// transaction of six round trips.
#[tokio::test]
async fn a_group_that_checks_versions_is_one_round_trip_at_a_known_head() {
    // Each request its own entity, so that the order they queue in does not matter.
    let (round_trips, groups) = round_trips_of_queued_groups(|w, n| w.checked(&format!("ITEM-{n}"), 0)).await;
    // Under the lock each group would take four statements (lock, ids, versions, insert): 86 were counted.
    assert!((groups..2 * groups).contains(&round_trips), "{round_trips} round trips for {groups} groups");
}

/// Two replicas check the same entity's version at the same head, each in its one statement, while a
/// transaction holds the stream's counter row: one is written, and the other, whose counted version
/// became stale when the first committed, writes nothing and is refused under the lock with the actual
/// version. A version that is wrong at a head that is right is refused the same way.
#[tokio::test]
async fn a_version_checked_at_a_head_that_moves_before_the_statement_locks_it_is_refused() {
    let a = TestServer::start().await;
    let b = TestServer::start_on(TestDb { url: a.db.url.clone(), name: String::new() }, &[]).await;
    let w = Writer::new();
    register(&a.base_url, &w).await;
    let (status, body) = ingest(&a.base_url, &w, &[w.checked("SKU-1", 0), w.checked("SKU-1", 1)]).await;
    assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(2)), "{body}");

    let pool = sqlx::PgPool::connect(&a.db.url).await.unwrap();
    let lock = hold_counter_row(&pool, w.stream).await;
    let send = |base: &str, event: VesEventEnvelope| {
        let (base, agent_id) = (base.to_owned(), w.agent_id);
        tokio::spawn(async move {
            post(&base, "/api/v1/ves/events/ingest", json!({"agentId": agent_id, "events": [event]})).await
        })
    };
    // `a` remembers the head; `b` reads it without a lock. Both count version 2, then wait for the lock.
    let (from_a, from_b) = (w.checked("SKU-1", 2), w.checked("SKU-1", 2));
    let requests = [send(&a.base_url, from_a.clone()), send(&b.base_url, from_b.clone())];
    wait_for_lock_waiters(&pool, 2).await;
    lock.commit().await.unwrap();
    let mut answers = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        answers.push(body);
    }
    let accepted: Vec<u64> = answers.iter().map(|b| b["eventsAccepted"].as_u64().unwrap()).collect();
    assert_eq!(accepted.iter().sum::<u64>(), 1, "exactly one of the two is written: {answers:?}");
    let refused = &answers[accepted.iter().position(|n| *n == 0).unwrap()];
    assert_eq!(refused["rejections"][0]["reason"], "version_conflict: expected 2, actual 3", "{refused}");
    let written = if accepted[0] == 1 { from_a.event_id } else { from_b.event_id };

    // A remembered head that is right, with a version that is not.
    let (status, body) = ingest(&a.base_url, &w, &[w.checked("SKU-1", 2)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rejections"][0]["reason"], "version_conflict: expected 2, actual 3", "{body}");
    let (status, body) = ingest(&a.base_url, &w, &[w.checked("SKU-1", 3)]).await;
    assert_eq!((status, body["receipts"][0]["sequenceNumber"].as_u64()), (200, Some(4)), "{body}");

    let (rows, head) = stored(&a.db.url, w.stream).await;
    assert_eq!(head, 4);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4], "gap-free, nothing written twice");
    assert_eq!(rows[2].1, written);
    pool.close().await;
}

/// A server (configured by `vars`) that remembers the heads of `writers`' streams, and whose group
/// writer waits inside a statement on a row lock held by `lock` (another stream's counter row).
struct BlockedWriter {
    server: TestServer,
    /// Another replica on the same database.
    other: TestServer,
    lock: sqlx::Transaction<'static, sqlx::Postgres>,
    lock_pool: sqlx::PgPool,
    blocked: tokio::task::JoinHandle<(u16, Value)>,
    /// Each writer's first event, numbered 1.
    firsts: Vec<VesEventEnvelope>,
}

async fn block_the_writer(writers: &[Writer], vars: &[(&str, &str)]) -> BlockedWriter {
    block_the_writer_after(writers, vars, 1).await
}

/// [`block_the_writer`], once each writer's stream holds `events` events (`event(0)` and on).
async fn block_the_writer_after(writers: &[Writer], vars: &[(&str, &str)], events: u64) -> BlockedWriter {
    let server = TestServer::start_with(vars).await;
    let other = TestServer::start_on(TestDb { url: server.db.url.clone(), name: String::new() }, &[]).await;
    let blocker = Writer::new();
    let mut firsts = Vec::new();
    for w in writers.iter().chain([&blocker]) {
        register(&server.base_url, w).await;
        let stored: Vec<VesEventEnvelope> = (0..events).map(|n| w.event(n)).collect();
        let (status, body) = ingest(&server.base_url, w, &stored).await;
        assert_eq!(status, 200, "{body}");
        firsts.push(stored[0].clone());
    }
    let lock_pool = sqlx::PgPool::connect(&server.db.url).await.unwrap();
    let lock = hold_counter_row(&lock_pool, blocker.stream).await;
    let (base, event, agent_id) = (server.base_url.clone(), blocker.event(1), blocker.agent_id);
    let blocked = tokio::spawn(async move {
        post(&base, "/api/v1/ves/events/ingest", json!({"agentId": agent_id, "events": [event]})).await
    });
    wait_for_lock_waiters(&lock_pool, 1).await;
    BlockedWriter { server, other, lock, lock_pool, blocked, firsts }
}

impl BlockedWriter {
    /// Sends one request per writer and returns once all their groups wait for the blocked writer.
    async fn queue(
        &self,
        requests: Vec<(&Writer, Vec<VesEventEnvelope>)>,
    ) -> Vec<tokio::task::JoinHandle<(u16, Value)>> {
        let n = requests.len();
        let handles = requests
            .into_iter()
            .map(|(w, events)| {
                let (base, agent_id) = (self.server.base_url.clone(), w.agent_id);
                tokio::spawn(async move {
                    post(&base, "/api/v1/ves/events/ingest", json!({"agentId": agent_id, "events": events})).await
                })
            })
            .collect();
        let sequencer = self.server.state.ingest.sequencer().clone();
        let mut waited = 0;
        while sequencer.groups_waiting() < n {
            assert!(waited < 5_000, "only {} of {n} groups queued", sequencer.groups_waiting());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 10;
        }
        handles
    }

    async fn release(self) -> (TestServer, TestServer) {
        self.lock.commit().await.unwrap();
        let (status, body) = self.blocked.await.unwrap();
        assert_eq!(status, 200, "{body}");
        self.lock_pool.close().await;
        (self.server, self.other)
    }
}

/// A pool of two connections: one writer at most, so that the groups queued behind the blocked one
/// stay queued until the lock is released.
const ONE_WRITER: &[(&str, &str)] = &[("MAX_DB_CONNECTIONS", "2")];

/// The transaction ids of the rows of these streams' events numbered `from` and later.
async fn writers_of(url: &str, writers: &[&Writer], from: i64) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tenants: Vec<Uuid> = writers.iter().map(|w| w.stream.tenant_id).collect();
    let xids = sqlx::query_scalar(
        "SELECT DISTINCT xmin::text FROM ves_events WHERE tenant_id = ANY($1) AND sequence_number >= $2",
    )
    .bind(&tenants)
    .bind(from)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    xids
}

/// Groups of several streams that become ready while a statement runs are written by one
/// statement, each only if its stream's head is still the one it was numbered after: a stream another
/// replica wrote meanwhile is numbered again under its lock, and a paused one takes nothing.
#[tokio::test]
async fn groups_of_several_streams_ready_together_are_written_by_one_statement_at_their_own_heads() {
    let writers: Vec<Writer> = (0..6).map(|_| Writer::new()).collect();
    let blocked = block_the_writer(&writers, ONE_WRITER).await;
    let queued = blocked.queue(writers.iter().map(|w| (w, vec![w.event(1), w.event(2)])).collect()).await;
    // Meanwhile another replica writes stream 1, and an operator pauses stream 2.
    let (status, body) = ingest(&blocked.other.base_url, &writers[1], &[writers[1].event(9)]).await;
    assert_eq!(status, 200, "{body}");
    blocked.other.state.store.set_paused(writers[2].stream, true, Some("test")).await.unwrap();
    let (server, other) = blocked.release().await;

    let mut answers = Vec::new();
    for request in queued {
        answers.push(request.await.unwrap());
    }
    for (i, (status, body)) in answers.iter().enumerate() {
        match i {
            2 => {
                assert_eq!(*status, 503, "{body}");
                assert_eq!(body["error"]["code"], "STREAM_PAUSED", "{body}");
            }
            1 => {
                assert_eq!(*status, 200, "{body}");
                assert_eq!(body["receipts"][0]["sequenceNumber"], 3, "numbered after the other replica's: {body}");
                assert_eq!(body["receipts"][1]["sequenceNumber"], 4, "{body}");
            }
            _ => {
                assert_eq!(*status, 200, "{body}");
                assert_eq!(body["receipts"][0]["sequenceNumber"], 2, "{body}");
                assert_eq!(body["receipts"][1]["sequenceNumber"], 3, "{body}");
            }
        }
    }
    let together: Vec<&Writer> = [0, 3, 4, 5].iter().map(|i| &writers[*i]).collect();
    assert_eq!(writers_of(&server.db.url, &together, 2).await.len(), 1, "one statement wrote the four streams");
    for (i, w) in writers.iter().enumerate() {
        let (rows, head) = stored(&server.db.url, w.stream).await;
        let want = match i {
            1 => 4,
            2 => 1,
            _ => 3,
        };
        assert_eq!(head, want, "stream {i}");
        let numbers: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(numbers, (1..=want).collect::<Vec<_>>(), "stream {i} has no gap");
    }
    // Each stream's leaf run covers exactly its events.
    let pool = sqlx::PgPool::connect(&server.db.url).await.unwrap();
    for (i, w) in writers.iter().enumerate() {
        let covered: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(last_sequence - first_sequence + 1)::bigint FROM event_leaf_runs \
             WHERE tenant_id = $1 AND store_id = $2",
        )
        .bind(w.stream.tenant_id)
        .bind(w.stream.store_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(covered, Some(stored(&server.db.url, w.stream).await.1), "stream {i}'s runs");
    }
    pool.close().await;
    other.stop().await;
    server.stop().await;
}

/// A replayed event in one of the groups written together fails the shared statement, which writes
/// nothing; each group is then written alone, so the replay answers its original receipt and the
/// others are numbered as if nothing had happened.
#[tokio::test]
async fn a_replay_in_one_of_the_groups_written_together_costs_the_others_nothing() {
    let writers: Vec<Writer> = (0..4).map(|_| Writer::new()).collect();
    let blocked = block_the_writer(&writers, ONE_WRITER).await;
    let replayed = blocked.firsts[2].clone();
    let requests = writers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let first = if i == 2 { replayed.clone() } else { w.event(1) };
            (w, vec![first, w.event(2)])
        })
        .collect();
    let queued = blocked.queue(requests).await;
    let (server, other) = blocked.release().await;
    for (i, request) in queued.into_iter().enumerate() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        if i == 2 {
            assert_eq!(body["eventsAccepted"], 1, "{body}");
            assert_eq!(body["receipts"][0]["sequenceNumber"], 1, "the original receipt: {body}");
            assert_eq!(body["receipts"][1]["sequenceNumber"], 2, "{body}");
        } else {
            assert_eq!(body["eventsAccepted"], 2, "{body}");
            assert_eq!(body["receipts"][1]["sequenceNumber"], 3, "{body}");
        }
    }
    for (i, w) in writers.iter().enumerate() {
        let (rows, head) = stored(&server.db.url, w.stream).await;
        let want = if i == 2 { 2 } else { 3 };
        assert_eq!(head, want, "stream {i}");
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=want).collect::<Vec<_>>(), "stream {i}");
    }
    other.stop().await;
    server.stop().await;
}

/// Groups that check their entities' versions (newer clients' events) are written together with other
/// streams' groups, each only if its versions hold at the head it expects; the statement moves the
/// marks of the entities it counted far enough. A group whose version is stale, and one whose head
/// moved, cost the others nothing: the first is refused with the actual version, the second numbered
/// again under its lock.
#[tokio::test]
async fn groups_that_check_versions_are_written_together_each_only_if_its_versions_hold() {
    let writers: Vec<Writer> = (0..5).map(|_| Writer::new()).collect();
    // SKU-1 at version 33 in each stream, without a mark: the next check counts 33 and moves it.
    let blocked = block_the_writer_after(&writers, ONE_WRITER, 33).await;
    let requests = writers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let events = match i {
                2 => vec![w.checked("SKU-1", 5)],
                4 => vec![w.event(33), w.event(34)],
                _ => vec![w.checked("SKU-1", 33), w.checked("SKU-1", 34)],
            };
            (w, events)
        })
        .collect();
    let queued = blocked.queue(requests).await;
    // Meanwhile another replica writes another entity of stream 1.
    let (status, body) = ingest(&blocked.other.base_url, &writers[1], &[writers[1].checked("SKU-9", 0)]).await;
    assert_eq!(status, 200, "{body}");
    let (server, other) = blocked.release().await;

    for (i, request) in queued.into_iter().enumerate() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        match i {
            2 => {
                assert_eq!(body["eventsAccepted"], 0, "{body}");
                assert_eq!(body["rejections"][0]["reason"], "version_conflict: expected 5, actual 33", "{body}");
            }
            1 => {
                let numbers = [&body["receipts"][0]["sequenceNumber"], &body["receipts"][1]["sequenceNumber"]];
                assert_eq!(numbers, [35, 36], "numbered after the other replica's: {body}");
            }
            _ => {
                let numbers = [&body["receipts"][0]["sequenceNumber"], &body["receipts"][1]["sequenceNumber"]];
                assert_eq!(numbers, [34, 35], "{body}");
            }
        }
    }
    let together: Vec<&Writer> = [0, 3, 4].iter().map(|i| &writers[*i]).collect();
    assert_eq!(writers_of(&server.db.url, &together, 34).await.len(), 1, "one statement wrote the three streams");
    let pool = sqlx::PgPool::connect(&server.db.url).await.unwrap();
    for (i, w) in writers.iter().enumerate() {
        let want = match i {
            1 => 36,
            2 => 33,
            _ => 35,
        };
        let (rows, head) = stored(&server.db.url, w.stream).await;
        assert_eq!(head, want, "stream {i}");
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=want).collect::<Vec<_>>(), "stream {i}");
        let marks: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT entity_id, version, at_sequence FROM entity_version_marks \
             WHERE tenant_id = $1 AND store_id = $2 ORDER BY entity_id",
        )
        .bind(w.stream.tenant_id)
        .bind(w.stream.store_id)
        .fetch_all(&pool)
        .await
        .unwrap();
        let want_marks: Vec<(String, i64, i64)> = match i {
            // Counted under the lock at head 34 (after SKU-9's event); refused at head 33, still counted.
            1 => vec![("SKU-1".into(), 33, 34)],
            2 => vec![("SKU-1".into(), 33, 33)],
            // Never checked.
            4 => vec![],
            // Counted by the shared statement at the head its group expected.
            _ => vec![("SKU-1".into(), 33, 33)],
        };
        assert_eq!(marks, want_marks, "stream {i}'s marks");
    }
    pool.close().await;
    // The moved marks count on: each stream's SKU-1 at its version, checked from its mark.
    for (i, w) in writers.iter().enumerate() {
        let version = if i == 2 { 33 } else { 35 };
        let (status, body) = ingest(&server.base_url, w, &[w.checked("SKU-1", version)]).await;
        assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(1)), "stream {i}: {body}");
    }
    other.stop().await;
    server.stop().await;
}

/// A statement waiting for a row lock (an operator's transaction, another replica's) holds up only its
/// own groups: a group of another stream that has waited `STALLED_AFTER` for the busy writer starts
/// another writer and is written while the lock is still held.
#[tokio::test]
async fn a_writer_stalled_on_a_lock_does_not_hold_up_other_streams() {
    let w = Writer::new();
    // The default pool of eight: up to four writers.
    let blocked = block_the_writer(std::slice::from_ref(&w), &[]).await;
    let (status, body) = ingest(&blocked.server.base_url, &w, &[w.event(1)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["receipts"][0]["sequenceNumber"], 2, "{body}");
    assert!(!blocked.blocked.is_finished(), "the blocked group is still waiting for its lock");
    let (server, other) = blocked.release().await;
    assert_eq!(stored(&server.db.url, w.stream).await.1, 2);
    other.stop().await;
    server.stop().await;
}
