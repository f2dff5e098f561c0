//! What optimistic concurrency (`base_version`) costs as an entity's history grows, end to end. One
//! agent writes one entity of one stream. At each size of `--sizes` the entity is first filled up to
//! that many events (requests of 100 events, each with its `base_version`), then `--requests` requests
//! of one event each are timed one after the other on one connection, alternating an event that
//! carries `base_version` with one that does not: the difference between the two is what checking the
//! entity's version costs. Every event must be accepted (a version conflict fails the run).
//!
//! With `--spawn` (or `--database-url`) the log is vacuumed and analysed after each fill, as autovacuum
//! would on a default server: without statistics PostgreSQL may plan the event-id lookup of a group
//! as a scan of the tenant's events, which would swamp what is measured here.
//!
//! ```text
//! cargo run --release -p e2e --bin versionbench -- --spawn --sizes 0,1000,10000,100000
//! ```

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use ed25519_dalek::SigningKey;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::{EventBuilder, VesEventEnvelope};

#[derive(Parser)]
#[command(about = "Time ingest with and without base_version as one entity's history grows")]
struct Args {
    #[command(flatten)]
    target: e2e::spawn::Target,
    /// With --spawn: the database to use (kept afterwards; unset: a fresh one). Without: the running
    /// sequencer's database, to vacuum after each fill (unset: not vacuumed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The entity's sizes (events already stored) at which requests are timed, ascending.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000,100000")]
    sizes: Vec<u64>,
    /// Requests timed at each size (half with base_version, half without).
    #[arg(long, default_value_t = 1000)]
    requests: u64,
}

struct Writer {
    http: reqwest::Client,
    base: String,
    key: String,
    tenant_id: Uuid,
    store_id: Uuid,
    agent_id: Uuid,
    signing: SigningKey,
    /// Events of the entity stored so far: its version.
    version: u64,
}

impl Writer {
    fn event(&self, base_version: Option<u64>) -> VesEventEnvelope {
        let n = self.version;
        let builder = EventBuilder::new(self.tenant_id, self.store_id, self.agent_id, 1)
            .entity("InventoryItem", "SKU-HOT")
            .event_type("InventoryAdjusted")
            .payload(json!({"sku": "SKU-HOT", "warehouse": "WH-1", "delta": -1, "reason": "sale", "n": n}));
        match base_version {
            Some(v) => builder.base_version(v),
            None => builder,
        }
        .sign(&self.signing)
    }

    /// Sends `events`; every one must be accepted. The entity's version moves past them.
    async fn send(&mut self, events: &[VesEventEnvelope]) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/api/v1/ves/events/ingest", self.base))
            .header("authorization", format!("ApiKey {}", self.key))
            .json(&json!({"agentId": self.agent_id, "events": events}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.context("an ingest answer")?;
        ensure!(status.is_success(), "ingest: {status} {body}");
        ensure!(
            body["eventsRejected"] == 0 && body["receipts"].as_array().map(Vec::len) == Some(events.len()),
            "not every event was accepted: {body}"
        );
        self.version += events.len() as u64;
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.sizes.windows(2).all(|w| w[0] <= w[1]), "--sizes must ascend");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if !args.target.spawn {
        let key = args.target.api_key()?;
        return runtime.block_on(run(&args, args.target.base_url(), key, args.database_url.as_deref()));
    }
    let admin_key = format!("ss_versionbench_{}", hex::encode(rand::random::<[u8; 16]>()));
    e2e::spawn::with_spawned(
        &runtime,
        &args.target,
        args.database_url.as_deref(),
        &admin_key,
        false,
        |server, _, url| runtime.block_on(run(&args, server.base_url.clone(), admin_key.clone(), Some(url))),
    )
}

async fn run(args: &Args, base: String, key: String, database_url: Option<&str>) -> Result<()> {
    let signing = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut w = Writer {
        http: reqwest::Client::builder().pool_max_idle_per_host(1).build()?,
        base,
        key,
        tenant_id: Uuid::new_v4(),
        store_id: Uuid::new_v4(),
        agent_id: Uuid::new_v4(),
        signing,
        version: 0,
    };
    e2e::register_agent_key(&w.http, &w.base, &w.key, w.tenant_id, w.agent_id, &w.signing.verifying_key()).await?;

    let mut report = Vec::new();
    for &size in &args.sizes {
        while w.version < size {
            let n = (size - w.version).min(100);
            let events: Vec<VesEventEnvelope> = (0..n).map(|i| w.event(Some(w.version + i))).collect();
            w.send(&events).await?;
        }
        if let Some(url) = database_url {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            sqlx::raw_sql("VACUUM ANALYZE events").execute(&mut conn).await.context("vacuuming the log")?;
        }
        let at = w.version;
        for i in 0..20 {
            let e = w.event((i % 2 == 0).then_some(w.version));
            w.send(&[e]).await?;
        }
        let (mut with, mut without) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
        for i in 0..args.requests {
            let checked = i % 2 == 0;
            let e = w.event(checked.then_some(w.version));
            let t = Instant::now();
            w.send(&[e]).await?;
            let us = t.elapsed().as_micros() as u64;
            if checked { with.record(us)? } else { without.record(us)? }
        }
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        eprintln!(
            "versionbench: entity of {at} events: with base_version p50 {:.2} ms p99 {:.2} ms; without p50 {:.2} ms \
             p99 {:.2} ms ({} requests each)",
            ms(&with, 0.5),
            ms(&with, 0.99),
            ms(&without, 0.5),
            ms(&without, 0.99),
            with.len()
        );
        report.push(json!({
            "entity_events": at,
            "with_base_version": {"p50_ms": ms(&with, 0.5), "p99_ms": ms(&with, 0.99), "n": with.len()},
            "without": {"p50_ms": ms(&without, 0.5), "p99_ms": ms(&without, 0.99), "n": without.len()},
        }));
    }
    println!("{}", serde_json::to_string(&json!({"sizes": report}))?);
    Ok(())
}
