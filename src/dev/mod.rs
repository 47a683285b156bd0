//! `key-connector dev`: the newcomer's first minute. Not for production.
//!
//! Placeholder: see the quickstart work item.
