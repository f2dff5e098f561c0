//! Database outage: on a private PostgreSQL (so the shared test server is never disturbed), stopping
//! the database makes `/ready` and ingest answer 503 with a JSON error within `DB_ACQUIRE_TIMEOUT_MS`,
//! and starting it again (same port, same data directory) lets the sequencer recover by itself and
//! continue the stream without a gap.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use uuid::Uuid;

const ACQUIRE_TIMEOUT_MS: u64 = 1000;
/// What a 503 may take beyond `DB_ACQUIRE_TIMEOUT_MS` (a bound on a debug build on a busy machine,
/// not a benchmark).
const MARGIN: Duration = Duration::from_millis(1500);

/// A PostgreSQL server of this test only, in a temporary directory, run as the `postgres` OS user when
/// the test runs as root.
struct PrivatePg {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    fn init() -> Self {
        let bin = sequencer::private_postgres::find_server_binaries().expect(sequencer::private_postgres::INSTALL_HINT);
        let dir = std::env::temp_dir().join(format!("seq-outage-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // SAFETY: getuid has no preconditions.
        let as_postgres = unsafe { libc::getuid() } == 0;
        if as_postgres {
            let status = Command::new("chown").arg("postgres:postgres").arg(&dir).status().expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        // A free port: bound and released at once; only this test starts a server on it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = PrivatePg { bin, dir, port, as_postgres };
        let data = pg.data();
        let out = pg.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(&self.dir).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// Starts the server; `pg_ctl -w` returns once it accepts connections.
    fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=40",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        let out = self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "-t", "60", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (`fast`: open connections are terminated), waiting until it is down.
    fn stop(&self, mode: &str) -> Output {
        self.run("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"])
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_json_503(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    assert!(body.is_object(), "{what}: a JSON body, got {body}");
    assert!(body["error"]["code"].is_string(), "{what}: an error code in {body}");
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value, Duration) {
    let start = Instant::now();
    let response = http.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_quickly_and_the_sequencer_recovers_by_itself() {
    let pg = PrivatePg::init();
    pg.start();
    let pool = sqlx::PgPool::connect(&pg.url()).await.expect("connect the private PostgreSQL");
    sequencer::store::MIGRATOR.run(&pool).await.expect("migrate");
    pool.close().await;

    // NB: an empty name keeps TestDb from dropping anything on the shared test server.
    let db = TestDb { url: pg.url(), name: String::new() };
    let timeout = ACQUIRE_TIMEOUT_MS.to_string();
    let server = TestServer::start_on(db, &[("DB_ACQUIRE_TIMEOUT_MS", &timeout), ("MAX_DB_CONNECTIONS", "4")]).await;
    let api = Api::admin(&server);
    let http = procs::client();
    let agent = Agent::random();
    api.register_key(&agent).await;
    let mut sent = HashSet::new();
    let mut receipts = Vec::new();
    for n in 1..=3 {
        let event = agent.event(n);
        sent.insert(event.event_id);
        let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[event]).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());
    }
    let (status, _, _) = get(&http, &server.url("/ready")).await;
    assert_eq!(status, 200);

    // The database goes away.
    let out = pg.stop("fast");
    assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    let bound = Duration::from_millis(ACQUIRE_TIMEOUT_MS) + MARGIN;
    for attempt in 0..2 {
        let (status, body, elapsed) = get(&http, &server.url("/ready")).await;
        assert_json_503(status, &body, "/ready while the database is down");
        assert_eq!(body["status"], "not_ready", "{body}");
        assert!(elapsed <= bound, "/ready took {elapsed:?} (attempt {attempt}), more than {bound:?}");

        let event = agent.event(100 + attempt);
        sent.insert(event.event_id);
        let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[event]).await.unwrap();
        assert_json_503(answer.status, &answer.body, "ingest while the database is down");
        assert!(answer.retry_after.is_some(), "a 503 carries Retry-After: {}", answer.body);
        assert!(answer.elapsed <= bound, "ingest took {:?} (attempt {attempt}), more than {bound:?}", answer.elapsed);
    }

    // It comes back on the same port and data directory; the sequencer reconnects on its own.
    pg.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = get(&http, &server.url("/ready")).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/ready still {status} 30 s after the database came back: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 4..=6 {
        let event = agent.event(n);
        sent.insert(event.event_id);
        let answer = procs::ingest(&http, &server.base_url, agent.agent_id, &[event]).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["receipts"][0]["sequenceNumber"], n, "{}", answer.body);
        receipts.extend(answer.body["receipts"].as_array().unwrap().iter().cloned());
    }

    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let stored = procs::assert_stream(&pool, agent.tenant_id, agent.store_id, &receipts, &sent).await;
    assert_eq!(stored, 6, "the events refused during the outage were not stored");
    pool.close().await;
    server.stop().await;
    drop(pg);
}
