//! The OpenAPI 3.1 description of the HTTP surface, built in code with `utoipa`'s model (served at
//! `GET /api/v1/openapi.json`, committed as `openapi/openapi.json`).
//!
//! It lives apart from the handlers on purpose: one table, [`OPERATIONS`], lists every route with its
//! parameters, body fields and answers, so that handler files stay free of documentation attributes.
//! Tests fail when a route of the router (`api/mod.rs`) is missing here, and when the committed file
//! differs from what this module builds (`UPDATE_OPENAPI=1` rewrites it).

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};

/// A value's type, as documented.
#[derive(Clone, Copy)]
enum T {
    Uuid,
    Int,
    Str,
    Bool,
    Array,
    Object,
    /// Any JSON value, `null` included (optional values the answer spells as `null`).
    Any,
}

fn schema(t: T) -> RefOr<Schema> {
    let b = ObjectBuilder::new();
    let b = match t {
        T::Uuid => b.schema_type(Type::String).format(Some(SchemaFormat::Custom("uuid".into()))),
        T::Int => b.schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
        T::Str => b.schema_type(Type::String),
        T::Bool => b.schema_type(Type::Boolean),
        T::Array => b.schema_type(Type::Array),
        T::Object => b.schema_type(Type::Object),
        T::Any => b.schema_type(SchemaType::AnyValue),
    };
    RefOr::T(Schema::Object(b.build()))
}

/// What a successful answer is.
#[derive(Clone, Copy)]
enum Answer {
    /// A JSON object with these fields (name, type, always present), status 200.
    Fields(&'static [(&'static str, T, bool)]),
    /// The same with another status.
    FieldsAt(&'static str, &'static [(&'static str, T, bool)]),
    /// Either status (created or already there), a JSON object with these fields.
    FieldsOr(&'static str, &'static str, &'static [(&'static str, T, bool)]),
    /// Plain text.
    Text,
    /// Bytes.
    Binary,
    /// A JSON 501: the route is deliberately not served.
    NotImplemented,
}

/// One documented operation.
struct Op {
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    /// Needs a credential.
    auth: bool,
    query: &'static [(&'static str, T, bool)],
    /// JSON body fields (name, type, required); `None` for no body.
    body: Option<&'static [(&'static str, T, bool)]>,
    answer: Answer,
}

use Answer::*;
use HttpMethod::{Delete, Get, Post, Put};
use T::*;

const STREAM: &[(&str, T, bool)] = &[("tenant_id", Uuid, true), ("store_id", Uuid, true)];
const RANGE: &[(&str, T, bool)] =
    &[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("from", Int, false), ("limit", Int, false)];
const NONE: &[(&str, T, bool)] = &[];
const TLOG_ENTRY: &[(&str, T, bool)] =
    &[("sequence_number", Int, false), ("event_id", Uuid, false), ("leaf_hash", Str, false), ("tree_size", Int, false)];
const CURSOR: &[(&str, T, bool)] = &[
    ("tenantId", Uuid, true),
    ("storeId", Uuid, true),
    ("agentId", Uuid, true),
    ("acknowledgedSequence", Int, true),
    ("headSequence", Int, true),
    ("lag", Int, true),
];
const POLICY: &[(&str, T, bool)] = &[
    ("tenantId", Uuid, true),
    ("agentId", Uuid, true),
    ("allowedEventTypes", Array, true),
    ("allowedEntityTypes", Array, true),
    ("requireBaseVersion", Bool, true),
    ("enabled", Bool, true),
];

// The answers' fields, as the handlers build them (schemathesis checks every answer against these).
type F = &'static [(&'static str, T, bool)];
const HEALTH: F = &[("status", Str, true), ("service", Str, true), ("version", Str, true)];
const READY: F =
    &[("status", Str, true), ("database", Str, true), ("responseTimeMs", Int, true), ("pool", Object, true)];
