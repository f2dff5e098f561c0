//! The HTTP surface: router, request plumbing (auth, metrics, timeouts, JSON errors) over the shared
//! state ([`crate::state`], re-exported here). Handlers parse and authorise, call a domain service or
//! the store, and shape the answer; they hold no business rules of their own.

mod admin;
mod agent_keys;
mod agents;
mod anchor;
mod api_keys;
mod commitments;
mod compat;
mod cursors;
mod events;
mod health;
mod ingest;
mod openapi;
pub mod routes;
mod tlog;

pub use crate::state::{AppState, SharedState};

use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::auth::Caller;
use crate::error::Error;
use crate::metrics::{HttpLabels, RouteLabels};

/// The whole HTTP service: the router with its middleware, per connection as hyper serves it.
///
/// Only what must see the matched route is layered on the [`Router`], because axum wraps every route in
/// each such layer separately, and each wrapping level clones everything beneath it, boxed, on every
/// request: the eight levels this service had cost about 52 of the 158 allocations of a one-event
/// ingest (`scripts/allocs-per-request`). So the request id and the default body limit wrap the router
/// once, from outside, and the router layers one level for all routes ([`observe`], which also refuses
/// a declared oversize body) and one more for the routes that need a credential ([`authenticate`],
/// which also admits the body).
pub fn service(
    state: SharedState,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body_size_bytes))
        .service(router(state))
}

/// The router from the route table ([`routes`]), with the middleware that needs the matched route.
fn router(state: SharedState) -> Router {
    let routes::Routers { public, public_if_listed, authenticated } = routes::routers();
    let api = authenticated.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let log_reads =
        public_if_listed.route_layer(middleware::from_fn_with_state(state.clone(), public_log_or_authenticate));
    public
        .merge(api)
        .merge(log_reads)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The routes the newer upstream clients (0.8/0.9 Node `VesClient`, Python SDK) call: cursors, agent
/// API keys and policies, and the 501s of what stays out of scope.
async fn not_found() -> Error {
    Error::NotFound("No such route".into())
}

/// Resolves the credential, applies the rate limits, and hands the [`Caller`] to the handler. A
/// request waiting on a database that stopped answering (a black-holed network) ends with a 503 once
/// the database watch notices, not when TCP gives up minutes later.
async fn authenticate(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let req_reports_outage =
        req.extensions().get::<MatchedPath>().is_some_and(|path| path.as_str() == "/api/v1/admin/status");
    let served = async {
        let mut req = req;
        let caller = match state.auth.authenticate(req.headers()).await {
            Ok(caller) => state.limits.check(&caller).await.map(|()| caller),
            Err(e) => Err(e),
        };
        match caller {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                admit(&state, req, next).await
            }
            Err(e) => e.into_response(),
        }
    };
    // NB: the admin status answers during an outage too: it reports `connected: false` (the operator's
    // Degraded/DatabaseUnreachable) and bounds its own database check.
    if req_reports_outage {
        return served.await;
    }
    while_database_answers(&state, served).await
}

/// `served`, unless the database is unreachable or becomes so meanwhile: then a 503.
async fn while_database_answers(state: &SharedState, served: impl Future<Output = Response>) -> Response {
    let unavailable = || Error::Database(sqlx::Error::PoolTimedOut).into_response();
    if !state.db_watch.reachable() && !state.db_watch.recheck(state.config.db_acquire_timeout).await {
        return unavailable();
    }
    tokio::select! {
        response = served => response,
        () = state.db_watch.unreachable() => unavailable(),
    }
}

/// The way in of [`routes::Access::PublicIfListed`] routes. For a stream listed in `TLOG_PUBLIC_READ`
/// no credential is asked for or looked at, and no tenant's rate limit is charged: the handler gets a
/// reader of that one stream, so every caller gets the same answer (which shared caches may keep).
/// Any other stream goes through [`authenticate`] exactly as a `Stream(Read)` route would.
async fn public_log_or_authenticate(
    State(state): State<SharedState>,
    params: RawPathParams,
    mut req: Request,
    next: Next,
) -> Response {
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).and_then(|(_, v)| uuid::Uuid::try_parse(v).ok());
    if let (Some(tenant_id), Some(store_id)) = (param("tenant_id"), param("store_id")) {
        let stream = crate::store::events::StreamKey { tenant_id, store_id };
        if state.config.tlog.public_read.covers(stream) {
            match state.limits.check_public_read() {
                Ok(()) => {}
                // NB: the anonymous allowance is spent; a caller who brought a credential is answered as
                // an authenticated reader (charged to its tenant), so anonymous load cannot lock it out.
                Err(_) if crate::auth::presents_credential(req.headers()) => {
                    return authenticate(State(state), req, next).await;
                }
                Err(e) => return e.into_response(),
            }
            req.extensions_mut().insert(Caller::public_reader_of(stream));
            return while_database_answers(&state, admit(&state, req, next)).await;
        }
    }
    authenticate(State(state), req, next).await
}

