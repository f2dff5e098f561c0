//! Encrypted payloads (payload kind 1, ves-wire §2.3): the `payload_encrypted` JSON object, its
//! structural rules, and the hashes that bind it to its event (payload AAD, recipients hash,
//! cipher hash).
//!
//! The sequencer only ever checks these hashes: this module has no keys and never decrypts.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::encode::{Sink, finish, tagged};
use crate::hash::SigningInput;
use crate::{Hash32, domain};

/// AEAD nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AEAD tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Length of each recipient's HPKE encapsulated key.
pub const RECIPIENT_ENC_LEN: usize = 32;
/// Length of each recipient's wrapped data key (32-byte key + 16-byte tag).
pub const RECIPIENT_CT_LEN: usize = 48;

/// The `payload_encrypted` object of an encrypted event. Unknown JSON fields are ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PayloadEncrypted {
    /// Encryption format version: 1, 2 or 3 (the cipher hash always writes 1).
    pub enc_version: u32,
    /// Content AEAD; must be `AES-256-GCM`.
    pub aead: String,
    /// The 12-byte AEAD nonce, base64url.
    pub nonce_b64u: String,
    /// The ciphertext without its tag, base64url; must not be empty.
    pub ciphertext_b64u: String,
    /// The 16-byte AEAD tag, base64url.
    pub tag_b64u: String,
    /// How the data key is wrapped for each recipient.
    pub hpke: Hpke,
    /// One wrapped data key per recipient, strictly increasing `recipient_kid`.
    pub recipients: Vec<Recipient>,
}

/// HPKE suite of the key wrapping.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hpke {
    /// `base`, `hybrid-base` or `pqc-base`.
    pub mode: String,
    /// `X25519-HKDF-SHA256`, `x25519+mlkem768` or `mlkem768`.
    pub kem: String,
    /// Must be `HKDF-SHA256`.
    pub kdf: String,
    /// Must be `AES-256-GCM`.
    pub aead: String,
}

/// A recipient's wrapped data key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The recipient's key id in the registry.
    pub recipient_kid: u32,
    /// The HPKE encapsulated key, base64url (32 bytes).
    pub enc_b64u: String,
    /// The wrapped data key, base64url (48 bytes).
    pub ct_b64u: String,
}

/// Why a cipher hash could not be computed from a `payload_encrypted` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// A field is not base64url (padded or unpadded).
    #[error("{field} is not base64url (padded or unpadded)")]
    Base64 {
        /// The JSON path of the field, e.g. `payload_encrypted.nonce_b64u`.
        field: &'static str,
    },
    /// A field decodes to the wrong number of bytes.
    #[error("{field} must decode to {expected} bytes, got {actual}")]
    Length {
        /// The JSON path of the field.
        field: &'static str,
        /// The length the layout requires.
        expected: usize,
        /// The decoded length.
        actual: usize,
    },
}

/// A structural rule of ves-wire §2.3 that a `payload_encrypted` object breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct StructureError {
    /// The JSON path of the failing field, as the rejection reason
    /// `schema_validation: <field>` names it.
    pub field: &'static str,
    /// What the rule requires, for the rejection message.
    pub message: String,
}

/// `SHA256("VES_PAYLOAD_AAD_V1" || UUID(T) || UUID(S) || UUID(event_id) ||
/// UUID(source_agent_id) || U32_BE(agent_key_id) || ENC_STR(entity_type) || ENC_STR(entity_id)
/// || ENC_STR(event_type) || ENC_STR(created_at) || payload_plain_hash)`: the associated data
/// that binds ciphertext and wrapped keys to their event. Uses only those fields of `input`.
pub fn payload_aad(input: &SigningInput) -> Hash32 {
    let mut h: Sha256 = tagged(domain::PAYLOAD_AAD);
    h.put_uuid(&input.tenant_id);
    h.put_uuid(&input.store_id);
    h.put_uuid(&input.event_id);
    h.put_uuid(&input.source_agent_id);
    h.put_u32(input.agent_key_id);
    h.put_str(input.entity_type);
    h.put_str(input.entity_id);
    h.put_str(input.event_type);
    h.put_str(input.created_at);
    h.put(&input.payload_plain_hash);
    finish(h)
}