const NOT_READY: F = &[("status", Str, true), ("database", Str, true), ("pool", Object, true), ("error", Object, true)];
const DOCUMENT: F = &[("openapi", Str, true), ("info", Object, true), ("paths", Object, true)];
const INGESTED: F = &[
    ("batchId", Uuid, true),
    ("eventsAccepted", Int, true),
    ("eventsRejected", Int, true),
    ("sequenceStart", Any, true),
    ("sequenceEnd", Any, true),
    ("headSequence", Int, true),
    ("rejections", Array, false),
    ("receipts", Array, false),
];
const LEGACY_INGESTED: F = &[
    ("batch_id", Uuid, true),
    ("events_accepted", Int, true),
    ("events_rejected", Int, true),
    ("assigned_sequence_start", Any, true),
    ("assigned_sequence_end", Any, true),
    ("head_sequence", Int, true),
    ("rejections", Array, false),
];
const EVENTS: F = &[
    ("events", Array, true),
    ("count", Int, true),
    ("next_sequence", Int, true),
    ("head_sequence", Int, true),
    ("has_more", Bool, true),
];
const LEGACY_EVENTS: F = &[("events", Array, true), ("count", Int, true)];
const HEAD: F = &[("head_sequence", Int, true), ("tenant_id", Uuid, true), ("store_id", Uuid, true)];
const ENTITY: F = &[
    ("entity_type", Str, true),
    ("entity_id", Str, true),
    ("events", Array, true),
    ("count", Int, true),
    ("total", Int, true),
    ("has_more", Bool, true),
];
const SEQUENCER: F = &[
    ("sequencer_id", Uuid, true),
    ("signature_alg", Str, true),
    ("public_key", Any, true),
    ("receipt_keys", Array, true),
    ("checkpoint_origin", Str, true),
    ("checkpoint_verifier_key", Any, true),
    ("version", Str, true),
];
const COMMITMENT: F = &[
    ("batch_id", Uuid, true),
    ("tenant_id", Uuid, true),
    ("store_id", Uuid, true),
    ("ves_version", Int, true),
    ("tree_depth", Int, true),
    ("leaf_count", Int, true),
    ("padded_leaf_count", Int, true),
    ("merkle_root", Str, true),
    ("prev_state_root", Str, true),
    ("new_state_root", Str, true),
    ("sequence_start", Int, true),
    ("sequence_end", Int, true),
    ("committed_at", Str, true),
    ("chain_id", Any, true),
    ("chain_tx_hash", Any, true),
    ("chain_block_number", Any, true),
    ("anchored_at", Any, true),
    ("is_anchored", Bool, true),
    ("corrects_batch_id", Any, true),
    ("superseded_by", Any, true),
    ("metadata", Any, true),
];
const COMMITMENTS: F = &[("count", Int, true), ("commitments", Array, true)];
const ANCHORED: F = &[
    ("batch_id", Uuid, true),
    ("status", Str, true),
    ("chain_id", Any, true),
    ("chain_tx_hash", Any, true),
    ("chain_block_number", Any, true),
    ("merkle_root", Str, true),
    ("prev_state_root", Str, true),
    ("new_state_root", Str, true),
    ("sequence_start", Int, true),
    ("sequence_end", Int, true),
];
const ANCHOR_CHECK: F = &[
    ("batch_id", Uuid, true),
    ("anchored_on_chain", Any, true),
    ("roots_match", Any, true),
    ("chain_tx_hash", Any, true),
];
const VES_CONSISTENCY: F = &[
    ("tenant_id", Uuid, true),
    ("store_id", Uuid, true),
    ("from_size", Int, true),
    ("from_state_root", Str, true),
    ("to_size", Int, true),
    ("to_state_root", Str, true),
    ("commitments", Array, true),
];
const PROOF_CHECK: F = &[("valid", Bool, true), ("leaf_hash", Str, true), ("merkle_root", Str, true)];
const VES_PROOF: F = &[
    ("sequence_number", Int, true),
    ("batch_id", Uuid, true),
    ("merkle_root", Str, true),
    ("leaf_hash", Str, true),
    ("leaf_index", Int, true),
    ("proof_path", Array, true),
    ("directions", Array, true),
];
const TLOG_INCLUSION: F = &[
    ("index", Int, true),
    ("sequence_number", Int, true),
    ("tree_size", Int, true),
    ("leaf_hash", Str, true),
    ("root_hash", Str, true),
    ("proof", Array, true),
];
const TLOG_CONSISTENCY: F = &[
    ("from_size", Int, true),
    ("to_size", Int, true),
    ("from_root", Str, true),
    ("to_root", Str, true),
    ("proof", Array, true),
];
const WITNESSES: F = &[("witnesses", Array, true), ("streams", Array, true)];
const LISTED_KEYS: F = &[("count", Int, true), ("keys", Array, true)];
const AGENT_KEY_REGISTERED: F = &[
    ("success", Bool, true),
    ("tenantId", Uuid, true),
    ("agentId", Uuid, true),
    ("keyId", Int, true),
    ("keyAlgorithm", Int, true),
    ("message", Str, true),
];
const AGENT_KEY_REVOKED: F = &[("success", Bool, true), ("key", Object, true)];
const AGENT_KEY_ROTATED: F = &[("success", Bool, true), ("oldKey", Object, true), ("newKey", Object, true)];
const STATUS: F = &[
    ("version", Str, true),
    ("database", Object, true),
    // The rest only while the database is connected.
    ("schemaVersion", Int, false),
    ("deadLetters", Object, false),
    ("anchoring", Object, false),
    ("ingestion", Object, false),
    ("transparencyLog", Object, false),
    ("streams", Array, false),
];
const DEAD_LETTERS: F = &[("deadLetters", Array, true), ("count", Int, true), ("nextOffset", Any, true)];
const DEAD_LETTER: F = &[
    ("id", Uuid, true),
    ("eventId", Uuid, true),
    ("tenantId", Uuid, true),
    ("storeId", Uuid, true),
    ("agentId", Any, true),
    ("eventType", Any, true),
    ("source", Str, true),
    ("reason", Str, true),
    ("errorMessage", Str, true),
    ("status", Str, true),
    ("retryCount", Int, true),
    ("lastRetryAt", Any, true),
    ("resolvedAt", Any, true),
    ("resolvedSequenceNumber", Any, true),
    ("createdAt", Str, true),
    ("updatedAt", Str, true),
    ("payload", Any, true),
];
const RETRIED: F = &[
    ("id", Uuid, true),
    ("eventId", Uuid, true),
    ("outcome", Str, true),
    ("reason", Str, false),
    ("sequenceNumber", Int, false),
];
const RETRIED_MANY: F =
    &[("attempted", Int, true), ("succeeded", Int, true), ("failed", Int, true), ("results", Array, true)];
