//! The crate's error enum and its one mapping to an HTTP status and a stable machine-readable code.
//!
//! Every error body has the shape of the existing service's ingest errors (ves-wire.md §1.2):
//! `{"error":{"code":"<SCREAMING_SNAKE>","numeric_code":<u32>,"message":"..."}}` plus an
//! `x-error-code` header. Internal errors never carry their detail to the client; it is logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Result type used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while serving a request or running a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a field has an invalid value (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but cannot be processed in the current state (400, with a code).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// No or an invalid credential (401).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// The credential may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The resource does not exist, or the caller may not know that it does (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// A gap was found where the log must be contiguous (409).
    #[error("{0}")]
    SequenceGap(String),
    /// Body, batch or payload over its limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The JSON body could not be decoded into the expected shape (422 or 400 per the cause).
    #[error("{message}")]
    UnprocessableBody { status: StatusCode, message: String },
    /// Too many requests for this tenant or key (429).
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// The sequencer cannot serve the request right now; the client should retry (503).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after_secs: Option<u64> },
    /// A route of the upstream service that this one deliberately does not serve (501).
    #[error("{message}")]
    NotImplemented { code: &'static str, message: String },
    /// The request took longer than `REQUEST_TIMEOUT_SECS` (504).
    #[error("request timed out")]
    Timeout,
    /// A database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A bug or an unexpected failure; the detail is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A 503 that tells the client when to come back.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Error::Unavailable { code, message: message.into(), retry_after_secs: Some(retry_after_secs) }
    }

    /// True when the database could not be reached at all (as opposed to a query failing).
    pub fn is_database_unavailable(&self) -> bool {
        matches!(self, Error::Database(e) if database_unavailable(e))
    }

    /// True when a statement named a table the schema does not have (42P01: a binary ahead of its
    /// migrations).
    pub fn is_undefined_table(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01"))
    }

    fn parts(&self) -> (StatusCode, &'static str, u32, String, Option<u64>) {
        use StatusCode as S;
        match self {
            Error::BadRequest(m) => (S::BAD_REQUEST, "INVALID_FIELD_VALUE", 3003, m.clone(), None),
            Error::Invalid { code, message } => (S::BAD_REQUEST, code, 3003, message.clone(), None),
            Error::Unauthorized { code, message } => (S::UNAUTHORIZED, code, 1001, message.clone(), None),
            Error::Forbidden(m) => (S::FORBIDDEN, "INSUFFICIENT_PERMISSIONS", 1005, m.clone(), None),
            Error::NotFound(m) => (S::NOT_FOUND, "RESOURCE_NOT_FOUND", 4001, m.clone(), None),
            Error::Conflict(m) => (S::CONFLICT, "ALREADY_EXISTS", 5004, m.clone(), None),
            Error::SequenceGap(m) => (S::CONFLICT, "SEQUENCE_GAP", 5005, m.clone(), None),
            Error::PayloadTooLarge(m) => (S::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", 3004, m.clone(), None),
            Error::UnprocessableBody { status, message } => {
                (*status, "INVALID_REQUEST_BODY", 3001, message.clone(), None)
            }
            Error::RateLimited { retry_after_secs } => (
                S::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                2001,
                "Rate limit exceeded".into(),
                Some(*retry_after_secs),
            ),
            Error::Unavailable { code, message, retry_after_secs } => {
                (S::SERVICE_UNAVAILABLE, code, 8002, message.clone(), *retry_after_secs)
            }
            Error::NotImplemented { code, message } => (S::NOT_IMPLEMENTED, code, 8004, message.clone(), None),
            Error::Timeout => (S::GATEWAY_TIMEOUT, "TIMEOUT", 8003, "Request timed out".into(), None),
            Error::Database(e) if database_busy(e) => (
                S::SERVICE_UNAVAILABLE,
                "DATABASE_BUSY",
                8002,
                "The database did not answer in time (lock or statement timeout); retry later".into(),
                Some(1),
            ),
            Error::Database(e) if database_unavailable(e) => (
                S::SERVICE_UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
                8002,
                "The database is unavailable; retry later".into(),
                Some(1),
            ),
            Error::Database(_) | Error::Internal(_) => {
                (S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", 8999, "Internal server error".into(), None)
            }
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

/// True when a session guard (`DB_LOCK_TIMEOUT_MS`, `DB_STATEMENT_TIMEOUT_MS`,
/// `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`) ended the query: nothing was written, a retry may succeed.
pub fn database_busy(e: &sqlx::Error) -> bool {
    // 55P03 lock_not_available, 57014 query_canceled, 25P03 idle_in_transaction_session_timeout.
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| matches!(&*c, "55P03" | "57014" | "25P03")))
}

/// True for errors that mean "no usable connection" (or a session guard's timeout: the request is
/// answered 503 and may be retried) rather than "this query failed".
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    if database_busy(e) {
        return true;
    }
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P: operator intervention (shutdown); 53300: too many connections.
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }),
        _ => false,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, numeric_code, message, retry_after) = self.parts();
        if status.is_server_error()
            && !matches!(self, Error::Unavailable { .. } | Error::Timeout | Error::NotImplemented { .. })
        {
            tracing::error!(error = %self, "request failed");
        }
        let mut body = json!({"error": {"code": code, "numeric_code": numeric_code, "message": message}});
        if let Some(secs) = retry_after {
            body["error"]["retry_after"] = json!(secs);
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert("x-error-code", HeaderValue::from_static(code));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_detail() {
        let response = Error::Internal("password=hunter2 at db:5432".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("hunter2"));
        assert!(text.contains("INTERNAL_ERROR"));
    }

    #[tokio::test]
    async fn rate_limited_answers_429_with_retry_after() {
        let response = Error::RateLimited { retry_after_secs: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(response.headers()["x-error-code"], "RATE_LIMIT_EXCEEDED");
    }

    #[test]
    fn a_pool_timeout_is_unavailable_not_internal() {
        assert_eq!(Error::Database(sqlx::Error::PoolTimedOut).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(Error::Database(sqlx::Error::RowNotFound).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
