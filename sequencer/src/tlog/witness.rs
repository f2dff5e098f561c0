//! The log's side of C2SP tlog-witness and tlog-cosignature (cosignature/v1, Ed25519): the
//! `add-checkpoint` request body, and checking the cosignatures a witness answers with.
//!
//! NB: hand-written because the `signed_note` crate verifies only plain Ed25519 note signatures
//! (algorithm 0x01); cosignature/v1 (0x04) signs a timestamped message, which is a few lines on top
//! of its `Verifier` trait.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use tlog_tiles::Hash;

/// Key type byte of cosignature/v1 (Ed25519) verifier keys and key ids.
pub const COSIGNATURE_V1_ALG: u8 = 0x04;

/// Checks cosignature/v1 signatures of one witness.
#[derive(Debug, Clone)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// From a verifier key `<name>+<key id, 8 hex>+<base64(0x04 || 32-byte Ed25519 key)>`.
    pub fn new(vkey: &str) -> Result<Self, String> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected <name>+<key id>+<base64 key>".into());
        };
        if !signed_note_name_valid(name) {
            return Err("invalid key name".into());
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| "key id is not 8 hex digits".to_string())?;
        let raw = B64.decode(key).map_err(|_| "key is not base64".to_string())?;
        if raw.len() != 33 || raw[0] != COSIGNATURE_V1_ALG {
            return Err("key is not a cosignature/v1 (0x04) Ed25519 key".into());
        }
        if signed_note::key_id(name, &raw) != id {
            return Err("key id does not match the name and key".into());
        }
        let key = VerifyingKey::from_bytes(raw[1..].try_into().expect("32 bytes"))
            .map_err(|_| "not an Ed25519 public key".to_string())?;
        Ok(CosignatureVerifier { name: name.to_owned(), id, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The timestamp of a cosignature this verifier accepts over `note_text`, or `None`.
    pub fn check(&self, note_text: &[u8], sig: &[u8]) -> Option<u64> {
        if sig.len() != 8 + 64 {
            return None;
        }
        let timestamp = u64::from_be_bytes(sig[..8].try_into().ok()?);
        if timestamp > i64::MAX as u64 {
            return None;
        }
        let message = cosigned_message(timestamp, note_text);
        let signature = Signature::from_bytes(sig[8..].try_into().ok()?);
        self.key.verify_strict(&message, &signature).ok().map(|_| timestamp)
    }
}

/// The message a cosignature/v1 signs.
pub fn cosigned_message(timestamp: u64, note_text: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(note_text);
    m
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.check(msg, sig).is_some()
    }
}

/// A witness's cosigner name must not be the log's own key name nor one of its origins
/// (`<log key name>/...`): C2SP tlog-cosignature keeps cosigner names apart from log names, so that a
/// cosignature line can never be taken for the log's signature, or the log's for a cosignature.
pub fn check_cosigner_name(cosigner: &str, log_key_name: &str) -> Result<(), String> {
    if cosigner == log_key_name || cosigner.strip_prefix(log_key_name).is_some_and(|rest| rest.starts_with('/')) {
        return Err(format!(
            "the witness name {cosigner:?} is the log's own key name or one of its origins; a cosigner needs a name of its own"
        ));
    }
    Ok(())
}

fn signed_note_name_valid(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The body of `POST <prefix>/add-checkpoint`: old size, consistency proof, blank line, checkpoint.
pub fn add_checkpoint_body(old_size: u64, proof: &[Hash], checkpoint_note: &[u8]) -> Vec<u8> {
    let mut body = format!("old {old_size}\n").into_bytes();
    for h in proof {
        body.extend_from_slice(B64.encode(h.0).as_bytes());
        body.push(b'\n');
    }
    body.push(b'\n');
    body.extend_from_slice(checkpoint_note);
    body
}

/// The cosignature lines (`— <name> <base64>\n`) of a witness's answer that `verifier` accepts over
/// the checkpoint `note`; lines of other keys are ignored.
pub fn accepted_cosignatures(note: &[u8], response: &str, verifier: &CosignatureVerifier) -> Vec<String> {
    let Ok(parsed) = signed_note::Note::from_bytes(note) else { return Vec::new() };
    let text = parsed.text();
    response
        .lines()
        .filter_map(|line| {
            let sig = signed_note::Signature::from_bytes(line.as_bytes()).ok()?;
            (sig.name() == verifier.name && sig.id() == verifier.id && verifier.check(text, sig.signature()).is_some())
                .then(|| format!("{line}\n"))
        })
        .collect()
}

/// A witness's refusal, as the protocol spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessAnswer {
    /// 200 with at least one valid cosignature line.
    Cosigned(Vec<String>),
    /// 409 with `text/x.tlog.size`: the witness's latest cosigned size differs from the one we sent.
    SizeConflict(u64),
    /// Anything else: the status and a short reason.
    Refused(u16, String),
}

/// Classifies an `add-checkpoint` answer.
pub fn classify_answer(
    status: u16,
    content_type: Option<&str>,
    body: &str,
    note: &[u8],
    verifier: &CosignatureVerifier,
) -> WitnessAnswer {
    match status {
        200 => {
            let lines = accepted_cosignatures(note, body, verifier);
            if lines.is_empty() {
                WitnessAnswer::Refused(200, "no valid cosignature from the configured key".into())
            } else {
                WitnessAnswer::Cosigned(lines)
            }
        }
        409 if content_type.is_some_and(|c| c.starts_with("text/x.tlog.size")) => {
            match body.trim_end_matches('\n').parse::<u64>() {
                Ok(size) => WitnessAnswer::SizeConflict(size),
                Err(_) => WitnessAnswer::Refused(409, "malformed size".into()),
            }
        }
        409 => WitnessAnswer::Refused(409, "conflict: the witness holds a different tree of this size".into()),
        422 => WitnessAnswer::Refused(422, "consistency proof refused: the witness saw a different history".into()),
        403 => WitnessAnswer::Refused(403, "the witness does not trust the log key".into()),
        404 => WitnessAnswer::Refused(404, "the witness does not know this log's origin".into()),
        other => WitnessAnswer::Refused(other, body.chars().take(200).collect()),
    }
}
