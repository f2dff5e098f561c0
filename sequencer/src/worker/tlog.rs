//! The transparency log's background work, on the leader only (its own PostgreSQL advisory lock, so
//! a slow witness or a commitment round never delays integration): the integrator, which appends
//! each stream's new events to its tree off the write path, and the witness client.
//!
//! Integration reads the leaves of the stream's new events (from the leaf runs the sequencer wrote
//! with them, or by reading the events back), computes the new tiles and root in memory
//! (`tlog::append_leaves`), signs the checkpoint and writes tiles and head in one transaction that applies
//! only if the tree still has the size it started from. Ingest never waits for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{MissedTickBehavior, interval};

use crate::checkpoint::CheckpointSigner;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::state::SharedState;
use crate::store::Store;
use crate::store::events::StreamKey;
use crate::store::tlog::Integration;
use crate::tlog::witness::{CosignatureVerifier, WitnessAnswer};
use crate::tlog::{self, TileKey};

/// Advisory lock key of the log integrator's leadership ("STSA_tlg").
pub const TLOG_LOCK_KEY: i64 = 0x5354_5341_5f74_6c67;

/// Streams integrated together, with one statement to read their new leaves and one to write their
/// trees and tiles.
const BATCH_STREAMS: usize = 256;

/// Batches integrated concurrently in one round (one connection each).
const CONCURRENT_BATCHES: usize = INTEGRATOR_CONNECTIONS as usize;

/// The integrator's own database connections (beside `MAX_DB_CONNECTIONS`, on the leader only).
pub const INTEGRATOR_CONNECTIONS: u32 = 2;

/// The `application_name` of the integrator's connections.
pub const INTEGRATOR_APPLICATION_NAME: &str = "stateset-sequencer-tlog";

/// The partial edge tiles of the trees this integrator wrote last, by stream, so that the next round
/// does not read them back: `(tree size, edge tiles cut to that size)`. Bounded by bytes; a stream
/// whose entry is evicted or stale (another integrator moved its tree) reads its tiles again.
pub struct EdgeCache(moka::sync::Cache<StreamKey, Arc<Edge>>);

/// A tree size and its partial edge tiles, cut to that size.
type Edge = (u64, HashMap<TileKey, Vec<u8>>);

/// What an edge cache entry costs beyond its tiles' bytes (the cache's own entry, the `Arc`, the map),
/// and each tile beyond its bytes (its map slot, the `Vec`, the allocator's rounding).
///
/// NB: counting the tiles' bytes (+64) alone, the cache's 32 MiB held 10^5 streams of three events
/// in 83 MiB of resident memory (`streambench --streams 50000`: 145 MiB with the log on, 62 MiB with
/// it off), about 830 bytes per stream against the 160 it counted.
const ENTRY_OVERHEAD: usize = 512;
const TILE_OVERHEAD: usize = 128;

impl EdgeCache {
    pub fn new(max_bytes: u64) -> Self {
        EdgeCache(
            moka::sync::Cache::builder()
                .weigher(|_, v: &Arc<Edge>| {
                    let tiles = v.1.values().map(|t| t.len() + TILE_OVERHEAD).sum::<usize>();
                    u32::try_from(ENTRY_OVERHEAD + tiles).unwrap_or(u32::MAX)
                })
                .max_capacity(max_bytes)
                .build(),
        )
    }
}

impl Default for EdgeCache {
    /// 32 MiB: the edge tiles of at least 1,300 streams at their widest, and of about 45,000 streams
    /// with one short tile each.
    fn default() -> Self {
        EdgeCache::new(32 << 20)
    }
}

/// Appends a stream's new events (at most `max_events`) to its log, given the stream's head and the
/// size of its tree as last read (a stale size only makes the write find the tree moved). Returns the
/// events integrated. [`integrate_streams`] for one stream.
pub async fn integrate_stream(
    store: &Store,
    signer: &CheckpointSigner,
    metrics: Option<&Metrics>,
    edges: &EdgeCache,
    stream: StreamKey,
    (head, size): (i64, i64),
    max_events: i64,
) -> Result<u64> {
    let mut n = 0;
    for (_, r) in integrate_streams(store, signer, metrics, edges, &[(stream, head, size)], max_events).await? {
        n += r?;
    }
    Ok(n)
}

