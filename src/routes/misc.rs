//! `GET /alive` and `GET /now`: anonymous liveness, answering the current UTC time; and
//! `GET /openapi.json`, the machine-readable description of the API.

use axum::Json;

use crate::dotnet_time::{format_iso_utc, now_utc};

/// The time as a JSON string in ASP.NET's `DateTime` form, as upstream answers.
pub async fn now() -> Json<String> {
    Json(format_iso_utc(now_utc()))
}

/// The OpenAPI 3 description of every route, checked against the router by the tests.
pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}
