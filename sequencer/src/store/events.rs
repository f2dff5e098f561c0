//! The event log: sequencing writes (under the stream's counter row lock) and reads.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::json_out::Object;
use crate::store::{Store, epochs};

/// A stream: the unit of sequencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
}

/// The stream's counter row, read under its lock.
#[derive(Debug, Clone, Copy)]
pub struct LockedStream {
    pub head: i64,
    pub paused: bool,
}

/// One signed event ready to be written, with its number already chosen.
#[derive(Debug, Clone)]
pub struct VesEventRow {
    /// Shared with the request that submitted it, so that a row can be written by another stream's
    /// worker ([`append_at_heads`]).
    pub envelope: std::sync::Arc<ves::envelope::VesEventEnvelope<ves::RawPayload>>,
    pub created_at: DateTime<Utc>,
    pub signing_hash: [u8; 32],
    pub sequence_number: i64,
    pub receipt_hash: [u8; 32],
    pub sequencer_signature: Option<[u8; 64]>,
    pub leaf_hash: [u8; 32],
    /// The envelope's payload as compact JSON (`serde_json::to_string` of its parse): what the
    /// `payload_text` column receives and the transparency log entry holds, taken from the payload's
    /// check (which, for a canonical payload, is its text as sent). Private, so that it is always the
    /// envelope's payload ([`VesEventRow::new`]).
    payload_json: Option<std::sync::Arc<str>>,
    /// Whether the payload reads back from jsonb as it is ([`survives_jsonb`]); the log entry is
    /// hashed at sequencing only then.
    payload_survives_jsonb: bool,
    /// The RFC 6962 leaf hash of the event's transparency log entry, when the log is on and the
    /// entry's bytes are known before storing (`tlog::leaf_before_storing`).
    pub tlog_leaf: Option<[u8; 32]>,
}

impl VesEventRow {
    /// A row for `envelope` numbered `sequence_number`, its payload encoded once for the column and
    /// the log entry (`payload_json` and `survives_jsonb`, when the caller has them from the payload's
    /// check; worked out here otherwise); `tlog_leaf` is left for the caller.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        envelope: std::sync::Arc<ves::envelope::VesEventEnvelope<ves::RawPayload>>,
        payload_json: Option<std::sync::Arc<str>>,
        payload_survives: bool,
        created_at: DateTime<Utc>,
        signing_hash: [u8; 32],
        sequence_number: i64,
        receipt_hash: [u8; 32],
        sequencer_signature: Option<[u8; 64]>,
        leaf_hash: [u8; 32],
    ) -> Self {
        let mut payload_survives_jsonb = payload_survives;
        let payload_json = envelope.payload.as_ref().map(|p| match payload_json {
            Some(json) => {
                #[cfg(debug_assertions)]
                {
                    let value = p.to_value().expect("a checked payload parses");
                    assert_eq!(
                        *json,
                        serde_json::to_string(&value).expect("a Value serializes"),
                        "the payload's own JSON"
                    );
                    assert_eq!(payload_survives, survives_jsonb(&value), "whether the payload survives jsonb");
                }
                json
            }
            None => {
                let value = p.to_value().expect("a checked payload parses");
                payload_survives_jsonb = survives_jsonb(&value);
                serde_json::to_string(&value).expect("a Value serializes").into()
            }
        });
        VesEventRow {
            envelope,
            created_at,
            signing_hash,
            sequence_number,
            receipt_hash,
            sequencer_signature,
            leaf_hash,
            payload_json,
            payload_survives_jsonb,
            tlog_leaf: None,
        }
    }
}

/// What the sequencer needs to know about an event that is already stored, to tell an exact replay
/// from a conflicting reuse of its id.
#[derive(Debug, Clone, FromRow)]
pub struct ExistingEvent {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub signed: bool,
    pub sequence_number: i64,
    pub sequenced_at: DateTime<Utc>,
    pub command_id: Option<Uuid>,
    pub base_version: Option<i64>,
    pub payload_encrypted: Option<Value>,
    pub event_signing_hash: Option<Vec<u8>>,
    pub agent_signature: Option<Vec<u8>>,
    /// The receipt hash as a release before migration 0021 stored it; NULL since. Read it through
    /// [`ExistingEvent::receipt_hash`].
    #[sqlx(rename = "receipt_hash")]
    pub stored_receipt_hash: Option<Vec<u8>>,
    pub sequencer_id: Option<Uuid>,
    pub sequencer_signature: Option<Vec<u8>>,
}

impl ExistingEvent {
    /// The event's receipt hash (ves-wire §2.5): the stored one, or derived from the row as the sequencer
    /// computed it when it answered the first receipt. None for a legacy event, which has no signing hash.
    ///
    /// Derived here, not in SQL: a SHA-256 per row is cheaper in the sequencer, which scales out, than in
    /// PostgreSQL, which does not (about 0.9 µs per row there, `scripts/derived-hash-cost`).
    pub fn receipt_hash(&self) -> Option<Vec<u8>> {
        if let Some(stored) = &self.stored_receipt_hash {
            return Some(stored.clone());
        }
        let signing_hash = <[u8; 32]>::try_from(self.event_signing_hash.as_deref()?).ok()?;
        let receipt = ves::hash::receipt_hash(
            self.tenant_id,
            self.store_id,
            self.event_id,
            self.sequence_number as u64,
            &signing_hash,
        );
        Some(receipt.to_vec())
    }
}

/// A stored event as read back from the log.
#[derive(Debug, Clone, FromRow)]
pub struct StoredEvent {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub sequence_number: i64,
    pub event_id: Uuid,
    pub signed: bool,
    pub entity_type: String,
    pub entity_id: String,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub sequenced_at: DateTime<Utc>,
    pub source_agent_id: Uuid,
    pub command_id: Option<Uuid>,
    pub base_version: Option<i64>,
    pub payload: Option<Value>,
    pub ves_version: Option<i32>,
    pub agent_key_id: Option<i64>,
    pub created_at_str: Option<String>,
    pub payload_kind: Option<i16>,
    pub payload_encrypted: Option<Value>,
    pub payload_plain_hash: Option<Vec<u8>>,
    pub payload_cipher_hash: Option<Vec<u8>>,
    pub event_signing_hash: Option<Vec<u8>>,
    pub agent_signature: Option<Vec<u8>>,
    /// The receipt hash as a release before migration 0021 stored it; NULL since, when it is derived
    /// wherever a receipt is answered ([`ExistingEvent::receipt_hash`]).
    #[sqlx(rename = "receipt_hash")]
    pub stored_receipt_hash: Option<Vec<u8>>,
    pub sequencer_id: Option<Uuid>,
    pub sequencer_signature: Option<Vec<u8>>,
    pub payload_hash: Option<Vec<u8>>,
    pub leaf_hash: Option<Vec<u8>>,
}

fn signature64(v: &Option<Vec<u8>>) -> Result<[u8; 64]> {
    v.as_deref()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| Error::Internal("stored signature is not 64 bytes".into()))
}

fn bytes32(v: &Option<Vec<u8>>) -> Result<[u8; 32]> {
    v.as_deref()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| Error::Internal("stored hash is not 32 bytes".into()))
}

impl StoredEvent {
    /// The envelope as the client signed it (signed events only).
    pub fn envelope(&self) -> Result<ves::envelope::VesEventEnvelope> {
        use ves::envelope::{Hex32, Sig64, VesEventEnvelope};
        let signature = signature64(&self.agent_signature)?;
        let payload_encrypted = match &self.payload_encrypted {
            None => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|err| Error::Internal(format!("stored encrypted payload: {err}")))?,
            ),
        };
        Ok(VesEventEnvelope {
            ves_version: self.ves_version.unwrap_or(1) as u32,
            event_id: self.event_id,
            tenant_id: self.tenant_id,
            store_id: self.store_id,
            source_agent_id: self.source_agent_id,
            agent_key_id: self.agent_key_id.unwrap_or(0) as u32,
            entity_type: self.entity_type.clone(),
            entity_id: self.entity_id.clone(),
            event_type: self.event_type.clone(),
            created_at: self.created_at_str.clone().unwrap_or_default(),
            payload_kind: self.payload_kind.unwrap_or(0) as u32,
            payload: self.payload.clone(),
            payload_encrypted,
            payload_plain_hash: Hex32(bytes32(&self.payload_plain_hash)?),
            payload_cipher_hash: Hex32(bytes32(&self.payload_cipher_hash)?),
            agent_signature: Sig64(signature),
            agent_signature_scheme: None,
            command_id: self.command_id,
            base_version: self.base_version.map(|v| v as u64),
        })
    }
}

/// A stored event as JSON: the signed envelope plus `sequence_number` and `sequenced_at`; unsigned
/// legacy events in their legacy shape. It is what the API serves for an event and what the
/// transparency log logs as its entry.
pub fn event_json(e: &StoredEvent) -> Result<Value> {
    let mut v = if e.signed {
        serde_json::to_value(e.envelope()?).map_err(|err| Error::Internal(err.to_string()))?
    } else {
        json!({
            "event_id": e.event_id,
            "tenant_id": e.tenant_id,
            "store_id": e.store_id,
            "entity_type": e.entity_type,
            "entity_id": e.entity_id,
            "event_type": e.event_type,
            "payload": e.payload,
            "payload_hash": e.payload_hash.as_deref().map(hex::encode),
            "created_at": e.created_at.to_rfc3339(),
            "source_agent": e.source_agent_id,
            "command_id": e.command_id,
            "base_version": e.base_version,
        })
    };
    v["sequence_number"] = json!(e.sequence_number);
    v["sequenced_at"] = json!(e.sequenced_at.to_rfc3339());
    Ok(v)
}

