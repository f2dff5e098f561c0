//! The OpenAPI 3.1 description of the HTTP surface, built in code with `utoipa`'s model (served at
//! `GET /api/v1/openapi.json`, committed as `openapi/openapi.json`).
//!
//! It lives apart from the handlers on purpose: one table, [`OPERATIONS`], lists every route with its
//! parameters, body fields and answers, so that handler files stay free of documentation attributes.
//! Tests fail when a route of the router (`api/mod.rs`) is missing here, and when the committed file
//! differs from what this module builds (`UPDATE_OPENAPI=1` rewrites it).

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
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
    };
    RefOr::T(Schema::Object(b.build()))
}

/// What a successful answer is.
#[derive(Clone, Copy)]
enum Answer {
    /// A JSON object with this status.
    Json(&'static str),
    /// A JSON object with these fields (name, type, always present), status 200.
    Fields(&'static [(&'static str, T, bool)]),
    /// Either status, JSON (created or already there).
    JsonOr(&'static str, &'static str),
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

macro_rules! op {
    ($m:expr, $p:expr, $s:expr, auth: $a:expr, query: $q:expr, body: $b:expr, $ans:expr) => {
        Op { method: $m, path: $p, summary: $s, auth: $a, query: $q, body: $b, answer: $ans }
    };
}

