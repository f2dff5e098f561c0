//! Commitment and proof benchmark (the load generator's commitment mode).
//!
//! Against a running sequencer: registers an agent, ingests `--events` pre-signed events into each of
//! `--streams` streams, then measures end to end over HTTP
//! - `POST /api/v1/ves/commitments` over each stream's whole range (one commitment per stream), and
//! - `GET /api/v1/ves/proofs/{n}` for `--proofs` distinct sequence numbers (each fetched once, so every
//!   fetch is a first fetch).
//!
//! Every answer is checked, not only timed: each commitment's root against the root of the leaves
//! computed here from the events sent, each proof's leaf against the event's own leaf and its path
//! against that root. Events go in `--ingest-batch` per request, one request at a time, so each
//! sequencing transaction (and so each leaf run the commitment reads) holds that many events.
//!
//! `--spawn` starts a `stateset-sequencer` on a throw-away database (as the load generator does)
//! instead of using `--url` and `--api-key`.
//!
//! ```text
//! cargo run --release -p e2e --bin commitbench -- --spawn --streams 20 --events 10000 --proofs 3000
//! cargo run --release -p e2e --bin commitbench -- --url http://127.0.0.1:8080 --api-key ss_... \
//!     --streams 5 --events 10000 --proofs 2000
//! ```

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use ed25519_dalek::SigningKey;
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::EventBuilder;

#[derive(Parser)]
struct Args {
    // The sequencer (`--url`/`--api-key`, or `--spawn` on a throw-away database).
    #[command(flatten)]
    target: e2e::spawn::Target,
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// Streams, each committed once over its whole range.
    #[arg(long, default_value_t = 5)]
    streams: usize,
    /// Events per stream (the commitment's size).
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Proofs to fetch, each for a different event.
    #[arg(long, default_value_t = 2_000)]
    proofs: usize,
    /// Events per ingest request (and so per sequencing transaction).
    #[arg(long, default_value_t = 100)]
    ingest_batch: usize,
    /// Extra streams committed first and not timed (the server's connections prepare their statements).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.target.spawn {
        let key = args.target.api_key()?;
        return run(&args, &args.target.base_url(), &key).await;
    }
    let bin = args.target.binary()?;
    let db = e2e::spawn::ThrowawayDb::create(&args.target.admin_database_url).await?;
    let key = format!("ss_commitbench_{}", hex::encode(rand::random::<[u8; 16]>()));
    let result = async {
        let server = e2e::spawn::SpawnedSequencer::start(&bin, &db.url, &key, false)?;
        let result = run(&args, &server.base_url.clone(), &key).await;
        tokio::task::spawn_blocking(move || server.stop()).await??;
        result
    }
    .await;
    db.drop_db().await;
    result
}