/// `SHA256("VES_RECIPIENTS_V1" || for each recipient in array order: U32_BE(kid) ||
/// U32_BE(len(enc)) || enc || U32_BE(len(ct)) || ct)`. Lengths are not checked here (see
/// [`validate_structure`]); only the base64url has to decode.
pub fn recipients_hash(recipients: &[Recipient]) -> Result<Hash32, CipherError> {
    let mut h: Sha256 = tagged(domain::RECIPIENTS);
    for r in recipients {
        let enc = decode_field("payload_encrypted.recipients.enc_b64u", &r.enc_b64u)?;
        let ct = decode_field("payload_encrypted.recipients.ct_b64u", &r.ct_b64u)?;
        h.put_u32(r.recipient_kid);
        h.put_len(enc.len());
        h.put(&enc);
        h.put_len(ct.len());
        h.put(&ct);
    }
    Ok(finish(h))
}

/// `SHA256("VES_PAYLOAD_CIPHER_V1" || U32_BE(1) || nonce(12) || payload_aad || U32_BE(len(ct))
/// || ct || tag(16) || recipients_hash)`: the `payload_cipher_hash` of an encrypted event.
///
/// NB: the version field is the constant 1 whatever `enc_version` says, as upstream writes it.
pub fn cipher_hash(p: &PayloadEncrypted, payload_aad: &Hash32) -> Result<Hash32, CipherError> {
    let nonce = decode_exact::<NONCE_LEN>("payload_encrypted.nonce_b64u", &p.nonce_b64u)?;
    let ciphertext = decode_field("payload_encrypted.ciphertext_b64u", &p.ciphertext_b64u)?;
    let tag = decode_exact::<TAG_LEN>("payload_encrypted.tag_b64u", &p.tag_b64u)?;
    let recipients = recipients_hash(&p.recipients)?;

    let mut h: Sha256 = tagged(domain::PAYLOAD_CIPHER);
    h.put_u32(1);
    h.put(&nonce);
    h.put(payload_aad);
    h.put_len(ciphertext.len());
    h.put(&ciphertext);
    h.put(&tag);
    h.put(&recipients);
    Ok(finish(h))
}

/// Checks the structural rules of ves-wire §2.3 under the legacy security profile (every listed
/// mode and KEM allowed), in upstream's order. `Err` carries the failing field's JSON path, e.g.
/// `payload_encrypted.nonce_b64u`; see [`check_structure`] for the message too.
pub fn validate_structure(p: &PayloadEncrypted) -> Result<(), String> {
    check_structure(p).map_err(|e| e.field.to_owned())
}