/// The served JSON of a signed event with a plaintext payload, as a struct: [`SignedEntry::write`]
/// writes exactly `serde_json::to_vec(&event_json(e))` without building the `Value` (a map per
/// object, a string per key), which was most of the cost of encoding an entry.
///
/// NB: `Value` objects are sorted maps (serde_json without `preserve_order`), so the fields below are
/// declared, and written, in byte order of their names; a property test holds the two paths equal.
struct SignedEntry<'a> {
    agent_key_id: u32,
    agent_signature: &'a [u8; 64],
    base_version: Option<u64>,
    command_id: Option<Uuid>,
    created_at: &'a str,
    entity_id: &'a str,
    entity_type: &'a str,
    event_id: Uuid,
    event_type: &'a str,
    payload: Option<EntryPayload<'a>>,
    payload_cipher_hash: &'a [u8; 32],
    payload_kind: u32,
    payload_plain_hash: &'a [u8; 32],
    sequence_number: i64,
    sequenced_at: &'a str,
    source_agent_id: Uuid,
    store_id: Uuid,
    tenant_id: Uuid,
    ves_version: u32,
}

/// An entry's payload: already encoded (the compact JSON the sequencer binds to the `payload_text` column,
/// [`VesEventRow::payload_json`]), or a value read back.
enum EntryPayload<'a> {
    Json(&'a str),
    Value(&'a Value),
}

impl SignedEntry<'_> {
    /// Writes the entry's compact JSON into `out` (cleared first), by hand ([`crate::json_out`]).
    fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut o = Object::start(out);
        o.int("agent_key_id", self.agent_key_id);
        o.hex("agent_signature", self.agent_signature);
        if let Some(v) = self.base_version {
            o.int("base_version", v);
        }
        if let Some(id) = self.command_id {
            o.uuid("command_id", id);
        }
        o.text("created_at", self.created_at);
        o.text("entity_id", self.entity_id);
        o.text("entity_type", self.entity_type);
        o.uuid("event_id", self.event_id);
        o.text("event_type", self.event_type);
        match self.payload {
            Some(EntryPayload::Json(json)) => o.key("payload").extend_from_slice(json.as_bytes()),
            Some(EntryPayload::Value(v)) => {
                serde_json::to_writer(o.key("payload"), v).expect("a Value always serializes");
            }
            None => {}
        }
        o.hex("payload_cipher_hash", self.payload_cipher_hash);
        o.int("payload_kind", self.payload_kind);
        o.hex("payload_plain_hash", self.payload_plain_hash);
        o.int("sequence_number", self.sequence_number);
        o.text("sequenced_at", self.sequenced_at);
        o.uuid("source_agent_id", self.source_agent_id);
        o.uuid("store_id", self.store_id);
        o.uuid("tenant_id", self.tenant_id);
        o.int("ves_version", self.ves_version);
        o.end();
    }
}

/// `serde_json::to_vec(&event_json(e))`, byte for byte (see [`SignedEntry`]): what the integrator
/// encodes for an event it reads back. Signed events with a plaintext payload are encoded directly;
/// others go through [`event_json`].
pub fn event_json_bytes(e: &StoredEvent) -> Result<Vec<u8>> {
    if !e.signed || e.payload_encrypted.is_some() {
        return serde_json::to_vec(&event_json(e)?).map_err(|err| Error::Internal(err.to_string()));
    }
    let sequenced_at = e.sequenced_at.to_rfc3339();
    let signature = signature64(&e.agent_signature)?;
    let (plain_hash, cipher_hash) = (bytes32(&e.payload_plain_hash)?, bytes32(&e.payload_cipher_hash)?);
    let mut out = Vec::new();
    SignedEntry {
        agent_key_id: e.agent_key_id.unwrap_or(0) as u32,
        agent_signature: &signature,
        base_version: e.base_version.map(|v| v as u64),
        command_id: e.command_id,
        created_at: e.created_at_str.as_deref().unwrap_or_default(),
        entity_id: &e.entity_id,
        entity_type: &e.entity_type,
        event_id: e.event_id,
        event_type: &e.event_type,
        payload: e.payload.as_ref().map(EntryPayload::Value),
        payload_cipher_hash: &cipher_hash,
        payload_kind: e.payload_kind.unwrap_or(0) as u32,
        payload_plain_hash: &plain_hash,
        sequence_number: e.sequence_number,
        sequenced_at: &sequenced_at,
        source_agent_id: e.source_agent_id,
        store_id: e.store_id,
        tenant_id: e.tenant_id,
        ves_version: e.ves_version.unwrap_or(1) as u32,
    }
    .write(&mut out);
    Ok(out)
}

/// The served JSON of a signed event about to be stored as `row` (with `sequenced_at`), byte for byte
/// what [`event_json_bytes`] will encode once it is read back, without the payload when `trimmed`; or
/// `None` where that cannot be known here: an encrypted payload, or a payload whose jsonb form prints
/// differently (see [`survives_jsonb`]).
///
/// The entry is written into `out` (cleared first), so that the sequencer, which does this for every
/// event it numbers, reuses one buffer per group; `sequenced_at` is the group's time as
/// `DateTime::to_rfc3339` prints it, made once per group.
pub fn entry_before_storing(row: &VesEventRow, sequenced_at: &str, trimmed: bool, out: &mut Vec<u8>) -> Option<()> {
    let e = &*row.envelope;
    if e.payload_encrypted.is_some() || (e.payload.is_some() && !row.payload_survives_jsonb) {
        return None;
    }
    let entry = SignedEntry {
        // NB: each field as the column stores it and `StoredEvent::envelope` reads it back (the
        // integer columns are narrower than the envelope's).
        agent_key_id: i64::from(e.agent_key_id) as u32,
        agent_signature: &e.agent_signature.0,
        base_version: e.base_version.map(|v| v as i64 as u64),
        command_id: e.command_id,
        created_at: &e.created_at,
        entity_id: &e.entity_id,
        entity_type: &e.entity_type,
        event_id: e.event_id,
        event_type: &e.event_type,
        payload: if trimmed { None } else { row.payload_json.as_deref().map(EntryPayload::Json) },
        payload_cipher_hash: &e.payload_cipher_hash.0,
        payload_kind: (e.payload_kind as i16) as u32,
        payload_plain_hash: &e.payload_plain_hash.0,
        sequence_number: row.sequence_number,
        sequenced_at,
        source_agent_id: e.source_agent_id,
        store_id: e.store_id,
        tenant_id: e.tenant_id,
        ves_version: (e.ves_version as i32) as u32,
    };
    entry.write(out);
    Some(())
}

/// Whether a JSON value reads back from a jsonb column as the same `Value`, so that it serializes to
/// the same bytes. PostgreSQL keeps strings, keys and the digits of a number as written, and prints a
/// number in positional notation without a negative zero; serde_json writes a float in exponent
/// notation beyond about 1e16 or below 1e-5, and `-0.0`. Such a float comes back as other text, which
/// serde_json (without `float_roundtrip`) may not parse to the same float. Integers always survive.
pub fn survives_jsonb(v: &Value) -> bool {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            let negative_zero = f == 0.0 && f.is_sign_negative();
            !negative_zero && !prints_with_exponent(n)
        }
        Value::Array(items) => items.iter().all(survives_jsonb),
        Value::Object(map) => map.values().all(survives_jsonb),
        _ => true,
    }
}

/// Whether serde_json prints `n` in exponent notation, decided from its magnitude (this runs for every
/// float of every payload the sequencer numbers, so it neither prints nor allocates).
///
/// serde_json prints a float with ryu's `format_finite`, which writes the shortest decimal `d` that
/// reads back as the float positionally when 1e-5 <= |d| < 1e16 and with an exponent otherwise (zero
/// prints as `0.0`). 1e16 is a double, so |d| < 1e16 exactly when |f| < 1e16; 1e-5 is not, but it
/// lies strictly inside the rounding interval of the double nearest it (the literal `1e-5`, whose
/// shortest decimal is `1e-5`), so |d| >= 1e-5 exactly when |f| >= that double. The tests hold this
/// against the printed text at both boundaries and over random bit patterns.
fn prints_with_exponent(n: &serde_json::Number) -> bool {
    match n.as_f64() {
        Some(f) if n.is_f64() => {
            let a = f.abs();
            a != 0.0 && !(1e-5..1e16).contains(&a)
        }
        _ => false,
    }
}

/// Every column of a stored event, as [`StoredEvent`] reads them. The payload comes from whichever of
/// `payload` (JSONB: rows written before migration 0019, legacy events) and `payload_text` (a signed
/// event's plaintext payload since 0019) holds it; cast back to JSONB here, a payload stored as text
/// reads exactly as if it had been stored as JSONB, so every read serves the same bytes either way.
/// (The cast is PostgreSQL's JSONB parse, moved from every insert to the reads that return payloads.)
/// A row's cipher hash comes from its column or, where that is NULL (since migration 0021), is the 32 zero
/// bytes the wire format fixes for a plaintext signed event (NULL for a legacy event). The receipt hash
/// is read as stored (NULL since 0021): no page serves it, `verify` checks a stored one, and
/// [`ExistingEvent::receipt_hash`] derives it where a receipt is answered.
const EVENT_COLUMNS: &str = "tenant_id, store_id, sequence_number, event_id, signed, entity_type, entity_id, \
     event_type, created_at, sequenced_at, source_agent_id, command_id, base_version, \
     COALESCE(payload, payload_text::jsonb) AS payload, ves_version, \
     agent_key_id, created_at_str, payload_kind, payload_encrypted, payload_plain_hash, \
     COALESCE(payload_cipher_hash, CASE WHEN payload_kind = 0 THEN decode(repeat('00', 32), 'hex') END) \
       AS payload_cipher_hash, \
     event_signing_hash, agent_signature, receipt_hash, sequencer_id, sequencer_signature, payload_hash, leaf_hash";

const EXISTING_COLUMNS: &str = "event_id, tenant_id, store_id, signed, sequence_number, sequenced_at, command_id, \
     base_version, payload_encrypted, event_signing_hash, agent_signature, receipt_hash, sequencer_id, \
     sequencer_signature";

