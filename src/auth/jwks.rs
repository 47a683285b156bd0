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
    /// SHA-256 of the modulus and exponent: what the key is, whatever it is called.
    pub material: [u8; 32],
}

impl SigningKey {
    /// Whether `other` is this key: the same material under the same `kid` (or none) and
    /// the same algorithm pin. A `kid` alone says nothing: a key without one has no name,
    /// and an identity server may publish other material under a name it used before.
    pub fn is_same_key(&self, other: &SigningKey) -> bool {
        self.material == other.material
            && self.kid == other.kid
            && self.algorithm == other.algorithm
    }
}

/// What token validation needs from the identity server.
pub struct IdentityKeys {
    pub issuer: String,
    pub keys: Vec<SigningKey>,
}

impl IdentityKeys {
    /// Whether `other` trusts exactly what this does: the same issuer and the same keys
    /// (by [`SigningKey::is_same_key`]), none added and none withdrawn.
    pub fn vouches_as(&self, other: &IdentityKeys) -> bool {
        let covered = |of: &IdentityKeys, by: &IdentityKeys| {
            of.keys
                .iter()
                .all(|key| by.keys.iter().any(|k| k.is_same_key(key)))
        };
        self.issuer == other.issuer && covered(self, other) && covered(other, self)
    }
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
    let (n, e) = (jwk.n.as_deref()?, jwk.e.as_deref()?);
    let verifier = RsaVerifier::from_jwk_components(n, e)?;
    Some(SigningKey {
        kid: jwk.kid,
        algorithm,
        verifier,
        material: key_material(n, e)?,
    })
}

/// SHA-256 over the modulus and the exponent, each without leading zero bytes and preceded
/// by its length, so that one key has one value however its JWK spells the numbers.
fn key_material(modulus: &str, exponent: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for number in [modulus, exponent] {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(number)
            .ok()?;
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let significant = &bytes[start..];
        digest.update(&(significant.len() as u64).to_be_bytes());
        digest.update(significant);
    }
    digest.finish().as_ref().try_into().ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::issuer::DevIssuer;
    use serde_json::{Value, json};

    /// A JWKS of the given JWKs.
    fn key_set(keys: &[Value]) -> IdentityKeys {
        let document = json!({ "keys": keys });
        IdentityKeys {
            issuer: "https://identity.example.test".into(),
            keys: signing_keys(&serde_json::to_vec(&document).unwrap()).unwrap(),
        }
    }

    /// The JWK of a fresh key, under `kid` (none when `None`).
    fn jwk(kid: Option<&str>) -> Value {
        let mut jwk = DevIssuer::generate().unwrap().jwks()["keys"][0].clone();
        match kid {
            Some(kid) => jwk["kid"] = json!(kid),
            None => {
                jwk.as_object_mut().unwrap().remove("kid");
            }
        }
        jwk
    }

    #[test]
    fn the_same_keys_in_another_order_vouch_as_before() {
        let (a, b) = (jwk(Some("a")), jwk(None));
        assert!(key_set(&[a.clone(), b.clone()]).vouches_as(&key_set(&[b, a])));
    }

    #[test]
    fn a_withdrawn_key_without_a_kid_is_told_apart_from_another_without_one() {
        let (a, b) = (jwk(None), jwk(None));
        assert!(!key_set(&[a, b.clone()]).vouches_as(&key_set(&[b])));
    }

    #[test]
    fn other_material_under_a_kid_used_before_is_another_key() {
        assert!(!key_set(&[jwk(Some("k1"))]).vouches_as(&key_set(&[jwk(Some("k1"))])));
    }

    #[test]
    fn an_added_key_or_another_issuer_changes_what_is_trusted() {
        let a = jwk(Some("a"));
        let before = key_set(std::slice::from_ref(&a));
        assert!(!before.vouches_as(&key_set(&[a.clone(), jwk(Some("b"))])));
        let mut elsewhere = key_set(&[a]);
        elsewhere.issuer = "https://other.example.test".into();
        assert!(!before.vouches_as(&elsewhere));
    }

    #[test]
    fn key_material_is_the_same_however_the_numbers_are_spelled() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let a = jwk(Some("a"));
        let n = URL_SAFE_NO_PAD.decode(a["n"].as_str().unwrap()).unwrap();
        let padded = URL_SAFE_NO_PAD.encode([&[0u8][..], &n].concat());
        let e = a["e"].as_str().unwrap();
        assert_eq!(
            key_material(&padded, e),
            key_material(a["n"].as_str().unwrap(), e)
        );
        assert_ne!(
            key_material(a["n"].as_str().unwrap(), e),
            key_material(jwk(None)["n"].as_str().unwrap(), e)
        );
    }
}
