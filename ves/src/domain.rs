//! The domain-separation tags of ves-wire §2.1 (and SPEC §2 for `EVENTSIG_V2`).
//!
//! Each tag is raw ASCII with no terminator, written as the first bytes of its preimage so that
//! a digest of one kind can never be replayed as a digest of another. This module owns only the
//! constants; changing one breaks every existing signature, receipt and commitment.

/// Prefix of the plaintext payload hash, salted or not (ves-wire §2.2).
pub const PAYLOAD_PLAIN: &[u8] = b"VES_PAYLOAD_PLAIN_V1";
/// Prefix of the AEAD associated data that binds an encrypted payload to its event (§2.3).
pub const PAYLOAD_AAD: &[u8] = b"VES_PAYLOAD_AAD_V1";
/// Prefix of the cipher hash of an encrypted payload (§2.3).
pub const PAYLOAD_CIPHER: &[u8] = b"VES_PAYLOAD_CIPHER_V1";
/// Prefix of the hash over an encrypted payload's recipient list (§2.3).
pub const RECIPIENTS: &[u8] = b"VES_RECIPIENTS_V1";
/// Prefix of the version-1 event signing hash (§2.4); version 2 reuses it for its inner hash.
pub const EVENTSIG: &[u8] = b"VES_EVENTSIG_V1";
/// Prefix of the version-2 ("signed execution controls") outer signing hash (SPEC §2).
pub const EVENTSIG_V2: &[u8] = b"VES_EVENTSIG_V2";
/// Prefix of a Merkle leaf (§2.6).
pub const LEAF: &[u8] = b"VES_LEAF_V1";
/// The whole preimage of the padding leaf (§2.6).
pub const PAD_LEAF: &[u8] = b"VES_PAD_LEAF_V1";
/// Prefix of an inner Merkle node (§2.6).
pub const NODE: &[u8] = b"VES_NODE_V1";
/// Prefix of a stream id (§2.8).
pub const STREAM: &[u8] = b"VES_STREAM_V1";
/// Prefix of a sequencer receipt (§2.5).
pub const RECEIPT: &[u8] = b"VES_RECEIPT_V1";
/// Prefix of a commitment's chained state root (§2.8).
pub const STATE_ROOT: &[u8] = b"VES_STATE_ROOT_V1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_have_the_lengths_listed_in_ves_wire() {
        let lengths = [
            (PAYLOAD_PLAIN, 20),
            (PAYLOAD_AAD, 18),
            (PAYLOAD_CIPHER, 21),
            (RECIPIENTS, 17),
            (EVENTSIG, 15),
            (EVENTSIG_V2, 15),
            (LEAF, 11),
            (PAD_LEAF, 15),
            (NODE, 11),
            (STREAM, 13),
            (RECEIPT, 14),
            (STATE_ROOT, 17),
        ];
        for (tag, len) in lengths {
            assert_eq!(tag.len(), len, "{}", String::from_utf8_lossy(tag));
        }
    }
}
