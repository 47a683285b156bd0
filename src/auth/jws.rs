//! The access token as a compact JWS: split, RSA signature checked with a key parsed once,
//! claims read into a typed struct that borrows from the decoded payload.
//!
//! Written here rather than left to `jsonwebtoken::decode` because that parses the RSA key
//! from its modulus and exponent on every call, decodes the header twice and the claims
//! twice (once into the caller's type, once for its own checks): together several times the
//! cost of the signature check itself, on the one path every login takes. The header is
//! still read by `jsonwebtoken`'s own type. The checks are `jsonwebtoken`'s, decision for
//! decision (the `token` fuzz target and the tests below hold the two side by side, through
//! `reference_decision`, built for the tests and the `reference-model` feature):
//! signature first, then the required `exp` and `iss`, a malformed `nbf`, `exp` and `nbf`
//! against the clock with the leeway, `iss` against the discovery document's issuer (a
//! string, or an array that holds it), no audience; then upstream's `Application` policy.

use std::borrow::Cow;
use std::fmt;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::AuthError;
use super::jwks::RSA_ALGORITHMS;

/// The verification parameters of each accepted algorithm, in [`RSA_ALGORITHMS`]' order:
/// keys of 2048 to 8192 bits, as `jsonwebtoken`'s aws-lc backend uses them.
const PARAMETERS: [&RsaParameters; 6] = [
    &signature::RSA_PKCS1_2048_8192_SHA256,
    &signature::RSA_PKCS1_2048_8192_SHA384,
    &signature::RSA_PKCS1_2048_8192_SHA512,
    &signature::RSA_PSS_2048_8192_SHA256,
    &signature::RSA_PSS_2048_8192_SHA384,
    &signature::RSA_PSS_2048_8192_SHA512,
];

fn algorithm_index(algorithm: Algorithm) -> Option<usize> {
    RSA_ALGORITHMS.iter().position(|a| *a == algorithm)
}

/// An RSA public key ready to verify signatures of every accepted algorithm.
pub struct RsaVerifier {
    parsed: [ParsedPublicKey; 6],
}

impl RsaVerifier {
    /// From a JWK's base64url `n` and `e`; `None` if they are not an RSA public key.
    pub fn from_jwk_components(modulus: &str, exponent: &str) -> Option<Self> {
        let n = URL_SAFE_NO_PAD.decode(modulus).ok()?;
        let e = URL_SAFE_NO_PAD.decode(exponent).ok()?;
        let components = RsaPublicKeyComponents { n: &n, e: &e };
        let mut parsed = Vec::with_capacity(PARAMETERS.len());
        for parameters in PARAMETERS {
            parsed.push(components.to_parsed_public_key(parameters).ok()?);
        }
        Some(Self {
            parsed: parsed.try_into().ok()?,
        })
    }

    /// Whether `signature` signs `message` under `algorithm` (an RSA one).
    pub fn verifies(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        algorithm_index(algorithm)
            .is_some_and(|i| self.parsed[i].verify_sig(message, signature).is_ok())
    }
}

impl fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaVerifier")
    }
}

/// A compact JWS split into its parts, its header read and its algorithm an RSA one.
pub struct CompactToken<'t> {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    /// `header.payload`, what the signature signs.
    signing_input: &'t str,
    payload: &'t str,
    signature: Vec<u8>,
}

fn malformed() -> AuthError {
    AuthError::InvalidToken("it is not a well-formed signed JWT".into())
}

impl<'t> CompactToken<'t> {
    /// Splits `header.payload.signature` and reads the header. Rejects anything that is not
    /// three base64url parts with a JSON header naming an RSA algorithm.
    pub fn parse(token: &'t str) -> Result<Self, AuthError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (_, payload) = signing_input.rsplit_once('.').ok_or_else(malformed)?;
        // The header is read by the generic decoder's own type, so that what a header may
        // hold is exactly what it accepts.
        let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
        let algorithm = header.alg;
        if algorithm_index(algorithm).is_none() {
            return Err(AuthError::InvalidToken(format!(
                "algorithm {algorithm:?} is not accepted; tokens must be RSA-signed"
            )));
        }
        let kid = header.kid;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
        Ok(Self {
            algorithm,
            kid,
            signing_input,
            payload,
            signature,
        })
    }

