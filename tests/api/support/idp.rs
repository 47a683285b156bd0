//! A real identity provider on 127.0.0.1: OIDC discovery and JWKS, minting RS256 tokens
//! like Bitwarden's identity server (the development issuer of `key_connector::dev`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use key_connector::dev::issuer::DevIssuer;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A running identity provider on 127.0.0.1.
pub struct TestIdp {
    pub issuer: Arc<DevIssuer>,
    pub url: String,
    jwks_fetches: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestIdp {
    pub async fn start() -> Self {
        Self::start_with(Arc::new(DevIssuer::generate().expect("issuer key"))).await
    }

    pub async fn start_with(issuer: Arc<DevIssuer>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        Self::serve_on(issuer, listener, url).await
    }

    /// Serves on a given listener (used to start an identity provider late, on a port
    /// the service was configured with).
    pub async fn serve_on(
        issuer: Arc<DevIssuer>,
        listener: tokio::net::TcpListener,
        url: String,
    ) -> Self {
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&jwks_fetches);
        let router = issuer.router(url.clone()).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                if request.uri().path().ends_with("/jwks") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request)
            },
        ));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            issuer,
            url,
            jwks_fetches,
            task,
        }
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// A valid Bitwarden-like access token for `user`.
    pub fn token_for(&self, user: Uuid) -> String {
        self.issuer
            .mint_user_token(&self.url, user, Duration::from_secs(3600))
    }

    /// Claims of a valid token for `user`, for tests that change one of them.
    pub fn claims_for(&self, user: Uuid) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({
            "nbf": now, "iat": now, "exp": now + 3600, "auth_time": now,
            "iss": self.url, "client_id": "web", "sub": user.to_string(),
            "idp": "bitwarden", "email": "user@example.test", "email_verified": true,
            "scope": ["api", "offline_access"], "amr": ["Application"],
            "jti": Uuid::new_v4().simple().to_string(),
        })
    }

    pub fn mint(&self, claims: Value) -> String {
        self.issuer.mint(&self.url, claims)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
