//! Shared test harness: spawn_app on port 0 and a test identity provider.