/// Takes the stream's counter row lock (creating the row on first use) and returns its head.
///
/// Every writer of a stream, on any replica, goes through this lock before choosing a number, which is
/// what makes sequence numbers gap-free and unique.
pub async fn lock_stream(conn: &mut PgConnection, stream: StreamKey) -> Result<LockedStream> {
    const SELECT: &str = "SELECT current_sequence, paused FROM sequence_counters \
                          WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE";
    let row: Option<(i64, bool)> =
        sqlx::query_as(SELECT).bind(stream.tenant_id).bind(stream.store_id).fetch_optional(&mut *conn).await?;
    if let Some((head, paused)) = row {
        return Ok(LockedStream { head, paused });
    }
    sqlx::query("INSERT INTO sequence_counters (tenant_id, store_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .execute(&mut *conn)
        .await?;
    let (head, paused): (i64, bool) =
        sqlx::query_as(SELECT).bind(stream.tenant_id).bind(stream.store_id).fetch_one(&mut *conn).await?;
    Ok(LockedStream { head, paused })
}

/// The stream's counter row read without a lock (`None`: the stream has never been written or paused).
/// Only a guess at the head, for [`append_at_head`], which re-checks it.
pub async fn peek_stream(conn: &mut PgConnection, stream: StreamKey) -> Result<Option<LockedStream>> {
    let row: Option<(i64, bool)> =
        sqlx::query_as("SELECT current_sequence, paused FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(head, paused)| LockedStream { head, paused }))
}

/// Events of the tenant (any of its streams) with one of these ids. Event ids are unique per tenant
/// (migration 0008): another tenant's events are never looked at, so their ids are as good as fresh.
/// A signed event is looked for only in the id epochs `epochs` cannot rule out ([`epochs::IdEpochs::lookup`]).
pub async fn find_by_event_ids(
    conn: &mut PgConnection,
    epochs: &epochs::IdEpochs,
    tenant_id: Uuid,
    event_ids: &[Uuid],
) -> Result<Vec<ExistingEvent>> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let (maybe, first) = epochs.lookup(tenant_id, event_ids);
    // NB: the tenant as a column of the ids (`store::epochs`: "Lookups take the tenant as a column").
    let sql = format!(
        "SELECT {EXISTING_COLUMNS} FROM ves_events WHERE {} \
            AND (tenant_id, event_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[])) \
         UNION ALL \
         SELECT {EXISTING_COLUMNS} FROM legacy_events \
          WHERE (tenant_id, event_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
        epochs::epochs_condition("$3", "$4")
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql))
        .bind(vec![tenant_id; event_ids.len()])
        .bind(event_ids)
        .bind(maybe)
        .bind(first)
        .fetch_all(conn)
        .await?)
}

/// Events of the stream carrying one of these command ids.
pub async fn find_by_command_ids(
    conn: &mut PgConnection,
    stream: StreamKey,
    command_ids: &[Uuid],
) -> Result<Vec<ExistingEvent>> {
    if command_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EXISTING_COLUMNS} FROM events WHERE tenant_id = $1 AND store_id = $2 AND command_id = ANY($3)"
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql))
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(command_ids)
        .fetch_all(conn)
        .await?)
}

/// The epoch of the stream's (tenant and store, as SQL expressions) first signed event (`end` `ASC`) or
/// last (`DESC`), as a scalar subquery: one lookup at that end of the stream in the sequence index, null
/// for a stream without one.
fn stream_end_epoch((tenant, store): (&str, &str), end: &str) -> String {
    format!(
        "(SELECT v.id_epoch FROM ves_events v WHERE v.tenant_id = {tenant} AND v.store_id = {store} \
           ORDER BY v.sequence_number {end} LIMIT 1)"
    )
}

/// The epochs of a statement that reads an entity of one stream (tenant `$1`, store `$2`) epoch by epoch:
/// from the epoch of the stream's first signed event to that of its last, as the statement's snapshot
/// has them, and none for a stream without one (`generate_series` of nulls). A stream's epochs never go
/// down as its numbers go up (a writer reads the epoch under the epoch row's share lock before it takes
/// the stream's counter row, and the epoch cannot move until it commits), so every signed event of the
/// stream the snapshot sees is in one of them.
///
/// NB: not every epoch of the log (`0` to `event_id_epochs.current`, as before): a stream pays for the
/// epochs it was written in, not for the log's age. The benchmark's hot stream, filled last, was written
/// in two of the ten epochs of a log of 10^7 events and descended all ten. A stream as old as the log and
/// still written to still pays one descent per epoch of the log.
fn stream_epochs() -> String {
    format!(
        "generate_series({}, {}) AS ep(k)",
        stream_end_epoch(ONE_STREAM, "ASC"),
        stream_end_epoch(ONE_STREAM, "DESC")
    )
}

/// The entity of a statement about one: tenant `$1`, store `$2`, entity type `$3`, id `$4`.
const ONE_ENTITY: &str = "tenant_id = $1 AND store_id = $2 AND entity_type = $3 AND entity_id = $4";

/// The statement of a page of an entity's history ([`Store::entity_history`]): its events, `$5` skipped,
/// `$6` at most, in no order (the caller sorts them).
///
/// The page's sequence numbers are chosen from the entity indexes alone: the first `$5 + $6` of the
/// legacy events (`idx_legacy_events_entity`) and of each id epoch's signed events
/// (`idx_ves_events_entity`, keyed by epoch after the stream since migration 0028), which hold the first
/// `$5 + $6` of the entity, sorted. Then only the page's events are read, by sequence number.
///
/// Why not one branch per epoch, merged in order: PostgreSQL 15 cannot skip through the epochs of an
/// index that leads with them (and a range of epochs reads every event of the stream in them), so each
/// epoch is its own descent of the index. Written as a UNION ALL of one ordered branch per epoch, the
/// statement grew with the log, and planning it took about 1 ms at ten epochs, every time (entity page
/// p99 5.3 ms at 10^7 events, against 1.96 before 0028). Here the epochs are rows of a LATERAL join: the
/// statement is the same at every size, and costs one descent of the index per epoch to run
/// (`a_page_of_an_entity_spread_over_epochs_reads_only_its_own_events`).
///
/// NB: each event is looked up by its number alone, one lookup per number of the page (the LATERAL
/// join, kept from being flattened by `LIMIT 1`), and not in order. Statistics taken while the log was
/// small (a server without autovacuum keeps those of the benchmark's empty database) make a stream look
/// a handful of rows, and PostgreSQL then took the page's numbers as a filter of a scan of the whole
/// stream: asked for the events in order (the sequence index read in order can take an array of numbers
/// only as a filter), or as `sequence_number = ANY(...)` (through any index that leads with the stream).
/// That read every event of the stream for each page: 25-50 ms a page where it takes 1-3 ms (the
/// benchmark's entity page p99 39 and 64 ms at level 0). One number at a time, the unique sequence index
/// answers each in one row whatever the statistics say; the caller sorts the page.
///
/// NB: the offset and the limit are subqueries (`LIMIT (SELECT $6)`), not parameters, so that the
/// prepared statement runs a generic plan. With `LIMIT $6` each run's plan was made for its own values
/// (a page of 5 looks cheaper than the generic plan's guess of a tenth of the rows, by about 9% here),
/// so PostgreSQL never took the generic plan and planned every page: 0.43 ms of planning to 0.16 ms of
/// running, on a log of 2.8 × 10^5 events. A subquery's value is unknown to either plan, so the generic
/// plan, the same shape, is taken after five runs: the page in 0.18 ms where it took 0.55-0.65 ms
/// (`psql`, `PREPARE` and `EXECUTE`; the plan test checks that it goes generic).
pub fn entity_page_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let stream_epochs = stream_epochs();
        format!(
            "WITH page AS ( \
           (SELECT sequence_number FROM legacy_events WHERE {ONE_ENTITY} \
             ORDER BY sequence_number LIMIT (SELECT $5 + $6)) \
           UNION ALL \
           (SELECT s.sequence_number FROM {stream_epochs} \
             CROSS JOIN LATERAL (SELECT sequence_number FROM ves_events WHERE {ONE_ENTITY} AND id_epoch = ep.k \
               ORDER BY sequence_number LIMIT (SELECT $5 + $6)) s) \
           ORDER BY sequence_number OFFSET (SELECT $5) LIMIT (SELECT $6)) \
         SELECT e.* FROM page CROSS JOIN LATERAL ( \
           SELECT {EVENT_COLUMNS} FROM events \
            WHERE tenant_id = $1 AND store_id = $2 AND sequence_number = page.sequence_number LIMIT 1) e"
        )
    });
    &SQL
}

/// The statement of how many events an entity has ([`Store::entity_history`]'s total): its legacy events
/// and its signed events of each epoch, counted from the entity indexes.
pub fn entity_total_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let stream_epochs = stream_epochs();
        format!(
            "SELECT (SELECT COUNT(*) FROM legacy_events WHERE {ONE_ENTITY}) \
              + (SELECT COALESCE(SUM(c.n), 0) FROM {stream_epochs} \
                  CROSS JOIN LATERAL (SELECT COUNT(*) AS n FROM ves_events WHERE {ONE_ENTITY} AND id_epoch = ep.k) c)::bigint"
        )
    });
    &SQL
}

/// How many events past an entity's version mark a check counts before it writes a newer mark
/// (migration 0022): a check counts fewer than this plus the events since the last one, and an entity
/// whose versions are rarely checked is rarely written for.
pub const VERSION_MARK_AFTER: i64 = 32;

/// The current version (number of stored events) of each of these distinct entities of the stream, whose
/// committed head is `head`: the caller holds the stream's counter row ([`lock_stream`]), so no event
/// of the stream is being written by anyone else.
///
/// Each version is the entity's mark (migration 0022), if it has one, plus the events after the mark,
/// counted through the entity index, so a check costs the same on an entity of ten events as on one of a
/// million. Where that count reaches [`VERSION_MARK_AFTER`], the same statement moves the mark to `head`
/// (it is rolled back with the caller's transaction). An entity with no event is at version 0.
pub async fn entity_versions(
    conn: &mut PgConnection,
    stream: StreamKey,
    head: i64,
    entities: &[(String, String)],
) -> Result<Vec<(String, String, i64)>> {
    if entities.is_empty() {
        return Ok(Vec::new());
    }
    let (types, ids): (Vec<&str>, Vec<&str>) = entities.iter().map(|(t, i)| (t.as_str(), i.as_str())).unzip();
    let sql = format!(
        "WITH counted AS ({}), \
         marked AS ({}) \
         SELECT entity_type, entity_id, version FROM counted",
        counted_versions("UNNEST($3::text[], $4::text[]) AS q(entity_type, entity_id)", ONE_STREAM, "$5"),
        mark_versions(ONE_STREAM, "$5", "$6", "")
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql))
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(types)
        .bind(ids)
        .bind(head)
        .bind(VERSION_MARK_AFTER)
        .fetch_all(conn)
        .await?)
}

