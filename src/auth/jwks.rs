//! The identity server's OpenID Connect discovery document and signing keys.
//!
//! Keys come from the `jwks_uri` the discovery document names, and the token issuer that is
//! trusted is the document's `issuer`: in self-hosted installs it often differs from the URI
//! the service is configured with (`http://identity` vs `http://identity:5000`).
//!
//! Fetched defensively, since whoever answers these requests decides which tokens are
//! trusted: redirects are followed only within one origin (never to another host, port or
//! scheme), a document is read up to [`MAX_DOCUMENT_BYTES`], and every request has its
//! timeouts ([`identity_http_client`], which has no fallback without them). What would make
//! an operator look twice is a warning: an identity server reached over plain HTTP on a
//! public name ([`plain_http_warning`]), keys fetched from another origin than the discovery
//! document's ([`foreign_jwks_warning`]).

use std::net::IpAddr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use reqwest::Url;

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

/// The largest discovery document or JWKS read. Bitwarden's are a few kilobytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Redirects followed in a row, all within the origin of the URL asked for.
const MAX_REDIRECTS: usize = 3;

/// The HTTP client for the identity server: connect and request timeouts, redirects only
/// within one origin. An error when it cannot be built (the TLS roots cannot be loaded):
/// there is no fallback to a client without those limits.
pub fn identity_http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .user_agent(concat!("key-connector/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let from = attempt.previous().last();
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if from.is_some_and(|from| same_origin(from, attempt.url())) {
                attempt.follow()
            } else {
                attempt.error(
                    "it redirects to another origin; redirects are followed only within one \
                     (set identityServerUri to the URL that answers)",
                )
            }
        }))
        .build()
}

/// Same scheme, host and port.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A warning when the identity server is reached over plain HTTP at a name or address that
/// is not loopback or private: anyone on the way could hand the service keys of their own.
/// A container's service name (`http://identity:5000`, one label) counts as private.
pub fn plain_http_warning(identity_server_uri: &str) -> Option<String> {
    let url = Url::parse(identity_server_uri).ok()?;
    if url.scheme() != "http" || url.host_str().is_none_or(is_private_host) {
        return None;
    }
    Some(format!(
        "the identity server is reached over plain HTTP at a public name ({}): whoever can \
         intercept that traffic can make the service trust tokens of their own; use https://",
        url.host_str().unwrap_or_default()
    ))
}

/// Loopback, private and link-local addresses, and names that only resolve inside a
/// network: one label (a container's service name), `localhost` and the reserved private
/// suffixes. `host` as [`Url::host_str`] gives it (an IPv6 address in brackets).
fn is_private_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return is_private_ip(ip);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    !name.contains('.')
        || [
            ".localhost",
            ".local",
            ".internal",
            ".lan",
            ".home.arpa",
            ".localdomain",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_private_ip(IpAddr::V4(v4)),
            None => ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local(),
        },
    }
}

/// A warning when the discovery document at `discovery_url` sends the service to fetch the
/// signing keys from another origin: that host decides which tokens are trusted.
pub fn foreign_jwks_warning(discovery_url: &str, jwks_uri: &str) -> Option<String> {
    let (discovery, jwks) = (Url::parse(discovery_url).ok()?, Url::parse(jwks_uri).ok()?);
    if same_origin(&discovery, &jwks) {
        return None;
    }
    Some(format!(
        "the discovery document at {} names signing keys at another origin, {}: that host \
         decides which tokens are trusted; make sure it is the identity server",
        discovery.origin().ascii_serialization(),
        jwks.origin().ascii_serialization()
    ))
}

/// The keys and where the discovery document said to fetch them.
pub struct PublishedKeys {
    pub keys: IdentityKeys,
    pub jwks_uri: String,
}

/// Fetches the discovery document at `discovery_url`, then its JWKS.
pub async fn fetch_identity_keys(
    client: &reqwest::Client,
    discovery_url: &str,
) -> Result<PublishedKeys, FetchError> {
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
    Ok(PublishedKeys {
        keys: IdentityKeys {
            issuer: discovery.issuer,
            keys,
        },
        jwks_uri: discovery.jwks_uri,
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
    let failed = |e: reqwest::Error| unreachable(error_chain(&e.without_url()));
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(unreachable(format!("HTTP {status}")));
    }
    let too_large = || FetchError::Invalid {
        what,
        url: url.to_owned(),
        reason: format!("it is larger than {MAX_DOCUMENT_BYTES} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Invalid {
        what,
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// `error` and its causes: reqwest's own text says only "error sending request".
fn error_chain(error: &reqwest::Error) -> String {
    crate::keys::remote::error_chain(error)
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
    fn plain_http_is_a_warning_only_towards_a_public_name_or_address() {
        for private in [
            "http://identity:5000",
            "http://localhost/identity",
            "http://127.0.0.1:33000",
            "http://[::1]:5000",
            "http://10.1.2.3",
            "http://172.20.0.4:5000",
            "http://192.168.1.10",
            "http://[fd00::5]",
            "http://idp.internal",
            "http://identity.home.arpa.",
            "https://vault.example.com/identity",
        ] {
            assert_eq!(plain_http_warning(private), None, "{private}");
        }
        for public in [
            "http://vault.example.com/identity",
            "http://8.8.8.8",
            "http://[2001:db8::1]",
        ] {
            let warning = plain_http_warning(public).expect(public);
            assert!(warning.contains("https://"), "{warning}");
        }
    }

    #[test]
    fn keys_at_another_origin_than_the_discovery_document_are_a_warning() {
        let discovery = "http://identity:5000/.well-known/openid-configuration";
        assert_eq!(
            foreign_jwks_warning(discovery, "http://identity:5000/.well-known/jwks"),
            None
        );
        for elsewhere in [
            "http://identity/.well-known/jwks",
            "https://identity:5000/jwks",
            "http://attacker.example:5000/jwks",
        ] {
            let warning = foreign_jwks_warning(discovery, elsewhere).expect(elsewhere);
            assert!(warning.contains("another origin"), "{warning}");
        }
    }

    #[test]
    fn redirects_are_followed_only_within_one_origin() {
        let url = |text: &str| Url::parse(text).unwrap();
        assert!(same_origin(
            &url("https://a.test/x"),
            &url("https://a.test:443/y")
        ));
        assert!(!same_origin(
            &url("https://a.test/x"),
            &url("http://a.test/x")
        ));
        assert!(!same_origin(
            &url("https://a.test/x"),
            &url("https://b.test/x")
        ));
        assert!(!same_origin(
            &url("https://a.test/x"),
            &url("https://a.test:8443/x")
        ));
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
