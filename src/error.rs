//! Every failure the API answers, and the one place its status code is chosen.
//!
//! Bodies are small JSON objects `{"error": "<code>", "message": "<what to do>"}`. A transient
//! fault of a peer (database, key provider, identity server) is 503 with `Retry-After`:
//! Bitwarden clients log the user out on any error, and a 404 would tell them the user has
//! no key at all.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::store::StoreError;

/// Seconds a client is told to wait after a transient fault.
pub const RETRY_AFTER_SECONDS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("this user has no key")]
    NoKey,
    #[error("there is no such endpoint")]
    NotFound,
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive within {} s", .0.as_secs_f64())]
    RequestTimeout(std::time::Duration),
    #[error("{0}")]
    Unavailable(String),
    /// The key stored for the user is not theirs to read: bound to another user, or in the
    /// unbound form once every key was bound. Says nothing more to the client.
    #[error("the stored key cannot be used; the operator has been told")]
    StoredKeyRefused,
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NoKey => (StatusCode::NOT_FOUND, "no_key"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::StoredKeyRefused | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                error: code,
                message: self.to_string(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        crate::metrics::auth_failure(match &error {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::Unavailable(_) => "unavailable",
        });
        match error {
            AuthError::MissingToken | AuthError::InvalidToken(_) => {
                ApiError::Unauthorized(error.to_string())
            }
            AuthError::Forbidden(_) => ApiError::Forbidden(error.to_string()),
            // The reason names the identity server's URL, the transport error or a piece of
            // the document it answered: the operator's to read, not an anonymous client's.
            AuthError::Unavailable(reason) => {
                tracing::warn!(%reason, "a token could not be checked");
                ApiError::Unavailable(
                    "tokens cannot be checked right now: the identity server's signing keys \
                     are not available; try again"
                        .into(),
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        crate::metrics::store_error(match &error {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Config(_) => "config",
        });
        match error {
            StoreError::Unavailable(_) | StoreError::Config(_) => {
                ApiError::Unavailable("the key store is temporarily unavailable; try again".into())
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(%detail, "stored data cannot be read");
                ApiError::Internal(
                    "the stored key cannot be read; the operator has been told".into(),
                )
            }
        }
    }
}
