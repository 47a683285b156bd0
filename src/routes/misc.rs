//! `GET /alive` and `GET /now`: anonymous liveness, answering the current UTC time.

use axum::Json;

use crate::dotnet_time::{format_iso_utc, now_utc};

/// The time as a JSON string in ASP.NET's `DateTime` form, as upstream answers.
pub async fn now() -> Json<String> {
    Json(format_iso_utc(now_utc()))
}