/// A declared body over `MAX_BODY_SIZE_BYTES` is refused at once (413), without waiting for its bytes
/// and before anything else is done for the request.
fn refuse_oversize(state: &SharedState, req: &Request) -> Option<Response> {
    let max = state.config.max_body_size_bytes;
    let n = declared_length(req).filter(|n| *n > max as u64)?;
    let mut response =
        Error::PayloadTooLarge(format!("request body of {n} bytes exceeds the limit of {max} bytes")).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(response)
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
}

/// Admission of an authenticated request, which [`authenticate`] runs next: its body's bytes are
/// reserved from the in-flight budget (`MAX_INFLIGHT_BODY_BYTES`; a body of unknown length reserves the
/// maximum), the body is read, and path, query and body values PostgreSQL would refuse are refused with a
/// 400 naming the field ([`crate::validate`]).
async fn admit(state: &SharedState, req: Request, next: Next) -> Response {
    let max = state.config.max_body_size_bytes;
    let bytes = match declared_length(&req) {
        Some(n) => n as usize,
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => max,
        None => 0,
    };
    let _permit = match state.body_budget.admit(bytes, crate::limits::BODY_BUDGET_WAIT).await {
        Ok(permit) => permit,
        Err(e) => return e.into_response(),
    };
    let template = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let checked = crate::validate::check_path(template.as_deref(), req.uri().path())
        .and_then(|()| req.uri().query().map_or(Ok(()), crate::validate::check_query));
    if let Err(e) = checked {
        return e.into_response();
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, max).await {
        Ok(body) => body,
        Err(e) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                Error::PayloadTooLarge(format!("request body exceeds the limit of {max} bytes")).into_response()
            } else {
                Error::BadRequest(format!("cannot read the request body: {e}")).into_response()
            };
        }
    };
    if let Err(e) = crate::validate::check_body(&body) {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(body))).await
}

/// Answers the framework gives on its own (405, 404, 415, 413, extractor 400s, timeouts) in the JSON
/// error shape every other answer has.
async fn json_error_shape(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text =
        axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let (code, numeric) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", 3005),
        StatusCode::NOT_FOUND => ("RESOURCE_NOT_FOUND", 4001),
        StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", 3004),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("UNSUPPORTED_MEDIA_TYPE", 3006),
        StatusCode::REQUEST_TIMEOUT => ("TIMEOUT", 8003),
        s if s.is_server_error() => ("INTERNAL_ERROR", 8999),
        _ => ("INVALID_REQUEST", 3001),
    };
    let message = if status.is_server_error() || text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    let body = serde_json::json!({"error": {"code": code, "numeric_code": numeric, "message": message}});
    let mut response = (status, axum::Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response.headers_mut().insert("x-error-code", HeaderValue::from_static(code));
    response
}

/// Per-route counts and latencies, the request timeout and the response headers every answer carries;
/// a declared oversize body is refused here ([`refuse_oversize`]), before anything else is done.
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let mut response = if let Some(refused) = refuse_oversize(&state, &req) {
        refused
    } else {
        match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
            Ok(r) => json_error_shape(r).await,
            Err(_) => Error::Timeout.into_response(),
        }
    };
    let status = response.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels { method: method.clone(), route: route.clone(), status })
        .inc();
    state.metrics.http_latency.get_or_create(&RouteLabels { method, route }).observe(start.elapsed().as_secs_f64());
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A JSON body, read whatever its `Content-Type` says (the runbook's `curl -d '{...}'` sends
/// `application/x-www-form-urlencoded`), with JSON errors: 413 over the body limit, 400 for malformed
/// JSON, 422 for JSON of the wrong shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + 'static,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge(rejection.body_text())
            } else {
                Error::BadRequest(rejection.body_text())
            }
        })?;
        if bytes.len() > crate::compute::INLINE_PARSE_MAX {
            return crate::compute::run("request body parse", move || parse_json(&bytes)).await?.map(ApiJson);
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON request body as [`ApiJson`] does.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // NB: the path of a failure is tracked only once there is one: tracking it costs about a third
    // of the parse (every event of every ingest request). The same bytes fail the same way again.
    // The body's UTF-8 is checked once, so that serde_json does not check every string it reads
    // again (`from_str` trusts its input); a body that is not UTF-8 fails below as it always did.
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(value) = serde_json::from_str(text)
    {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let status = if inner.is_data() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
        let path = e.path().to_string();
        let message = if path == "." {
            format!("Failed to deserialize the JSON body: {inner}")
        } else {
            format!("Failed to deserialize the JSON body at {path}: {inner}")
        };
        Error::UnprocessableBody { status, message }
    })?;
    de.end().map_err(|e| Error::UnprocessableBody {
        status: StatusCode::BAD_REQUEST,
        message: format!("Failed to parse the JSON body: {e}"),
    })?;
    Ok(value)
}

/// An optional JSON body: empty means `T::default()`.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// `Query<T>` with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| Error::BadRequest(r.body_text()))
    }
}

/// `Path<T>` with JSON errors.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r: PathRejection| Error::BadRequest(r.body_text()))
    }
}

/// The authenticated caller, as handlers take it.
pub type Auth = Extension<Caller>;