const DELETED_LETTER: F = &[("id", Uuid, true), ("deleted", Bool, true)];
const PURGED: F = &[("deleted", Int, true), ("status", Str, true)];
const VACUUMED: F = &[("tables", Array, true), ("durationMs", Int, true)];
const TERMINATED: F = &[("terminated", Int, true), ("connections", Array, true)];
const VERIFY_BODY: F = &[("tenantId", Uuid, false), ("storeId", Uuid, false), ("receiptKeys", Array, false)];
const REPORT: F = &[
    ("ok", Bool, true),
    ("streamsChecked", Int, true),
    ("eventsChecked", Int, true),
    ("commitmentsChecked", Int, true),
    ("receiptSignaturesChecked", Int, true),
    ("receiptSignaturesUnchecked", Int, true),
    ("receiptKeysPinned", Bool, false),
    ("findings", Array, true),
];
const JOB: F = &[
    ("id", Uuid, true),
    ("state", Str, true),
    ("streamsTotal", Int, true),
    ("report", Object, true),
    ("error", Str, false),
    ("startedAt", Str, true),
    ("finishedAt", Str, false),
];
const PAUSED: F = &[("tenantId", Uuid, true), ("storeId", Uuid, true), ("paused", Bool, true), ("reason", Any, true)];
const API_KEY: F = &[
    ("id", Uuid, true),
    ("keyHashPrefix", Str, true),
    ("tenantId", Uuid, true),
    ("storeIds", Any, true),
    ("permissions", Array, true),
    ("agentId", Any, true),
    ("rateLimit", Any, true),
    ("label", Any, true),
    ("active", Bool, true),
    ("createdAt", Str, true),
    ("revokedAt", Any, true),
];
const API_KEY_MINTED: F = &[
    ("id", Uuid, true),
    ("apiKey", Str, true),
    ("keyHashPrefix", Str, true),
    ("tenantId", Uuid, true),
    ("storeIds", Any, true),
    ("permissions", Array, true),
    ("agentId", Any, true),
    ("rateLimit", Any, true),
    ("label", Any, true),
    ("active", Bool, true),
    ("createdAt", Str, true),
    ("revokedAt", Any, true),
];
const SUCCESS: F = &[("success", Bool, true), ("message", Str, true)];