/// Appends each stream's new events (at most `max_events` each) to its log, given `(stream, head, tree
/// size as last read)`. Returns per stream the events integrated, or why it could not be (the others
/// go on). Two statements for the whole batch when the streams' runs hold their leaves and their edge
/// tiles are cached: one reads every stream's new leaves, one writes every tree and its tiles.
///
/// NB: one statement per stream and round made the integrator PostgreSQL's busiest client at 64
/// streams (about six statements per ingest statement, each rewriting a partial tile).
///
/// The leaves come from the leaf runs, where the sequencer wrote them as it numbered the events
/// (migration 0012). Where a run has none (written before that migration, by legacy ingest or an
/// import, or holding an event whose stored form could not be predicted), this round integrates only
/// that run's events, read back and encoded here as `tlog::entry_of`.
pub async fn integrate_streams(
    store: &Store,
    signer: &CheckpointSigner,
    metrics: Option<&Metrics>,
    edges: &EdgeCache,
    streams: &[(StreamKey, i64, i64)],
    max_events: i64,
) -> Result<Vec<(StreamKey, Result<u64>)>> {
    // `(stream, head, size, last event to integrate now)`
    let behind: Vec<(StreamKey, i64, i64, i64)> = streams
        .iter()
        .filter(|(_, head, size)| head > size)
        .map(|&(stream, head, size)| (stream, head, size, size.saturating_add(max_events).min(head)))
        .collect();
    let wanted: Vec<(StreamKey, i64, i64)> = behind.iter().map(|&(s, _, size, to)| (s, size + 1, to)).collect();
    let runs = if wanted.is_empty() { Vec::new() } else { store.tlog_runs_many(&wanted).await? };
    let name = signed_note::Signer::name(signer).to_owned();
    let mut results = Vec::with_capacity(behind.len());
    let mut work = Vec::with_capacity(behind.len());
    for ((stream, head, size, to), runs) in behind.into_iter().zip(runs) {
        match prepare(store, edges, stream, (head, size, to), runs).await {
            Ok(w) => work.push(w),
            Err(e) => results.push((stream, Err(e))),
        }
    }
    if work.is_empty() {
        return Ok(results);
    }
    // NB: encoding and hashing run on a blocking thread: on the async workers this task was one
    // among every request's, and under a saturating load the log fell seconds behind.
    let computed = tokio::task::spawn_blocking(move || {
        work.into_iter()
            .map(|Work { stream, size, source, sequenced, edge }| {
                (stream, size, sequenced, compute(&name, stream, size, source, &edge))
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Internal(format!("transparency log integration task: {e}")))?;
    let mut ready = Vec::with_capacity(computed.len());
    for (stream, size, sequenced, c) in computed {
        match c.and_then(|(appended, text, next_edge)| {
            let note = tlog::sign_checkpoint(&text, signer)?;
            Ok((appended, note, next_edge))
        }) {
            Ok((appended, note, next_edge)) => ready.push(Ready { stream, size, sequenced, appended, note, next_edge }),
            Err(e) => results.push((stream, Err(e))),
        }
    }
    let batch: Vec<(StreamKey, Integration)> = ready
        .iter_mut()
        .map(|r| {
            let tiles = std::mem::take(&mut r.appended.tiles)
                .into_iter()
                .map(|((level, index), data)| (i16::from(level), index as i64, (data.len() / 32) as i32, data))
                .collect();
            let w = Integration {
                old_size: r.size as i64,
                new_size: r.appended.size as i64,
                root: &r.appended.root.0,
                checkpoint: r.note.as_slice(),
                tiles,
            };
            (r.stream, w)
        })
        .collect();
    let applied = match store.tlog_integrate_many(&batch).await {
        Ok(applied) => applied,
        // NB: so that one stream whose write the database refuses cannot hold back every other
        // stream's log, the batch is retried stream by stream.
        Err(e) if batch.len() > 1 => {
            tracing::warn!(error = %e, streams = batch.len(), "transparency log batch write failed; writing stream by stream");
            let mut applied = Vec::with_capacity(batch.len());
            for one in &batch {
                applied.push(store.tlog_integrate_many(std::slice::from_ref(one)).await.map(|a| a[0]));
            }
            return Ok(finish(metrics, edges, ready, applied, results));
        }
        Err(e) => return Err(e),
    };
    Ok(finish(metrics, edges, ready, applied.into_iter().map(Ok).collect(), results))
}

/// One stream's integration, ready to compute: the new leaves (or events) and the edge tiles.
struct Work {
    stream: StreamKey,
    size: u64,
    source: Leaves,
    sequenced: Vec<(Option<chrono::DateTime<chrono::Utc>>, u64)>,
    edge: HashMap<TileKey, Vec<u8>>,
}

/// What one stream's integration computed: the appended tree, its checkpoint text, its edge tiles.
type Computed = (tlog::Appended, Vec<u8>, HashMap<TileKey, Vec<u8>>);

/// Reads what one stream's integration needs beyond its runs: events without leaves, edge tiles that
/// are not cached.
async fn prepare(
    store: &Store,
    edges: &EdgeCache,
    stream: StreamKey,
    (head, size, to): (i64, i64, i64),
    runs: Vec<crate::store::tlog::TlogRun>,
) -> Result<Work> {
    let (source, sequenced) = match new_leaves(runs, size, to) {
        NewLeaves::Known(leaves, sequenced) => (Leaves::Hashes(leaves), sequenced),
        NewLeaves::Unknown(upto) => {
            let events = store.read_range(stream, size + 1, upto - size, head).await?;
            let sequenced = events.iter().map(|e| (Some(e.sequenced_at), 1)).collect();
            (Leaves::Events(events), sequenced)
        }
    };
    let size = size as u64;
    let edge = match edges.0.get(&stream) {
        Some(cached) if cached.0 == size => cached.1.clone(),
        _ => read_edges(store, stream, size).await?,
    };
    Ok(Work { stream, size, source, sequenced, edge })
}

/// Appends one stream's leaves to its tree: the new tiles and root, the checkpoint's text, and the
/// edge tiles of the new size (each either written now or unchanged from the old edge).
fn compute(
    name: &str,
    stream: StreamKey,
    size: u64,
    source: Leaves,
    edge: &HashMap<TileKey, Vec<u8>>,
) -> Result<Computed> {
    let appended = match source {
        Leaves::Hashes(leaves) => tlog::append_leaves(size, edge, &leaves)?,
        Leaves::Events(events) => {
            let entries = events.iter().map(tlog::entry_of).collect::<Result<Vec<_>>>()?;
            tlog::append(size, edge, &entries)?
        }
    };
    let text = tlog::checkpoint_text(&tlog::origin(name, stream), appended.size, appended.root)?;
    let mut next_edge = HashMap::new();
    for (level, index, width) in tlog::edge_tiles(appended.size) {
        let data = appended.tiles.get(&(level, index)).or_else(|| edge.get(&(level, index)));
        if let Some(data) = data.filter(|d| d.len() >= width as usize * 32) {
            next_edge.insert((level, index), data[..width as usize * 32].to_vec());
        }
    }
    Ok((appended, text, next_edge))
}

/// One stream's integration computed and its checkpoint signed, ready to write.
struct Ready {
    stream: StreamKey,
    /// The tree size it started from.
    size: u64,
    /// When its new events were numbered: `(time, events)`.
    sequenced: Vec<(Option<chrono::DateTime<chrono::Utc>>, u64)>,
    appended: tlog::Appended,
    /// The signed checkpoint.
    note: Vec<u8>,
    /// The edge tiles of the new size.
    next_edge: HashMap<TileKey, Vec<u8>>,
}

/// After the write: caches the edges of the trees that moved, forgets those of the trees that did not
/// (another integrator moved them), counts and observes.
fn finish(
    metrics: Option<&Metrics>,
    edges: &EdgeCache,
    ready: Vec<Ready>,
    applied: Vec<Result<bool>>,
    mut results: Vec<(StreamKey, Result<u64>)>,
) -> Vec<(StreamKey, Result<u64>)> {
    let now = chrono::Utc::now();
    for (r, applied) in ready.into_iter().zip(applied) {
        let stream = r.stream;
        match applied {
            Ok(true) => {
                let integrated = r.appended.size - r.size;
                edges.0.insert(stream, Arc::new((r.appended.size, r.next_edge)));
                if let Some(m) = metrics {
                    m.tlog.integrated_events.inc_by(integrated);
                    for (at, n) in r.sequenced {
                        let Some(at) = at else { continue };
                        let delay = (now - at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                        for _ in 0..n {
                            m.tlog.integration_delay.observe(delay);
                        }
                    }
                }
                results.push((stream, Ok(integrated)));
            }
            Ok(false) => {
                edges.0.invalidate(&stream);
                results.push((stream, Ok(0)));
            }
            Err(e) => {
                edges.0.invalidate(&stream);
                results.push((stream, Err(e)));
            }
        }
    }
    results
}

/// What a round appends: leaf hashes from the runs, or events read back to encode.
enum Leaves {
    Hashes(Vec<tlog_tiles::Hash>),
    Events(Vec<crate::store::events::StoredEvent>),
}

/// The leaves of events `size + 1 ..= to` the runs hold, or where the first run without them ends.
enum NewLeaves {
    /// The leaves of `size + 1 ..` (at least one), up to the first run without them or `to`, and
    /// when they were numbered (`(time, events)` per run).
    Known(Vec<tlog_tiles::Hash>, Vec<(Option<chrono::DateTime<chrono::Utc>>, u64)>),
    /// Event `size + 1` has no leaf in the runs: read back events up to this number.
    Unknown(i64),
}

fn new_leaves(runs: Vec<crate::store::tlog::TlogRun>, size: i64, to: i64) -> NewLeaves {
    let mut leaves = Vec::new();
    let mut sequenced = Vec::new();
    let mut next = size + 1;
    for run in runs {
        if run.first_sequence > next || run.last_sequence < next {
            // NB: a healthy log has no gap between runs; where one is, reading the events back
            // reports it (`read_range`).
            break;
        }
        let count = (run.last_sequence - run.first_sequence + 1) as usize;
        let Some(data) = run.tlog_leaves.filter(|d| d.len() == count * 32) else {
            if leaves.is_empty() {
                return NewLeaves::Unknown(run.last_sequence.min(to));
            }
            break;
        };
        let last = run.last_sequence.min(to);
        let from_idx = (next - run.first_sequence) as usize;
        let to_idx = (last - run.first_sequence) as usize;
        for chunk in data[from_idx * 32..(to_idx + 1) * 32].chunks_exact(32) {
            leaves.push(tlog_tiles::Hash(chunk.try_into().expect("32-byte chunk")));
        }
        sequenced.push((run.sequenced_at, (to_idx - from_idx + 1) as u64));
        next = last + 1;
        if next > to {
            break;
        }
    }
    if leaves.is_empty() {
        return NewLeaves::Unknown(to);
    }
    NewLeaves::Known(leaves, sequenced)
}

/// The partial edge tiles of a tree of `size` entries, from the database.
async fn read_edges(store: &Store, stream: StreamKey, size: u64) -> Result<HashMap<TileKey, Vec<u8>>> {
    let edges = tlog::edge_tiles(size);
    let keys: Vec<(i16, i64)> = edges.iter().map(|&(l, n, _)| (i16::from(l), n as i64)).collect();
    let stored = store.tlog_tiles(stream, &keys).await?;
    let mut edge = HashMap::new();
    for &(level, index, width) in &edges {
        if let Some(data) = stored.get(&(i16::from(level), index as i64)) {
            // NB: cut to the width at this size, so a tile stored wider cannot shift the hashes
            // appended after it.
            edge.insert((level, index), data[..(width as usize * 32).min(data.len())].to_vec());
        }
    }
    Ok(edge)
}

/// Which streams a round looks at. Most rounds look only at the streams written since shortly before
/// the previous round started; every `FULL_SCAN_EVERY` rounds, and after a round that left a stream
/// behind (capped at `TLOG_INTEGRATE_MAX_EVENTS`, failed, or beyond the round's stream limit), a round
/// looks at every stream.
///
/// NB: `since` is this process's clock less `SCAN_MARGIN`, compared with the counters' `updated_at`
/// (PostgreSQL's clock, at the start of the writing transaction): the margin covers a transaction that
/// started before the previous round and committed after it, and clock skew; a stream missed all the
/// same waits for the next full round, at most `FULL_SCAN_EVERY` rounds later.
#[derive(Debug, Default)]
pub struct Scan {
    since: Option<chrono::DateTime<chrono::Utc>>,
    rounds_since_full: u32,
    left_behind: bool,
}

impl Scan {
    /// Where the next round's scan starts: `None` for every stream.
    fn since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let full = self.left_behind || self.rounds_since_full + 1 >= FULL_SCAN_EVERY;
        self.since.filter(|_| !full).map(|t| t - SCAN_MARGIN)
    }

    /// Records a round that started at `started`, looked from `since` and left a stream behind or not.
    fn done(
        &mut self,
        started: chrono::DateTime<chrono::Utc>,
        since: Option<chrono::DateTime<chrono::Utc>>,
        left_behind: bool,
    ) {
        self.rounds_since_full = if since.is_none() { 0 } else { self.rounds_since_full + 1 };
        self.since = Some(started);
        self.left_behind = left_behind;
    }
}

/// Every this many rounds, a round looks at every stream (5 s at the default 200 ms interval).
const FULL_SCAN_EVERY: u32 = 25;

/// How far before the previous round's start an incremental round looks.
const SCAN_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Streams listed per round at most (the rest wait for the next).
const STREAMS_PER_ROUND: i64 = 10_000;

/// One integration round over every stream with new events (see [`Scan`]).
pub async fn integrate_round(
    state: &SharedState,
    store: &Store,
    signer: &CheckpointSigner,
    edges: &EdgeCache,
    scan: &mut Scan,
) -> u64 {
    let cfg = &state.config.tlog;
    let started = chrono::Utc::now();
    let since = scan.since();
    let streams = match store.tlog_streams_behind(since, STREAMS_PER_ROUND).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list streams to integrate into the transparency log");
            scan.left_behind = true;
            return 0;
        }
    };
    let failed = |stream: Option<StreamKey>, e: &Error| {
        state.metrics.tlog.integration_failures.inc();
        let (tenant_id, store_id) = stream.map(|s| (s.tenant_id.to_string(), s.store_id.to_string())).unzip();
        tracing::warn!(error = %e, tenant_id, store_id, "transparency log integration failed; will retry");
    };
    let behind: HashMap<StreamKey, i64> = streams.iter().map(|&(s, head, size)| (s, head - size)).collect();
    let behind = &behind;
    // `(events integrated, whether a stream was left behind)`
    let (integrated, left_behind) = futures::stream::iter(streams.chunks(BATCH_STREAMS))
        .map(|batch| async move {
            match integrate_streams(store, signer, Some(&state.metrics), edges, batch, cfg.integrate_max_events).await {
                Ok(results) => results.into_iter().fold((0, false), |(sum, left), (stream, r)| match r {
                    Ok(n) => (sum + n, left || (n as i64) < behind.get(&stream).copied().unwrap_or(0)),
                    Err(e) => {
                        failed(Some(stream), &e);
                        (sum, true)
                    }
                }),
                Err(e) => {
                    failed(None, &e);
                    (0, true)
                }
            }
        })
        .buffer_unordered(CONCURRENT_BATCHES)
        .fold((0, false), |(a, l), (n, left): (u64, bool)| async move { (a + n, l || left) })
        .await;
    scan.done(started, since, left_behind || streams.len() as i64 >= STREAMS_PER_ROUND);
    integrated
}

/// A witness as the client uses it.
pub struct Witness {
    pub verifier: CosignatureVerifier,
    pub url: String,
}

impl Witness {
    pub fn from_config(w: &tlog::WitnessConfig) -> std::result::Result<Self, String> {
        Ok(Witness { verifier: CosignatureVerifier::new(&w.key)?, url: w.url.trim_end_matches('/').to_owned() })
    }
}

/// Sends a stream's checkpoint to one witness, with the consistency proof from what the witness
/// last cosigned; follows one 409 (the witness's own size). Stores a cosignature or the refusal.
pub async fn witness_stream(
    store: &Store,
    http: &http_client::Client,
    metrics: Option<&Metrics>,
    witness: &Witness,
    stream: StreamKey,
    size: i64,
    note: &[u8],
) -> Result<bool> {
    let name = witness.verifier.name().to_owned();
    let mut old = store.tlog_witness(stream, &name).await?;
    for _ in 0..2 {
        if old > size {
            let msg = format!("the witness holds size {old}, larger than this checkpoint ({size})");
            return refused(store, metrics, &name, stream, None, &msg).await;
        }
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            let tiles =
                tlog::reader::hash_tiles(store, stream, &tlog::tiles_for_consistency(size as u64, old as u64)).await?;
            tlog_tiles::prove_tree(size as u64, old as u64, &tiles).map_err(|e| Error::Internal(e.to_string()))?
        };
        let body = tlog::witness::add_checkpoint_body(old as u64, &proof, note);
        let sent = http.post(format!("{}/add-checkpoint", witness.url)).body(body).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("unreachable: {}", e.without_url());
                return refused(store, metrics, &name, stream, None, &msg).await;
            }
        };
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(http_client::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        match tlog::witness::classify_answer(status, content_type.as_deref(), &text, note, &witness.verifier) {
            WitnessAnswer::Cosigned(lines) => {
                store.tlog_store_cosignature(stream, &name, size, &lines.concat()).await?;
                if let Some(m) = metrics {
                    let labels = tlog::metrics::WitnessLabels { witness: name.clone() };
                    m.tlog.witness_cosignatures.get_or_create(&labels).inc();
                    m.tlog.witness_up.get_or_create(&labels).set(1);
                }
                return Ok(true);
            }
            WitnessAnswer::SizeConflict(n) => {
                store.tlog_witness_failed(stream, &name, Some(n as i64), None).await?;
                old = n as i64;
            }
            WitnessAnswer::Refused(status, reason) => {
                let msg = format!("{status}: {reason}");
                return refused(store, metrics, &name, stream, None, &msg).await;
            }
        }
    }
    refused(store, metrics, &name, stream, None, "the witness's size kept changing").await
}

