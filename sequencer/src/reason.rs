//! Why an event was refused: one typed reason, mapped in this one place to upstream's wire strings
//! (signed ingest, ves-wire.md §3.2; legacy ingest, §1.6), to the `sequencer_events_rejected_total`
//! metric label and to the dead-letter record.
//!
//! A leaf module (it depends on no other module of the crate), so that metrics, ingest, sequencing
//! and the dead-letter queue can all use it without importing each other.

use std::fmt;

use serde::{Serialize, Serializer};

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The event id is already stored, or appears twice.
    DuplicateEventId,
    /// The command id is already used in the stream, or appears twice.
    DuplicateCommandId,
    InvalidPayloadHash,
    InvalidCipherHash,
    InvalidSignature,
    /// The agent key is unknown, revoked, expired or not yet valid (upstream's detail text).
    AgentKeyInvalid(String),
    UnsupportedVersion,
    /// A field breaks the envelope's rules (`None`: the handler-side schema registry, no field).
    SchemaValidation(Option<String>),
    /// `base_version` is not the entity's current version.
    VersionConflict {
        expected: u64,
        actual: i64,
    },
    /// `created_at` is further from server time than `MAX_CLOCK_SKEW_SECS` (this sequencer's own).
    ClockSkew,
    /// A dead letter's retry was refused as a whole request (4xx), with the error's text.
    InvalidRequest(String),
}

impl Reason {
    /// The metric label and the dead-letter record's `reason` column: the category, without detail.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::DuplicateEventId => "duplicate_event_id",
            Reason::DuplicateCommandId => "duplicate_command_id",
            Reason::InvalidPayloadHash => "invalid_payload_hash",
            Reason::InvalidCipherHash => "invalid_cipher_hash",
            Reason::InvalidSignature => "invalid_signature",
            Reason::AgentKeyInvalid(_) => "agent_key_invalid",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::SchemaValidation(_) => "schema_validation",
            Reason::VersionConflict { .. } => "version_conflict",
            Reason::ClockSkew => "clock_skew",
            Reason::InvalidRequest(_) => "invalid_request",
        }
    }

    /// The signed ingest's `reason` string (ves-wire.md §3.2), e.g. `agent_key_invalid: Agent key not
    /// found` or `version_conflict: expected 2, actual 1`. Also what [`fmt::Display`] prints.
    pub fn wire(&self) -> String {
        match self {
            Reason::AgentKeyInvalid(detail) => format!("agent_key_invalid: {detail}"),
            Reason::SchemaValidation(Some(field)) => format!("schema_validation: {field}"),
            Reason::VersionConflict { expected, actual } => {
                format!("version_conflict: expected {expected}, actual {actual}")
            }
            Reason::InvalidRequest(error) => format!("invalid_request: {error}"),
            other => other.label().to_owned(),
        }
    }

    /// The legacy ingest's `reason` string: upstream's Rust Debug names (ves-wire.md §1.6).
    pub fn legacy_wire(&self) -> &'static str {
        match self {
            Reason::DuplicateEventId => "DuplicateEventId",
            Reason::DuplicateCommandId => "DuplicateCommandId",
            Reason::InvalidPayloadHash => "InvalidPayloadHash",
            Reason::VersionConflict { .. } => "VersionConflict",
            Reason::SchemaValidation(_) => "SchemaValidation",
            Reason::InvalidCipherHash => "InvalidCipherHash",
            Reason::InvalidSignature => "InvalidSignature",
            Reason::AgentKeyInvalid(_) => "AgentKeyInvalid",
            Reason::UnsupportedVersion => "UnsupportedVersion",
            Reason::ClockSkew => "ClockSkew",
            Reason::InvalidRequest(_) => "InvalidRequest",
        }
    }

    /// Whether a fix (registering a key, correcting a clock, resolving a conflict) could make the event
    /// acceptable as it is: such refusals are kept in the dead-letter queue for replay.
    pub fn dead_letter(&self) -> bool {
        matches!(
            self,
            Reason::AgentKeyInvalid(_) | Reason::InvalidSignature | Reason::ClockSkew | Reason::VersionConflict { .. }
        )
    }

    /// The dead-letter record's `error_message`: the wire reason and the message.
    pub fn dead_letter_message(&self, message: &str) -> String {
        format!("{}: {message}", self.wire())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire())
    }
}

/// Serialises as the signed ingest's wire string.
impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.wire())
    }
}

/// A refused event's reason and its human message, as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Refusal { reason, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_upstreams_and_labels_drop_the_detail() {
        let cases = [
            (Reason::DuplicateEventId, "duplicate_event_id", "duplicate_event_id", "DuplicateEventId"),
            (Reason::DuplicateCommandId, "duplicate_command_id", "duplicate_command_id", "DuplicateCommandId"),
            (Reason::InvalidPayloadHash, "invalid_payload_hash", "invalid_payload_hash", "InvalidPayloadHash"),
            (Reason::InvalidCipherHash, "invalid_cipher_hash", "invalid_cipher_hash", "InvalidCipherHash"),
            (Reason::InvalidSignature, "invalid_signature", "invalid_signature", "InvalidSignature"),
            (
                Reason::AgentKeyInvalid("Agent key not found".into()),
                "agent_key_invalid: Agent key not found",
                "agent_key_invalid",
                "AgentKeyInvalid",
            ),
            (Reason::UnsupportedVersion, "unsupported_version", "unsupported_version", "UnsupportedVersion"),
            (
                Reason::SchemaValidation(Some("payload_encrypted.nonce_b64u".into())),
                "schema_validation: payload_encrypted.nonce_b64u",
                "schema_validation",
                "SchemaValidation",
            ),
            (Reason::SchemaValidation(None), "schema_validation", "schema_validation", "SchemaValidation"),
            (
                Reason::VersionConflict { expected: 2, actual: 1 },
                "version_conflict: expected 2, actual 1",
                "version_conflict",
                "VersionConflict",
            ),
            (Reason::ClockSkew, "clock_skew", "clock_skew", "ClockSkew"),
        ];
        for (reason, wire, label, legacy) in cases {
            assert_eq!(reason.wire(), wire);
            assert_eq!(reason.to_string(), wire);
            assert_eq!(serde_json::to_value(&reason).unwrap(), serde_json::Value::String(wire.into()));
            assert_eq!(reason.label(), label);
            assert_eq!(reason.legacy_wire(), legacy);
            // The label is always the part of the wire string before any `:`, as dashboards expect.
            assert_eq!(wire.split(':').next().unwrap(), label);
        }
    }

    #[test]
    fn only_refusals_a_fix_could_cure_go_to_the_dead_letter_queue() {
        assert!(Reason::AgentKeyInvalid("Agent key has been revoked".into()).dead_letter());
        assert!(Reason::InvalidSignature.dead_letter());
        assert!(Reason::ClockSkew.dead_letter());
        assert!(Reason::VersionConflict { expected: 3, actual: 1 }.dead_letter());
        for r in [
            Reason::DuplicateEventId,
            Reason::DuplicateCommandId,
            Reason::InvalidPayloadHash,
            Reason::UnsupportedVersion,
        ] {
            assert!(!r.dead_letter(), "{r}");
        }
        assert_eq!(
            Reason::VersionConflict { expected: 3, actual: 1 }
                .dead_letter_message("Version conflict: expected 3, actual 1"),
            "version_conflict: expected 3, actual 1: Version conflict: expected 3, actual 1"
        );
    }
}