/// [`validate_structure`] with the message upstream puts next to the field.
pub fn check_structure(p: &PayloadEncrypted) -> Result<(), StructureError> {
    const AEAD: &str = "AES-256-GCM";
    const KDF: &str = "HKDF-SHA256";
    const MODES: [&str; 3] = ["base", "hybrid-base", "pqc-base"];
    const KEMS: [&str; 3] = ["X25519-HKDF-SHA256", "x25519+mlkem768", "mlkem768"];

    let fail = |field: &'static str, message: String| Err(StructureError { field, message });
    let decode = |field: &'static str, value: &str| {
        base64url_decode(value).map_err(|_| StructureError { field, message: "must be base64url".to_owned() })
    };

    if !(1..=3).contains(&p.enc_version) {
        return fail("payload_encrypted.enc_version", "enc_version must be 1, 2 or 3".into());
    }
    if p.aead != AEAD {
        return fail("payload_encrypted.aead", format!("aead must be {AEAD}"));
    }
    if !MODES.contains(&p.hpke.mode.as_str()) {
        return fail("payload_encrypted.hpke.mode", format!("hpke.mode must be one of {MODES:?}"));
    }
    if !KEMS.contains(&p.hpke.kem.as_str()) {
        return fail("payload_encrypted.hpke.kem", format!("hpke.kem must be one of {KEMS:?}"));
    }
    if p.hpke.kdf != KDF {
        return fail("payload_encrypted.hpke.kdf", format!("hpke.kdf must be {KDF}"));
    }
    if p.hpke.aead != AEAD {
        return fail("payload_encrypted.hpke.aead", format!("hpke.aead must be {AEAD}"));
    }
    if decode("payload_encrypted.nonce_b64u", &p.nonce_b64u)?.len() != NONCE_LEN {
        return fail("payload_encrypted.nonce_b64u", format!("nonce_b64u must decode to {NONCE_LEN} bytes"));
    }
    if decode("payload_encrypted.ciphertext_b64u", &p.ciphertext_b64u)?.is_empty() {
        return fail("payload_encrypted.ciphertext_b64u", "ciphertext_b64u must not be empty".into());
    }
    if decode("payload_encrypted.tag_b64u", &p.tag_b64u)?.len() != TAG_LEN {
        return fail("payload_encrypted.tag_b64u", format!("tag_b64u must decode to {TAG_LEN} bytes"));
    }
    if p.recipients.is_empty() {
        return fail("payload_encrypted.recipients", "recipients must not be empty".into());
    }
    let mut previous_kid: Option<u32> = None;
    for r in &p.recipients {
        if previous_kid.is_some_and(|prev| r.recipient_kid <= prev) {
            return fail(
                "payload_encrypted.recipients",
                "recipients must be sorted by recipient_kid and unique".into(),
            );
        }
        previous_kid = Some(r.recipient_kid);
        if decode("payload_encrypted.recipients.enc_b64u", &r.enc_b64u)?.len() != RECIPIENT_ENC_LEN {
            return fail(
                "payload_encrypted.recipients.enc_b64u",
                format!("enc_b64u must decode to {RECIPIENT_ENC_LEN} bytes"),
            );
        }
        if decode("payload_encrypted.recipients.ct_b64u", &r.ct_b64u)?.len() != RECIPIENT_CT_LEN {
            return fail(
                "payload_encrypted.recipients.ct_b64u",
                format!("ct_b64u must decode to {RECIPIENT_CT_LEN} bytes"),
            );
        }
    }
    Ok(())
}

/// Decodes base64url as upstream does: unpadded first, else canonically padded.
pub fn base64url_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(s).or_else(|_| URL_SAFE.decode(s))
}

/// Encodes base64url without padding (the canonical form the strict profile requires).
pub fn base64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_field(field: &'static str, value: &str) -> Result<Vec<u8>, CipherError> {
    base64url_decode(value).map_err(|_| CipherError::Base64 { field })
}