/// The stream of a statement about one: its tenant and store are `$1` and `$2`.
const ONE_STREAM: (&str, &str) = ("$1", "$2");

/// The SELECT of the `counted` CTE: for each entity of `entities` (a FROM item `q` with `entity_type`
/// and `entity_id`) of the stream `stream` (tenant and store, as SQL expressions) whose head is `head`,
/// its `version` (its mark plus the events after it) and `past_mark` (those events); `q`'s other
/// columns are kept.
///
/// NB: both lookups are written so that the plan PostgreSQL finds is the good one, with or without
/// statistics, and the count starts at the mark (measured with `EXPLAIN (ANALYZE, BUFFERS)`, generic and
/// custom plans, on a log of 104 events without statistics and one of 100,220 events of one entity with
/// them, and with `loadgen --base-version`):
/// - The mark is looked up per entity (a LATERAL subquery, kept from being flattened into a join by
///   `LIMIT 1`): as a join, PostgreSQL without statistics read every mark of the stream into a hash.
/// - The events after the mark are bounded twice: by the entity's equality and a plain range on the
///   sequence number, which start the entity index's scan at the mark and give the planner its
///   estimates, and by the same bounds as row comparisons on `(entity_id, sequence_number)`, which only
///   the entity index can take as index conditions. With the plain bounds alone, a generic plan made
///   while the log was nearly empty counted through the sequence index, reading every event of the
///   stream since the mark (`loadgen --base-version`, 32 clients on one stream: PostgreSQL at 2 ms of CPU
///   per event by 30,000 events). With the row comparisons alone, the planner estimated the entity's
///   rows badly (PostgreSQL at 91-95 µs of CPU per event where 54-57 µs with both). With the equality
///   and the row comparisons but no plain range, the scan started at the entity's first entry (a btree
///   scan's start is keyed on the equality, and the row comparison's second column is then no key):
///   1,077 buffers and 11 ms for an entity of 10^5 events, where 34 buffers and 0.2 ms with both.
/// - Without any statistics the sequence index can still look cheapest; the worker leader analyses a
///   log that has none ([`crate::store::Store::analyze_log_if_never_analysed`]).
/// - Since migration 0028 the entity index of signed events leads with the id epoch after the stream
///   (`idx_ves_events_entity`), so they are counted epoch by epoch, each count one descent of the index
///   with the bounds above: from the epoch of the stream's last signed event at or before the mark, or
///   without a mark of its first signed event (a stream's epochs never go down as its numbers go up, so
///   no event after either is in an earlier one), to the current epoch. So an entity without a mark in a
///   stream as old as the log is counted in every epoch: one descent per `EVENT_ID_EPOCH_EVENTS` events
///   of the log. Legacy events are counted as before, through their own entity index
///   (`idx_legacy_events_entity`, migration 0029).
/// - `OFFSET 0` keeps the sum from being pulled up into the select list, where each of its two uses
///   would count again (twice the entries, in `a_version_is_counted_through_the_entity_index_from_its_mark_without_statistics`).
/// - In the statement shared by several streams ([`append_at_heads`]) the stream is each entity's own
///   column rather than a parameter; `loadgen --streams 64 --base-version`, with statistics and without
///   (`--no-analyze`), ran faster and with less of PostgreSQL's CPU per event than with the statement of
///   one stream per group.
fn counted_versions(entities: &str, (tenant, store): (&str, &str), head: &str) -> String {
    let after_mark = |e: &str| {
        format!(
            "{e}.entity_type = q.entity_type AND {e}.entity_id = q.entity_id \
               AND {e}.sequence_number > COALESCE(m.at_sequence, 0) AND {e}.sequence_number <= {head} \
               AND ({e}.entity_id, {e}.sequence_number) > (q.entity_id, COALESCE(m.at_sequence, 0)) \
               AND ({e}.entity_id, {e}.sequence_number) <= (q.entity_id, {head})"
        )
    };
    let (legacy, signed) = (after_mark("l"), after_mark("e"));
    let first_epoch = stream_end_epoch((tenant, store), "ASC");
    format!(
        "SELECT q.*, COALESCE(m.version, 0) + tail.n AS version, tail.n AS past_mark \
           FROM {entities} \
           LEFT JOIN LATERAL ( \
             SELECT version, at_sequence FROM entity_version_marks m \
              WHERE m.tenant_id = {tenant} AND m.store_id = {store} AND m.entity_type = q.entity_type \
                AND m.entity_id = q.entity_id \
              LIMIT 1) m ON TRUE \
          CROSS JOIN LATERAL ( \
            SELECT (SELECT COUNT(*) FROM legacy_events l \
                     WHERE l.tenant_id = {tenant} AND l.store_id = {store} AND {legacy}) \
                 + (SELECT COALESCE(SUM(( \
                      SELECT COUNT(*) FROM ves_events e \
                       WHERE e.tenant_id = {tenant} AND e.store_id = {store} AND e.id_epoch = ep.k AND {signed})), 0) \
                      FROM generate_series( \
                        COALESCE((SELECT v.id_epoch FROM ves_events v \
                                   WHERE v.tenant_id = {tenant} AND v.store_id = {store} \
                                     AND v.sequence_number <= m.at_sequence \
                                   ORDER BY v.sequence_number DESC LIMIT 1), \
                                 {first_epoch}, 0), \
                        (SELECT current FROM event_id_epochs)) AS ep(k))::bigint AS n \
            OFFSET 0) tail"
    )
}

/// The upsert that moves the mark of every entity of `counted` (of the stream `stream`, as in
/// [`counted_versions`]) whose count reached `after` to `head` (`condition`: more of the WHERE clause,
/// starting with AND).
fn mark_versions((tenant, store): (&str, &str), head: &str, after: &str, condition: &str) -> String {
    format!(
        "INSERT INTO entity_version_marks (tenant_id, store_id, entity_type, entity_id, version, at_sequence) \
         SELECT {tenant}, {store}, entity_type, entity_id, version, {head} FROM counted \
          WHERE past_mark >= {after} {condition} \
         ON CONFLICT (tenant_id, store_id, entity_type, entity_id) \
         DO UPDATE SET version = EXCLUDED.version, at_sequence = EXCLUDED.at_sequence"
    )
}

/// The version (number of stored events) each of a group's entities must be at for every
/// `base_version` of the group to hold with every event of it accepted: what [`append_at_head`]
/// checks before it writes the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionChecks {
    entity_type: Vec<String>,
    entity_id: Vec<String>,
    version: Vec<i64>,
}

impl VersionChecks {
    pub fn new(versions: impl IntoIterator<Item = ((String, String), i64)>) -> Self {
        let mut checks = VersionChecks::default();
        for ((t, i), v) in versions {
            checks.entity_type.push(t);
            checks.entity_id.push(i);
            checks.version.push(v);
        }
        checks
    }

    /// Whether every entity must still be at version 0 (as every entity of a stream without events is).
    pub fn all_new(&self) -> bool {
        self.version.iter().all(|v| *v == 0)
    }
}

/// The stream's version marks (migration 0022), as (entity type, entity id, version, at sequence), for
/// `verify` to hold against the log.
pub async fn version_marks(conn: &mut PgConnection, stream: StreamKey) -> Result<Vec<(String, String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT entity_type::text, entity_id::text, version, at_sequence FROM entity_version_marks \
         WHERE tenant_id = $1 AND store_id = $2",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .fetch_all(conn)
    .await?)
}

/// The columns of signed event rows, as the arrays that `UNNEST` turns back into rows.
struct Columns<'a> {
    seq: Vec<i64>,
    event_id: Vec<Uuid>,
    entity_type: Vec<&'a str>,
    entity_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    created_at: Vec<DateTime<Utc>>,
    source_agent: Vec<Uuid>,
    command_id: Vec<Option<Uuid>>,
    base_version: Vec<Option<i64>>,
    payload: Vec<Option<&'a str>>,
    ves_version: Vec<i32>,
    agent_key_id: Vec<i64>,
    created_at_str: Vec<&'a str>,
    payload_kind: Vec<i16>,
    payload_encrypted: Vec<Option<Value>>,
    plain_hash: Vec<&'a [u8]>,
    /// NULL for a plaintext payload (its cipher hash is zero: migration 0021).
    cipher_hash: Vec<Option<&'a [u8]>>,
    signing_hash: Vec<&'a [u8]>,
    signature: Vec<&'a [u8]>,
    sequencer_signature: Vec<Option<&'a [u8]>>,
    leaf_hash: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    /// The columns of `n` rows.
    fn new(rows: impl IntoIterator<Item = &'a VesEventRow>, n: usize) -> Self {
        let mut c = Columns {
            seq: Vec::with_capacity(n),
            event_id: Vec::with_capacity(n),
            entity_type: Vec::with_capacity(n),
            entity_id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            source_agent: Vec::with_capacity(n),
            command_id: Vec::with_capacity(n),
            base_version: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            ves_version: Vec::with_capacity(n),
            agent_key_id: Vec::with_capacity(n),
            created_at_str: Vec::with_capacity(n),
            payload_kind: Vec::with_capacity(n),
            payload_encrypted: Vec::with_capacity(n),
            plain_hash: Vec::with_capacity(n),
            cipher_hash: Vec::with_capacity(n),
            signing_hash: Vec::with_capacity(n),
            signature: Vec::with_capacity(n),
            sequencer_signature: Vec::with_capacity(n),
            leaf_hash: Vec::with_capacity(n),
        };
        for r in rows {
            let e = &*r.envelope;
            c.seq.push(r.sequence_number);
            c.event_id.push(e.event_id);
            c.entity_type.push(e.entity_type.as_str());
            c.entity_id.push(e.entity_id.as_str());
            c.event_type.push(e.event_type.as_str());
            c.created_at.push(r.created_at);
            c.source_agent.push(e.source_agent_id);
            c.command_id.push(e.command_id);
            c.base_version.push(e.base_version.map(|v| v as i64));
            c.payload.push(r.payload_json.as_deref());
            c.ves_version.push(e.ves_version as i32);
            c.agent_key_id.push(i64::from(e.agent_key_id));
            c.created_at_str.push(e.created_at.as_str());
            c.payload_kind.push(e.payload_kind as i16);
            c.payload_encrypted.push(
                e.payload_encrypted.as_ref().map(|p| serde_json::to_value(p).expect("encrypted payload serialises")),
            );
            c.plain_hash.push(&e.payload_plain_hash.0);
            // NB: a plaintext payload's cipher hash is zero (ingest refuses any other), which readers put
            // back; the receipt hash is not written at all (migration 0021).
            c.cipher_hash.push((e.payload_kind != 0).then_some(&e.payload_cipher_hash.0[..]));
            c.signing_hash.push(&r.signing_hash);
            c.signature.push(&e.agent_signature.0);
            c.sequencer_signature.push(r.sequencer_signature.as_ref().map(|s| &s[..]));
            c.leaf_hash.push(&r.leaf_hash);
        }
        c
    }
}

