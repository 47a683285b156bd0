//! The PKCS#12 readers (certificate files, TLS identities), with a password and without
//! one (the absent-password reading).
#![no_main]

use key_connector::pkcs12;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for password in [None, Some("password")] {
        let _ = pkcs12::private_key_pkcs8(data, password);
        let _ = pkcs12::rsa_public_key_spki(data, password);
        let _ = pkcs12::certificates(data, password);
        let _ = pkcs12::tls_identity(data, password);
    }
});