async fn refused(
    store: &Store,
    metrics: Option<&Metrics>,
    witness: &str,
    stream: StreamKey,
    size: Option<i64>,
    reason: &str,
) -> Result<bool> {
    tracing::warn!(witness, tenant_id = %stream.tenant_id, store_id = %stream.store_id, reason,
        "a witness did not cosign the transparency log checkpoint");
    if let Some(m) = metrics {
        let labels = tlog::metrics::WitnessLabels { witness: witness.to_owned() };
        m.tlog.witness_failures.get_or_create(&labels).inc();
        m.tlog.witness_up.get_or_create(&labels).set(0);
    }
    store.tlog_witness_failed(stream, witness, size, Some(reason)).await?;
    Ok(false)
}

/// Sends every stream's newest checkpoint that witnesses have not seen yet to every witness.
pub async fn witness_round(
    state: &SharedState,
    http: &http_client::Client,
    witnesses: &[Arc<Witness>],
    sent: &mut HashMap<StreamKey, i64>,
) {
    let heads = match state.store.tlog_all_heads().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list transparency log heads for the witnesses");
            return;
        }
    };
    for (stream, size, note) in heads {
        if size == 0 || sent.get(&stream) == Some(&size) {
            continue;
        }
        if let Err(e) = state.store.tlog_record_checkpoint(stream, size, &note).await {
            tracing::warn!(error = %e, "cannot record a checkpoint for the witnesses");
            continue;
        }
        let note = &note;
        let results = futures::future::join_all(witnesses.iter().map(|w| {
            let w = w.clone();
            async move { witness_stream(&state.store, http, Some(&state.metrics), &w, stream, size, note).await }
        }))
        .await;
        for r in results {
            if let Err(e) = r {
                tracing::warn!(error = %e, "witness round failed");
            }
        }
        sent.insert(stream, size);
    }
}