/// Every route the router serves.
const OPERATIONS: &[Op] = &[
    op!(Get, "/health", "Liveness (no database)", auth: false, query: NONE, body: None, Json("200")),
    op!(Get, "/ready", "Readiness: one database round trip", auth: false, query: NONE, body: None, Json("200")),
    op!(Get, "/metrics", "Prometheus metrics", auth: false, query: NONE, body: None, Text),
    op!(Get, "/api/v1/openapi.json", "This document", auth: false, query: NONE, body: None, Json("200")),
    op!(Post, "/api/v1/ves/events/ingest", "Ingest signed VES events", auth: true, query: NONE,
        body: Some(&[("agentId", Uuid, true), ("events", Array, true)]), Json("200")),
    op!(Get, "/api/v1/ves/events", "A range of a stream's signed events", auth: true, query: RANGE, body: None, Json("200")),
    op!(Get, "/api/v1/ves/head", "A stream's head", auth: true, query: STREAM, body: None, Json("200")),
    op!(Get, "/api/v1/ves/entities/{entity_type}/{entity_id}", "An entity's history", auth: true, query: RANGE,
        body: None, Json("200")),
    op!(Get, "/api/v1/ves/sequencer", "Sequencer id and public keys", auth: true, query: NONE, body: None, Json("200")),
    op!(Post, "/api/v1/ves/commitments", "Commit a contiguous range", auth: true, query: NONE,
        body: Some(&[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("sequence_start", Int, true),
                     ("sequence_end", Int, true)]), JsonOr("200", "201")),
    op!(Get, "/api/v1/ves/commitments", "A stream's commitments", auth: true,
        query: &[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("anchored", Bool, false),
                 ("include_superseded", Bool, false)], body: None, Json("200")),
    op!(Post, "/api/v1/ves/commitments/anchor", "Commit the next range and anchor it", auth: true, query: NONE,
        body: Some(&[("tenant_id", Uuid, true), ("store_id", Uuid, true)]), JsonOr("200", "201")),
    op!(Post, "/api/v1/ves/anchor", "Anchor a commitment on the L2", auth: true, query: NONE,
        body: Some(&[("batch_id", Uuid, true)]), Json("200")),
    op!(Get, "/api/v1/ves/anchor/{batch_id}/verify", "Compare a commitment with the L2 registry", auth: true,
        query: NONE, body: None, Json("200")),
    op!(Get, "/api/v1/ves/commitments/consistency", "Consistency between two sizes of a stream", auth: true,
        query: &[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("from_size", Int, true), ("to_size", Int, false)],
        body: None, Json("200")),
    op!(Get, "/api/v1/ves/checkpoint", "The stream's signed checkpoint (C2SP signed note)", auth: true,
        query: STREAM, body: None, Text),
    op!(Get, "/api/v1/ves/commitments/{batch_id}", "One commitment", auth: true, query: NONE, body: None, Json("200")),
    op!(Post, "/api/v1/ves/commitments/{batch_id}/correct", "Supersede a commitment with a recomputed one",
        auth: true, query: NONE, body: Some(&[("reason", Str, true)]), JsonOr("200", "201")),
    op!(Post, "/api/v1/ves/proofs/verify", "Check an inclusion proof offline", auth: true, query: NONE,
        body: Some(&[("leaf_hash", Str, true), ("merkle_root", Str, true), ("proof_path", Array, true),
                     ("leaf_index", Int, true)]), Json("200")),
    op!(Get, "/api/v1/ves/proofs/{sequence_number}", "Inclusion proof of an event", auth: true,
        query: &[("tenant_id", Uuid, true), ("store_id", Uuid, true), ("batch_id", Uuid, false)], body: None,
        Json("200")),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/checkpoint", "The transparency log's newest checkpoint",
        auth: true, query: NONE, body: None, Text),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/tile/{path}", "A tlog tile or entry bundle", auth: true,
        query: NONE, body: None, Binary),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/proof/inclusion", "A tlog inclusion proof", auth: true,
        query: TLOG_ENTRY, body: None, Json("200")),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/proof/consistency", "A tlog consistency proof", auth: true,
        query: &[("from_size", Int, true), ("to_size", Int, false)], body: None, Json("200")),
    op!(Get, "/api/v1/ves/tlog/{tenant_id}/{store_id}/bundle", "A C2SP tlog-proof of one entry", auth: true,
        query: TLOG_ENTRY, body: None, Text),
    op!(Get, "/api/v1/admin/tlog/witnesses", "The transparency log's witnesses", auth: true, query: NONE,
        body: None, Json("200")),
    op!(Post, "/api/v1/events/ingest", "Ingest legacy (unsigned) events", auth: true, query: NONE,
        body: Some(&[("agent_id", Uuid, true), ("events", Array, true)]), Json("200")),
    op!(Get, "/api/v1/events", "A range of a stream (legacy shape)", auth: true, query: RANGE, body: None, Json("200")),
    op!(Get, "/api/v1/head", "A stream's head", auth: true, query: STREAM, body: None, Json("200")),
    op!(Get, "/api/v1/entities/{entity_type}/{entity_id}", "An entity's history (legacy shape)", auth: true,
        query: RANGE, body: None, Json("200")),
    op!(Post, "/api/v1/agents/keys", "Register an agent signing key", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, true), ("agentId", Uuid, true), ("keyId", Int, true), ("publicKey", Str, true)]),
        Json("200")),
    op!(Get, "/api/v1/agents/keys", "List agent signing keys", auth: true,
        query: &[("tenant_id", Uuid, true), ("agent_id", Uuid, false)], body: None, Json("200")),
    op!(Post, "/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/revoke", "Revoke an agent signing key",
        auth: true, query: NONE, body: Some(&[("reason", Str, false)]), Json("200")),
    op!(Post, "/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/rotate", "Rotate an agent signing key",
        auth: true, query: NONE, body: Some(&[("newKeyId", Int, true), ("publicKey", Str, true), ("graceSeconds", Int, false)]),
        Json("200")),
    op!(Get, "/api/v1/admin/status", "What the operator reads", auth: true, query: &[("streams", Bool, false)],
        body: None, Json("200")),
    op!(Get, "/api/v1/admin/dead-letters", "List dead letters", auth: true,
        query: &[("tenant_id", Uuid, false), ("store_id", Uuid, false), ("reason", Str, false), ("status", Str, false),
                 ("since", Str, false), ("until", Str, false), ("limit", Int, false), ("offset", Int, false)],
        body: None, Json("200")),
    op!(Post, "/api/v1/admin/dead-letters/retry", "Replay dead letters by id or filter", auth: true, query: NONE,
        body: Some(&[("ids", Array, false), ("filter", Object, false)]), Json("200")),
    op!(Get, "/api/v1/admin/dead-letters/{id}", "One dead letter", auth: true, query: NONE, body: None, Json("200")),
    op!(Delete, "/api/v1/admin/dead-letters/{id}", "Delete a dead letter", auth: true, query: NONE, body: None, Json("200")),
    op!(Post, "/api/v1/admin/dead-letters/{id}/retry", "Replay one dead letter", auth: true, query: NONE, body: None,
        Json("200")),
    op!(Post, "/api/v1/admin/dead-letters/purge", "Delete resolved (or pending) dead letters", auth: true,
        query: NONE, body: Some(&[("status", Str, false), ("tenantId", Uuid, false), ("storeId", Uuid, false),
                                  ("reason", Str, false)]), Json("200")),
    op!(Post, "/api/v1/admin/maintenance/vacuum", "VACUUM ANALYZE the sequencer's tables", auth: true, query: NONE,
        body: Some(&[("tables", Array, false)]), Json("200")),
    op!(Post, "/api/v1/admin/maintenance/terminate-idle-connections", "Terminate long-idle database sessions",
        auth: true, query: NONE, body: Some(&[("idleLongerThanSeconds", Int, true)]), Json("200")),
    op!(Post, "/api/v1/admin/verify", "Check the log, leaf runs and commitments", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, false), ("storeId", Uuid, false)]), Json("200")),
    op!(Post, "/api/v1/admin/verify/jobs", "Start a verification in the background", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, false), ("storeId", Uuid, false)]), Json("202")),
    op!(Get, "/api/v1/admin/verify/jobs/{id}", "A background verification's progress and findings", auth: true,
        query: NONE, body: None, Json("200")),
    op!(Post, "/api/v1/admin/streams/{tenant_id}/{store_id}/pause", "Pause a stream's ingest", auth: true,
        query: NONE, body: Some(&[("reason", Str, false)]), Json("200")),
    op!(Post, "/api/v1/admin/streams/{tenant_id}/{store_id}/resume", "Resume a stream's ingest", auth: true,
        query: NONE, body: None, Json("200")),
    op!(Post, "/api/v1/admin/api-keys", "Mint an API key", auth: true, query: NONE,
        body: Some(&[("tenantId", Uuid, true), ("storeIds", Array, false), ("permissions", Array, true),
                     ("rateLimit", Int, false), ("agentId", Uuid, false), ("label", Str, false)]), Json("201")),
    op!(Get, "/api/v1/admin/api-keys", "List API keys", auth: true, query: NONE, body: None, Json("200")),
    op!(Delete, "/api/v1/admin/api-keys/{id}", "Revoke an API key", auth: true, query: NONE, body: None, Json("200")),
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
        auth: true, query: NONE, body: None, Json("200")),
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

fn json_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema(Object))).build())
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
            Json(status) => b.response(status, json_response("OK")),
            Fields(fields) => b.response(
                "200",
                ResponseBuilder::new()
                    .description("OK")
                    .content("application/json", ContentBuilder::new().schema(Some(object(fields))).build())
                    .build(),
            ),
            JsonOr(a, c) => b.response(a, json_response("OK")).response(c, json_response("Created")),
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
        } else if op.path == "/ready" {
            b = b.response("503", json_response("The database is unreachable"));
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
