//! The VES event envelope as it travels in JSON (ves-wire §1.5), and a fluent builder that
//! fills in the hashes and signs it.
//!
//! Owns the serde rules of the wire: snake_case fields, unknown fields ignored, `null` optional
//! fields treated as absent, hex accepted with or without `0x` in any case and always written as
//! `0x` + lowercase. Deciding whether an envelope is acceptable (versions, kinds, lengths, keys)
//! is the sequencer's job, not this module's.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::cipher::PayloadEncrypted;
use crate::hash::{self, SigningInput};
use crate::{Hash32, ZERO_HASH, verify};

/// A signed VES event as sent to `POST /api/v1/ves/events/ingest` and returned by reads.
///
/// Input fields the server assigns (`sequence_number`, `sequenced_at`) and fields this crate
/// does not interpret (`agent_signature_bundle`) are ignored when deserializing.
///
/// `P` is how the plaintext payload is held: a `serde_json::Value` (the default, what clients build),
/// or a [`RawPayload`], the JSON text as it arrived, which is what a server that only hashes and
/// stores the payload reads it as.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub struct VesEventEnvelope<P = serde_json::Value> {
    /// Signing layout version: 1 (ves-wire §2.4) or 2 (SPEC §2).
    pub ves_version: u32,
    /// Globally unique event id.
    pub event_id: Uuid,
    /// Tenant half of the stream.
    pub tenant_id: Uuid,
    /// Store half of the stream.
    pub store_id: Uuid,
    /// The agent that signed the event; must match the request's `agentId`.
    pub source_agent_id: Uuid,
    /// Which of the agent's keys signed it.
    pub agent_key_id: u32,
    /// Entity type (1..=128 bytes on the server).
    pub entity_type: String,
    /// Entity id (1..=512 bytes on the server).
    pub entity_id: String,
    /// Event type (1..=256 bytes on the server).
    pub event_type: String,
    /// RFC 3339 creation time; the exact string is signed and must be returned unchanged.
    pub created_at: String,
    /// 0 plaintext, 1 encrypted; the server rejects anything else.
    pub payload_kind: u32,
    /// The plaintext payload (kind 0). JSON `null` reads as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<P>,
    /// The encrypted payload (kind 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_encrypted: Option<PayloadEncrypted>,
    /// `payload_plain_hash` of the payload (salted for kind 1).
    pub payload_plain_hash: Hex32,
    /// Cipher hash; all zeroes for kind 0.
    pub payload_cipher_hash: Hex32,
    /// Ed25519 signature of the signing hash.
    pub agent_signature: Sig64,
    /// 0 legacy, 1 Ed25519, 2 ML-DSA-65, 3 hybrid; not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_signature_scheme: Option<i32>,
    /// Intent id for per-stream deduplication; signed by version 2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// Optimistic-concurrency version of the entity; signed by version 2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
}

impl<P> VesEventEnvelope<P> {
    /// The signed fields, borrowed.
    pub fn signing_input(&self) -> SigningInput<'_> {
        SigningInput {
            ves_version: self.ves_version,
            tenant_id: self.tenant_id,
            store_id: self.store_id,
            event_id: self.event_id,
            source_agent_id: self.source_agent_id,
            agent_key_id: self.agent_key_id,
            entity_type: &self.entity_type,
            entity_id: &self.entity_id,
            event_type: &self.event_type,
            created_at: &self.created_at,
            payload_kind: self.payload_kind,
            payload_plain_hash: self.payload_plain_hash.0,
            payload_cipher_hash: self.payload_cipher_hash.0,
            command_id: self.command_id,
            base_version: self.base_version,
        }
    }

    /// [`hash::event_signing_hash`] of this envelope.
    pub fn signing_hash(&self) -> Hash32 {
        hash::event_signing_hash(&self.signing_input())
    }

    /// Signs the signing hash with `key` and stores the signature in `agent_signature`.
    /// Hashes are not recomputed: set them first (or use [`EventBuilder`]).
    pub fn sign(&mut self, key: &SigningKey) {
        self.agent_signature = Sig64(key.sign(&self.signing_hash()).to_bytes());
    }

    /// Whether `agent_signature` is a valid signature of the signing hash under `key`.
    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        verify::verify_one(&self.agent_signature.0, &self.signing_hash(), key)
    }

    /// The same envelope with its payload held as `f` makes it (e.g. [`RawPayload::from_value`]).
    pub fn map_payload<Q>(self, f: impl FnOnce(P) -> Q) -> VesEventEnvelope<Q> {
        VesEventEnvelope {
            ves_version: self.ves_version,
            event_id: self.event_id,
            tenant_id: self.tenant_id,
            store_id: self.store_id,
            source_agent_id: self.source_agent_id,
            agent_key_id: self.agent_key_id,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            event_type: self.event_type,
            created_at: self.created_at,
            payload_kind: self.payload_kind,
            payload: self.payload.map(f),
            payload_encrypted: self.payload_encrypted,
            payload_plain_hash: self.payload_plain_hash,
            payload_cipher_hash: self.payload_cipher_hash,
            agent_signature: self.agent_signature,
            agent_signature_scheme: self.agent_signature_scheme,
            command_id: self.command_id,
            base_version: self.base_version,
        }
    }
}