    /// Whether `verifier` verifies this token's signature.
    pub fn is_signed_by(&self, verifier: &RsaVerifier) -> bool {
        verifier.verifies(
            self.algorithm,
            self.signing_input.as_bytes(),
            &self.signature,
        )
    }
}

/// What a token with a valid signature, issuer and lifetime says.
pub struct CheckedClaims {
    /// The user, if upstream's `Application` policy allows the token.
    pub user: Result<uuid::Uuid, AuthError>,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// The claims the service reads; every other claim is skipped unread. Read by hand (see
/// [`ClaimsVisitor`]) so that duplicates are treated as the generic decoder treats them.
#[derive(Default)]
struct Claims<'a> {
    exp: Numeric,
    nbf: Numeric,
    iss: Option<ClaimValue<'a>>,
    sub: Option<ClaimValue<'a>>,
    amr: Option<ClaimValue<'a>>,
    scope: Option<ClaimValue<'a>>,
}

/// A NumericDate as the generic decoder reads it: a non-negative integer, or a finite
/// non-negative float (rounded); anything else present is malformed.
#[derive(Default, Clone, Copy)]
enum Numeric {
    #[default]
    Absent,
    Malformed,
    Parsed(u64),
}

/// A claim's JSON value, read once: text (borrowed when it has no escapes), an array
/// (its texts, and whether it held anything else), or something else.
enum ClaimValue<'a> {
    Text(Cow<'a, str>),
    Array {
        texts: Vec<Cow<'a, str>>,
        only_texts: bool,
    },
    Other,
}

impl ClaimValue<'_> {
    /// `iss`: a string equal to the issuer, or an array of strings holding it (the generic
    /// decoder's rule); `None` when the claim is not a string or an array of strings.
    fn names_issuer(&self, issuer: &str) -> Option<bool> {
        match self {
            Self::Text(iss) => Some(iss == issuer),
            Self::Array {
                texts,
                only_texts: true,
            } => Some(texts.iter().any(|iss| iss == issuer)),
            _ => None,
        }
    }

    /// `amr` / `scope`: a string that is one of `wanted`, or an array with a string that is.
    fn contains_any(&self, wanted: &[&str]) -> bool {
        match self {
            Self::Text(value) => wanted.contains(&value.as_ref()),
            Self::Array { texts, .. } => texts.iter().any(|value| wanted.contains(&value.as_ref())),
            Self::Other => false,
        }
    }
}

impl<'t> CompactToken<'t> {
    /// The claims, checked as described in the module documentation; call only once the
    /// signature is verified. `now` is the Unix time in seconds.
    pub fn checked_claims(
        &self,
        issuer: &str,
        leeway_seconds: u64,
        now: u64,
    ) -> Result<CheckedClaims, AuthError> {
        let payload = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| malformed())?;
        let claims: Claims<'_> = serde_json::from_slice(&payload).map_err(|_| malformed())?;
        let Numeric::Parsed(exp) = claims.exp else {
            return Err(AuthError::InvalidToken("claim `exp` is missing".into()));
        };
        let Some(names_issuer) = claims.iss.as_ref().and_then(|iss| iss.names_issuer(issuer))
        else {
            return Err(AuthError::InvalidToken("claim `iss` is missing".into()));
        };
        if matches!(claims.nbf, Numeric::Malformed) {
            return Err(AuthError::InvalidToken("claim `nbf` is malformed".into()));
        }
        if exp < now.saturating_sub(leeway_seconds) {
            return Err(AuthError::InvalidToken("it has expired".into()));
        }
        if let Numeric::Parsed(nbf) = claims.nbf
            && nbf > now.saturating_add(leeway_seconds)
        {
            return Err(AuthError::InvalidToken("it is not valid yet (nbf)".into()));
        }
        if !names_issuer {
            return Err(AuthError::InvalidToken(
                "it was not issued by the configured identity server".into(),
            ));
        }
        Ok(CheckedClaims {
            user: authorize(&claims),
            exp,
        })
    }
}

