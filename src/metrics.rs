//! Prometheus metrics, served on an opt-in listener (`KEY_CONNECTOR_METRICS_URLS`), never on
//! the API's own port, so they are not exposed through the reverse proxy by accident.
//!
//! What is counted (all names prefixed `key_connector_`):
//! - `http_requests_total{method,route,status}` and `http_request_duration_seconds{method,route}`
//! - `auth_failures_total{reason}`: `missing_token`, `invalid_token`, `forbidden`, `unavailable`
//! - `rsa_key_operations_total{operation,outcome}` and `rsa_key_operation_duration_seconds{operation}`
//!   for wrap, unwrap and health checks of the RSA key provider
//! - `store_errors_total{kind}`: `unavailable`, `corrupt`, `config`
//!
//! Until the listener is enabled no recorder is installed and every recording is a no-op.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds): sub-millisecond API answers up to remote KMS calls.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            let _ = HANDLE.set(handle.clone());
            Ok(handle)
        }
        // Lost a race with another install in this process: use the winner's.
        Err(_) => HANDLE
            .get()
            .cloned()
            .ok_or_else(|| "another metrics recorder is installed".to_owned()),
    }
}

/// `GET /metrics` in the Prometheus text format.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Middleware counting requests by route template (never the raw path: no unbounded labels).
pub async fn track_http(request: Request, next: Next) -> Response {
    if HANDLE.get().is_none() {
        // No recorder: recording would be a no-op, building its labels is not.
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("key_connector_http_requests_total", "method" => method, "route" => route, "status" => status).increment(1);
    metrics::histogram!("key_connector_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The route template as a label: the service's own routes by name, anything else one label.
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    match matched.map(MatchedPath::as_str) {
        Some("/user-keys") => "/user-keys",
        Some("/alive") => "/alive",
        Some("/now") => "/now",
        Some("/health") => "/health",
        Some("/openapi.json") => "/openapi.json",
        Some(_) => "other",
        None => "unmatched",
    }
}

/// A connection refused because the open-connection cap was reached.
pub fn connection_refused() {
    metrics::counter!("key_connector_connections_refused_total").increment(1);
}

/// The method as a label from a fixed set: a client must not be able to mint label values
/// (each is a time series held forever) by sending made-up methods.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

pub fn auth_failure(reason: &'static str) {
    metrics::counter!("key_connector_auth_failures_total", "reason" => reason).increment(1);
}

pub fn store_error(kind: &'static str) {
    metrics::counter!("key_connector_store_errors_total", "kind" => kind).increment(1);
}

pub fn rsa_key_operation(operation: &'static str, ok: bool, started: Instant) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("key_connector_rsa_key_operations_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("key_connector_rsa_key_operation_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}
