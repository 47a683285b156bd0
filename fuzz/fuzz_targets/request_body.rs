//! The body of `POST` and `PUT /user-keys`: a key is accepted only from exactly one `key`
//! property holding non-empty base64, and what is accepted decodes to what was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = key_connector::routes::parse_user_key_body(data) {
        assert!(!key.as_bytes().is_empty(), "an empty key was accepted");
    }
});