/// Upstream's `Application` policy, then the user id.
fn authorize(claims: &Claims<'_>) -> Result<uuid::Uuid, AuthError> {
    let has = |claim: &Option<ClaimValue<'_>>, wanted: &[&str]| {
        claim
            .as_ref()
            .is_some_and(|value| value.contains_any(wanted))
    };
    if !has(&claims.amr, &["Application", "external"]) {
        return Err(AuthError::Forbidden(
            "claim `amr` must contain `Application` or `external`".into(),
        ));
    }
    if !has(&claims.scope, &["api"]) {
        return Err(AuthError::Forbidden(
            "claim `scope` must contain `api`".into(),
        ));
    }
    let Some(ClaimValue::Text(subject)) = &claims.sub else {
        return Err(AuthError::Forbidden(
            "the token names no user (`sub`)".into(),
        ));
    };
    super::parse_dotnet_guid(subject)
        .ok_or_else(|| AuthError::Forbidden("the token's `sub` is not a user id (GUID)".into()))
}

impl<'de> Deserialize<'de> for Claims<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

/// Reads the claims object. `exp`, `nbf`, `iss`, `sub` and `aud` may appear once (the
/// generic decoder refuses a document that repeats them); for any other name, as in a JSON
/// object read whole, the last occurrence counts.
struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut claims = Claims::default();
        let mut seen_once = [false; 5];
        let mut once = |index: usize, name: &'static str| {
            if std::mem::replace(&mut seen_once[index], true) {
                Err(de::Error::duplicate_field(name))
            } else {
                Ok(())
            }
        };
        while let Some(name) = map.next_key::<ClaimName<'de>>()? {
            match name.0.as_ref() {
                "exp" => {
                    once(0, "exp")?;
                    claims.exp = map.next_value::<NumericValue>()?.0;
                }
                "nbf" => {
                    once(1, "nbf")?;
                    claims.nbf = map.next_value::<NumericValue>()?.0;
                }
                "iss" => {
                    once(2, "iss")?;
                    claims.iss = Some(map.next_value()?);
                }
                "sub" => {
                    once(3, "sub")?;
                    claims.sub = Some(map.next_value()?);
                }
                "aud" => {
                    once(4, "aud")?;
                    map.next_value::<SkippedValue>()?;
                }
                "amr" => claims.amr = Some(map.next_value()?),
                "scope" => claims.scope = Some(map.next_value()?),
                _ => {
                    map.next_value::<SkippedValue>()?;
                }
            }
        }
        Ok(claims)
    }
}

/// A claim name, borrowed unless it has escapes.
struct ClaimName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for ClaimName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match ClaimValue::deserialize(deserializer)? {
            ClaimValue::Text(name) => Ok(Self(name)),
            _ => Err(de::Error::custom("a claim name is text")),
        }
    }
}

/// A NumericDate claim's value; never an error, whatever JSON value it is.
struct NumericValue(Numeric);

impl<'de> Deserialize<'de> for NumericValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(match ClaimNumber::deserialize(deserializer)?.0 {
            Some(Number::Unsigned(value)) => Numeric::Parsed(value),
            Some(Number::Float(value))
                if value.is_finite() && value >= 0.0 && value < (u64::MAX as f64) =>
            {
                Numeric::Parsed(value.round() as u64)
            }
            _ => Numeric::Malformed,
        }))
    }
}

