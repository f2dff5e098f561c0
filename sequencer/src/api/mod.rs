//! The HTTP surface: router, shared state, request plumbing (auth, metrics, timeouts, JSON errors).
//! Handlers parse and authorise, call a domain service or the store, and shape the answer; they hold
//! no business rules of their own.

mod admin;
mod agent_keys;
mod anchor;
mod api_keys;
mod commitments;
mod events;
mod health;
mod ingest;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::auth::{Authenticator, Caller};
use crate::commitments::CommitmentEngine;
use crate::config::Config;
use crate::error::Error;
use crate::ingest::Ingest;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::store::Store;

/// Everything a handler may use.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    pub limits: crate::ratelimit::RateLimiters,
    pub ingest: Ingest,
    pub commitments: CommitmentEngine,
    pub anchor: Option<Arc<crate::anchoring::AnchorService>>,
    /// Signs checkpoints (only when receipts are signed: it uses the receipt key).
    pub checkpoints: Option<crate::checkpoint::CheckpointSigner>,
    pub started: Instant,
    /// Background verifications started through the admin API.
    pub verify_jobs: crate::verify::VerifyJobs,
}

pub type SharedState = Arc<AppState>;

/// Builds the whole router from the route table ([`routes`]).
pub fn router(state: SharedState) -> Router {
    let (public, api) = routes::routers();
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    public
        .merge(api)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body_size_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("No such route".into())
}

/// Resolves the credential, applies the rate limits, and hands the [`Caller`] to the handler.
async fn authenticate(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    match state.auth.authenticate(req.headers()).await.and_then(|caller| {
        state.limits.check(&caller)?;
        Ok(caller)
    }) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Per-route counts and latencies, the request timeout and the response headers every answer carries.
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let mut response = match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Error::Timeout.into_response(),
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
    T: DeserializeOwned,
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
        let mut de = serde_json::Deserializer::from_slice(&bytes);
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
        Ok(ApiJson(value))
    }
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
