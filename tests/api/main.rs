//! Integration tests: the real router on port 0, a real test identity provider, real stores.

mod auth;
#[cfg(feature = "awskms")]
mod awskms;
mod azure_storage;
#[cfg(feature = "azurekv")]
mod azurekv;
mod backup;
mod binary;
mod certificate_store;
mod certificates;
mod compat;
mod connections;
mod container;
mod cors;
mod files;
#[cfg(feature = "gcpkms")]
mod gcpkms;
mod https;
mod image;
mod kubernetes;
mod lifecycle;
mod openapi;
mod operations;
mod outage;
mod panics;
#[cfg(feature = "pkcs11")]
mod pkcs11;
mod quickstart;
mod recovery;
mod replicas;
mod stores;
mod support;
mod user_keys;
mod vault;
mod vault_transit;
