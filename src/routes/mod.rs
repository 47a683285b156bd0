//! The HTTP surface: routes, the bearer-token extractor, and the layers around them.
//!
//! Layers, outermost first: path normalization (upstream's routing ignores case, clients may
//! send `//user-keys`), request id, tracing, CORS (exactly one origin: the web vault), then
//! the routes. Handlers get everything through [`AppState`].

pub mod health;
mod misc;
mod user_keys;

pub use user_keys::parse_user_key_body;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Uri, header};
use axum::routing::get;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::auth::AuthenticatedUser;
use crate::error::ApiError;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The application's routes with their layers (without path normalization, see
/// [`normalize_path`]).
pub fn router(state: AppState, web_vault_origin: &str) -> Router {
    let cors = CorsLayer::new()
        // Only a matching origin is echoed back; any other gets no CORS headers at all, as
        // with upstream's `SetIsOriginAllowed`.
        .allow_origin(AllowOrigin::predicate({
            let allowed = HeaderValue::from_str(web_vault_origin).ok();
            move |origin: &HeaderValue, _| allowed.as_ref() == Some(origin)
        }))
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true);

    let routes = Router::new()
        .route("/alive", get(misc::now))
        .route("/now", get(misc::now))
        .route("/health", get(health::health))
        .route("/openapi.json", get(misc::openapi))
        .route(
            "/user-keys",
            get(user_keys::get_key)
                .post(user_keys::write_key)
                .put(user_keys::write_key)
                // A user key must never sit in a browser's or a proxy's cache, and its JSON
                // must never be sniffed into something else.
                .layer::<_, std::convert::Infallible>(SetResponseHeaderLayer::overriding(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                ))
                .layer::<_, std::convert::Infallible>(SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                )),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .route_layer(axum::middleware::from_fn(crate::metrics::track_http))
        .with_state(state);
    // The layers every request passes wrap the router as a whole, in one unboxed stack
    // (one box, the fallback service). Added with `Router::layer` they would wrap each
    // route's boxed service in boxes of their own, and axum clones the matched route's
    // service for every request: 29 boxes allocated and freed per request, 8 000
    // instructions, 15% of an `/alive`.
    let layers = ServiceBuilder::new()
        // The id in the logs is always the service's own: a client's `x-request-id` would let
        // it choose what an audit line says. Theirs is set aside and logged apart, escaped.
        .layer(MapRequestLayer::new(set_aside_client_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            // A debug span: at the default level a request makes no span at all, which saved
            // a tenth of a key read's CPU. The audit line names the request id itself, so at
            // `info` nothing is lost but the context on the rare warnings inside a request.
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %RequestId::of(request.headers()).as_str(),
                )
            }),
        )
        .layer(cors)
        .layer(CatchPanicLayer::custom(panic_response));
    Router::new().fallback_service(layers.service(routes))
}

/// A handler that panicked answers 500 with the usual JSON body, and the service goes on: a
/// bug met by one request must not end everyone's. What panicked is logged, never echoed.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = what, "a request handler panicked; answered 500");
    axum::response::IntoResponse::into_response(ApiError::Internal(
        "the request failed on an internal error".into(),
    ))
}

/// Rewrites the request path before routing: repeated slashes collapse (`//user-keys`), a
/// trailing slash is dropped, and ASCII letters are lower-cased, because upstream's ASP.NET
/// routing matches paths case-insensitively and every route here is lower case.
pub fn normalize_path(mut request: Request) -> Request {
    let uri = request.uri();
    let path = uri.path();
    let needs_work = path.contains("//")
        || (path.len() > 1 && path.ends_with('/'))
        || path.bytes().any(|b| b.is_ascii_uppercase());
    if !needs_work {
        return request;
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        normalized.push('/');
        normalized.push_str(&segment.to_ascii_lowercase());
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    if let Some(query) = uri.query() {
        normalized.push('?');
        normalized.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = normalized.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(new_uri) = Uri::from_parts(parts) {
            *request.uri_mut() = new_uri;
        }
    }
    request
}

/// Moves the client's `x-request-id` out of the headers into a [`ClientRequestId`], so that
/// [`SetRequestIdLayer`] gives every request an id of the service's own making.
fn set_aside_client_request_id(mut request: Request) -> Request {
    if let Some(value) = request.headers_mut().remove(&REQUEST_ID) {
        request
            .extensions_mut()
            .insert(ClientRequestId::new(value.as_bytes()));
    }
    request
}

/// The `x-request-id` a client sent, kept only to be logged next to the service's own id.
///
/// Logged through `Debug`, which quotes it and escapes every byte that could end the quote
/// or the line (`"`, `\`, control characters, non-ASCII), so that it cannot pass for
/// another field; cut to [`ClientRequestId::MAX_BYTES`] so that it cannot fill the logs.
#[derive(Clone)]
pub struct ClientRequestId(Box<[u8]>);

impl ClientRequestId {
    /// Bytes of a client's id that are logged; the rest is dropped.
    pub const MAX_BYTES: usize = 128;

    fn new(value: &[u8]) -> Self {
        Self(value[..value.len().min(Self::MAX_BYTES)].into())
    }

    /// The client's id of a request, if it sent one.
    pub fn of(extensions: &axum::http::Extensions) -> Option<Self> {
        extensions.get::<Self>().cloned()
    }
}

impl std::fmt::Debug for ClientRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// The request's `x-request-id`, the one [`SetRequestIdLayer`] gave it (never the client's),
/// and the client's own, if it sent one.
pub struct RequestId(Option<HeaderValue>, Option<ClientRequestId>);

impl RequestId {
    fn of(headers: &axum::http::HeaderMap) -> Self {
        Self(headers.get(&REQUEST_ID).cloned(), None)
    }

    /// The id, or `-` when it is missing or not visible ASCII.
    pub fn as_str(&self) -> &str {
        self.0.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
    }

    /// The `x-request-id` the client sent, to be logged with `Debug` (escaped).
    pub fn client(&self) -> Option<&ClientRequestId> {
        self.1.as_ref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts.headers.get(&REQUEST_ID).cloned(),
            ClientRequestId::of(&parts.extensions),
        ))
    }
}

impl FromRequestParts<AppState> for AuthenticatedUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = state
            .auth
            .authenticate(parts.headers.get(header::AUTHORIZATION))
            .await?;
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_request_id_is_logged_quoted_with_what_could_end_the_quote_escaped() {
        let id = ClientRequestId::new(b"x\\\" outcome=ok\nuser_id=\xff");
        assert_eq!(
            format!("{id:?}"),
            r#""x\\\" outcome=ok\nuser_id=\xff""#,
            "a backslash, a quote, a line break and a non-ASCII byte are escaped"
        );
    }

    #[test]
    fn a_client_request_id_is_cut_to_its_limit() {
        let id = ClientRequestId::new(&[b'a'; 4 * ClientRequestId::MAX_BYTES]);
        assert_eq!(format!("{id:?}").len(), ClientRequestId::MAX_BYTES + 2);
    }

    #[test]
    fn the_service_sets_aside_a_client_request_id() {
        let request = Request::builder()
            .header(REQUEST_ID, "chosen-by-client")
            .body(axum::body::Body::empty())
            .unwrap();
        let request = set_aside_client_request_id(request);
        assert!(request.headers().get(&REQUEST_ID).is_none());
        let client = ClientRequestId::of(request.extensions()).unwrap();
        assert_eq!(format!("{client:?}"), r#""chosen-by-client""#);
    }
}