/// `INSERT INTO ves_events ... SELECT ..., unnest(...), ...` over [`Columns`] bound as $3..$24 and $27
/// ($1, $2: the stream; $9: sequenced_at; $23: sequencer id), followed by `tail` (a WHERE or ON
/// CONFLICT clause).
///
/// NB: the arrays are unnested in the select list, not in `FROM UNNEST(a, b, ...)`. Both walk the
/// arrays in lockstep (PostgreSQL 10+), but a FROM function scan first copies every row of every array
/// into a tuplestore and reads it back; in the select list each element goes straight into the new
/// row. Measured on the log's own table and indexes (100-row groups over 64 streams, in one backend,
/// `scripts/insert-cost`): 25.4 -> 23.4 µs of PostgreSQL's CPU per event.
fn insert_rows_sql(epoch: &str, tail: &str) -> String {
    format!("{INSERT_ROWS} {} {tail}", rows_select("$1", "$2", "$9", epoch))
}

/// The head of every insert into the log, for a SELECT built by [`rows_select`]. A plaintext payload
/// goes into `payload_text` as the sequencer's compact JSON, not into the JSONB `payload` (migration
/// 0019: PostgreSQL no longer parses it on insert; readers cast it back, [`EVENT_COLUMNS`]). The
/// receipt hash is not written, nor a plaintext payload's cipher hash (migration 0021): readers put the
/// zero cipher hash back, and the receipt hash is derived where one is answered
/// ([`ExistingEvent::receipt_hash`]).
const INSERT_ROWS: &str = "INSERT INTO ves_events (tenant_id, store_id, sequence_number, event_id, signed, \
    entity_type, entity_id, event_type, created_at, sequenced_at, source_agent_id, command_id, base_version, \
    payload_text, ves_version, agent_key_id, created_at_str, payload_kind, payload_encrypted, payload_plain_hash, \
    payload_cipher_hash, event_signing_hash, agent_signature, sequencer_id, sequencer_signature, leaf_hash, id_epoch)";

/// The rows' SELECT, its columns in [`INSERT_ROWS`]' order: [`Columns`] unnested from $3..$22, $24
/// and $27, the sequencer id $23, and the rows' stream, time and id epoch given as SQL (parameters $1,
/// $2, $9 and one numbered after the statement's others, scalars for one stream or arrays for several).
fn rows_select(tenant: &str, store: &str, sequenced_at: &str, epoch: &str) -> String {
    format!(
        "SELECT {tenant}, {store}, unnest($3::bigint[]), unnest($4::uuid[]), TRUE, unnest($5::text[]), \
           unnest($6::text[]), unnest($7::text[]), unnest($8::timestamptz[]), {sequenced_at}, unnest($10::uuid[]), \
           unnest($11::uuid[]), unnest($12::bigint[]), unnest($13::text[]), unnest($14::int[]), \
           unnest($15::bigint[]), unnest($16::text[]), unnest($17::smallint[]), unnest($18::jsonb[]), \
           unnest($19::bytea[]), unnest($20::bytea[]), unnest($21::bytea[]), unnest($22::bytea[]), \
           $23::uuid, unnest($24::bytea[]), unnest($27::bytea[]), {epoch}"
    )
}

/// Binds the parameters of a statement built on [`rows_select`], in order: `p1`, `p2`, `p9`, `p23`
/// (the rows' stream, time and sequencer id), `p25`, `p26` and `p28`..`p30` (the statement's own), and
/// the [`Columns`] `c` in between. A macro because the given ones are scalars in one statement and
/// arrays in the other.
macro_rules! bind_rows {
    ($query:expr, $c:expr, [$p1:expr, $p2:expr, $p9:expr, $p23:expr, $p25:expr, $p26:expr, $p28:expr, $p29:expr, $p30:expr]) => {
        $query
            .bind($p1)
            .bind($p2)
            .bind(&$c.seq)
            .bind(&$c.event_id)
            .bind(&$c.entity_type)
            .bind(&$c.entity_id)
            .bind(&$c.event_type)
            .bind(&$c.created_at)
            .bind($p9)
            .bind(&$c.source_agent)
            .bind(&$c.command_id)
            .bind(&$c.base_version)
            .bind(&$c.payload)
            .bind(&$c.ves_version)
            .bind(&$c.agent_key_id)
            .bind(&$c.created_at_str)
            .bind(&$c.payload_kind)
            .bind(&$c.payload_encrypted)
            .bind(&$c.plain_hash)
            .bind(&$c.cipher_hash)
            .bind(&$c.signing_hash)
            .bind(&$c.signature)
            .bind($p23)
            .bind(&$c.sequencer_signature)
            .bind($p25)
            .bind($p26)
            .bind(&$c.leaf_hash)
            .bind($p28)
            .bind($p29)
            .bind($p30)
    };
}

/// `INSERT INTO event_leaf_runs` of the rows' leaves as one run (`$28`: its first number, `$25`: its
/// last, `$29`: the leaves concatenated, `$30`: their transparency log leaves concatenated or NULL,
/// `$9`: when they were numbered), followed by `condition`.
fn insert_run_sql(condition: &str) -> String {
    format!(
        "INSERT INTO event_leaf_runs (tenant_id, store_id, first_sequence, last_sequence, leaves, tlog_leaves, \
           sequenced_at) \
         SELECT $1, $2, $28, $25, $29, $30, $9 {condition}"
    )
}

/// The leaf run of `rows`: their leaves concatenated, and their transparency log leaves concatenated.
fn run_leaves(rows: &[VesEventRow]) -> (Vec<u8>, Option<Vec<u8>>) {
    let run = rows.iter().flat_map(|r| r.leaf_hash).collect();
    // NB: all or nothing: the integrator reads a run's events back when its log leaves are NULL.
    let tlog_run = rows.iter().map(|r| r.tlog_leaf).collect::<Option<Vec<_>>>().map(|l| l.concat());
    (run, tlog_run)
}

/// The parameter of the rows' id epoch in a statement built on [`insert_rows_sql`]: the one after the
/// checks' (`$31`..`$34`), if it has them ([`run_insert`]).
fn epoch_param(checks: bool) -> &'static str {
    if checks { "$35::int" } else { "$31::int" }
}

/// Runs `sql` (built on [`insert_rows_sql`] and [`insert_run_sql`]) with every parameter bound; `$25`
/// and `$26` are `head_params`, `checks`, if any, are `$31`..`$33` (entity types, ids and versions)
/// with [`VERSION_MARK_AFTER`] as `$34`, and `epoch` is the parameter after them ([`epoch_param`]).
/// Returns the single scalar the statement selects, if any row.
#[allow(clippy::too_many_arguments)]
async fn run_insert(
    conn: &mut PgConnection,
    sql: String,
    stream: StreamKey,
    rows: &[VesEventRow],
    sequenced_at: DateTime<Utc>,
    sequencer_id: Uuid,
    head_params: (i64, i64),
    checks: Option<&VersionChecks>,
    epoch: i32,
) -> Result<Option<i64>> {
    let c = Columns::new(rows, rows.len());
    let (run, tlog_run) = run_leaves(rows);
    let first = rows.first().map_or(0, |r| r.sequence_number);
    let query = sqlx::query_scalar(AssertSqlSafe(sql));
    let (tenant, store) = (stream.tenant_id, stream.store_id);
    let (new, old) = head_params;
    let query = bind_rows!(query, c, [tenant, store, sequenced_at, sequencer_id, new, old, first, run, tlog_run]);
    let query = match checks {
        Some(k) => query.bind(&k.entity_type).bind(&k.entity_id).bind(&k.version).bind(VERSION_MARK_AFTER),
        None => query,
    };
    Ok(query.bind(epoch).fetch_optional(conn).await?)
}

/// Inserts signed events into the id epoch `epoch` and moves the stream's head to `new_head`, in one
/// statement. The caller's transaction holds the epoch row's share lock, taken before the stream's
/// counter row ([`epochs::lock_current`]), and `epoch` is the one it read.
///
/// With `on_conflict_do_nothing`, rows that collide with a stored event of the epoch (same id) or of
/// the stream (same command or number) are skipped and the head is left alone: the function then
/// returns `false` and the caller must roll back and take the careful path. Otherwise any collision is
/// an error. An id of a closed epoch is the caller's to rule out ([`epochs::IdEpochs::screen`]).
#[allow(clippy::too_many_arguments)]
pub async fn insert_ves_events(
    conn: &mut PgConnection,
    stream: StreamKey,
    rows: &[VesEventRow],
    sequenced_at: DateTime<Utc>,
    sequencer_id: Uuid,
    new_head: i64,
    on_conflict_do_nothing: bool,
    epoch: i32,
) -> Result<bool> {
    let conflict = if on_conflict_do_nothing { "ON CONFLICT DO NOTHING" } else { "" };
    // NB: the data-modifying CTE always runs to completion; the UPDATE moves the head only when every
    // row went in, so a skipped (conflicting) row can never leave a gap behind.
    let sql = format!(
        "WITH ins AS ({} RETURNING 1), \
         run AS ({}) \
         UPDATE sequence_counters SET current_sequence = $25, updated_at = NOW() \
         WHERE tenant_id = $1 AND store_id = $2 AND (SELECT COUNT(*) FROM ins) = $26 \
         RETURNING current_sequence",
        insert_rows_sql(epoch_param(false), conflict),
        insert_run_sql("WHERE (SELECT COUNT(*) FROM ins) = $26")
    );
    let heads = (new_head, rows.len() as i64);
    let updated = run_insert(conn, sql, stream, rows, sequenced_at, sequencer_id, heads, None, epoch).await?;
    Ok(updated.is_some())
}

