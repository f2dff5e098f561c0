//! Backups you can prove: an export of the log, the evidence to keep outside the database, and a
//! check of a restored database (or an export) against that evidence.
//!
//! - [`export_events`]: NDJSON, one event per line, stream by stream in sequence order, from any
//!   sequence number (to resume), read in pages so that memory stays constant.
//! - [`save_checkpoints`]: at backup time, every stream's signed checkpoint (the C2SP note that
//!   `GET /api/v1/ves/checkpoint` serves, signed with the sequencer's key) plus the ranges and Merkle
//!   roots of its commitments, written to a file that is kept *outside* the database.
//! - [`verify_backup`]: checks each saved stream against a restored database or an export. The
//!   checkpoint's signature is checked with a verifier key given by the operator (never one read from
//!   the backup); the saved commitment ranges must chain to the signed state root, which authenticates
//!   them; then every range's Merkle root is recomputed from the events themselves (their signing hash
//!   and signature, not any stored hash) and compared. When anchoring is configured, the roots the L2
//!   registry holds for those commitments are compared too. Each disagreement names the stream and the
//!   range.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;
use ves::Hash32;
use ves::chain::ChainLink;

use crate::checkpoint::CheckpointSigner;
use crate::store::Store;
use crate::store::commitments::ListFilter;
use crate::store::events::{StoredEvent, StreamKey};

/// Events read per query by the export and the verification.
const PAGE: i64 = 1000;
/// The format tag of a checkpoints file.
pub const CHECKPOINTS_FORMAT: &str = "stateset-sequencer-checkpoints/1";

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportLine {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub sequence_number: u64,
    pub sequenced_at: String,
    /// The signed envelope exactly as the agent signed it (VES events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Value>,
    /// An unsigned legacy event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Value>,
}

fn export_line(e: &StoredEvent) -> anyhow::Result<ExportLine> {
    let (envelope, legacy) = if e.signed {
        (Some(serde_json::to_value(e.envelope()?)?), None)
    } else {
        let legacy = json!({
            "event_id": e.event_id, "entity_type": e.entity_type, "entity_id": e.entity_id,
            "event_type": e.event_type, "payload": e.payload, "created_at": e.created_at.to_rfc3339(),
            "source_agent_id": e.source_agent_id, "command_id": e.command_id, "base_version": e.base_version,
        });
        (None, Some(legacy))
    };
    Ok(ExportLine {
        tenant_id: e.tenant_id,
        store_id: e.store_id,
        sequence_number: e.sequence_number as u64,
        sequenced_at: e.sequenced_at.to_rfc3339(),
        envelope,
        legacy,
    })
}

/// The Merkle leaf of an exported event, recomputed from its content.
pub fn leaf_of_line(line: &ExportLine) -> anyhow::Result<Hash32> {
    let stream = StreamKey { tenant_id: line.tenant_id, store_id: line.store_id };
    if let Some(envelope) = &line.envelope {
        let env: ves::envelope::VesEventEnvelope = serde_json::from_value(envelope.clone())?;
        if env.tenant_id != line.tenant_id || env.store_id != line.store_id {
            bail!("event {} belongs to another stream than its line says", env.event_id);
        }
        let leaf = ves::hash::leaf_hash(
            line.tenant_id,
            line.store_id,
            line.sequence_number,
            &env.signing_hash(),
            &env.agent_signature.0,
        );
        // The leaf commits to the payload's hash, not the payload: a payload that no longer matches
        // its hash gets a leaf that matches nothing, so its range is reported.
        if env.payload_kind == 0
            && let Some(payload) = &env.payload
            && ves::hash::payload_plain_hash(payload) != env.payload_plain_hash.0
        {
            return Ok(altered(&leaf));
        }
        return Ok(leaf);
    }
    let payload = line.legacy.as_ref().and_then(|l| l.get("payload")).cloned().unwrap_or(Value::Null);
    let payload_hash = crate::ingest::legacy::legacy_payload_hash(&payload);
    Ok(crate::ingest::legacy::legacy_leaf(stream, line.sequence_number, &payload_hash))
}

fn altered(leaf: &Hash32) -> Hash32 {
    use sha2::Digest;
    sha2::Sha256::new().chain_update(b"stateset-backup-altered-payload").chain_update(leaf).finalize().into()
}

/// The Merkle leaf of a stored event, recomputed from its content (not from `leaf_hash`).
fn leaf_of_stored(e: &StoredEvent) -> anyhow::Result<Hash32> {
    leaf_of_line(&export_line(e)?)
}

