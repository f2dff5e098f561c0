//! Offline proof bundles in the C2SP tlog-proof text format:
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the entry>
//! index <zero-based index = sequence_number - 1>
//! <inclusion proof, one base64 hash per line, leaf's sibling first>
//!
//! <the signed checkpoint, verbatim, with the witnesses' cosignatures>
//! ```
//!
//! The entry travels in the `extra` line (tlog-proof lets applications put the data needed to
//! recompute the record hash there), so a bundle proves a whole event: its leaf hash is recomputed
//! from the entry, never taken on trust.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use signed_note::{Note, StandardVerifier, Verifier, VerifierList};
use tlog_tiles::Hash;

use super::witness::CosignatureVerifier;

pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Formats a bundle.
pub fn format(entry: &[u8], index: u64, proof: &[Hash], checkpoint_note: &[u8]) -> Vec<u8> {
    let mut out = format!("{HEADER}\nextra {}\nindex {index}\n", B64.encode(entry)).into_bytes();
    for h in proof {
        out.extend_from_slice(B64.encode(h.0).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(checkpoint_note);
    out
}

/// A parsed bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub entry: Option<Vec<u8>>,
    pub index: u64,
    pub proof: Vec<Hash>,
    pub checkpoint_note: Vec<u8>,
}

/// Parses a bundle.
pub fn parse(text: &[u8]) -> Result<Bundle, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    let (head, note) = text.split_once("\n\n").ok_or("no blank line before the checkpoint")?;
    let mut lines = head.split('\n');
    if lines.next() != Some(HEADER) {
        return Err(format!("first line is not {HEADER}"));
    }
    let mut line = lines.next().ok_or("no index line")?;
    let mut entry = None;
    if let Some(extra) = line.strip_prefix("extra ") {
        entry = Some(B64.decode(extra).map_err(|_| "extra is not base64".to_string())?);
        line = lines.next().ok_or("no index line")?;
    }
    let index = line.strip_prefix("index ").ok_or("no index line")?;
    if index.len() > 1 && index.starts_with('0') {
        return Err("index has leading zeros".into());
    }
    let index: u64 = index.parse().map_err(|_| "index is not a number".to_string())?;
    let proof = lines
        .map(|l| {
            let raw = B64.decode(l).map_err(|_| format!("proof line {l:?} is not base64"))?;
            Ok(Hash(raw.try_into().map_err(|_| format!("proof line {l:?} is not 32 bytes"))?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if proof.len() > 63 {
        return Err("inclusion proof longer than 63 hashes".into());
    }
    Ok(Bundle { entry, index, proof, checkpoint_note: note.as_bytes().to_vec() })
}

/// What offline verification established.
#[derive(Debug, Clone)]
pub struct Verified {
    pub origin: String,
    pub tree_size: u64,
    pub index: u64,
    pub entry: Vec<u8>,
    /// Names of the witnesses whose cosignature verified.
    pub witnesses: Vec<String>,
}

/// Verifies a bundle with only keys: the log's signed-note verifier key(s) (one must have signed the
/// checkpoint), the witnesses' cosignature keys (at least `min_witnesses` must have cosigned), and
/// the inclusion of the entry at its index.
pub fn verify(
    text: &[u8],
    log_keys: &[String],
    witness_keys: &[String],
    min_witnesses: usize,
) -> Result<Verified, String> {
    let bundle = parse(text)?;
    let entry = bundle.entry.ok_or("the bundle carries no entry (extra line)")?;
    let note = Note::from_bytes(&bundle.checkpoint_note).map_err(|e| format!("checkpoint note: {e}"))?;
    let mut verifiers: Vec<Box<dyn Verifier>> = Vec::new();
    let mut log_names = Vec::new();
    for k in log_keys {
        let v = StandardVerifier::new(k).map_err(|e| format!("log key {k:?}: {e}"))?;
        log_names.push((v.name().to_owned(), v.key_id()));
        verifiers.push(Box::new(v));
    }
    let origin = tlog_tiles::Checkpoint::from_bytes(note.text()).map(|c| c.origin().to_owned()).ok();
    for k in witness_keys {
        let v = CosignatureVerifier::new(k).map_err(|e| format!("witness key {k:?}: {e}"))?;
        for (log_name, _) in &log_names {
            super::witness::check_cosigner_name(v.name(), log_name).map_err(|e| format!("witness key {k:?}: {e}"))?;
        }
        if origin.as_deref() == Some(v.name()) {
            return Err(format!("witness key {k:?}: its name is the checkpoint's origin"));
        }
        verifiers.push(Box::new(v));
    }
    let (verified, _) =
        note.verify(&VerifierList::new(verifiers)).map_err(|e| format!("checkpoint signatures: {e}"))?;
    if !verified.iter().any(|s| log_names.contains(&(s.name().to_owned(), s.id()))) {
        return Err("the checkpoint is not signed by the log key".into());
    }
    // NB: a witness counts once, however many of its keys cosigned.
    let mut witnesses: Vec<String> = verified
        .iter()
        .filter(|s| !log_names.contains(&(s.name().to_owned(), s.id())))
        .map(|s| s.name().to_owned())
        .collect();
    witnesses.sort();
    witnesses.dedup();
    if witnesses.len() < min_witnesses {
        return Err(format!("{} witness cosignature(s), {min_witnesses} required", witnesses.len()));
    }
    let checkpoint = tlog_tiles::Checkpoint::from_bytes(note.text()).map_err(|e| format!("checkpoint: {e}"))?;
    tlog_tiles::check_record(
        &bundle.proof,
        checkpoint.size(),
        *checkpoint.hash(),
        bundle.index,
        super::leaf_hash(&entry),
    )
    .map_err(|e| format!("inclusion proof: {e}"))?;
    Ok(Verified {
        origin: checkpoint.origin().to_owned(),
        tree_size: checkpoint.size(),
        index: bundle.index,
        entry,
        witnesses,
    })
}
