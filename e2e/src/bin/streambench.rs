//! `streambench`: many streams with a few events each (issue 15, item 4).
//!
//! Measures, against a sequencer it starts (`--spawn`, as `loadgen`) or one already running:
//! - the time to sequence the first event of a new stream against the next event of a stream that
//!   already exists, one request at a time from one client, alternating the two so that machine noise
//!   falls on both alike (before and after the fill);
//! - the sequencer's resident memory (VmRSS from /proc, with `--spawn`) as it writes `--streams` new
//!   streams of `--events-per-stream` events each, then as many again (the per-stream state this
//!   process keeps is bounded, so memory must level off);
//! - then checks that every stream holds exactly 1..K;
//! - and, with `--spawn`, once the transparency log holds every stream, the CPU the sequencer and the
//!   local PostgreSQL spend over `--idle-seconds` of no load (what the streams cost at rest).
//!
//! One tenant and one agent write every stream (streams are stores of that tenant), so no key has to
//! be registered per stream. Every event is signed before the clock starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use ed25519_dalek::SigningKey;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::{EventBuilder, VesEventEnvelope};

#[derive(Parser, Debug, Clone)]
#[command(name = "streambench", about = "Memory and first-event latency of stateset-sequencer over many streams")]
struct Args {
    // The sequencer (`--url`/`--api-key`, or `--spawn` on a throw-away database).
    #[command(flatten)]
    target: e2e::spawn::Target,
    /// New streams written by each of the two fill rounds.
    #[arg(long, default_value_t = 100_000)]
    streams: usize,
    /// Events per stream (sent in one request).
    #[arg(long, default_value_t = 3)]
    events_per_stream: usize,
    /// Concurrent clients of the fill.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Pairs (first event of a new stream, next event of an existing one) timed before and after.
    #[arg(long, default_value_t = 1000)]
    probes: usize,
    /// With --spawn: once the transparency log holds every stream, the CPU the sequencer and
    /// PostgreSQL spend over this many seconds of no load (what keeping many streams costs at rest).
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

struct Writer {
    tenant_id: Uuid,
    agent_id: Uuid,
    key: SigningKey,
}

impl Writer {
    fn events(&self, store_id: Uuid, first: u64, n: usize) -> Vec<VesEventEnvelope> {
        (0..n as u64)
            .map(|i| {
                EventBuilder::new(self.tenant_id, store_id, self.agent_id, 1)
                    .entity("Order", format!("ORD-{}", (first + i) % 97))
                    .event_type("OrderUpdated")
                    .payload(json!({"n": first + i, "status": "confirmed", "amount_cents": 1299, "currency": "USD"}))
                    .sign(&self.key)
            })
            .collect()
    }

    fn body(&self, events: &[VesEventEnvelope]) -> Vec<u8> {
        serde_json::to_vec(&json!({"agentId": self.agent_id, "events": events})).expect("serialise")
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if !args.target.spawn {
        let key = args.target.api_key()?;
        return runtime.block_on(run(&args, args.target.base_url(), key, None));
    }
    let bin = args.target.binary()?;
    let db = runtime.block_on(e2e::spawn::ThrowawayDb::create(&args.target.admin_database_url))?;
    let admin_key = format!("ss_streambench_{}", hex::encode(rand::random::<[u8; 16]>()));
    let result = (|| {
        let server = e2e::spawn::SpawnedSequencer::start(&bin, &db.url, &admin_key, false)?;
        let pid = server.child.id();
        let result =
            runtime.block_on(run(&args, server.base_url.clone(), admin_key.clone(), Some((pid, db.url.clone()))));
        server.stop().context("stopping the sequencer")?;
        result
    })();
    runtime.block_on(db.drop_db());
    result
}

/// Waits (at most two minutes) until the transparency log holds every stream, then measures the CPU
/// the sequencer and PostgreSQL spend over `seconds` without load, as a percentage of one core.
async fn idle_cost(pool: &sqlx::PgPool, pid: Option<u32>, streams: usize, seconds: u64) -> Result<Value> {
    let behind = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sequence_counters c LEFT JOIN tlog_trees t USING (tenant_id, store_id) \
             WHERE c.current_sequence > COALESCE(t.size, 0)",
        )
        .fetch_one(pool)
        .await
    };
    // NB: stops early when the count has not moved for five seconds (the log is off, say).
    let t0 = Instant::now();
    let mut left = behind().await?;
    let mut still = 0;
    while left > 0 && still < 10 && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = behind().await?;
        still = if now == left { still + 1 } else { 0 };
        left = now;
    }
    let waited = t0.elapsed().as_secs_f64();
    use e2e::cpu::{TICKS_PER_SECOND as tick, postgres_ticks, process_ticks};
    let (seq0, pg0, w0) = (pid.and_then(process_ticks), postgres_ticks(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (seq1, pg1, secs) = (pid.and_then(process_ticks), postgres_ticks(), w0.elapsed().as_secs_f64());
    let pct = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / tick / secs * 100.0;
    let sequencer = seq0.zip(seq1).map(|(a, b)| pct(a, b));
    let postgres = pct(pg0, pg1);
    eprintln!(
        "streambench: at rest with {streams} streams ({left} behind the log after waiting {waited:.1} s): \
         over {secs:.0} s the sequencer used {}% of a core, PostgreSQL {postgres:.1}%",
        sequencer.map_or("?".into(), |p| format!("{p:.1}")),
    );
    Ok(json!({"streams": streams, "behind_the_log": left, "seconds": secs, "sequencer_core_pct": sequencer,
              "postgres_core_pct": postgres}))
}

/// The sequencer's resident and peak memory in MiB (`None` without a pid).
fn memory(pid: Option<u32>) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kib = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    };
    Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

