//! The `gcpkms` RSA key provider: an asymmetric-decryption key version in Google Cloud KMS.
//! `settings` (its typed settings, their catalog rows and their parsing) is built in every build,
//! so that a build without the `gcpkms` Cargo feature still reads the provider's settings and
//! says which feature it needs; `provider` (the client itself) needs the feature.

mod settings;
pub use settings::*;

#[cfg(feature = "gcpkms")]
mod provider;
#[cfg(feature = "gcpkms")]
pub use provider::*;
