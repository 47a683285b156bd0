//! Bitwarden's own client code (its SDK crates, 4.x) drives the real `key-connector` binary:
//! registration, unlock, and what the SDK reports when the service refuses. One test binary;
//! each test starts its own service, identity provider and Bitwarden server stand-in.

#![forbid(unsafe_code)]

mod refusals;
mod registration;
mod support;
mod unlock;
