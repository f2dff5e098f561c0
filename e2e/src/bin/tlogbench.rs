//! Read latency of the transparency log over HTTP, end to end: full tile reads and inclusion proofs
//! of the largest stream of a running sequencer (fill it first, e.g. with
//! `loadgen --streams 1 --batch 100 --events 1000000`). Waits until the log has integrated the whole
//! stream (and says how long that took), then times sequential requests on one keep-alive connection.
//!
//! ```text
//! cargo run --release -p e2e --bin tlogbench -- --url http://127.0.0.1:8080 --api-key ss_... --requests 3000
//! ```
//! `scripts/tlog-bench` runs it with the rest of the log's figures.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::Value;

#[derive(Parser)]
#[command(about = "Time tile reads and inclusion proofs of the largest stream's transparency log")]
struct Args {
    #[arg(long, env = "SEQUENCER_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "SEQUENCER_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Requests timed per kind.
    #[arg(long, default_value_t = 3000)]
    requests: u64,
    /// Longest wait for the log to integrate the stream.
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
    let get = |path: String| {
        let req = http.get(format!("{}{path}", args.url)).header("authorization", format!("ApiKey {}", args.api_key));
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                bail!("{status}: {}", String::from_utf8_lossy(&body));
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    let status: Value = serde_json::from_slice(&get("/api/v1/admin/status?streams=true".into()).await?)?;
    let stream = status["streams"]
        .as_array()
        .context("no streams in the admin status")?
        .iter()
        .max_by_key(|s| s["head"].as_i64().unwrap_or(0))
        .context("no stream")?
        .clone();
    let (tenant, store, head) = (
        stream["tenantId"].as_str().unwrap().to_owned(),
        stream["storeId"].as_str().unwrap().to_owned(),
        stream["head"].as_u64().unwrap(),
    );
    let prefix = format!("/api/v1/ves/tlog/{tenant}/{store}");
    eprintln!("tlogbench: stream {tenant}/{store} with {head} events");

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.wait_secs);
    let size = loop {
        let size = match get(format!("{prefix}/checkpoint")).await {
            Ok(body) => String::from_utf8_lossy(&body).lines().nth(1).and_then(|l| l.parse::<u64>().ok()).unwrap_or(0),
            Err(_) => 0,
        };
        if size >= head {
            break size;
        }
        if Instant::now() > deadline {
            bail!("the log holds {size} of {head} events after {}s", args.wait_secs);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("  integrated {size} entries (waited {:.1}s after the fill)", started.elapsed().as_secs_f64());

    let full_tiles = size / 256;
    if full_tiles == 0 {
        bail!("the stream needs at least 256 events");
    }
    let mut rng = rand::thread_rng();
    // Warm the connection.
    for _ in 0..20 {
        get(format!("{prefix}/checkpoint")).await?;
    }
    let mut report = Vec::new();
    for kind in ["full level-0 tile", "full entry bundle", "inclusion proof"] {
        let mut h = Histogram::<u64>::new(3)?;
        let requests = if kind == "full entry bundle" { args.requests / 3 } else { args.requests };
        for _ in 0..requests {
            let path = match kind {
                "full level-0 tile" => format!("{prefix}/tile/0/{}", n_path(rng.gen_range(0..full_tiles))),
                "full entry bundle" => format!("{prefix}/tile/entries/{}", n_path(rng.gen_range(0..full_tiles))),
                _ => format!("{prefix}/proof/inclusion?sequence_number={}&tree_size={size}", rng.gen_range(1..=size)),
            };
            let t = Instant::now();
            let body = get(path).await?;
            h.record(t.elapsed().as_micros() as u64)?;
            match kind {
                "full level-0 tile" if body.len() != 256 * 32 => bail!("a full tile of {} bytes", body.len()),
                "inclusion proof" => {
                    let v: Value = serde_json::from_slice(&body)?;
                    if v["proof"].as_array().is_none() || v["tree_size"] != size {
                        bail!("not an inclusion proof at size {size}: {v}");
                    }
                }
                _ => {}
            }
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        eprintln!("  {kind:18} n={requests}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms", ms(0.5), ms(0.99), ms(1.0));
        report.push(serde_json::json!({"kind": kind, "n": requests, "p50_ms": ms(0.5), "p99_ms": ms(0.99)}));
    }
    println!("{}", serde_json::to_string(&serde_json::json!({"tree_size": size, "reads": report}))?);
    Ok(())
}

/// A tile index in the C2SP path encoding (groups of three digits, all but the last `x`-prefixed).
fn n_path(mut n: u64) -> String {
    let mut s = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        s = format!("x{:03}/{s}", n % 1000);
    }
    s
}