fn decode_exact<const N: usize>(field: &'static str, value: &str) -> Result<[u8; N], CipherError> {
    let bytes = decode_field(field, value)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| CipherError::Length { field, expected: N, actual: bytes.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> PayloadEncrypted {
        PayloadEncrypted {
            enc_version: 1,
            aead: "AES-256-GCM".into(),
            nonce_b64u: base64url_encode(&[0; 12]),
            ciphertext_b64u: base64url_encode(&[2; 24]),
            tag_b64u: base64url_encode(&[5; 16]),
            hpke: Hpke {
                mode: "base".into(),
                kem: "X25519-HKDF-SHA256".into(),
                kdf: "HKDF-SHA256".into(),
                aead: "AES-256-GCM".into(),
            },
            recipients: vec![Recipient {
                recipient_kid: 1,
                enc_b64u: base64url_encode(&[3; 32]),
                ct_b64u: base64url_encode(&[4; 48]),
            }],
        }
    }

    #[test]
    fn a_well_formed_payload_passes_validation() {
        assert_eq!(validate_structure(&sample()), Ok(()));
    }

    #[test]
    fn every_listed_mode_and_kem_is_allowed_under_the_legacy_profile() {
        for mode in ["base", "hybrid-base", "pqc-base"] {
            for kem in ["X25519-HKDF-SHA256", "x25519+mlkem768", "mlkem768"] {
                for enc_version in 1..=3 {
                    let mut p = sample();
                    p.hpke.mode = mode.into();
                    p.hpke.kem = kem.into();
                    p.enc_version = enc_version;
                    assert_eq!(validate_structure(&p), Ok(()), "{mode} {kem} {enc_version}");
                }
            }
        }
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        type Breaker = fn(&mut PayloadEncrypted);
        let cases: [(Breaker, &str); 17] = [
            (|p| p.enc_version = 4, "payload_encrypted.enc_version"),
            (|p| p.enc_version = 0, "payload_encrypted.enc_version"),
            (|p| p.aead = "AES-128-GCM".into(), "payload_encrypted.aead"),
            (|p| p.hpke.mode = "auth".into(), "payload_encrypted.hpke.mode"),
            (|p| p.hpke.kem = "P-256".into(), "payload_encrypted.hpke.kem"),
            (|p| p.hpke.kdf = "HKDF-SHA512".into(), "payload_encrypted.hpke.kdf"),
            (|p| p.hpke.aead = "ChaCha20Poly1305".into(), "payload_encrypted.hpke.aead"),
            (|p| p.nonce_b64u = base64url_encode(&[0; 11]), "payload_encrypted.nonce_b64u"),
            (|p| p.nonce_b64u = "not base64!".into(), "payload_encrypted.nonce_b64u"),
            (|p| p.ciphertext_b64u = String::new(), "payload_encrypted.ciphertext_b64u"),
            (|p| p.tag_b64u = base64url_encode(&[0; 15]), "payload_encrypted.tag_b64u"),
            (|p| p.recipients.clear(), "payload_encrypted.recipients"),
            (|p| p.recipients.push(p.recipients[0].clone()), "payload_encrypted.recipients"),
            (
                |p| {
                    let mut r = p.recipients[0].clone();
                    p.recipients[0].recipient_kid = 2;
                    r.recipient_kid = 1;
                    p.recipients.push(r);
                },
                "payload_encrypted.recipients",
            ),
            (|p| p.recipients[0].enc_b64u = base64url_encode(&[3; 31]), "payload_encrypted.recipients.enc_b64u"),
            (|p| p.recipients[0].ct_b64u = base64url_encode(&[4; 49]), "payload_encrypted.recipients.ct_b64u"),
            (|p| p.recipients[0].ct_b64u = "@@".into(), "payload_encrypted.recipients.ct_b64u"),
        ];
        for (breaker, field) in cases {
            let mut p = sample();
            breaker(&mut p);
            assert_eq!(validate_structure(&p), Err(field.to_owned()), "{p:?}");
        }
    }

    #[test]
    fn base64url_accepts_padded_and_unpadded_input() {
        assert_eq!(base64url_decode("_w").unwrap(), vec![0xff]);
        assert_eq!(base64url_decode("_w==").unwrap(), vec![0xff]);
        assert_eq!(base64url_decode("AAEC").unwrap(), vec![0, 1, 2]);
        assert!(base64url_decode("/w==").is_err(), "standard alphabet is not base64url");
    }

    #[test]
    fn cipher_hash_reports_bad_lengths_and_bad_base64() {
        let aad = [0; 32];
        let mut p = sample();
        p.nonce_b64u = base64url_encode(&[0; 13]);
        assert_eq!(
            cipher_hash(&p, &aad),
            Err(CipherError::Length { field: "payload_encrypted.nonce_b64u", expected: 12, actual: 13 })
        );
        let mut p = sample();
        p.recipients[0].enc_b64u = "!".into();
        assert_eq!(cipher_hash(&p, &aad), Err(CipherError::Base64 { field: "payload_encrypted.recipients.enc_b64u" }));
    }

    #[test]
    fn unknown_fields_are_ignored_when_deserializing() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["future_field"] = serde_json::json!(true);
        json["hpke"]["extra"] = serde_json::json!("x");
        let p: PayloadEncrypted = serde_json::from_value(json).unwrap();
        assert_eq!(p, sample());
    }
}