/// A reqwest client with rustls over ring only (see `anchor`'s RPC client for why it is explicit).
pub fn http_client(timeout: Duration) -> Result<http_client::Client> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| Error::Internal(format!("TLS for witnesses: {e}")))?
        .with_no_client_auth();
    http_client::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client for witnesses: {e}")))
}

/// Advisory lock key of the witness client's leadership ("STSA_tlw"): its own, so that a witness that
/// is slow to answer never delays integration.
pub const TLOG_WITNESS_LOCK_KEY: i64 = 0x5354_5341_5f74_6c77;

/// The integrator and the witness client: each runs while this replica holds its leadership.
pub async fn run(state: SharedState) {
    tokio::join!(integrate_loop(state.clone()), witness_loop(state));
}

async fn integrate_loop(state: SharedState) {
    if state.checkpoints.is_none() {
        return;
    }
    let mut tick = interval(state.config.tlog.integrate_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leadership = super::Leadership::new(TLOG_LOCK_KEY, "transparency log integrator");
    let rounds = match integrator_thread(state.clone()) {
        Ok(rounds) => rounds,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the transparency log integrator's thread");
            return;
        }
    };
    loop {
        tick.tick().await;
        if leadership.check(&state).await {
            let (done, integrated) = tokio::sync::oneshot::channel();
            if rounds.send(done).await.is_err() || integrated.await.is_err() {
                tracing::error!("the transparency log integrator's thread stopped");
                return;
            }
        }
    }
}