/// Appends signed events numbered `expected_head + 1 ..` (in `rows`) in ONE autocommit statement, if
/// and only if the stream's head is still `expected_head`, the stream is not paused, every entity
/// of `checks` is at its version and the current id epoch is still `epoch`, the one whose closed
/// predecessors the caller screened the ids against ([`epochs::IdEpochs::screen`]; the statement reads
/// it under the share lock, [`epochs::LOCKED_EPOCH_CTE`], before it locks the counter row). Returns
/// whether it did (`false`: nothing was written). With `create`
/// (a stream without a counter row, `expected_head` 0) the statement also creates the row, or, if
/// another writer created it meanwhile, applies only if that row is still at head 0 and not paused.
///
/// This is group commit's fast path when the sequencer already knows the head (it wrote it last): one
/// round trip instead of BEGIN, lock, insert, COMMIT, and the counter row is locked only for the
/// statement itself. The UPDATE takes the row lock and re-checks the head after any concurrent writer
/// commits (READ COMMITTED re-evaluation), and the INSERT runs only if the UPDATE matched, so a stale
/// guess writes nothing. A colliding row (a replayed event id or command id) fails the whole statement
/// with a unique violation, which also writes nothing. Its answer comes after the commit.
///
/// The versions are counted as [`entity_versions`] counts them, from the statement's snapshot, and
/// moved marks are written only with the group. Every writer moves the head in the transaction that
/// writes events, so a head still at `expected_head` when the UPDATE locks it means the snapshot held
/// every event of the stream: the counts are the versions the group is written on. `checks` must be
/// `None` with `create`: a stream at head 0 has no events, so each of its entities is at version 0
/// ([`VersionChecks::all_new`], for the caller).
#[allow(clippy::too_many_arguments)]
pub async fn append_at_head(
    conn: &mut PgConnection,
    stream: StreamKey,
    rows: &[VesEventRow],
    sequenced_at: DateTime<Utc>,
    sequencer_id: Uuid,
    expected_head: i64,
    create: bool,
    checks: Option<&VersionChecks>,
    epoch: i32,
) -> Result<bool> {
    let new_head = expected_head + rows.len() as i64;
    let epoch_param = epoch_param(checks.is_some());
    debug_assert!(!create || expected_head == 0);
    debug_assert!(!create || checks.is_none(), "a new stream's entities are all at version 0");
    let (counted, versions_hold, marked) = match checks {
        Some(_) => (
            format!(
                "counted AS ({}), ",
                counted_versions(
                    "UNNEST($31::text[], $32::text[], $33::bigint[]) AS q(entity_type, entity_id, want)",
                    ONE_STREAM,
                    "$26"
                )
            ),
            " AND NOT EXISTS (SELECT 1 FROM counted WHERE version <> want)",
            format!(", marked AS ({})", mark_versions(ONE_STREAM, "$26", "$34", "AND EXISTS (SELECT 1 FROM moved)")),
        ),
        None => (String::new(), "", String::new()),
    };
    // NB: the epoch's comparison has no column of the scanned row, so it is a one-time filter, checked
    // (and the epoch row share-locked) before the counter row is.
    let move_head = if create {
        format!(
            "INSERT INTO sequence_counters AS s (tenant_id, store_id, current_sequence) \
             SELECT $1, $2, $25 WHERE (SELECT current FROM ep) = {epoch_param} \
             ON CONFLICT (tenant_id, store_id) DO UPDATE SET current_sequence = $25, updated_at = NOW() \
             WHERE s.current_sequence = $26 AND NOT s.paused"
        )
    } else {
        format!(
            "UPDATE sequence_counters SET current_sequence = $25, updated_at = NOW() \
             WHERE (SELECT current FROM ep) = {epoch_param} \
               AND tenant_id = $1 AND store_id = $2 AND current_sequence = $26 AND NOT paused{versions_hold}"
        )
    };
    let sql = format!(
        "WITH {}, {counted}moved AS ({move_head} RETURNING 1), \
         ins AS ({} RETURNING 1), \
         run AS ({}){marked} \
         SELECT COUNT(*) FROM ins",
        epochs::LOCKED_EPOCH_CTE,
        insert_rows_sql(epoch_param, "WHERE EXISTS (SELECT 1 FROM moved)"),
        insert_run_sql("WHERE EXISTS (SELECT 1 FROM moved)")
    );
    let heads = (new_head, expected_head);
    let inserted = run_insert(conn, sql, stream, rows, sequenced_at, sequencer_id, heads, checks, epoch).await?;
    Ok(inserted == Some(rows.len() as i64))
}

/// One stream's group for [`append_at_heads`]: its rows, numbered `expected_head + 1 ..`, written only
/// if each entity of `checks` is at its version and the current id epoch is still `epoch`.
pub struct HeadAppend<'a> {
    pub stream: StreamKey,
    pub rows: &'a [VesEventRow],
    pub sequenced_at: DateTime<Utc>,
    pub expected_head: i64,
    pub checks: Option<&'a VersionChecks>,
    pub epoch: i32,
}

/// [`append_at_head`] for the groups of several streams (each already with a counter row) in ONE
/// autocommit statement: a group is written if and only if its stream's head is still the one it
/// expects, the stream is not paused and the current id epoch is the group's (read under the share lock
/// before any counter row is locked, as [`append_at_head`] does), and the others' heads do not matter
/// to it. Returns, per group, whether it was written.
///
/// Why: most of what PostgreSQL spends on a statement of 100 events is paid per statement and per
/// commit (planning the CHECK constraints, starting the executor, locking the relations, the commit's
/// WAL flush), and under a load of many busy streams the sequencer has many groups ready at once.
/// Measured with today's one-stream statement (README.md § Performance, "Several streams' groups in
/// one statement"): 100-event statements cost PostgreSQL 20.9-21.9 µs per event, 400-event ones 16.6.
///
/// The versions a group checks are counted and its marks moved as [`append_at_head`] does, per stream at
/// the head the group expects: a group whose versions do not hold is not written (`false`), like one
/// whose head moved, and costs the others nothing.
///
/// A stream's counter row is locked in (tenant, store) order before any is moved, so that two such
/// statements from two replicas cannot deadlock on each other. A colliding row of any group (a
/// replayed event id or command id) fails the whole statement with a unique violation, which writes
/// nothing; the caller then writes each group alone with [`append_at_head`].
pub async fn append_at_heads(
    conn: &mut PgConnection,
    groups: &[HeadAppend<'_>],
    sequencer_id: Uuid,
) -> Result<Vec<bool>> {
    let n = groups.len();
    let mut tenant = Vec::with_capacity(n);
    let mut store = Vec::with_capacity(n);
    let mut expected = Vec::with_capacity(n);
    let mut new_head = Vec::with_capacity(n);
    let mut first = Vec::with_capacity(n);
    let mut leaves = Vec::with_capacity(n);
    let mut tlog_leaves = Vec::with_capacity(n);
    let mut run_at = Vec::with_capacity(n);
    let mut epoch = Vec::with_capacity(n);
    let events: usize = groups.iter().map(|g| g.rows.len()).sum();
    let mut row_tenant = Vec::with_capacity(events);
    let mut row_store = Vec::with_capacity(events);
    let mut row_at = Vec::with_capacity(events);
    let mut row_epoch = Vec::with_capacity(events);
    for g in groups {
        debug_assert!(!g.rows.is_empty(), "a group to append has rows");
        tenant.push(g.stream.tenant_id);
        store.push(g.stream.store_id);
        expected.push(g.expected_head);
        new_head.push(g.expected_head + g.rows.len() as i64);
        first.push(g.rows.first().map_or(0, |r| r.sequence_number));
        let (run, tlog_run) = run_leaves(g.rows);
        leaves.push(run);
        tlog_leaves.push(tlog_run);
        run_at.push(g.sequenced_at);
        epoch.push(g.epoch);
        for _ in g.rows {
            row_tenant.push(g.stream.tenant_id);
            row_store.push(g.stream.store_id);
            row_at.push(g.sequenced_at);
            row_epoch.push(g.epoch);
        }
    }
    let c = Columns::new(groups.iter().flat_map(|g| g.rows), events);
    let checks = SharedChecks::of(groups);
    // NB: the rows' parameters are numbered as in the one-stream statement ([`bind_rows`]); $25, $26 and
    // $28..$30 are per stream here, $31..$33 name each stream and its time, $34..$40 are the checks, if
    // any ([`SharedChecks`]), and the two after them each group's id epoch and each row's.
    let (counted, versions_hold, marked) = match &checks {
        Some(_) => (
            format!(
                "counted AS ({}), ",
                counted_versions(
                    "UNNEST($34::uuid[], $35::uuid[], $36::text[], $37::text[], $38::bigint[], $39::bigint[]) \
                       AS q(tenant_id, store_id, entity_type, entity_id, want, head)",
                    ("q.tenant_id", "q.store_id"),
                    "q.head"
                )
            ),
            " AND NOT EXISTS (SELECT 1 FROM counted c \
               WHERE c.tenant_id = s.tenant_id AND c.store_id = s.store_id AND c.version <> c.want)",
            format!(
                ", marked AS ({})",
                mark_versions(
                    ("tenant_id", "store_id"),
                    "head",
                    "$40",
                    "AND (tenant_id, store_id) IN (SELECT tenant_id, store_id FROM moved)"
                )
            ),
        ),
        None => (String::new(), "", String::new()),
    };
    let (group_epochs, row_epochs) = if checks.is_some() { ("$41", "$42") } else { ("$34", "$35") };
    // NB: the epoch's comparison is checked (and the epoch row share-locked) before LockRows locks a
    // counter row that passed it.
    let sql = format!(
        "WITH {}, {counted}want AS ( \
           SELECT * FROM unnest($31::uuid[], $32::uuid[], $26::bigint[], $25::bigint[], {group_epochs}::int[]) \
             AS w(tenant_id, store_id, expected, new_head, epoch)), \
         locked AS ( \
           SELECT s.tenant_id, s.store_id, w.new_head FROM sequence_counters s \
             JOIN want w ON s.tenant_id = w.tenant_id AND s.store_id = w.store_id \
           WHERE w.epoch = (SELECT current FROM ep) AND s.current_sequence = w.expected AND NOT s.paused{versions_hold} \
           ORDER BY s.tenant_id, s.store_id FOR UPDATE OF s), \
         moved AS ( \
           UPDATE sequence_counters s SET current_sequence = l.new_head, updated_at = NOW() FROM locked l \
           WHERE s.tenant_id = l.tenant_id AND s.store_id = l.store_id RETURNING s.tenant_id, s.store_id), \
         ins AS ( \
           {INSERT_ROWS} SELECT r.* FROM ({}) r \
           WHERE (r.tenant_id, r.store_id) IN (SELECT tenant_id, store_id FROM moved) \
           RETURNING 1), \
         run AS ( \
           INSERT INTO event_leaf_runs (tenant_id, store_id, first_sequence, last_sequence, leaves, tlog_leaves, \
             sequenced_at) \
           SELECT r.* FROM unnest($31::uuid[], $32::uuid[], $28::bigint[], $25::bigint[], $29::bytea[], \
             $30::bytea[], $33::timestamptz[]) \
             AS r(tenant_id, store_id, first_sequence, last_sequence, leaves, tlog_leaves, at) \
           WHERE (r.tenant_id, r.store_id) IN (SELECT tenant_id, store_id FROM moved)){marked} \
         SELECT m.tenant_id, m.store_id, (SELECT COUNT(*) FROM ins) FROM moved m",
        epochs::LOCKED_EPOCH_CTE,
        rows_select(
            "unnest($1::uuid[]) AS tenant_id",
            "unnest($2::uuid[]) AS store_id",
            "unnest($9::timestamptz[])",
            &format!("unnest({row_epochs}::int[])")
        )
    );
    let query = sqlx::query_as(AssertSqlSafe(sql));
    let query = bind_rows!(
        query,
        c,
        [&row_tenant, &row_store, &row_at, sequencer_id, &new_head, &expected, &first, &leaves, &tlog_leaves]
    )
    .bind(&tenant)
    .bind(&store)
    .bind(&run_at);
    let query = match &checks {
        Some(k) => query
            .bind(&k.tenant_id)
            .bind(&k.store_id)
            .bind(&k.entity_type)
            .bind(&k.entity_id)
            .bind(&k.version)
            .bind(&k.head)
            .bind(VERSION_MARK_AFTER),
        None => query,
    };
    let moved: Vec<(Uuid, Uuid, i64)> = query.bind(&epoch).bind(&row_epoch).fetch_all(conn).await?;
    let written: Vec<bool> = groups
        .iter()
        .map(|g| moved.iter().any(|(t, s, _)| *t == g.stream.tenant_id && *s == g.stream.store_id))
        .collect();
    let inserted = moved.first().map_or(0, |m| m.2);
    let expected_rows: usize = groups.iter().zip(&written).filter(|(_, w)| **w).map(|(g, _)| g.rows.len()).sum();
    if inserted != expected_rows as i64 {
        // The statement committed, so this cannot be undone: say so rather than answer receipts.
        return Err(Error::Internal(format!(
            "a shared append moved {} heads but wrote {inserted} of their {expected_rows} events",
            moved.len()
        )));
    }
    Ok(written)
}

/// The checks of the groups of [`append_at_heads`], an entity a row: its stream, its version, and the
/// head its group expects (where it is counted).
struct SharedChecks<'a> {
    tenant_id: Vec<Uuid>,
    store_id: Vec<Uuid>,
    entity_type: Vec<&'a str>,
    entity_id: Vec<&'a str>,
    version: Vec<i64>,
    head: Vec<i64>,
}

