//! What the integration tests share: the application on port 0 ([`app`]), the identity
//! provider ([`idp`]), the real binary ([`binary`]) and the ports it listens on ([`ports`]),
//! the SQL servers ([`databases`]), a real Vault ([`openbao`]), the stand-ins of remote
//! services ([`tls`], [`proxy`]), the vendors' SDKs that check those stand-ins ([`vendor`]),
//! and the rule for absent backends.

pub mod app;
pub mod binary;
pub mod databases;
pub mod idp;
pub mod openbao;
pub mod ports;
pub mod proxy;
pub mod tls;
pub mod vendor;

pub use app::*;
pub use idp::TestIdp;
pub use tls::{LocalTlsStandIn, PrivateCaServer};

use uuid::Uuid;

/// A random base64 key like the clients send (64 bytes).
pub fn random_key() -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..64).map(|_| rand_byte()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rand_byte() -> u8 {
    (Uuid::new_v4().as_u128() & 0xff) as u8
}

/// Whether a missing external backend must fail the run instead of skipping.
pub fn backends_required() -> bool {
    std::env::var("KC_REQUIRE_BACKENDS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Skips (ignored, with why) or fails (when backends are required) a test that needs something
/// absent.
#[macro_export]
macro_rules! skip_or_fail {
    ($($reason:tt)*) => {{
        let reason = format!($($reason)*);
        if $crate::support::backends_required() {
            panic!("required backend missing: {reason}");
        }
        $crate::harness::skip(reason)
    }};
}

/// A throw-away database on `server`, or skip the test. A SQL Server that is not configured
/// (`KC_TEST_SQLSERVER` unset) is skipped even when backends are required, as CI runs
/// without one; any other server that cannot be reached fails under KC_REQUIRE_BACKENDS=1.
#[macro_export]
macro_rules! database_or_skip {
    ($server:expr) => {{
        let server: $crate::support::databases::Engine = $server;
        match $crate::support::databases::TestDatabase::reserve(server).await {
            Ok(database) => database,
            Err(reason) if !server.is_configured() => $crate::harness::skip(reason),
            Err(reason) => $crate::skip_or_fail!("{reason}"),
        }
    }};
}
