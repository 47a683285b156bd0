//! Bearer-token authentication against the Bitwarden identity server.
//!
//! Placeholder: see the authentication work item.

use std::sync::Arc;

use axum::http::HeaderValue;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod dev_issuer;

/// The user a valid, authorized token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub user_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    MissingToken,
    #[error("the bearer token is not valid: {0}")]
    InvalidToken(String),
    #[error("the token does not allow this: {0}")]
    Forbidden(String),
    #[error("tokens cannot be checked right now: {0}")]
    Unavailable(String),
}

/// Validates bearer tokens against the identity server's discovery document and JWKS.
pub struct Authenticator {
    _identity_server_uri: String,
}

impl Authenticator {
    pub fn new(identity_server_uri: &str) -> Arc<Self> {
        Arc::new(Self {
            _identity_server_uri: identity_server_uri.to_owned(),
        })
    }

    /// Starts loading discovery and JWKS in the background, retrying until it succeeds.
    pub fn spawn_discovery(self: &Arc<Self>, _shutdown: CancellationToken) {}

    /// Checks the `Authorization` header value.
    pub async fn authenticate(
        &self,
        _authorization: Option<&HeaderValue>,
    ) -> Result<AuthenticatedUser, AuthError> {
        Err(AuthError::Unavailable(
            "authentication is not built yet".into(),
        ))
    }
}