impl<'a> SharedChecks<'a> {
    /// `None` when no group checks a version (the statement is then the one without them).
    fn of(groups: &[HeadAppend<'a>]) -> Option<Self> {
        let n: usize = groups.iter().filter_map(|g| g.checks).map(|k| k.version.len()).sum();
        if n == 0 {
            return None;
        }
        let mut all = SharedChecks {
            tenant_id: Vec::with_capacity(n),
            store_id: Vec::with_capacity(n),
            entity_type: Vec::with_capacity(n),
            entity_id: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            head: Vec::with_capacity(n),
        };
        for g in groups {
            let Some(k) = g.checks else { continue };
            for ((t, i), v) in k.entity_type.iter().zip(&k.entity_id).zip(&k.version) {
                all.tenant_id.push(g.stream.tenant_id);
                all.store_id.push(g.stream.store_id);
                all.entity_type.push(t);
                all.entity_id.push(i);
                all.version.push(*v);
                all.head.push(g.expected_head);
            }
        }
        Some(all)
    }
}

/// One unsigned legacy event ready to be written, with its number chosen.
#[derive(Debug, Clone)]
pub struct LegacyEventRow<'a> {
    pub sequence_number: i64,
    pub event_id: Uuid,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub event_type: &'a str,
    pub created_at: DateTime<Utc>,
    pub source_agent_id: Uuid,
    pub command_id: Option<Uuid>,
    pub base_version: Option<i64>,
    pub payload: &'a Value,
    pub payload_hash: [u8; 32],
    pub leaf_hash: [u8; 32],
}

