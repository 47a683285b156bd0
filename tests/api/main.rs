//! Integration tests: the real router on port 0, a real test identity provider, real stores.

mod helpers;
mod stores;