/// A plaintext payload as its JSON text, checked to be JSON but not parsed into a tree.
///
/// The sequencer reads every payload this way: most payloads are already in their canonical form
/// (RFC 8785, [`crate::jcs::is_canonical`]), and then the text itself is what is hashed, stored and
/// served, with no `Value` to build, walk and drop. Any other payload is parsed ([`Self::to_value`]).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(transparent)]
pub struct RawPayload(Box<serde_json::value::RawValue>);

impl RawPayload {
    /// The payload's JSON text, exactly as it arrived (within the request, without surrounding
    /// whitespace).
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The payload parsed, as a `VesEventEnvelope<Value>` holds it. The text's syntax is valid JSON,
    /// but it may hold what serde_json does not parse into a `Value`: a number beyond a double's range
    /// (`1e400`) or nesting deeper than 128 levels.
    pub fn to_value(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(self.get())
    }

    /// The text of `value`'s compact JSON.
    pub fn from_value(value: &serde_json::Value) -> Self {
        RawPayload(serde_json::value::to_raw_value(value).expect("a Value serializes"))
    }
}

impl PartialEq for RawPayload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Builds signed plaintext envelopes for clients and tests.
///
/// ```
/// # use ed25519_dalek::SigningKey;
/// # use uuid::Uuid;
/// let key = SigningKey::from_bytes(&[7; 32]);
/// let event = ves::EventBuilder::new(Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), 1)
///     .entity("InventoryItem", "WIDGET-001")
///     .event_type("Adjusted")
///     .payload(serde_json::json!({"delta": 5}))
///     .sign(&key);
/// assert!(event.verify_signature(&key.verifying_key()));
/// ```
///
/// Defaults: a random v4 `event_id`, `created_at` = now in UTC as RFC 3339 with milliseconds
/// and `Z`, `ves_version` 1, payload `{}`. Entity type, entity id and event type default to
/// empty strings, which the server rejects: set them.
#[derive(Clone, Debug)]
pub struct EventBuilder {
    tenant_id: Uuid,
    store_id: Uuid,
    agent_id: Uuid,
    key_id: u32,
    entity_type: String,
    entity_id: String,
    event_type: String,
    payload: serde_json::Value,
    created_at: Option<String>,
    event_id: Option<Uuid>,
    command_id: Option<Uuid>,
    base_version: Option<u64>,
    version: u32,
}

impl EventBuilder {
    /// Starts an event of stream (`tenant_id`, `store_id`) signed by key `key_id` of `agent_id`.
    pub fn new(tenant_id: Uuid, store_id: Uuid, agent_id: Uuid, key_id: u32) -> Self {
        Self {
            tenant_id,
            store_id,
            agent_id,
            key_id,
            entity_type: String::new(),
            entity_id: String::new(),
            event_type: String::new(),
            payload: serde_json::Value::Object(serde_json::Map::new()),
            created_at: None,
            event_id: None,
            command_id: None,
            base_version: None,
            version: 1,
        }
    }

    /// Sets the entity the event is about.
    pub fn entity(mut self, entity_type: impl Into<String>, entity_id: impl Into<String>) -> Self {
        self.entity_type = entity_type.into();
        self.entity_id = entity_id.into();
        self
    }

    /// Sets the event type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }

