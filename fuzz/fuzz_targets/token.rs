//! Token parsing and validation: arbitrary text as a bearer token, and arbitrary claims
//! signed by a published key (so that claim checks are reached past the signature).
//!
//! Differential: every decision must be the one the generic decoder (`jsonwebtoken::decode`
//! into a JSON value, then upstream's policy on that value) makes, which the service's own
//! check replaced on the hot path. A token one accepts and the other refuses, or accepts for
//! another user, is a crash.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation};
use key_connector::auth::jwks::{IdentityKeys, signing_keys};
use key_connector::auth::{RSA_ALGORITHMS, validate_with_keys};
use key_connector::dev::issuer::DevIssuer;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use uuid::Uuid;

const ISSUER: &str = "https://identity.example.test";

struct Fixture {
    issuer: DevIssuer,
    keys: IdentityKeys,
    reference_key: DecodingKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let issuer = DevIssuer::generate().expect("a signing key");
        let jwks = issuer.jwks();
        let keys = IdentityKeys {
            issuer: ISSUER.to_owned(),
            keys: signing_keys(&serde_json::to_vec(&jwks).expect("JSON"))
                .expect("the issuer's own JWKS"),
        };
        let jwk = &jwks["keys"][0];
        let reference_key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().expect("n"),
            jwk["e"].as_str().expect("e"),
        )
        .expect("the issuer's own key");
        Fixture {
            issuer,
            keys,
            reference_key,
        }
    })
}

/// What the generic decoder and upstream's policy decide.
fn reference(token: &str, key: &DecodingKey) -> Option<Uuid> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if !RSA_ALGORITHMS.contains(&header.alg) {
        return None;
    }
    let mut validation = Validation::new(header.alg);
    validation.leeway = 300;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_issuer(&[ISSUER]);
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
    let subject = claims.get("sub")?.as_str()?.trim();
    let inner = subject
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(subject);
    if inner.starts_with("urn:") {
        return None;
    }
    Uuid::try_parse(inner).ok()
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        // The bytes are the token.
        0 => String::from_utf8_lossy(rest).into_owned(),
        // The bytes are the payload, exactly as given, signed with the published key.
        1 => fixture.issuer.sign_raw_payload(rest),
        // Claims signed by the published key under another key id.
        _ => match serde_json::from_slice(rest) {
            Ok(claims) => fixture
                .issuer
                .mint_with_kid(ISSUER, claims, "unpublished"),
            Err(_) => return,
        },
    };
    let ours = validate_with_keys(&token, &fixture.keys, Duration::from_secs(300)).ok();
    assert_eq!(ours, reference(&token, &fixture.reference_key), "token {token}");
});
