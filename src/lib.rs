//! A drop-in, self-hosted Bitwarden Key Connector.
//!
//! The service keeps each SSO user's key encrypted at rest (AES-256-GCM under one
//! symmetric key per database, itself wrapped by an RSA key the organisation controls)
//! and hands it back to the Bitwarden clients of the token's user.
//!
//! The two seams are [`store::KeyStore`] (where sealed keys live) and
//! [`keys::RsaKeyProvider`] (who wraps the symmetric key). Everything else is plain data
//! flowing through [`state::AppState`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod dev;
pub mod dotnet_time;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod operations;
pub mod pkcs12;
pub mod private_file;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
