//! The `pkcs11` RSA key provider: a private key that never leaves a PKCS#11 token (HSM, smart
//! card). `settings` (its typed settings, their catalog rows and their parsing) is built in every
//! build, so that a build without the `pkcs11` Cargo feature still reads the provider's settings
//! and says which feature it needs; `provider` (the client itself) needs the feature.

mod settings;
pub use settings::*;

#[cfg(feature = "pkcs11")]
mod provider;
#[cfg(feature = "pkcs11")]
pub use provider::*;
