//! The private encoding primitives of ves-wire §2.1: `U8`, `U32_BE`, `U64_BE`, `UUID` and
//! `ENC_STR`, written into a [`Sink`].
//!
//! Hashing feeds the primitives straight into an incremental SHA-256 (no preimage buffer); the
//! same writers fill a `Vec<u8>` when a caller wants the preimage itself (debugging a signature
//! mismatch, or checking a preimage length against the golden vectors).

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Hash32;

/// Where preimage bytes go: a running SHA-256 or a byte buffer.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, n: u8) {
        self.put(&[n]);
    }

    fn put_u32(&mut self, n: u32) {
        self.put(&n.to_be_bytes());
    }

    fn put_u64(&mut self, n: u64) {
        self.put(&n.to_be_bytes());
    }

    /// The 16 RFC 4122 bytes, i.e. the hex digits of the canonical text form in order.
    fn put_uuid(&mut self, id: &Uuid) {
        self.put(id.as_bytes());
    }

    /// `U32_BE(len(utf8)) || utf8`.
    fn put_str(&mut self, s: &str) {
        self.put_len(s.len());
        self.put(s.as_bytes());
    }

    /// A `U32_BE` length prefix.
    fn put_len(&mut self, len: usize) {
        // NB: every length the protocol prefixes is bounded far below 4 GiB by the server's
        // request limits; a longer one cannot be represented, so refuse loudly instead of
        // silently hashing a wrapped length.
        let len = u32::try_from(len).expect("VES length prefixes are U32_BE; value exceeds 4 GiB");
        self.put_u32(len);
    }
}

impl Sink for Sha256 {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A fresh SHA-256 whose first bytes are `tag`.
#[inline]
pub(crate) fn tagged(tag: &[u8]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(tag);
    h
}

/// Finishes a running hash into a [`Hash32`].
#[inline]
pub(crate) fn finish(h: Sha256) -> Hash32 {
    h.finalize().into()
}

/// Lets a serializer (the JCS canonicalizer) stream its output into a hash.
pub(crate) struct HashWriter<'a>(pub(crate) &'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