async fn run(args: &Args, url: &str, api_key: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let auth = format!("ApiKey {api_key}");
    let post =
        |path: &str, body: Value| http.post(format!("{url}{path}")).header("authorization", &auth).json(&body).send();

    let tenant = Uuid::new_v4();
    let agent = Uuid::new_v4();
    let key = SigningKey::from_bytes(&rand::thread_rng().r#gen());
    e2e::register_agent_key(&http, url, api_key, tenant, agent, &key.verifying_key()).await?;
    let stores: Vec<Uuid> = (0..args.streams + args.warmup).map(|_| Uuid::new_v4()).collect();
    eprintln!(
        "ingesting {} events into each of {} streams ({} of them to warm up), {} per request...",
        args.events,
        args.streams + args.warmup,
        args.warmup,
        args.ingest_batch
    );
    let mut leaves: std::collections::HashMap<Uuid, Vec<[u8; 32]>> = std::collections::HashMap::new();
    for store in &stores {
        let events: Vec<_> = (0..args.events)
            .map(|i| {
                EventBuilder::new(tenant, *store, agent, 1)
                    .entity("Bench", format!("E-{}", i % 100))
                    .event_type("Tick")
                    .payload(json!({"i": i}))
                    .sign(&key)
            })
            .collect();
        let stream_leaves = leaves.entry(*store).or_default();
        for (i, e) in events.iter().enumerate() {
            stream_leaves.push(ves::hash::leaf_hash(
                tenant,
                *store,
                i as u64 + 1,
                &e.signing_hash(),
                &e.agent_signature.0,
            ));
        }
        for chunk in events.chunks(args.ingest_batch.max(1)) {
            let resp = post("/api/v1/ves/events/ingest", json!({"agentId": agent, "events": chunk})).await?;
            let body: Value = resp.json().await?;
            if body["eventsAccepted"].as_u64() != Some(chunk.len() as u64) {
                bail!("ingest failed: {body}");
            }
        }
    }

    let mut commit = Histogram::<u64>::new(3)?;
    let mut commit_ms = Vec::with_capacity(stores.len());
    let mut roots = std::collections::HashMap::new();
    for (i, store) in stores.iter().enumerate() {
        let started = Instant::now();
        let resp = post(
            "/api/v1/ves/commitments",
            json!({"tenant_id": tenant, "store_id": store, "sequence_start": 1, "sequence_end": args.events}),
        )
        .await?;
        let elapsed = started.elapsed();
        if !resp.status().is_success() {
            bail!("commitment failed: {}", resp.text().await?);
        }
        if i >= args.warmup {
            commit.record(elapsed.as_micros() as u64)?;
            commit_ms.push((elapsed.as_micros() as f64 / 1000.0 * 100.0).round() / 100.0);
        }
        let body: Value = resp.json().await?;
        let root = ves::merkle::merkle_root(&leaves[store]);
        if body["merkle_root"].as_str() != Some(hex::encode(root).as_str()) {
            bail!("the commitment's merkle_root is not the root of the events sent: {body}");
        }
        roots.insert(*store, root);
    }

    let mut proof = Histogram::<u64>::new(3)?;
    let mut rng = rand::thread_rng();
    let mut asked = std::collections::HashSet::new();
    while asked.len() < args.proofs.min(args.streams * args.events) {
        let store = stores[rng.gen_range(0..stores.len())];
        let seq = rng.gen_range(1..=args.events);
        if !asked.insert((store, seq)) {
            continue;
        }
        let started = Instant::now();
        let resp = http
            .get(format!("{url}/api/v1/ves/proofs/{seq}?tenant_id={tenant}&store_id={store}"))
            .header("authorization", &auth)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            bail!("proof failed: {}", String::from_utf8_lossy(&body));
        }
        proof.record(elapsed.as_micros() as u64)?;
        let body: Value = serde_json::from_slice(&body)?;
        let hex32 = |v: &Value| -> Option<[u8; 32]> { hex::decode(v.as_str()?).ok()?.try_into().ok() };
        let path: Option<Vec<[u8; 32]>> = body["proof_path"].as_array().map(|p| p.iter().filter_map(hex32).collect());
        let leaf = leaves[&store][seq - 1];
        let valid = path.is_some_and(|path| {
            hex32(&body["leaf_hash"]) == Some(leaf) && ves::merkle::verify_proof(&leaf, seq - 1, &path, &roots[&store])
        });
        if !valid {
            bail!("the proof of event {seq} does not prove its leaf against the commitment's root: {body}");
        }
    }
    if args.json {
        let summary = |h: &Histogram<u64>| {
            json!({"count": h.len(), "p50_ms": ms(h, 0.5), "p90_ms": ms(h, 0.9), "p99_ms": ms(h, 0.99),
                   "max_ms": h.max() as f64 / 1000.0})
        };
        println!(
            "{}",
            json!({"events": args.events, "streams": args.streams, "ingest_batch": args.ingest_batch,
                   "commitment": summary(&commit), "commitment_ms_in_order": commit_ms,
                   "first_fetch_proof": summary(&proof)})
        );
        return Ok(());
    }
    println!(
        "commitment over {} events: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        args.events,
        commit.len(),
        ms(&commit, 0.5),
        ms(&commit, 0.99),
        commit.max() as f64 / 1000.0
    );
    println!(
        "first-fetch inclusion proof: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        proof.len(),
        ms(&proof, 0.5),
        ms(&proof, 0.9),
        ms(&proof, 0.99),
        proof.max() as f64 / 1000.0
    );
    Ok(())
}
