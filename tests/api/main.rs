//! Integration tests: the real router on port 0, a real test identity provider, real stores.

mod auth;
#[cfg(feature = "awskms")]
mod awskms;
mod binary;
mod certificates;
mod compat;
mod cors;
mod databases;
mod helpers;
mod lifecycle;
mod outage;
mod proxy;
mod quickstart;
mod replicas;
mod stores;
mod user_keys;
