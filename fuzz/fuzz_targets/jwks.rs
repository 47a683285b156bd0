//! The identity server's JWKS document, as fetched.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = key_connector::auth::jwks::signing_keys(data);
});
