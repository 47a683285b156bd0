//! The `awskms` RSA key provider: a key in AWS Key Management Service (or a KMS-compatible
//! service). `settings` (its typed settings, their catalog rows and their parsing) is built in
//! every build, so that a build without the `awskms` Cargo feature still reads the provider's
//! settings and says which feature it needs; `provider` (the client itself) needs the feature.

mod settings;
pub use settings::*;

#[cfg(feature = "awskms")]
mod provider;
#[cfg(feature = "awskms")]
pub use provider::*;
