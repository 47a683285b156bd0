//! The `azurekv` RSA key provider: a key in Azure Key Vault (or Managed HSM). `settings` (its
//! typed settings, their catalog rows and their parsing) is built in every build, so that a build
//! without the `azurekv` Cargo feature still reads the provider's settings and says which feature
//! it needs; `provider` (the client itself) needs the feature.

mod settings;
pub use settings::*;

#[cfg(feature = "azurekv")]
mod provider;
#[cfg(feature = "azurekv")]
pub use provider::*;