    /// Sets the plaintext payload.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the exact `created_at` string that will be signed.
    pub fn created_at(mut self, created_at: impl Into<String>) -> Self {
        self.created_at = Some(created_at.into());
        self
    }

    /// Sets the event id instead of a random one.
    pub fn event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = Some(event_id);
        self
    }

    /// Sets the command id (signed when the version is 2).
    pub fn command_id(mut self, command_id: Uuid) -> Self {
        self.command_id = Some(command_id);
        self
    }

    /// Sets the expected entity base version (signed when the version is 2).
    pub fn base_version(mut self, base_version: u64) -> Self {
        self.base_version = Some(base_version);
        self
    }

    /// Sets `ves_version` (1 or 2).
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The envelope with its payload hash computed, a zero cipher hash and an all-zero
    /// signature: for tests that need an unsigned or wrongly signed event.
    pub fn build_unsigned(self) -> VesEventEnvelope {
        let payload_plain_hash = Hex32(hash::payload_plain_hash(&self.payload));
        VesEventEnvelope {
            ves_version: self.version,
            event_id: self.event_id.unwrap_or_else(Uuid::new_v4),
            tenant_id: self.tenant_id,
            store_id: self.store_id,
            source_agent_id: self.agent_id,
            agent_key_id: self.key_id,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            event_type: self.event_type,
            created_at: self.created_at.unwrap_or_else(now_rfc3339_millis),
            payload_kind: 0,
            payload: Some(self.payload),
            payload_encrypted: None,
            payload_plain_hash,
            payload_cipher_hash: Hex32(ZERO_HASH),
            agent_signature: Sig64([0; 64]),
            agent_signature_scheme: None,
            command_id: self.command_id,
            base_version: self.base_version,
        }
    }

    /// The envelope, hashed and signed with `key`.
    pub fn sign(self, key: &SigningKey) -> VesEventEnvelope {
        let mut envelope = self.build_unsigned();
        envelope.sign(key);
        envelope
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for the current UTC time.
fn now_rfc3339_millis() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// Why a hex field was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HexError {
    /// Wrong number of hex digits for the field.
    #[error("expected {expected} bytes as {} hex digits (0x prefix optional), got {digits} digits", 2 * expected)]
    Length {
        /// Bytes the field holds.
        expected: usize,
        /// Hex digits received (after any `0x`).
        digits: usize,
    },
    /// A character that is not a hex digit.
    #[error("not hex: {0}")]
    Digit(const_hex::FromHexError),
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if digits.len() != 2 * N {
        return Err(HexError::Length { expected: N, digits: digits.len() });
    }
    let mut out = [0u8; N];
    // NB: const-hex (already in the tree through alloy) decodes with SIMD; `hex` went digit by digit, a
    // visible share of reading an ingest request (two hashes and a signature per event).
    const_hex::decode_to_slice(digits, &mut out).map_err(HexError::Digit)?;
    Ok(out)
}

fn write_0x_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    // NB: encoded into a stack buffer and written once: `write!("{b:02x}")` per byte went through
    // the formatting machinery 64 or 128 times per value, a visible share of serving an event.
    let mut buf = [0u8; 2 + 2 * 64];
    let out = &mut buf[..2 + 2 * bytes.len().min(64)];
    out[..2].copy_from_slice(b"0x");
    const_hex::encode_to_slice(&bytes[..bytes.len().min(64)], &mut out[2..]).map_err(|_| fmt::Error)?;
    f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)
}

macro_rules! hex_newtype {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// `0x` + lowercase hex, as envelopes are serialized.
            pub fn to_hex(&self) -> String {
                self.to_string()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self([0; $len])
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl From<$name> for [u8; $len] {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = HexError;

            /// Parses hex with or without `0x`, in any case; the length must be exact.
            fn from_str(s: &str) -> Result<Self, HexError> {
                parse_hex(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_0x_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_0x_hex(f, &self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} bytes as hex, 0x prefix optional", $len)
                    }

                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

hex_newtype!(
    /// A 32-byte hash in an envelope: read from hex with or without `0x` in any case, written as
    /// `0x` + lowercase.
    Hex32,
    32
);

hex_newtype!(
    /// A 64-byte Ed25519 signature in an envelope: read from hex with or without `0x` in any
    /// case, written as `0x` + lowercase.
    Sig64,
    64
);