enum Number {
    Unsigned(u64),
    Float(f64),
}

/// Any JSON value, keeping only a number.
struct ClaimNumber(Option<Number>);

impl<'de> Deserialize<'de> for ClaimNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AnyValue)
            .map(|value| match value {
                Any::Number(number) => Self(Some(number)),
                _ => Self(None),
            })
    }
}

impl<'de> Deserialize<'de> for ClaimValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AnyValue)
            .map(|value| match value {
                Any::Text(text) => ClaimValue::Text(text),
                Any::Array { texts, only_texts } => ClaimValue::Array { texts, only_texts },
                _ => ClaimValue::Other,
            })
    }
}

/// What [`AnyValue`] keeps of a JSON value.
enum Any<'a> {
    Text(Cow<'a, str>),
    Number(Number),
    Array {
        texts: Vec<Cow<'a, str>>,
        only_texts: bool,
    },
    Other,
}

/// Accepts every JSON value, keeping texts (borrowed where possible), numbers and arrays'
/// texts, skipping the rest.
struct AnyValue;

impl<'de> Visitor<'de> for AnyValue {
    type Value = Any<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Any::Text(Cow::Borrowed(text)))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Any::Text(Cow::Owned(text.to_owned())))
    }
    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Any::Text(Cow::Owned(text)))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Any::Number(Number::Unsigned(value)))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        // serde_json hands integers written without a sign to visit_u64 and those with a
        // minus sign (`-0` included) here; the generic decoder takes none of them as a date.
        Ok(Any::Other)
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Any::Number(Number::Float(value)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut texts = Vec::new();
        let mut only_texts = true;
        while let Some(element) = seq.next_element_seed(AnyValueSeed)? {
            match element {
                Any::Text(text) => texts.push(text),
                _ => only_texts = false,
            }
        }
        Ok(Any::Array { texts, only_texts })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<SkippedValue, SkippedValue>()?.is_some() {}
        Ok(Any::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Any::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Any::Other)
    }
}

/// A value read only to be checked and dropped. Unlike `serde::de::IgnoredAny`, its strings
/// are decoded (without being kept), so a string a JSON document may not hold, such as a
/// lone UTF-16 surrogate escape, fails here exactly as it fails a full parse.
struct SkippedValue;

impl<'de> Deserialize<'de> for SkippedValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkippedValueVisitor)
    }
}

struct SkippedValueVisitor;

impl<'de> Visitor<'de> for SkippedValueVisitor {
    type Value = SkippedValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(SkippedValue)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(SkippedValue)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(SkippedValue)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(SkippedValue)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(SkippedValue)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(SkippedValue)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<SkippedValue>()?.is_some() {}
        Ok(SkippedValue)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<SkippedValue, SkippedValue>()?.is_some() {}
        Ok(SkippedValue)
    }
}

/// [`AnyValue`] for array elements, so that nested arrays are skipped, not collected.
struct AnyValueSeed;

impl<'de> de::DeserializeSeed<'de> for AnyValueSeed {
    type Value = Any<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer
            .deserialize_any(AnyValue)
            .map(|value| match value {
                Any::Array { .. } => Any::Other,
                other => other,
            })
    }
}

