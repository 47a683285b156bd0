//! The identity server's OpenID Connect discovery document and signing keys.
//!
//! Keys come from the `jwks_uri` the discovery document names, and the token issuer that is
//! trusted is the document's `issuer`: in self-hosted installs it often differs from the URI
//! the service is configured with (`http://identity` vs `http://identity:5000`).

use jsonwebtoken::Algorithm;

use super::jws::RsaVerifier;
use serde::Deserialize;

/// Why the discovery document or the JWKS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The identity server could not be reached or answered with an error status.
    #[error("cannot reach the identity server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// It answered, but with something that is not a usable document.
    #[error("the identity server's {what} at {url} is not usable: {reason}")]
    Invalid {
        what: &'static str,
        url: String,
        reason: String,
    },
}

/// One RSA signing key of the JWKS, parsed once when the JWKS is loaded.
pub struct SigningKey {
    pub kid: Option<String>,
    /// The algorithm the JWK pins, if it names one.
    pub algorithm: Option<Algorithm>,
    pub verifier: RsaVerifier,
}

/// What token validation needs from the identity server.
pub struct IdentityKeys {
    pub issuer: String,
    pub keys: Vec<SigningKey>,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JsonWebKeySet {
    keys: Vec<JsonWebKey>,
}

#[derive(Deserialize)]
struct JsonWebKey {
    kty: String,
    #[serde(rename = "use")]
    usage: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// The RSA signature algorithms a token may use.
pub const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Fetches the discovery document at `discovery_url`, then its JWKS.
pub async fn fetch_identity_keys(
    client: &reqwest::Client,
    discovery_url: &str,
) -> Result<IdentityKeys, FetchError> {
    let discovery: DiscoveryDocument =
        get_json(client, discovery_url, "discovery document").await?;
    if discovery.issuer.trim().is_empty() {
        return Err(FetchError::Invalid {
            what: "discovery document",
            url: discovery_url.to_owned(),
            reason: "`issuer` is empty".into(),
        });
    }
    let set: JsonWebKeySet = get_json(client, &discovery.jwks_uri, "JWKS").await?;
    let keys: Vec<SigningKey> = set.keys.into_iter().filter_map(rsa_signing_key).collect();
    if keys.is_empty() {
        return Err(FetchError::Invalid {
            what: "JWKS",
            url: discovery.jwks_uri,
            reason: "it holds no RSA signing key".into(),
        });
    }
    Ok(IdentityKeys {
        issuer: discovery.issuer,
        keys,
    })
}

/// The RSA signing keys of a JWKS document (other keys are left out). Public for fuzzing.
pub fn signing_keys(jwks: &[u8]) -> Result<Vec<SigningKey>, serde_json::Error> {
    let set: JsonWebKeySet = serde_json::from_slice(jwks)?;
    Ok(set.keys.into_iter().filter_map(rsa_signing_key).collect())
}

fn rsa_signing_key(jwk: JsonWebKey) -> Option<SigningKey> {
    if jwk.kty != "RSA" || jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let algorithm = match jwk.alg.as_deref() {
        None => None,
        // A key pinned to a non-RSA or unknown algorithm is not used at all.
        Some(name) => Some(
            name.parse::<Algorithm>()
                .ok()
                .filter(|a| RSA_ALGORITHMS.contains(a))?,
        ),
    };
    let verifier = RsaVerifier::from_jwk_components(jwk.n.as_deref()?, jwk.e.as_deref()?)?;
    Some(SigningKey {
        kid: jwk.kid,
        algorithm,
        verifier,
    })
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    url: &str,
    what: &'static str,
) -> Result<T, FetchError> {
    let unreachable = |reason: String| FetchError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unreachable(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(unreachable(format!("HTTP {status}")));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(e.without_url().to_string()))?;
    serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
        what,
        url: url.to_owned(),
        reason: e.to_string(),
    })
}