/// The integrator's rounds run on a thread and runtime of their own, one round per request sent
/// (answered with the events integrated); the thread ends when the sender is dropped.
///
/// NB: on the request runtime the integrator was one task among every request's, and its reads'
/// decoding and its encoding waited behind them: under a saturating load it integrated about half as
/// fast as events arrived and fell seconds behind. A thread of its own gets the operating system's
/// fair share of the CPU instead. Its connections are its own too (`INTEGRATOR_CONNECTIONS`), so it
/// never queues behind requests for one.
fn integrator_thread(
    state: SharedState,
) -> std::io::Result<tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<u64>>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<u64>>(1);
    std::thread::Builder::new().name("tlog-integrator".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the transparency log integrator's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            let Some(signer) = state.checkpoints.as_ref() else { return };
            // NB: named apart from the request pool's connections, so that `pg_stat_activity` (and a
            // profile split by backend, `scripts/tlog-share`) tells the integrator's apart.
            let store = state.store.sibling(INTEGRATOR_CONNECTIONS, INTEGRATOR_APPLICATION_NAME);
            let edges = EdgeCache::default();
            let mut scan = Scan::default();
            while let Some(done) = rx.recv().await {
                let _ = done.send(integrate_round(&state, &store, signer, &edges, &mut scan).await);
            }
            store.pool().close().await;
        });
    })?;
    Ok(tx)
}