macro_rules! op {
    ($m:expr, $p:expr, $s:expr, auth: $a:expr, query: $q:expr, body: $b:expr, $ans:expr) => {
        Op { method: $m, path: $p, summary: $s, auth: $a, query: $q, body: $b, answer: $ans }
    };
}

/// Every route the router serves.
const OPERATIONS: &[Op] = &[
    op!(Get, "/health", "Liveness (no database)", auth: false, query: NONE, body: None, Fields(HEALTH)),
    op!(Get, "/ready", "Readiness: one database round trip", auth: false, query: NONE, body: None, Fields(READY)),
    op!(Get, "/metrics", "Prometheus metrics", auth: false, query: NONE, body: None, Text),
    op!(Get, "/api/v1/openapi.json", "This document", auth: false, query: NONE, body: None, Fields(DOCUMENT)),
    op!(Post, "/api/v1/ves/events/ingest", "Ingest signed VES events", auth: true, query: NONE,
        body: Some(&[("agentId", Uuid, true), ("events", Array, true)]), Fields(INGESTED)),
    op!(Get, "/api/v1/ves/events", "A range of a stream's signed events", auth: true, query: RANGE, body: None, Fields(EVENTS)),
    op!(Get, "/api/v1/ves/head", "A stream's head", auth: true, query: STREAM, body: None, Fields(HEAD)),
    op!(Get, "/api/v1/ves/entities/{entity_type}/{entity_id}", "An entity's history", auth: true, query: RANGE,
        body: None, Fields(ENTITY)),
    op!(Get, "/api/v1/ves/sequencer", "Sequencer id and public keys", auth: true, query: NONE, body: None, Fields(SEQUENCER)),
    op!(Post, "/api/v1/ves/commitments", "Commit a contiguous range", auth: true, query: NONE,
        body: Some(&[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("sequence_start", Int, true),
                     ("sequence_end", Int, true)]), FieldsOr("200", "201", COMMITMENT)),
    op!(Get, "/api/v1/ves/commitments", "A stream's commitments", auth: true,
        query: &[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("anchored", Bool, false),
                 ("include_superseded", Bool, false)], body: None, Fields(COMMITMENTS)),
    op!(Post, "/api/v1/ves/commitments/anchor", "Commit the next range and anchor it", auth: true, query: NONE,
        body: Some(&[("tenant_id", Uuid, true), ("store_id", Uuid, true)]), FieldsOr("200", "201", ANCHORED)),
    op!(Post, "/api/v1/ves/anchor", "Anchor a commitment on the L2", auth: true, query: NONE,
        body: Some(&[("batch_id", Uuid, true)]), Fields(ANCHORED)),
    op!(Get, "/api/v1/ves/anchor/{batch_id}/verify", "Compare a commitment with the L2 registry", auth: true,
        query: NONE, body: None, Fields(ANCHOR_CHECK)),
    op!(Get, "/api/v1/ves/commitments/consistency", "Consistency between two sizes of a stream", auth: true,
        query: &[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("from_size", Int, true), ("to_size", Int, false)],
        body: None, Fields(VES_CONSISTENCY)),
    op!(Get, "/api/v1/ves/checkpoint", "The stream's signed checkpoint (C2SP signed note)", auth: true,
        query: STREAM, body: None, Text),
    op!(Get, "/api/v1/ves/commitments/{batch_id}", "One commitment", auth: true, query: NONE, body: None, Fields(COMMITMENT)),
    op!(Post, "/api/v1/ves/commitments/{batch_id}/correct", "Supersede a commitment with a recomputed one",
        auth: true, query: NONE, body: Some(&[("reason", Str, true)]), FieldsOr("200", "201", COMMITMENT)),
    op!(Post, "/api/v1/ves/proofs/verify", "Check an inclusion proof offline", auth: true, query: NONE,
        body: Some(&[("leaf_hash", Str, true), ("merkle_root", Str, true), ("proof_path", Array, true),
                     ("leaf_index", Int, true)]), Fields(PROOF_CHECK)),
    op!(Get, "/api/v1/ves/proofs/{sequence_number}", "Inclusion proof of an event", auth: true,
        query: &[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("batch_id", Uuid, false)], body: None,
        Fields(VES_PROOF)),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/checkpoint", "The transparency log's newest checkpoint",
        auth: true, query: NONE, body: None, Text),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/tile/{path}", "A tlog tile or entry bundle", auth: true,
        query: NONE, body: None, Binary),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/proof/inclusion", "A tlog inclusion proof", auth: true,
        query: TLOG_ENTRY, body: None, Fields(TLOG_INCLUSION)),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/proof/consistency", "A tlog consistency proof", auth: true,
        query: &[("from_size", Int, true), ("to_size", Int, false)], body: None, Fields(TLOG_CONSISTENCY)),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/bundle", "A C2SP tlog-proof of one entry", auth: true,
        query: TLOG_ENTRY, body: None, Text),
    op!(Get, "/api/v1/admin/tlog/witnesses", "The transparency log's witnesses", auth: true, query: NONE,
        body: None, Fields(WITNESSES)),
    op!(Post, "/api/v1/events/ingest", "Ingest legacy (unsigned) events", auth: true, query: NONE,
        body: Some(&[("agent_id", Uuid, true), ("events", Array, true)]), Fields(LEGACY_INGESTED)),
    op!(Get, "/api/v1/events", "A range of a stream (legacy shape)", auth: true, query: RANGE, body: None, Fields(LEGACY_EVENTS)),
    op!(Get, "/api/v1/head", "A stream's head", auth: true, query: STREAM, body: None, Fields(HEAD)),
    op!(Get, "/api/v1/entities/{entity_type}/{entity_id}", "An entity's history (legacy shape)", auth: true,
        query: RANGE, body: None, Fields(ENTITY)),
    op!(Post, "/api/v1/agents/keys", "Register an agent signing key", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, true), ("agentId", Uuid, true), ("keyId", Int, true), ("publicKey", Str, true)]),
        Fields(AGENT_KEY_REGISTERED)),
    op!(Get, "/api/v1/agents/keys", "List agent signing keys", auth: true,
        query: &[("tenant_id", Uuid, true), ("agent_id", Uuid, false)], body: None, Fields(LISTED_KEYS)),
    op!(Post, "/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/revoke", "Revoke an agent signing key",
        auth: true, query: NONE, body: Some(&[("reason", Str, false)]), Fields(AGENT_KEY_REVOKED)),
    op!(Post, "/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/rotate", "Rotate an agent signing key",
        auth: true, query: NONE, body: Some(&[("newKeyId", Int, true), ("publicKey", Str, true), ("graceSeconds", Int, false)]),
        Fields(AGENT_KEY_ROTATED)),
    op!(Get, "/api/v1/admin/status", "What the operator reads", auth: true, query: &[("streams", Bool, false)],
        body: None, Fields(STATUS)),
    op!(Get, "/api/v1/admin/dead-letters", "List dead letters", auth: true,
        query: &[("tenant_id", Uuid, false), ("store_id", Uuid, false), ("reason", Str, false), ("status", Str, false),
                 ("since", Str, false), ("until", Str, false), ("limit", Int, false), ("offset", Int, false)],
        body: None, Fields(DEAD_LETTERS)),
    op!(Post, "/api/v1/admin/dead-letters/retry", "Replay dead letters by id or filter", auth: true, query: NONE,
        body: Some(&[("ids", Array, false), ("filter", Object, false)]), Fields(RETRIED_MANY)),
    op!(Get, "/api/v1/admin/dead-letters/{id}", "One dead letter", auth: true, query: NONE, body: None, Fields(DEAD_LETTER)),
    op!(Delete, "/api/v1/admin/dead-letters/{id}", "Delete a dead letter", auth: true, query: NONE, body: None, Fields(DELETED_LETTER)),
    op!(Post, "/api/v1/admin/dead-letters/{id}/retry", "Replay one dead letter", auth: true, query: NONE, body: None,
        Fields(RETRIED)),
    op!(Post, "/api/v1/admin/dead-letters/purge", "Delete resolved (or pending) dead letters", auth: true,
        query: NONE, body: Some(&[("status", Str, false), ("tenantId", Uuid, false), ("storeId", Uuid, false),
                                  ("reason", Str, false)]), Fields(PURGED)),
    op!(Post, "/api/v1/admin/maintenance/vacuum", "VACUUM ANALYZE the sequencer's tables", auth: true, query: NONE,
        body: Some(&[("tables", Array, false)]), Fields(VACUUMED)),
    op!(Post, "/api/v1/admin/maintenance/terminate-idle-connections", "Terminate long-idle database sessions",
        auth: true, query: NONE, body: Some(&[("idleLongerThanSeconds", Int, true)]), Fields(TERMINATED)),
    op!(Post, "/api/v1/admin/verify", "Check the log, leaf runs and commitments", auth: true, query: NONE,
        body: Some(VERIFY_BODY), Fields(REPORT)),
    op!(Post, "/api/v1/admin/verify/jobs", "Start a verification in the background", auth: true, query: NONE,
        body: Some(VERIFY_BODY), FieldsAt("202", JOB)),
    op!(Get, "/api/v1/admin/verify/jobs/{id}", "A background verification's progress and findings", auth: true,
        query: NONE, body: None, Fields(JOB)),
    op!(Post, "/api/v1/admin/streams/{tenant_id}/{store_id}/pause", "Pause a stream's ingest", auth: true,
        query: NONE, body: Some(&[("reason", Str, false)]), Fields(PAUSED)),
    op!(Post, "/api/v1/admin/streams/{tenant_id}/{store_id}/resume", "Resume a stream's ingest", auth: true,
        query: NONE, body: None, Fields(PAUSED)),
    op!(Post, "/api/v1/admin/api-keys", "Mint an API key", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, true), ("storeIds", Array, false), ("permissions", Array, true),
                     ("rateLimit", Int, false), ("agentId", Uuid, false), ("label", Str, false)]), FieldsAt("201", API_KEY_MINTED)),
    op!(Get, "/api/v1/admin/api-keys", "List API keys", auth: true, query: NONE, body: None, Fields(LISTED_KEYS)),
    op!(Delete, "/api/v1/admin/api-keys/{id}", "Revoke an API key", auth: true, query: NONE, body: None, Fields(API_KEY)),
    op!(Get, "/api/v1/ves/cursors/{agent_id}", "An agent's durable cursor", auth: true, query: STREAM, body: None,
        Fields(CURSOR)),
    op!(Put, "/api/v1/ves/cursors/{agent_id}", "Acknowledge up to a sequence number", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, true), ("storeId", Uuid, true), ("sequenceNumber", Int, true)]), Fields(CURSOR)),
    op!(Post, "/api/v1/agents/{agent_id}/api-keys", "Mint an API key bound to the agent", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, false), ("storeIds", Array, false), ("readOnly", Bool, false),
                     ("admin", Bool, false), ("rateLimit", Int, false), ("name", Str, false)]),
        Fields(&[("success", Bool, true), ("apiKey", Str, true), ("keyHashPrefix", Str, true), ("permissions", Str, true)])),
    op!(Get, "/api/v1/agents/{agent_id}/api-keys", "The agent's API keys", auth: true, query: NONE, body: None,
        Fields(&[("count", Int, true), ("keys", Array, true)])),
    op!(Delete, "/api/v1/agents/{agent_id}/api-keys/{key_prefix}", "Revoke an agent's API key by hash prefix",
        auth: true, query: NONE, body: None, Fields(SUCCESS)),
    op!(Get, "/api/v1/agents/{agent_id}/policy", "The agent's event policy", auth: true,
        query: &[("tenant_id", Uuid, true)], body: None, Fields(POLICY)),
    op!(Put, "/api/v1/agents/{agent_id}/policy", "Set the agent's event policy", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, true), ("allowedEventTypes", Array, false), ("allowedEntityTypes", Array, false),
                     ("requireBaseVersion", Bool, false), ("maxPayloadBytes", Int, false), ("enabled", Bool, false)]),
        Fields(POLICY)),
    op!(Get, "/api/v1/projections/{entity_type}/{entity_id}", "Not served: no materialised projections", auth: true,
        query: NONE, body: None, NotImplemented),
    op!(Get, "/api/v1/ves/validity/{batch_id}/inputs", "Not served: STARK proofs are out of scope", auth: true,
        query: NONE, body: None, NotImplemented),
    op!(Get, "/api/v1/ves/validity/{batch_id}/proofs", "Not served: STARK proofs are out of scope", auth: true,
        query: NONE, body: None, NotImplemented),
    op!(Post, "/api/v1/ves/validity/{batch_id}/proofs", "Not served: STARK proofs are out of scope", auth: true,
        query: NONE, body: None, NotImplemented),
    op!(Get, "/api/v1/ves/compliance/{event_id}/proofs", "Not served: STARK proofs are out of scope", auth: true,
        query: NONE, body: None, NotImplemented),
    op!(Post, "/api/v1/ves/compliance/{event_id}/proofs", "Not served: STARK proofs are out of scope", auth: true,
        query: NONE, body: None, NotImplemented),
    op!(Get, "/api/v1/x402/capabilities", "Not served: x402 payments are out of scope", auth: true, query: NONE,
        body: None, NotImplemented),
    op!(Post, "/api/v1/x402/payments", "Not served: x402 payments are out of scope", auth: true, query: NONE,
        body: None, NotImplemented),
];