/// `export-events`: writes the events of one stream (or every stream) from `from` on as NDJSON and
/// returns how many were written. A gap in the log stops the export with an error naming it.
pub async fn export_events(
    store: &Store,
    tenant_id: Option<Uuid>,
    store_id: Option<Uuid>,
    from: u64,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let streams = store.streams(tenant_id, store_id, i64::MAX).await?;
    let mut written = 0;
    for s in streams {
        let stream = StreamKey { tenant_id: s.tenant_id, store_id: s.store_id };
        let mut next = i64::try_from(from.max(1)).context("--from is too large")?;
        while next <= s.head {
            let page = store
                .read_range(stream, next, PAGE, s.head)
                .await
                .with_context(|| format!("stream {}/{}: cannot read {next}..", stream.tenant_id, stream.store_id))?;
            for e in &page {
                serde_json::to_writer(&mut *out, &export_line(e)?)?;
                out.write_all(b"\n")?;
                written += 1;
            }
            next += page.len() as i64;
        }
    }
    out.flush()?;
    Ok(written)
}

/// A checkpoints file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedCheckpoints {
    pub format: String,
    pub saved_at: String,
    /// The key the checkpoints were signed with, for information only: verification uses the key the
    /// operator gives.
    pub verifier_key: String,
    pub streams: Vec<SavedStream>,
}

/// One stream's evidence.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedStream {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    /// Events covered by the checkpoint: 1..=size.
    pub size: u64,
    /// The signed note, as `GET /api/v1/ves/checkpoint` serves it.
    pub checkpoint: String,
    /// The live commitments 1..=size in order; authenticated by chaining to the checkpoint's root.
    pub commitments: Vec<SavedCommitment>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedCommitment {
    pub batch_id: Uuid,
    pub sequence_start: u64,
    pub sequence_end: u64,
    /// Hex.
    pub merkle_root: String,
    pub anchored: bool,
}

/// `save-checkpoints`: the evidence of every stream that has a commitment.
pub async fn save_checkpoints(store: &Store, signer: &CheckpointSigner) -> anyhow::Result<SavedCheckpoints> {
    let mut streams = Vec::new();
    for s in store.streams(None, None, i64::MAX).await? {
        let stream = StreamKey { tenant_id: s.tenant_id, store_id: s.store_id };
        let commitments = store.list_commitments(stream, ListFilter::default(), i64::MAX).await?;
        let Some(last) = commitments.last() else { continue };
        let root: Hash32 = last.new_state_root.as_slice().try_into().context("stored state root is not 32 bytes")?;
        let note = signer.sign(stream, last.sequence_end as u64, root, last.batch_id)?;
        streams.push(SavedStream {
            tenant_id: stream.tenant_id,
            store_id: stream.store_id,
            size: last.sequence_end as u64,
            checkpoint: String::from_utf8(note).context("checkpoint note is not UTF-8")?,
            commitments: commitments
                .iter()
                .map(|c| SavedCommitment {
                    batch_id: c.batch_id,
                    sequence_start: c.sequence_start as u64,
                    sequence_end: c.sequence_end as u64,
                    merkle_root: hex::encode(&c.merkle_root),
                    anchored: c.chain_tx_hash.is_some(),
                })
                .collect(),
        });
    }
    Ok(SavedCheckpoints {
        format: CHECKPOINTS_FORMAT.into(),
        saved_at: chrono::Utc::now().to_rfc3339(),
        verifier_key: signer.verifier_key().to_owned(),
        streams,
    })
}

/// Where the events to verify come from.
pub enum BackupSource {
    /// A restored database.
    Database(Store),
    /// An export, read once into one leaf per event (32 bytes each).
    Export(HashMap<StreamKey, HashMap<u64, Hash32>>),
}

