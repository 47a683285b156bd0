//! `GET /health`: whether the RSA key provider can still produce its key.
//!
//! Upstream answers `Healthy` (200) or `Unhealthy` (503) in plain text; container health
//! checks depend on exactly that. `/health` is anonymous: the provider is asked through
//! [`crate::keys::health::HealthCache`], at most once every few seconds.

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

pub async fn health(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.health.check(state.rsa_key.as_ref()).await {
        (StatusCode::OK, "Healthy")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy")
    }
}
