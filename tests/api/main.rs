//! Integration tests: the real router on port 0, a real test identity provider, real stores.

mod auth;
#[cfg(feature = "awskms")]
mod awskms;
mod azure_storage;
#[cfg(feature = "azurekv")]
mod azurekv;
mod binary;
mod certificate_store;
mod certificates;
mod compat;
mod container;
mod cors;
mod databases;
#[cfg(feature = "gcpkms")]
mod gcpkms;
mod helpers;
mod https;
mod image;
mod lifecycle;
mod openapi;
mod operations;
mod outage;
#[cfg(feature = "pkcs11")]
mod pkcs11;
mod proxy;
mod quickstart;
mod replicas;
mod stores;
mod user_keys;
mod vault;