async fn witness_loop(state: SharedState) {
    let cfg = state.config.tlog.clone();
    let witnesses: Vec<Arc<Witness>> =
        cfg.witnesses.iter().filter_map(|w| Witness::from_config(w).ok().map(Arc::new)).collect();
    if witnesses.is_empty() {
        return;
    }
    let http = match http_client(cfg.witness_timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "transparency log witnesses disabled");
            return;
        }
    };
    let mut tick = interval(cfg.witness_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leadership = super::Leadership::new(TLOG_WITNESS_LOCK_KEY, "transparency log witness client");
    let mut sent = HashMap::new();
    loop {
        tick.tick().await;
        if leadership.check(&state).await {
            witness_round(&state, &http, &witnesses, &mut sent).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_look_at_recent_writes_and_at_every_stream_periodically_and_after_leaving_one_behind() {
        let t0 = chrono::Utc::now();
        let at = |i: i64| t0 + chrono::TimeDelta::milliseconds(200 * i);
        let mut scan = Scan::default();
        // The first round looks at every stream.
        assert_eq!(scan.since(), None);
        scan.done(at(0), None, false);
        // Then at the streams written since shortly before the previous round started ...
        let mut full_rounds = Vec::new();
        for i in 1..=60 {
            let since = scan.since();
            match since {
                Some(s) => assert_eq!(s, at(i - 1) - SCAN_MARGIN, "round {i}"),
                None => full_rounds.push(i),
            }
            scan.done(at(i), since, false);
        }
        // ... and every FULL_SCAN_EVERY rounds at every stream.
        assert_eq!(full_rounds, vec![25, 50]);
        // A round that leaves a stream behind (capped, failed) makes the next one look at every stream,
        // whose own success brings back the incremental rounds.
        scan.done(at(61), scan.since(), true);
        assert_eq!(scan.since(), None);
        scan.done(at(62), None, false);
        assert_eq!(scan.since(), Some(at(62) - SCAN_MARGIN));
    }
}
