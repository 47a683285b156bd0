//! `GET /health`: whether the RSA key provider can still produce its key.
//!
//! Upstream answers `Healthy` (200) or `Unhealthy` (503) in plain text; container health
//! checks depend on exactly that. The check is bounded so a hung provider reads as unhealthy.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn health(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(HEALTH_TIMEOUT, state.rsa_key.check_health()).await {
        Ok(Ok(())) => (StatusCode::OK, "Healthy"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "health check: RSA key provider failed");
            (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy")
        }
        Err(_) => {
            tracing::warn!("health check: RSA key provider did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy")
        }
    }
}