/// The error answers every authenticated operation may give (the error shape of `crate::error`).
const ERRORS: &[(&str, &str)] = &[
    ("400", "Malformed request or invalid value"),
    ("401", "Missing or invalid credential"),
    ("403", "The credential may not do this"),
    ("404", "No such resource"),
    ("409", "Conflict (exists already, or a gap in the log)"),
    ("413", "Body, batch or payload over its limit"),
    ("422", "JSON of the wrong shape"),
    ("429", "Rate limited; see Retry-After"),
    ("503", "Unavailable; see Retry-After"),
    ("504", "Request timed out"),
];

fn path_param_type(name: &str) -> T {
    match name {
        "sequence_number" | "key_id" => Int,
        "entity_type" | "entity_id" | "key_prefix" | "path" => Str,
        _ => Uuid,
    }
}

/// An object with these properties (the required ones listed as such).
fn object(fields: &[(&str, T, bool)]) -> ObjectBuilder {
    let mut o = ObjectBuilder::new().schema_type(Type::Object);
    for (name, t, required) in fields {
        o = o.property(*name, schema(*t));
        if *required {
            o = o.required(*name);
        }
    }
    o
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build())
        .build()
}

fn fields_response(description: &str, fields: F) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(object(fields))).build())
        .build()
}

fn error_schema() -> Schema {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let inner = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("code", string().description(Some("Stable machine-readable code, also in x-error-code")))
        .required("code")
        .property("numeric_code", ObjectBuilder::new().schema_type(Type::Integer))
        .required("numeric_code")
        .property("message", string())
        .required("message")
        .property("retry_after", ObjectBuilder::new().schema_type(Type::Integer));
    Schema::Object(ObjectBuilder::new().schema_type(Type::Object).property("error", inner).required("error").build())
}