async fn post(http: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> Result<Value> {
    let response = http
        .post(format!("{base}/api/v1/ves/events/ingest"))
        .header("authorization", format!("ApiKey {key}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "ingest answered {status}: {answer}");
    Ok(answer)
}

/// Times `probes` pairs: the first event of a new stream, then the next event of a stream written
/// just before (so its head is known), alternating. Returns (new, existing) latency histograms in µs.
async fn probe(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    w: &Writer,
    probes: usize,
) -> Result<(Histogram<u64>, Histogram<u64>)> {
    let mut new = Histogram::<u64>::new(3)?;
    let mut existing = Histogram::<u64>::new(3)?;
    // Signed before timing: (new stream's first event, an existing stream's next event).
    let warm = Uuid::new_v4();
    post(http, base, key, w.body(&w.events(warm, 0, 1))).await?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..probes)
        .map(|i| (w.body(&w.events(Uuid::new_v4(), 0, 1)), w.body(&w.events(warm, 1 + i as u64, 1))))
        .collect();
    for (first, next) in pairs {
        let t = Instant::now();
        post(http, base, key, first).await?;
        new.record(t.elapsed().as_micros() as u64)?;
        let t = Instant::now();
        post(http, base, key, next).await?;
        existing.record(t.elapsed().as_micros() as u64)?;
    }
    Ok((new, existing))
}

fn summary(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "mean_ms": h.mean() / 1000.0, "count": h.len()})
}

