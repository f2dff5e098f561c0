//! Signed checkpoints (tree heads) per stream, in the spirit of transparency logs (SPEC §5): a
//! C2SP tlog-checkpoint note signed as a C2SP signed note with the receipt key.
//!
//! ```text
//! stateset-sequencer/<tenant_id>/<store_id>        origin
//! 4096                                             size: events committed, 1..=size
//! <base64 state root>                              the new_state_root of the commitment ending at size
//! ves-commitment <batch_id>                        extension line: that commitment
//!
//! — stateset-sequencer <base64(key id || Ed25519 signature)>
//! ```
//!
//! The root is the stream's state root rather than a Merkle root over the whole log: commitments
//! cover disjoint ranges and chain by state root (ves-wire §2.8), so the state root after `size`
//! events commits to all of them. Two checkpoints of a stream are linked by a consistency proof
//! (`GET /api/v1/ves/commitments/consistency`, verified by `ves::chain::verify_consistency`).
//!
//! The note formats are the `tlog_tiles` and `signed_note` crates' (Cloudflare's implementations of
//! the C2SP specifications), so any signed-note verifier checks these checkpoints with the verifier
//! key that `GET /api/v1/ves/sequencer` publishes.

use ed25519_dalek::ed25519::signature;
use ed25519_dalek::{Signer as _, SigningKey};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::events::StreamKey;

/// Signs checkpoints with the sequencer's receipt key under one key name.
pub struct CheckpointSigner {
    name: String,
    id: u32,
    key: SigningKey,
    verifier_key: String,
}

impl CheckpointSigner {
    /// A signer named `name` (a valid signed-note key name, see `VES_CHECKPOINT_ORIGIN`).
    pub fn new(name: &str, key: SigningKey) -> Self {
        let public = [&[1u8][..], key.verifying_key().as_bytes()].concat();
        CheckpointSigner {
            name: name.to_owned(),
            id: signed_note::key_id(name, &public),
            verifier_key: signed_note::new_ed25519_verifier_key(name, &key.verifying_key()),
            key,
        }
    }

    /// The signed-note verifier key (`<name>+<key id>+<base64 key>`) that checks these checkpoints.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The origin of a stream's checkpoints.
    pub fn origin(&self, stream: StreamKey) -> String {
        format!("{}/{}/{}", self.name, stream.tenant_id, stream.store_id)
    }

    /// The signed checkpoint of a stream whose commitments end at `size` with state root `root`.
    pub fn sign(&self, stream: StreamKey, size: u64, root: [u8; 32], batch_id: Uuid) -> Result<Vec<u8>> {
        let extension = format!("ves-commitment {batch_id}\n");
        let checkpoint = tlog_tiles::Checkpoint::new(&self.origin(stream), size, tlog_tiles::Hash(root), &extension)
            .map_err(|e| Error::Internal(format!("checkpoint: {e}")))?;
        let mut note = signed_note::Note::new(&checkpoint.to_bytes(), &[])
            .map_err(|e| Error::Internal(format!("checkpoint note: {e}")))?;
        note.add_sigs(&[self as &dyn signed_note::Signer])
            .map_err(|e| Error::Internal(format!("checkpoint signature: {e}")))?;
        Ok(note.to_bytes())
    }
}

impl signed_note::Signer for CheckpointSigner {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use signed_note::{Note, StandardVerifier, VerifierList};

    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_the_published_key_and_parses_back() {
        let signer = CheckpointSigner::new("stateset-sequencer", SigningKey::from_bytes(&[3; 32]));
        let stream = StreamKey { tenant_id: Uuid::from_u128(1), store_id: Uuid::from_u128(2) };
        let batch = Uuid::from_u128(9);
        let bytes = signer.sign(stream, 4096, [7; 32], batch).unwrap();

        let verifier = StandardVerifier::new(signer.verifier_key()).unwrap();
        let note = Note::from_bytes(&bytes).unwrap();
        let (verified, unverified) = note.verify(&VerifierList::new(vec![Box::new(verifier)])).unwrap();
        assert_eq!((verified.len(), unverified.len()), (1, 0));
        let checkpoint = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
        assert_eq!(checkpoint.origin(), format!("stateset-sequencer/{}/{}", stream.tenant_id, stream.store_id));
        assert_eq!(checkpoint.size(), 4096);
        assert_eq!(checkpoint.hash().0, [7; 32]);
        assert_eq!(checkpoint.extension(), format!("ves-commitment {batch}\n"));

        // Another key does not verify it.
        let other = CheckpointSigner::new("stateset-sequencer", SigningKey::from_bytes(&[4; 32]));
        let verifier = StandardVerifier::new(other.verifier_key()).unwrap();
        assert!(note.verify(&VerifierList::new(vec![Box::new(verifier)])).is_err());
    }
}
