//! A development token issuer: OIDC discovery, JWKS and RS256 tokens. **Not for production.**
//!
//! It signs whatever claims it is asked to, which makes it the identity server of the
//! `key-connector dev` quickstart, of the integration tests and of the benchmark, and
//! nothing else. It serves the two documents a Key Connector reads from a real Bitwarden
//! identity server: `/.well-known/openid-configuration` and its `jwks_uri`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PrivateDecryptingKey};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Why an issuer key could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[error("development issuer key: {0}")]
pub struct DevIssuerError(String);

/// An RSA key that signs development tokens.
pub struct DevIssuer {
    key_pair: KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    kid: String,
    modulus: String,
    exponent: String,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// A fresh RSA-2048 key.
    pub fn generate() -> Result<Self, DevIssuerError> {
        let key_pair =
            KeyPair::generate(KeySize::Rsa2048).map_err(|e| DevIssuerError(e.to_string()))?;
        let der = key_pair
            .as_der()
            .map_err(|e| DevIssuerError(e.to_string()))?;
        Self::from_pkcs8(der.as_ref())
    }

    /// Loads a key saved with [`DevIssuer::pkcs8_der`].
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, DevIssuerError> {
        let key_pair = KeyPair::from_pkcs8(der).map_err(|e| DevIssuerError(e.to_string()))?;
        let public = key_pair.public_key();
        let modulus = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let exponent = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let spki_der = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|e| DevIssuerError(e.to_string()))?
            .public_key()
            .as_der()
            .map_err(|e| DevIssuerError(e.to_string()))?
            .as_ref()
            .to_vec();
        let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki_der);
        let kid = URL_SAFE_NO_PAD.encode(&thumbprint.as_ref()[..16]);
        Ok(Self {
            key_pair,
            pkcs8: Zeroizing::new(der.to_vec()),
            kid,
            modulus,
            exponent,
            spki_der,
        })
    }

    /// The private key as PKCS#8 DER, to persist it.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The `kid` every token and the JWKS carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub fn public_key_pem(&self) -> String {
        let body = STANDARD.encode(&self.spki_der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": self.modulus, "e": self.exponent,
        }]})
    }

    /// The discovery document for an issuer at `issuer_url`.
    pub fn discovery(&self, issuer_url: &str) -> Value {
        let issuer = issuer_url.trim_end_matches('/');
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/.well-known/openid-configuration/jwks"),
            "authorization_endpoint": format!("{issuer}/connect/authorize"),
            "token_endpoint": format!("{issuer}/connect/token"),
            "response_types_supported": ["code", "token", "id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["api", "offline_access"],
        })
    }

    /// Discovery and JWKS routes for an issuer at `issuer_url`.
    pub fn router(self: &Arc<Self>, issuer_url: String) -> Router {
        let discovery = self.discovery(&issuer_url);
        let jwks = self.jwks();
        Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let discovery = discovery.clone();
                    async move { Json(discovery) }
                }),
            )
            .route(
                "/.well-known/openid-configuration/jwks",
                get(move || {
                    let jwks = jwks.clone();
                    async move { Json(jwks) }
                }),
            )
    }

    /// Serves [`DevIssuer::router`] on `listener` until the task is aborted.
    pub fn spawn(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        issuer_url: String,
    ) -> JoinHandle<()> {
        let router = self.router(issuer_url);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "development issuer stopped");
            }
        })
    }

    /// Signs `claims` as an RS256 JWT with this issuer's `kid`. `iss` is set to `issuer`
    /// unless the claims carry their own.
    pub fn mint(&self, issuer: &str, claims: Value) -> String {
        self.mint_with_kid(issuer, claims, &self.kid)
    }

    /// Like [`DevIssuer::mint`] with another `kid` in the header: the signature is still
    /// this issuer's (for tests of key-id handling).
    pub fn mint_with_kid(&self, issuer: &str, mut claims: Value, kid: &str) -> String {
        if let Some(map) = claims.as_object_mut() {
            map.entry("iss")
                .or_insert_with(|| json!(issuer.trim_end_matches('/')));
        }
        let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
        self.sign_parts(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Like [`DevIssuer::mint`] without a `kid` in the header, as Vaultwarden's tokens come.
    pub fn mint_without_kid(&self, issuer: &str, mut claims: Value) -> String {
        if let Some(map) = claims.as_object_mut() {
            map.entry("iss")
                .or_insert_with(|| json!(issuer.trim_end_matches('/')));
        }
        let header = json!({"alg": "RS256", "typ": "JWT"});
        self.sign_parts(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Signs `payload` exactly as given (no JSON built), with this issuer's `kid`: for tests
    /// of how claims are read (escapes, duplicate names).
    pub fn sign_raw_payload(&self, payload: &[u8]) -> String {
        let header = json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        self.sign_parts(header.to_string().as_bytes(), payload)
    }

    fn sign_parts(&self, header: &[u8], payload: &[u8]) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut signature = vec![0u8; self.key_pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Signing with a valid in-memory key and a correctly sized buffer cannot fail.
        if self
            .key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .is_err()
        {
            signature.clear();
        }
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A token like the ones Bitwarden's identity server gives an SSO user's client.
    pub fn mint_user_token(&self, issuer: &str, user_id: Uuid, lifetime: Duration) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(3600);
        self.mint(
            issuer,
            json!({
                "nbf": now, "iat": now, "exp": now + lifetime, "auth_time": now,
                "client_id": "web", "sub": user_id.to_string(), "idp": "bitwarden",
                "email": format!("{}@example.test", user_id.simple()), "email_verified": true,
                "premium": false, "name": "Development User",
                "scope": ["api", "offline_access"], "amr": ["Application"],
                "device": Uuid::new_v4().to_string(), "jti": Uuid::new_v4().simple().to_string(),
            }),
        )
    }
}