/// Inserts legacy events (numbered after the locked head, in order), their leaf run, and moves the
/// stream's head to the last one, inside the caller's transaction that holds the stream's lock. The
/// arrays are unnested in the select list, as in [`insert_rows_sql`] (which says why).
pub async fn insert_legacy_events(
    conn: &mut PgConnection,
    stream: StreamKey,
    rows: &[LegacyEventRow<'_>],
    sequenced_at: DateTime<Utc>,
) -> Result<()> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(());
    };
    let seq: Vec<i64> = rows.iter().map(|r| r.sequence_number).collect();
    let event_id: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let entity_type: Vec<&str> = rows.iter().map(|r| r.entity_type).collect();
    let entity_id: Vec<&str> = rows.iter().map(|r| r.entity_id).collect();
    let event_type: Vec<&str> = rows.iter().map(|r| r.event_type).collect();
    let created_at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.created_at).collect();
    let source: Vec<Uuid> = rows.iter().map(|r| r.source_agent_id).collect();
    let command_id: Vec<Option<Uuid>> = rows.iter().map(|r| r.command_id).collect();
    let base_version: Vec<Option<i64>> = rows.iter().map(|r| r.base_version).collect();
    let payload: Vec<&Value> = rows.iter().map(|r| r.payload).collect();
    let payload_hash: Vec<&[u8]> = rows.iter().map(|r| &r.payload_hash[..]).collect();
    let leaf: Vec<&[u8]> = rows.iter().map(|r| &r.leaf_hash[..]).collect();
    sqlx::query(
        "INSERT INTO legacy_events (tenant_id, store_id, sequence_number, event_id, signed, entity_type, entity_id, \
           event_type, created_at, sequenced_at, source_agent_id, command_id, base_version, payload, payload_hash, \
           leaf_hash) \
         SELECT $1, $2, unnest($3::bigint[]), unnest($4::uuid[]), FALSE, unnest($5::text[]), unnest($6::text[]), \
           unnest($7::text[]), unnest($8::timestamptz[]), $9, unnest($10::uuid[]), unnest($11::uuid[]), \
           unnest($12::bigint[]), unnest($13::jsonb[]), unnest($14::bytea[]), unnest($15::bytea[])",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .bind(&seq)
    .bind(&event_id)
    .bind(&entity_type)
    .bind(&entity_id)
    .bind(&event_type)
    .bind(&created_at)
    .bind(sequenced_at)
    .bind(&source)
    .bind(&command_id)
    .bind(&base_version)
    .bind(&payload)
    .bind(&payload_hash)
    .bind(&leaf)
    .execute(&mut *conn)
    .await?;
    let leaves: Vec<u8> = rows.iter().flat_map(|r| r.leaf_hash).collect();
    sqlx::query(
        "INSERT INTO event_leaf_runs (tenant_id, store_id, first_sequence, last_sequence, leaves, sequenced_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .bind(first.sequence_number)
    .bind(last.sequence_number)
    .bind(leaves)
    .bind(sequenced_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE sequence_counters SET current_sequence = $3, updated_at = NOW() WHERE tenant_id = $1 AND store_id = $2",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .bind(last.sequence_number)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends the run of leaves of events `first..` of a stream (see migration 0004), inside the caller's
/// transaction that inserts those events.
pub async fn insert_leaf_run(conn: &mut PgConnection, stream: StreamKey, first: i64, leaves: &[Vec<u8>]) -> Result<()> {
    let last = first + leaves.len() as i64 - 1;
    sqlx::query(
        "INSERT INTO event_leaf_runs (tenant_id, store_id, first_sequence, last_sequence, leaves) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(stream.tenant_id)
    .bind(stream.store_id)
    .bind(first)
    .bind(last)
    .bind(leaves.concat())
    .execute(conn)
    .await?;
    Ok(())
}

/// One stream as the admin surface shows it.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub head: i64,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub last_committed_sequence: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

/// A chunk of a stream's log for verification: rows after `(after_seq, after_id)` in order.
pub async fn scan_stream(
    conn: &mut PgConnection,
    stream: StreamKey,
    after: (i64, Uuid),
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND store_id = $2 \
         AND (sequence_number, event_id) > ($3, $4) ORDER BY sequence_number, event_id LIMIT $5"
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql))
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

impl Store {
    /// Pauses or resumes ingestion of a stream (creating its counter row if needed).
    pub async fn set_paused(&self, stream: StreamKey, paused: bool, reason: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO sequence_counters (tenant_id, store_id, paused, paused_reason) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, store_id) DO UPDATE SET paused = $3, paused_reason = $4, updated_at = NOW()",
        )
        .bind(stream.tenant_id)
        .bind(stream.store_id)
        .bind(paused)
        .bind(if paused { reason } else { None })
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Streams (of one tenant, or all), with their heads and last committed sequence.
    pub async fn streams(
        &self,
        tenant_id: Option<Uuid>,
        store_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<StreamStatus>> {
        Ok(sqlx::query_as(
            "SELECT s.tenant_id, s.store_id, s.current_sequence AS head, s.paused, s.paused_reason, \
               (SELECT MAX(c.sequence_end) FROM commitments c WHERE c.tenant_id = s.tenant_id \
                  AND c.store_id = s.store_id AND c.superseded_by IS NULL) AS last_committed_sequence, s.updated_at \
             FROM sequence_counters s WHERE ($1::uuid IS NULL OR s.tenant_id = $1) AND ($2::uuid IS NULL OR s.store_id = $2) \
             ORDER BY s.tenant_id, s.store_id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(store_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// How many streams are paused.
    pub async fn paused_streams(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM sequence_counters WHERE paused").fetch_one(self.pool()).await?)
    }

    /// The head of a stream (0 for a stream that has never been written).
    pub async fn head(&self, stream: StreamKey) -> Result<i64> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2")
                .bind(stream.tenant_id)
                .bind(stream.store_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(head.unwrap_or(0))
    }

    /// Events of the tenant with one of these ids, outside any lock.
    pub async fn find_by_event_ids(&self, tenant_id: Uuid, event_ids: &[Uuid]) -> Result<Vec<ExistingEvent>> {
        let mut conn = self.pool().acquire().await?;
        find_by_event_ids(&mut conn, self.id_epochs(), tenant_id, event_ids).await
    }

    /// Events `from..=to` of a stream, in order. Fails with [`Error::SequenceGap`] when a number in
    /// the range up to the head is missing, so that a reader never silently skips an event.
    pub async fn read_range(&self, stream: StreamKey, from: i64, limit: i64, head: i64) -> Result<Vec<StoredEvent>> {
        let to = from.saturating_add(limit - 1).min(head);
        if to < from {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND store_id = $2 \
             AND sequence_number BETWEEN $3 AND $4 ORDER BY sequence_number"
        );
        let events: Vec<StoredEvent> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?;
        let mut expected = from;
        for e in &events {
            if e.sequence_number != expected {
                return Err(Error::SequenceGap(format!(
                    "non-contiguous event sequence: expected {expected}, got {}",
                    e.sequence_number
                )));
            }
            expected += 1;
        }
        if expected != to + 1 {
            return Err(Error::SequenceGap(format!("sequence gap in range {from}..={to}: missing {expected}")));
        }
        Ok(events)
    }

    /// An entity's history, oldest first: `limit` events after skipping `offset`, plus the total
    /// ([`entity_page_sql`], [`entity_total_sql`]).
    pub async fn entity_history(
        &self,
        stream: StreamKey,
        entity_type: &str,
        entity_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<StoredEvent>, i64)> {
        let mut events: Vec<StoredEvent> = sqlx::query_as(AssertSqlSafe(entity_page_sql()))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(entity_type)
            .bind(entity_id)
            .bind(offset)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        events.sort_unstable_by_key(|e| e.sequence_number);
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(entity_total_sql()))
            .bind(stream.tenant_id)
            .bind(stream.store_id)
            .bind(entity_type)
            .bind(entity_id)
            .fetch_one(self.pool())
            .await?;
        Ok((events, total))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    /// `scripts/derived-hash-cost` times the page of events as this module reads it, from a copy of
    /// [`EVENT_COLUMNS`] (a shell script cannot import it): the copy must stay the same columns.
    #[test]
    fn the_derived_hash_cost_script_reads_the_page_columns_of_today() {
        let script = include_str!("../../../scripts/derived-hash-cost");
        let copy =
            script.split("page_columns=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("page_columns=");
        let words = |sql: &str| sql.replace("\\\n", " ").split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(copy), words(&EVENT_COLUMNS.replace(" AS payload_cipher_hash", "")));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    prop_compose! {
        fn stored_event()(
            ids in (uuid(), uuid(), uuid(), uuid()),
            sequence_number in 1i64..i64::MAX,
            text in (".{0,40}", ".{0,40}", ".{0,40}", prop::option::of(".{0,40}")),
            times in (0i64..4_000_000_000_000, 0i64..4_000_000_000_000),
            command_id in prop::option::of(uuid()),
            base_version in prop::option::of(any::<i64>()),
            payload in prop::option::of(json_value()),
            numbers in (prop::option::of(any::<i32>()), prop::option::of(any::<i64>()), prop::option::of(any::<i16>())),
            hashes in (any::<[u8; 32]>(), any::<[u8; 32]>(), prop::collection::vec(any::<u8>(), 64)),
        ) -> StoredEvent {
            let (tenant_id, store_id, event_id, source_agent_id) = ids;
            let (entity_type, entity_id, event_type, created_at_str) = text;
            let (ves_version, agent_key_id, payload_kind) = numbers;
            StoredEvent {
                tenant_id,
                store_id,
                sequence_number,
                event_id,
                signed: true,
                entity_type,
                entity_id,
                event_type,
                created_at: Utc.timestamp_millis_opt(times.0).unwrap(),
                sequenced_at: Utc.timestamp_micros(times.1 * 1000 + 123).unwrap(),
                source_agent_id,
                command_id,
                base_version,
                payload,
                ves_version,
                agent_key_id,
                created_at_str,
                payload_kind,
                payload_encrypted: None,
                payload_plain_hash: Some(hashes.0.to_vec()),
                payload_cipher_hash: Some(hashes.1.to_vec()),
                event_signing_hash: None,
                agent_signature: Some(hashes.2),
                stored_receipt_hash: None,
                sequencer_id: None,
                sequencer_signature: None,
                payload_hash: None,
                leaf_hash: None,
            }
        }
    }

    proptest! {
        /// The magnitude test agrees with the printed text, across the range where serde_json
        /// switches between positional and exponent notation.
        #[test]
        fn a_float_prints_with_an_exponent_exactly_when_its_magnitude_says_so(m in -1e3f64..1e3, e in -30i32..30) {
            let n = serde_json::Number::from_f64(m * 10f64.powi(e)).unwrap();
            prop_assert_eq!(prints_with_exponent(&n), n.to_string().contains(['e', 'E']), "{}", n);
        }

        /// Any finite double, drawn by its bits (every exponent, subnormals included).
        #[test]
        fn any_double_prints_with_an_exponent_exactly_when_its_magnitude_says_so(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            prop_assume!(f.is_finite());
            let n = serde_json::Number::from_f64(f).unwrap();
            prop_assert_eq!(prints_with_exponent(&n), n.to_string().contains(['e', 'E']), "{}", n);
        }
    }

    /// A stored receipt hash (a row from before migration 0021) is the one answered; without one it is
    /// derived as the sequencer computes it; a legacy event, with no signing hash, has none.
    #[test]
    fn a_receipt_hash_is_the_stored_one_else_derived_from_the_row() {
        let (tenant_id, store_id, event_id) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut e = ExistingEvent {
            event_id,
            tenant_id,
            store_id,
            signed: true,
            sequence_number: 42,
            sequenced_at: Utc.timestamp_micros(1).unwrap(),
            command_id: None,
            base_version: None,
            payload_encrypted: None,
            event_signing_hash: Some(vec![9; 32]),
            agent_signature: Some(vec![0; 64]),
            stored_receipt_hash: None,
            sequencer_id: None,
            sequencer_signature: None,
        };
        let derived = ves::hash::receipt_hash(tenant_id, store_id, event_id, 42, &[9; 32]);
        assert_eq!(e.receipt_hash(), Some(derived.to_vec()));
        e.stored_receipt_hash = Some(vec![5; 32]);
        assert_eq!(e.receipt_hash(), Some(vec![5; 32]), "a stored hash is answered as stored");
        e.stored_receipt_hash = None;
        e.event_signing_hash = None;
        assert_eq!(e.receipt_hash(), None, "a legacy event has no receipt hash");
    }

    /// The doubles on each side of both boundaries, and the numbers that are not floats.
    #[test]
    fn the_exponent_boundaries_are_where_serde_json_puts_them() {
        let step = |f: f64, up: bool| f64::from_bits(if up { f.to_bits() + 1 } else { f.to_bits() - 1 });
        for edge in [1e-5, 1e16] {
            for f in [step(step(edge, false), false), step(edge, false), edge, step(edge, true), step(edge, true)] {
                for f in [f, -f] {
                    let n = serde_json::Number::from_f64(f).unwrap();
                    assert_eq!(prints_with_exponent(&n), n.to_string().contains(['e', 'E']), "{n}");
                }
            }
        }
        assert!(!prints_with_exponent(&serde_json::Number::from_f64(9999999999999998.0).unwrap()));
        assert!(prints_with_exponent(&serde_json::Number::from_f64(1e16).unwrap()));
        assert!(!prints_with_exponent(&serde_json::Number::from_f64(1e-5).unwrap()));
        assert!(prints_with_exponent(&serde_json::Number::from_f64(step(1e-5, false)).unwrap()));
        for zero in [0.0, -0.0] {
            assert!(!prints_with_exponent(&serde_json::Number::from_f64(zero).unwrap()));
        }
        for n in [serde_json::Number::from(u64::MAX), serde_json::Number::from(i64::MIN)] {
            assert!(!prints_with_exponent(&n), "{n}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The log's entries (and so every leaf hash already integrated) must not change: the direct
        /// encoding is the `Value` path's bytes exactly.
        #[test]
        fn the_direct_encoding_is_the_served_json_byte_for_byte(e in stored_event()) {
            let direct = event_json_bytes(&e).unwrap();
            let via_value = serde_json::to_vec(&event_json(&e).unwrap()).unwrap();
            prop_assert_eq!(String::from_utf8(direct).unwrap(), String::from_utf8(via_value).unwrap());
        }
    }
}