async fn run(args: &Args, base: String, key: String, spawned: Option<(u32, String)>) -> Result<()> {
    let http = reqwest::Client::new();
    let pid = spawned.as_ref().map(|s| s.0);
    let w = Arc::new(Writer {
        tenant_id: Uuid::new_v4(),
        agent_id: Uuid::new_v4(),
        key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
    });
    e2e::register_agent_key(&http, &base, &key, w.tenant_id, w.agent_id, &w.key.verifying_key()).await?;

    let mut report = json!({"streams_per_round": args.streams, "events_per_stream": args.events_per_stream});
    let (new, existing) = probe(&http, &base, &key, &w, args.probes).await?;
    eprintln!(
        "streambench: empty database, {} pairs: first event of a new stream p50 {:.2} ms p99 {:.2} ms; next event of \
         an existing stream p50 {:.2} ms p99 {:.2} ms",
        args.probes,
        new.value_at_quantile(0.5) as f64 / 1000.0,
        new.value_at_quantile(0.99) as f64 / 1000.0,
        existing.value_at_quantile(0.5) as f64 / 1000.0,
        existing.value_at_quantile(0.99) as f64 / 1000.0,
    );
    report["probe_before"] = json!({"new_stream": summary(&new), "existing_stream": summary(&existing)});
    let mut rss = vec![json!({"streams": 0, "rss_mib": memory(pid).map(|m| m.0)})];

    let mut all_stores = Vec::new();
    for round in 0..2 {
        let stores: Vec<Uuid> = (0..args.streams).map(|_| Uuid::new_v4()).collect();
        let sign_start = Instant::now();
        let bodies: Arc<Vec<Vec<u8>>> =
            Arc::new(stores.iter().map(|s| w.body(&w.events(*s, 0, args.events_per_stream))).collect());
        eprintln!(
            "streambench: round {}: signed {} events for {} new streams in {:.1} s (not timed)",
            round + 1,
            args.streams * args.events_per_stream,
            args.streams,
            sign_start.elapsed().as_secs_f64()
        );
        let next = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|_| {
                let (http, base, key, bodies, next) =
                    (http.clone(), base.clone(), key.clone(), bodies.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= bodies.len() {
                            return Ok::<_, anyhow::Error>(());
                        }
                        post(&http, &base, &key, bodies[i].clone()).await?;
                    }
                })
            })
            .collect();
        // Sample memory while the round runs.
        let mut peak = 0.0f64;
        while next.load(Ordering::Relaxed) < bodies.len() {
            if let Some((r, _)) = memory(pid) {
                peak = peak.max(r);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for t in tasks {
            t.await??;
        }
        let secs = t0.elapsed().as_secs_f64();
        let streams = (round + 1) * args.streams;
        let m = memory(pid);
        eprintln!(
            "streambench: round {}: {} streams in {secs:.1} s ({:.0} streams/s, {:.0} events/s); sequencer RSS {} MiB \
             (peak during the round {:.0} MiB, process peak {} MiB)",
            round + 1,
            args.streams,
            args.streams as f64 / secs,
            (args.streams * args.events_per_stream) as f64 / secs,
            m.map_or("?".into(), |m| format!("{:.0}", m.0)),
            peak,
            m.map_or("?".into(), |m| format!("{:.0}", m.1)),
        );
        rss.push(json!({
            "streams": streams, "rss_mib": m.map(|m| m.0), "round_peak_rss_mib": peak, "hwm_mib": m.map(|m| m.1),
            "seconds": secs,
        }));
        all_stores.extend(stores);
    }
    report["memory"] = json!(rss);

    let (new, existing) = probe(&http, &base, &key, &w, args.probes).await?;
    let ratio = new.value_at_quantile(0.5) as f64 / existing.value_at_quantile(0.5).max(1) as f64;
    eprintln!(
        "streambench: after {} streams, {} pairs: first event of a new stream p50 {:.2} ms p99 {:.2} ms; next event of \
         an existing stream p50 {:.2} ms p99 {:.2} ms; new/existing p50 {ratio:.2}x",
        all_stores.len(),
        args.probes,
        new.value_at_quantile(0.5) as f64 / 1000.0,
        new.value_at_quantile(0.99) as f64 / 1000.0,
        existing.value_at_quantile(0.5) as f64 / 1000.0,
        existing.value_at_quantile(0.99) as f64 / 1000.0,
    );
    report["probe_after"] =
        json!({"new_stream": summary(&new), "existing_stream": summary(&existing), "p50_ratio": ratio});

    if let Some((_, url)) = &spawned {
        // Every stream of the fill holds exactly 1..K, and every stream of the tenant is gap-free.
        let pool = sqlx::PgPool::connect(url).await?;
        let (full, broken): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE e.n = $2 AND c.current_sequence = $2 AND e.max = $2), \
                    COUNT(*) FILTER (WHERE e.n <> c.current_sequence OR e.max <> c.current_sequence) \
             FROM sequence_counters c JOIN (SELECT store_id, COUNT(*) AS n, MAX(sequence_number) AS max FROM events \
             WHERE tenant_id = $1::uuid GROUP BY store_id) e USING (store_id) WHERE c.tenant_id = $1::uuid",
        )
        .bind(w.tenant_id.to_string())
        .bind(args.events_per_stream as i64)
        .fetch_one(&pool)
        .await?;
        // NB: with --events-per-stream 1 the probes' new streams count as full too.
        ensure!(full as usize >= all_stores.len() && broken == 0, "{full} full streams, {broken} not 1..N");
        eprintln!(
            "streambench: check: {} streams each hold exactly 1..{}; no stream of the tenant has a gap",
            all_stores.len(),
            args.events_per_stream
        );
        let streams = all_stores.len();
        report["check"] = json!({"streams": streams, "ok": true});
        if args.idle_seconds > 0 {
            report["idle"] = idle_cost(&pool, pid, streams, args.idle_seconds).await?;
        }
        pool.close().await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
