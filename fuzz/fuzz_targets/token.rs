//! Token parsing and validation: arbitrary text as a bearer token, and arbitrary claims
//! signed by a published key (so that claim checks are reached past the signature).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use key_connector::auth::jwks::{IdentityKeys, signing_keys};
use key_connector::auth::validate_with_keys;
use key_connector::dev::issuer::DevIssuer;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://identity.example.test";

fn fixture() -> &'static (DevIssuer, IdentityKeys) {
    static FIXTURE: OnceLock<(DevIssuer, IdentityKeys)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let issuer = DevIssuer::generate().expect("a signing key");
        let jwks = serde_json::to_vec(&issuer.jwks()).expect("JSON");
        let keys = IdentityKeys {
            issuer: ISSUER.to_owned(),
            keys: signing_keys(&jwks).expect("the issuer's own JWKS"),
        };
        (issuer, keys)
    })
}

fuzz_target!(|data: &[u8]| {
    let (issuer, keys) = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let token = match mode % 3 {
        // The bytes are the token.
        0 => text.into_owned(),
        // The bytes are claims, signed with the published key.
        1 => match serde_json::from_str(&text) {
            Ok(claims) => issuer.mint(ISSUER, claims),
            Err(_) => return,
        },
        // Claims signed by the published key under another key id.
        _ => match serde_json::from_str(&text) {
            Ok(claims) => issuer.mint_with_kid(ISSUER, claims, "unpublished"),
            Err(_) => return,
        },
    };
    let _ = validate_with_keys(&token, keys, Duration::from_secs(300));
});