/// The document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for op in OPERATIONS {
        let mut b = OperationBuilder::new().summary(Some(op.summary)).operation_id(Some(format!(
            "{}{}",
            method_name(&op.method),
            op.path.replace(['/', '{', '}', '.', '-'], "_")
        )));
        for segment in op.path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            b = b.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(schema(path_param_type(name)))),
            );
        }
        for (name, t, required) in op.query {
            b = b.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .required(if *required { Required::True } else { Required::False })
                    .schema(Some(schema(*t))),
            );
        }
        if let Some(fields) = op.body {
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", ContentBuilder::new().schema(Some(object(fields))).build())
                    .build(),
            ));
        }
        b = match op.answer {
            Fields(fields) => b.response("200", fields_response("OK", fields)),
            FieldsAt(status, fields) => b.response(status, fields_response("OK", fields)),
            FieldsOr(a, c, fields) => {
                b.response(a, fields_response("OK", fields)).response(c, fields_response("Created", fields))
            }
            Text => b.response(
                "200",
                ResponseBuilder::new()
                    .description("OK")
                    .content("text/plain", ContentBuilder::new().schema(Some(schema(Str))).build())
                    .build(),
            ),
            Binary => b.response(
                "200",
                ResponseBuilder::new()
                    .description("OK")
                    .content("application/octet-stream", ContentBuilder::new().schema(Some(schema(Str))).build())
                    .build(),
            ),
            NotImplemented => b.response("501", error_response("Deliberately not served; the message says why")),
        };
        if op.auth {
            for (status, description) in ERRORS {
                b = b.response(*status, error_response(description));
            }
            b = b
                .security(SecurityRequirement::new("apiKey", Vec::<String>::new()))
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
            if public_if_listed(op) {
                // NB: the empty requirement is OpenAPI's "or no credential at all".
                b = b.security(SecurityRequirement::default()).description(Some(
                    "Answers without any credential (and looks at none) when the stream is listed in \
                     `TLOG_PUBLIC_READ`; its tiles are then `Cache-Control: public`. Other streams need read access.",
                ));
            }
        } else if op.path == "/ready" {
            b = b.response("503", fields_response("The database is unreachable", NOT_READY));
        }
        paths = paths.path(op.path, utoipa::openapi::PathItem::new(op.method.clone(), b.build()));
    }
    let components = ComponentsBuilder::new()
        .schema("Error", error_schema())
        .security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An `ss_` API key (also accepted as `Authorization: ApiKey <key>`)",
            ))),
        )
        .security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()))
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("StateSet sequencer")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Verifiable event sequencer: signed VES ingest, gap-free sequencing, Merkle commitments, L2 anchoring. \
                     Every error is `{\"error\":{\"code\",\"numeric_code\",\"message\"}}`.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

