//! Token parsing and validation: arbitrary text as a bearer token, and arbitrary claims
//! signed by a published key (so that claim checks are reached past the signature).
//!
//! Differential: every decision must be the one the generic decoder (`jsonwebtoken::decode`
//! into a JSON value, then upstream's policy on that value) makes, which the service's own
//! check replaced on the hot path (`reference_decision`, the model the unit tests use too).
//! A token one accepts and the other refuses, or accepts for another user, is a crash.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use key_connector::auth::jwks::{IdentityKeys, signing_keys};
use key_connector::auth::jws::reference_decision;
use key_connector::auth::validate_with_keys;
use key_connector::dev::issuer::DevIssuer;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://identity.example.test";
const LEEWAY: Duration = Duration::from_secs(300);

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
            Ok(claims) => fixture.issuer.mint_with_kid(ISSUER, claims, "unpublished"),
            Err(_) => return,
        },
    };
    let ours = validate_with_keys(&token, &fixture.keys, LEEWAY).ok();
    let reference = reference_decision(&token, &fixture.reference_key, ISSUER, LEEWAY);
    assert_eq!(ours, reference, "token {token}");
});