impl BackupSource {
    /// Reads an export file.
    pub fn read_export(reader: impl BufRead) -> anyhow::Result<Self> {
        let mut streams: HashMap<StreamKey, HashMap<u64, Hash32>> = HashMap::new();
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: ExportLine =
                serde_json::from_str(&line).with_context(|| format!("export line {}: not an event", n + 1))?;
            let leaf = leaf_of_line(&parsed).with_context(|| format!("export line {}", n + 1))?;
            let stream = StreamKey { tenant_id: parsed.tenant_id, store_id: parsed.store_id };
            if streams.entry(stream).or_default().insert(parsed.sequence_number, leaf).is_some() {
                bail!("export line {}: sequence number {} appears twice", n + 1, parsed.sequence_number);
            }
        }
        Ok(BackupSource::Export(streams))
    }

    /// The leaves of `start..=end`, or the first missing sub-range.
    async fn leaves(&self, stream: StreamKey, start: u64, end: u64) -> anyhow::Result<Result<Vec<Hash32>, (u64, u64)>> {
        match self {
            BackupSource::Export(streams) => {
                let Some(events) = streams.get(&stream) else { return Ok(Err((start, end))) };
                let mut leaves = Vec::with_capacity((end - start + 1) as usize);
                for seq in start..=end {
                    match events.get(&seq) {
                        Some(leaf) => leaves.push(*leaf),
                        None => {
                            let last_missing =
                                (seq..=end).take_while(|s| !events.contains_key(s)).last().unwrap_or(seq);
                            return Ok(Err((seq, last_missing)));
                        }
                    }
                }
                Ok(Ok(leaves))
            }
            BackupSource::Database(store) => {
                let mut leaves = Vec::with_capacity((end - start + 1) as usize);
                let mut next = start as i64;
                while next <= end as i64 {
                    let page = store.read_range(stream, next, PAGE.min(end as i64 - next + 1), end as i64).await;
                    let page = match page {
                        Ok(p) => p,
                        Err(crate::Error::SequenceGap(_)) => {
                            let first = store_first_missing(store, stream, next, end as i64).await?;
                            return Ok(Err(first));
                        }
                        Err(e) => return Err(e.into()),
                    };
                    for e in &page {
                        leaves.push(leaf_of_stored(e)?);
                    }
                    next += page.len() as i64;
                }
                Ok(Ok(leaves))
            }
        }
    }

    /// The highest sequence number the backup holds for a stream (for the report).
    async fn head(&self, stream: StreamKey) -> anyhow::Result<u64> {
        Ok(match self {
            BackupSource::Export(streams) => streams.get(&stream).and_then(|e| e.keys().max().copied()).unwrap_or(0),
            BackupSource::Database(store) => store.head(stream).await?.max(0) as u64,
        })
    }
}

/// The first run of missing numbers in `from..=to` of a stream (read one page at a time).
async fn store_first_missing(store: &Store, stream: StreamKey, from: i64, to: i64) -> anyhow::Result<(u64, u64)> {
    let mut expected = from;
    while expected <= to {
        let page = store.sequence_numbers(stream, expected, to, PAGE).await?;
        for seq in &page {
            if *seq != expected {
                return Ok((expected as u64, (*seq - 1) as u64));
            }
            expected += 1;
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    Ok((expected as u64, to as u64))
}

/// One disagreement between the backup and the evidence.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupFinding {
    pub kind: &'static str,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub sequence_start: u64,
    pub sequence_end: u64,
    pub detail: String,
}

/// What `verify-backup` found.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub ok: bool,
    pub streams_checked: u64,
    pub events_checked: u64,
    pub commitments_checked_on_chain: u64,
    /// Events the backup holds beyond the saved checkpoints (newer than the evidence, not checked).
    pub events_after_checkpoints: u64,
    pub findings: Vec<BackupFinding>,
}