/// Whether the route table serves this operation without a credential for the streams listed in
/// `TLOG_PUBLIC_READ` ([`super::routes::Access::PublicIfListed`]).
fn public_if_listed(op: &Op) -> bool {
    super::routes::route_table().iter().any(|route| {
        route.access == super::routes::Access::PublicIfListed
            && route.method.as_str().eq_ignore_ascii_case(method_name(&op.method))
            && route.path.replace("{*", "{") == op.path
    })
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        Get => "get",
        Post => "post",
        Put => "put",
        Delete => "delete",
        _ => "other",
    }
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(document_json).clone();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(METHOD, path)` of every `.route(...)` in the router's source; `{*rest}` catch-alls end in `*`.
    fn router_routes() -> Vec<(String, String)> {
        super::super::routes::route_table()
            .into_iter()
            .map(|route| {
                let path = match route.path.find("{*") {
                    Some(i) => format!("{}*", &route.path[..i]),
                    None => route.path.to_string(),
                };
                (route.method.to_string(), path)
            })
            .collect()
    }

    #[test]
    fn every_route_of_the_router_is_in_the_document() {
        let doc = serde_json::to_value(document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let routes = router_routes();
        assert!(routes.len() > 40, "the router's routes were not found: {routes:?}");
        for known in
            [("GET", "/api/v1/ves/head"), ("PUT", "/api/v1/ves/cursors/{agent_id}"), ("POST", "/api/v1/x402/*")]
        {
            assert!(routes.contains(&(known.0.to_string(), known.1.to_string())), "{known:?} not parsed: {routes:?}");
        }
        let mut missing = Vec::new();
        for (method, path) in &routes {
            let found = match path.strip_suffix('*') {
                Some(prefix) => paths.keys().any(|p| p.starts_with(prefix)),
                None => paths.get(path).is_some_and(|item| item.get(method.to_lowercase()).is_some()),
            };
            if !found {
                missing.push(format!("{method} {path}"));
            }
        }
        assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_error_shape() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["components"]["schemas"]["Error"]["required"], serde_json::json!(["error"]));
        let ingest = &doc["paths"]["/api/v1/ves/events/ingest"]["post"];
        assert_eq!(
            ingest["responses"]["429"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
    }

    #[test]
    fn every_json_answer_names_its_fields() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut untyped = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let Some(schema) = response.pointer("/content/application~1json/schema") else { continue };
                    let typed =
                        schema.get("$ref").is_some() || schema["properties"].as_object().is_some_and(|p| !p.is_empty());
                    if !typed {
                        untyped.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(untyped.is_empty(), "JSON answers documented without their fields: {untyped:?}");
    }

    #[test]
    fn the_transparency_log_reads_say_a_listed_stream_needs_no_credential_and_nothing_else_does() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut optional = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let security = op["security"].as_array().cloned().unwrap_or_default();
                if security.iter().any(|r| r.as_object().is_some_and(|r| r.is_empty())) {
                    assert!(security.len() > 1, "{method} {path}: credentials are still accepted");
                    optional.push(format!("{method} {path}"));
                }
            }
        }
        optional.sort();
        let tlog = "/api/v1/ves/tlog/{tenant_id}/{store_id}";
        let mut expected: Vec<String> = ["bundle", "checkpoint", "proof/consistency", "proof/inclusion", "tile/{path}"]
            .iter()
            .map(|route| format!("get {tlog}/{route}"))
            .collect();
        expected.sort();
        assert_eq!(optional, expected);
    }

    #[test]
    fn the_committed_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
        let generated = document_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi")).unwrap();
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p stateset-sequencer --lib openapi` and commit it"
        );
    }
}