/// The reference model of this module: the decision of the generic decoder
/// (`jsonwebtoken::decode` into a JSON value, with `issuer` and `leeway`) followed by
/// upstream's policy on that value, for a token signed by `key`. It is what this module
/// replaced on the hot path, kept so that the tests and the `token` fuzz target can hold
/// every decision of [`crate::auth::validate_with_keys`] against it. The service never
/// calls it; outside this crate's tests it is built only with the `reference-model`
/// feature.
#[cfg(any(test, feature = "reference-model"))]
#[doc(hidden)]
pub fn reference_decision(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
    issuer: &str,
    leeway: std::time::Duration,
) -> Option<uuid::Uuid> {
    use serde_json::Value;

    let header = jsonwebtoken::decode_header(token).ok()?;
    if !RSA_ALGORITHMS.contains(&header.alg) {
        return None;
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.leeway = leeway.as_secs();
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let claims = jsonwebtoken::decode::<Value>(token, key, &validation)
        .ok()?
        .claims;
    let contains = |name: &str, wanted: &[&str]| match claims.get(name) {
        Some(Value::String(v)) => wanted.contains(&v.as_str()),
        Some(Value::Array(vs)) => vs
            .iter()
            .filter_map(Value::as_str)
            .any(|v| wanted.contains(&v)),
        _ => false,
    };
    if !contains("amr", &["Application", "external"]) || !contains("scope", &["api"]) {
        return None;
    }
    super::parse_dotnet_guid(claims.get("sub")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::DecodingKey;
    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::*;
    use crate::auth::jwks::{IdentityKeys, signing_keys};
    use crate::auth::validate_with_keys;
    use crate::dev::issuer::DevIssuer;

    const ISSUER: &str = "https://identity.example.test";
    const LEEWAY: Duration = Duration::from_secs(300);

    struct Fixture {
        issuer: DevIssuer,
        keys: IdentityKeys,
        /// The published key as the generic decoder takes it.
        reference_key: DecodingKey,
    }

    impl Fixture {
        /// What [`reference_decision`] decides for `token`.
        fn reference(&self, token: &str) -> Option<Uuid> {
            reference_decision(token, &self.reference_key, ISSUER, LEEWAY)
        }
    }

    fn fixture() -> Fixture {
        let issuer = DevIssuer::generate().unwrap();
        let jwks = issuer.jwks();
        let keys = IdentityKeys {
            issuer: ISSUER.to_owned(),
            keys: signing_keys(&serde_json::to_vec(&jwks).unwrap()).unwrap(),
        };
        let jwk = &jwks["keys"][0];
        let reference_key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        Fixture {
            issuer,
            keys,
            reference_key,
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// Claim sets at every edge the checks have, signed by the published key.
    fn edge_claims(user: Uuid) -> Vec<Value> {
        let t = now();
        let base = json!({"iss": ISSUER, "exp": t + 600, "nbf": t, "sub": user.to_string(),
            "amr": ["Application"], "scope": ["api", "offline_access"]});
        let with = |pairs: &[(&str, Value)]| {
            let mut c = base.clone();
            for (k, v) in pairs {
                c[*k] = v.clone();
            }
            c
        };
        let without = |name: &str| {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove(name);
            c
        };
        vec![
            base.clone(),
            with(&[("amr", json!("external"))]),
            with(&[("amr", json!(["sso", 1, "external"]))]),
            with(&[("amr", json!(["application"]))]),
            with(&[("amr", json!({"Application": true}))]),
            with(&[("scope", json!("api"))]),
            with(&[("scope", json!("api offline_access"))]),
            with(&[("scope", json!([["api"]]))]),
            with(&[("sub", json!(user.simple().to_string()))]),
            with(&[("sub", json!(format!("{{{user}}}")))]),
            with(&[("sub", json!(42))]),
            with(&[("sub", json!([user.to_string()]))]),
            with(&[("sub", json!("alice"))]),
            without("sub"),
            without("amr"),
            without("scope"),
            without("exp"),
            without("iss"),
            without("nbf"),
            with(&[("exp", json!(t - 299))]),
            with(&[("exp", json!(t - 301))]),
            with(&[("exp", json!((t + 600) as f64 + 0.4))]),
            with(&[("exp", json!(-5))]),
            with(&[("exp", json!("9999999999"))]),
            with(&[("exp", json!(null))]),
            with(&[("exp", json!(1e300))]),
            with(&[("nbf", json!(t + 299))]),
            with(&[("nbf", json!(t + 301))]),
            with(&[("nbf", json!("soon"))]),
            with(&[("nbf", json!(-5))]),
            with(&[("iss", json!(format!("{ISSUER}/")))]),
            with(&[("iss", json!([ISSUER, "https://other.example"]))]),
            with(&[("iss", json!(["https://other.example"]))]),
            with(&[("iss", json!([ISSUER, 7]))]),
            with(&[("iss", json!([]))]),
            with(&[("iss", json!(7))]),
            with(&[("aud", json!("anyone"))]),
            json!([t + 600, t, user.to_string(), ISSUER]),
            json!("text"),
        ]
    }

    #[test]
    fn every_decision_matches_the_generic_decoder() {
        let fixture = fixture();
        let user = Uuid::new_v4();
        for claims in edge_claims(user) {
            let token = fixture.issuer.mint(ISSUER, claims.clone());
            let ours = validate_with_keys(&token, &fixture.keys, LEEWAY).ok();
            assert_eq!(ours, fixture.reference(&token), "claims {claims}");
        }
    }

    /// Hand-made payloads the JSON builder above cannot produce: escapes and duplicates.
    #[test]
    fn raw_payloads_match_the_generic_decoder() {
        let fixture = fixture();
        let user = Uuid::new_v4();
        let t = now() + 600;
        let rest = format!(r#""sub":"{user}","amr":["Application"],"scope":["api"]"#);
        for payload in [
            format!(r#"{{"iss":"{ISSUER}","exp":{t},{rest}}}"#),
            format!(r#"{{"\u0069ss":"{ISSUER}","\u0065xp":{t},{rest}}}"#),
            format!(r#"{{"iss":"https:\/\/identity.example.test","exp":{t},{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"exp":{t},{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","iss":"{ISSUER}","exp":{t},{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"aud":"a","aud":"b",{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},{rest},"amr":["sso"]}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"amr":["sso"],{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},{rest}}} "#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},{rest}}}x"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t}.0,{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"nbf":-0,{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"nbf":-0.0,{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"nbf":1e3,{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"x":"\ud800",{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"x":{{"\udc00":1}},{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"x":["\ud83d\ude00"],{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":99999999999999999999999,{rest}}}"#),
            format!(r#"{{"iss":"{ISSUER}","exp":{t},"x":{{"y":[1,{{"z":null}}]}},{rest}}}"#),
        ] {
            let token = fixture.issuer.sign_raw_payload(payload.as_bytes());
            let ours = validate_with_keys(&token, &fixture.keys, LEEWAY).ok();
            assert_eq!(ours, fixture.reference(&token), "payload {payload}");
        }
    }

    #[test]
    fn the_signature_and_its_algorithm_are_checked() {
        let Fixture { issuer, keys, .. } = fixture();
        let user = Uuid::new_v4();
        let token = issuer.mint_user_token(ISSUER, user, Duration::from_secs(600));
        assert_eq!(
            validate_with_keys(&token, &keys, Duration::from_secs(300)).ok(),
            Some(user)
        );
        // One bit of the signature, the payload or the header changed.
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
        raw[10] ^= 1;
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert!(validate_with_keys(&forged, &keys, Duration::from_secs(300)).is_err());
        // The same signature claimed as PS256 (another padding) or RS384 (another digest).
        for alg in ["PS256", "RS384", "HS256", "none"] {
            let (header, rest) = token.split_once('.').unwrap();
            let mut header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
            header["alg"] = json!(alg);
            let relabelled = format!(
                "{}.{rest}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap())
            );
            assert!(
                validate_with_keys(&relabelled, &keys, Duration::from_secs(300)).is_err(),
                "{alg}"
            );
        }
        for broken in [
            "",
            "a.b",
            "a.b.c.d",
            &format!("{token}="),
            &format!("{input}."),
        ] {
            assert!(validate_with_keys(broken, &keys, Duration::from_secs(300)).is_err());
        }
    }
}