/// `verify-backup`: checks every saved stream against the backup (see the module doc).
pub async fn verify_backup(
    source: &BackupSource,
    saved: &SavedCheckpoints,
    verifier_key: &str,
    anchor: Option<&::anchor::AnchorClient>,
) -> anyhow::Result<BackupReport> {
    if saved.format != CHECKPOINTS_FORMAT {
        bail!("not a checkpoints file of this sequencer (format {:?})", saved.format);
    }
    let verifier = signed_note::StandardVerifier::new(verifier_key)
        .map_err(|e| anyhow!("the verifier key is not a signed-note Ed25519 verifier key: {e}"))?;
    let verifiers = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let mut report = BackupReport::default();
    for s in &saved.streams {
        let stream = StreamKey { tenant_id: s.tenant_id, store_id: s.store_id };
        let finding = |kind, start, end, detail: String| BackupFinding {
            kind,
            tenant_id: s.tenant_id,
            store_id: s.store_id,
            sequence_start: start,
            sequence_end: end,
            detail,
        };
        report.streams_checked += 1;
        // 1. The checkpoint, with the operator's key.
        let checked = signed_note::Note::from_bytes(s.checkpoint.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|note| note.verify(&verifiers).map(|_| note).map_err(|e| e.to_string()))
            .and_then(|note| tlog_tiles::Checkpoint::from_bytes(note.text()).map_err(|e| e.to_string()));
        let checkpoint = match checked {
            Ok(c) => c,
            Err(e) => {
                report.findings.push(finding(
                    "checkpoint_signature",
                    1,
                    s.size,
                    format!("the saved checkpoint does not verify with the given key: {e}"),
                ));
                continue;
            }
        };
        let origin_suffix = format!("/{}/{}", s.tenant_id, s.store_id);
        if !checkpoint.origin().ends_with(&origin_suffix) || checkpoint.size() != s.size {
            report.findings.push(finding(
                "checkpoint_mismatch",
                1,
                s.size,
                format!("the signed checkpoint is for {} at size {}", checkpoint.origin(), checkpoint.size()),
            ));
            continue;
        }
        let root = checkpoint.hash().0;
        // 2. The saved ranges must chain to the signed root (this authenticates their Merkle roots).
        let mut links = Vec::with_capacity(s.commitments.len());
        for c in &s.commitments {
            let merkle_root: Hash32 = hex::decode(&c.merkle_root)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("saved commitment {} has a malformed merkle root", c.batch_id))?;
            links.push(ChainLink { sequence_start: c.sequence_start, sequence_end: c.sequence_end, merkle_root });
        }
        if let Err(e) = ves::chain::verify_consistency(s.tenant_id, s.store_id, (0, &[0; 32]), (s.size, &root), &links)
        {
            report.findings.push(finding(
                "saved_commitments_altered",
                1,
                s.size,
                format!("the saved commitments do not chain to the signed checkpoint ({e}); the file was altered"),
            ));
            continue;
        }
        // 3. Every range recomputed from the backup's events; the running state root for the L2 check.
        let mut state = [0u8; 32];
        let mut states = Vec::with_capacity(links.len());
        for link in &links {
            let (start, end) = (link.sequence_start, link.sequence_end);
            match source.leaves(stream, start, end).await? {
                Err((a, b)) => {
                    report.findings.push(finding(
                        "missing_events",
                        a,
                        b,
                        format!("the backup lacks events {a}..={b} of the range {start}..={end} the checkpoint covers"),
                    ));
                    states.push(None);
                }
                Ok(leaves) => {
                    report.events_checked += leaves.len() as u64;
                    let recomputed = ves::merkle::merkle_root(&leaves);
                    if recomputed != link.merkle_root {
                        report.findings.push(finding(
                            "events_differ",
                            start,
                            end,
                            format!(
                                "the events {start}..={end} in the backup have Merkle root {}, the signed evidence {}",
                                hex::encode(recomputed),
                                hex::encode(link.merkle_root)
                            ),
                        ));
                    }
                    state = ves::hash::state_root(
                        s.tenant_id,
                        s.store_id,
                        &state,
                        &recomputed,
                        start,
                        end,
                        (end - start + 1) as u32,
                    );
                    states.push(Some((recomputed, state)));
                }
            }
        }
        // 4. The L2 registry's roots of the anchored commitments.
        if let Some(client) = anchor {
            for (c, recomputed) in s.commitments.iter().zip(&states) {
                if !c.anchored {
                    continue;
                }
                report.commitments_checked_on_chain += 1;
                let on_chain = client
                    .get_commitment(c.batch_id)
                    .await
                    .map_err(|e| anyhow!("reading commitment {} from the L2 registry: {e}", c.batch_id))?;
                let Some(on_chain) = on_chain else {
                    report.findings.push(finding(
                        "not_anchored",
                        c.sequence_start,
                        c.sequence_end,
                        format!(
                            "commitment {} was anchored at backup time but the L2 registry has no record",
                            c.batch_id
                        ),
                    ));
                    continue;
                };
                let same_range = (on_chain.sequence_start, on_chain.sequence_end) == (c.sequence_start, c.sequence_end);
                let same_roots = recomputed
                    .is_some_and(|(merkle, state)| merkle == on_chain.events_root && state == on_chain.state_root);
                if !same_range || (recomputed.is_some() && !same_roots) {
                    report.findings.push(finding(
                        "l2_root_mismatch",
                        c.sequence_start,
                        c.sequence_end,
                        format!(
                            "the L2 registry anchors {}..={} with events root {} for commitment {}; the backup's events give another root",
                            on_chain.sequence_start,
                            on_chain.sequence_end,
                            hex::encode(on_chain.events_root),
                            c.batch_id
                        ),
                    ));
                }
            }
        }
        report.events_after_checkpoints += source.head(stream).await?.saturating_sub(s.size);
    }
    report.ok = report.findings.is_empty();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn an_exported_event_recomputes_the_leaf_the_sequencer_stored() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let env = ves::envelope::EventBuilder::new(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 1)
            .entity("order", "O-1")
            .event_type("order.created")
            .payload(json!({"n": 1}))
            .sign(&key);
        let line = ExportLine {
            tenant_id: env.tenant_id,
            store_id: env.store_id,
            sequence_number: 7,
            sequenced_at: "2026-01-01T00:00:00Z".into(),
            envelope: Some(serde_json::to_value(&env).unwrap()),
            legacy: None,
        };
        let text = serde_json::to_string(&line).unwrap();
        let back: ExportLine = serde_json::from_str(&text).unwrap();
        let expected =
            ves::hash::leaf_hash(env.tenant_id, env.store_id, 7, &env.signing_hash(), &env.agent_signature.0);
        assert_eq!(leaf_of_line(&back).unwrap(), expected);
        // Another sequence number is another leaf.
        let moved = ExportLine { sequence_number: 8, ..back };
        assert_ne!(leaf_of_line(&moved).unwrap(), expected);
    }
}

