//! A real identity provider on 127.0.0.1 (the service crate's development issuer): OIDC
//! discovery and JWKS for the service, RS256 access tokens like Bitwarden's for the SDK.

use std::sync::Arc;
use std::time::Duration;

use key_connector::dev::issuer::DevIssuer;
use serde_json::json;
use tokio::task::JoinHandle;
use uuid::Uuid;

const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A running identity provider; it stops when dropped.
pub struct TestIdp {
    issuer: Arc<DevIssuer>,
    pub url: String,
    task: JoinHandle<()>,
}

impl TestIdp {
    pub async fn start() -> Self {
        let issuer = Arc::new(DevIssuer::generate().expect("an RSA key for the issuer"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = issuer.router(url.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { issuer, url, task }
    }

    /// An access token for `user` as Bitwarden's identity server gives an SSO user's client.
    pub fn token_for(&self, user: Uuid) -> String {
        self.issuer.mint_user_token(&self.url, user, TOKEN_LIFETIME)
    }

    /// A valid, well-signed token for `user` whose `scope` lacks `api` (a token for another
    /// audience of the identity server).
    pub fn token_without_api_scope(&self, user: Uuid) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.issuer.mint(
            &self.url,
            json!({
                "nbf": now, "iat": now, "exp": now + TOKEN_LIFETIME.as_secs(),
                "client_id": "web", "sub": user.to_string(),
                "scope": ["offline_access"], "amr": ["Application"],
            }),
        )
    }

    /// A token for `user` that names this issuer but is signed by a key it never published.
    pub fn forged_token_for(&self, user: Uuid) -> String {
        DevIssuer::generate()
            .expect("an RSA key for the forger")
            .mint_user_token(&self.url, user, TOKEN_LIFETIME)
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An http URL on 127.0.0.1 where nothing listens (an identity server that is down).
pub fn unreachable_url() -> String {
    format!("http://127.0.0.1:{}", super::service::free_port())
}