/// The command line's side of these commands (the binary only parses arguments).
pub mod cli {
    use std::io::{BufReader, BufWriter, Write};
    use std::path::Path;
    use std::process::ExitCode;

    use anyhow::Context;
    use uuid::Uuid;

    use super::{BackupSource, SavedCheckpoints};
    use crate::checkpoint::CheckpointSigner;
    use crate::store::Store;

    /// `export-events`: to `output`, or standard output.
    pub async fn export_events(
        store: &Store,
        tenant_id: Option<Uuid>,
        store_id: Option<Uuid>,
        from: u64,
        output: Option<&Path>,
    ) -> anyhow::Result<ExitCode> {
        let written = match output {
            Some(path) => {
                let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
                super::export_events(store, tenant_id, store_id, from, &mut BufWriter::new(file)).await?
            }
            None => {
                super::export_events(store, tenant_id, store_id, from, &mut BufWriter::new(std::io::stdout().lock()))
                    .await?
            }
        };
        eprintln!("exported {written} events");
        Ok(ExitCode::SUCCESS)
    }

    /// `save-checkpoints`: writes the file atomically (a temporary file renamed into place).
    pub async fn save_checkpoints(store: &Store, signer: &CheckpointSigner, output: &Path) -> anyhow::Result<ExitCode> {
        let saved = super::save_checkpoints(store, signer).await?;
        let tmp = output.with_extension("partial");
        {
            let mut file = BufWriter::new(
                std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            serde_json::to_writer_pretty(&mut file, &saved)?;
            file.write_all(b"\n")?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
        println!(
            "saved the signed checkpoints of {} streams to {} (verifier key {})",
            saved.streams.len(),
            output.display(),
            saved.verifier_key
        );
        Ok(ExitCode::SUCCESS)
    }

    /// `verify-backup`: exit code 1 when anything disagrees.
    pub async fn verify_backup(
        source: BackupSource,
        checkpoints: &Path,
        verifier_key: &str,
        anchor: Option<&::anchor::AnchorClient>,
        json: bool,
    ) -> anyhow::Result<ExitCode> {
        let file =
            std::fs::File::open(checkpoints).with_context(|| format!("cannot open {}", checkpoints.display()))?;
        let saved: SavedCheckpoints = serde_json::from_reader(BufReader::new(file))
            .with_context(|| format!("{} is not a checkpoints file", checkpoints.display()))?;
        let report = super::verify_backup(&source, &saved, verifier_key, anchor).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            for f in &report.findings {
                println!(
                    "MISMATCH {} tenant {} store {} events {}..={}: {}",
                    f.kind, f.tenant_id, f.store_id, f.sequence_start, f.sequence_end, f.detail
                );
            }
            println!(
                "{}: {} streams, {} events checked against the saved checkpoints{}; {} newer events not covered",
                if report.ok { "backup verified" } else { "backup does NOT match its evidence" },
                report.streams_checked,
                report.events_checked,
                if anchor.is_some() {
                    format!(", {} commitments against the L2 registry", report.commitments_checked_on_chain)
                } else {
                    String::new()
                },
                report.events_after_checkpoints
            );
        }
        Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }

    /// Opens an export for `verify-backup --export`.
    pub fn open_export(path: &Path) -> anyhow::Result<BackupSource> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        BackupSource::read_export(BufReader::new(file))
    }
}
