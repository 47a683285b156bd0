//! `GET|POST|PUT /user-keys`: the token's user reads, creates or replaces their key.
//!
//! The body is parsed by hand rather than by a typed extractor so that every way it can be
//! wrong gets a precise 4xx, property names match case-insensitively (ASP.NET model
//! binding), and nothing is written unless the whole request is valid.

use axum::Json;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine;
use base64::alphabet::STANDARD as STANDARD_ALPHABET;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::auth::AuthenticatedUser;
use crate::connections::{BodyReadTimeout, ConnectionLimits};
use crate::crypto::{SealedForm, UserKey};
use crate::dotnet_time::now_utc;
use crate::error::ApiError;
use crate::routes::RequestId;
use crate::state::AppState;
use crate::store::{CreateOutcome, StoredUserKey};

/// Largest request body accepted. A user key is tens of bytes; this leaves ample room
/// without letting a client make the server buffer megabytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// .NET's `Convert.FromBase64String`: standard alphabet, padding required, non-zero
/// trailing bits tolerated.
const DOTNET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD_ALPHABET,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

#[derive(Serialize)]
pub struct UserKeyResponse {
    key: String,
}

impl Drop for UserKeyResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// One audit line per key read or write that reached a handler: action, user, outcome,
/// the service's request id and, escaped, the client's if it sent one. Never the key.
fn audit<T>(
    user: &AuthenticatedUser,
    request: &RequestId,
    action: &'static str,
    result: &Result<T, ApiError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(ApiError::NoKey) => "not_found",
        Err(
            ApiError::BadRequest(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::RequestTimeout(_),
        ) => "rejected",
        Err(ApiError::Unavailable(_)) => "unavailable",
        Err(ApiError::StoredKeyRefused) => "refused",
        Err(_) => "error",
    };
    tracing::info!(
        target: "audit",
        user_id = %user.user_id,
        action,
        outcome,
        request_id = request.as_str(),
        client_request_id = request.client().map(tracing::field::debug),
    );
}

pub async fn get_key(
    State(state): State<AppState>,
    request: RequestId,
    user: AuthenticatedUser,
) -> Result<Json<UserKeyResponse>, ApiError> {
    let result = read_key(&state, &user).await;
    audit(&user, &request, "read", &result);
    result
}

async fn read_key(
    state: &AppState,
    user: &AuthenticatedUser,
) -> Result<Json<UserKeyResponse>, ApiError> {
    let stored = state
        .store
        .read_user_key(user.user_id)
        .await?
        .ok_or(ApiError::NoKey)?;
    let form = SealedForm::of(&stored.sealed_key);
    if form == SealedForm::Unbound && state.binding.refuses_unbound().await? {
        // Every key was bound (bind-user-keys): an unbound one in this row may be a copy of
        // another user's, put there by someone who can write the database.
        tracing::error!(
            user_id = %user.user_id,
            "refused a user key in upstream's unbound form: every key was bound, so it may be \
             a copy of another user's; if an instance without userKeyBinding=on wrote it, run \
             bind-user-keys again"
        );
        return Err(ApiError::StoredKeyRefused);
    }
    let key = state
        .cipher
        .open_user_key(&stored.sealed_key, user.user_id)
        .map_err(|error| match form {
            SealedForm::Bound => {
                tracing::error!(
                    user_id = %user.user_id,
                    %error,
                    "refused a bound user key that does not open for this user: a copy of \
                     another user's, or altered"
                );
                ApiError::StoredKeyRefused
            }
            SealedForm::Unbound => {
                tracing::error!(user_id = %user.user_id, %error, "stored user key cannot be decrypted");
                ApiError::Internal(
                    "the stored key cannot be decrypted; the operator has been told".into(),
                )
            }
        })?;
    state.last_access.record(user.user_id, now_utc());
    Ok(Json(UserKeyResponse {
        key: key.to_base64().to_string(),
    }))
}

/// What a write may do to an existing key, from the request's method.
#[derive(Clone, Copy)]
pub enum KeyWrite {
    /// `POST`: only a user without a key gets one (400 otherwise, nothing changes).
    Create,
    /// `PUT`: creates the key or replaces it, setting `RevisionDate`.
    CreateOrReplace,
}

impl<S: Send + Sync> FromRequestParts<S> for KeyWrite {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.method {
            Method::POST => Ok(Self::Create),
            Method::PUT => Ok(Self::CreateOrReplace),
            // The router sends only POST and PUT here.
            _ => Err(ApiError::MethodNotAllowed),
        }
    }
}

/// `POST` and `PUT /user-keys`: the method says what the write may do ([`KeyWrite`]).
pub async fn write_key(
    State(state): State<AppState>,
    write: KeyWrite,
    request: RequestId,
    user: AuthenticatedUser,
    body: KeyWriteBody,
) -> Result<StatusCode, ApiError> {
    let result = async {
        let key = body.read().await?;
        let sealed = seal(&state, &user, &key).await?;
        match write {
            KeyWrite::Create => {
                let row = StoredUserKey::fresh(user.user_id, sealed, now_utc());
                match state.store.create_user_key(&row).await? {
                    CreateOutcome::Created => Ok(StatusCode::OK),
                    CreateOutcome::AlreadyExists => Err(ApiError::BadRequest(
                        "this user already has a key; use PUT to replace it".into(),
                    )),
                }
            }
            KeyWrite::CreateOrReplace => {
                state
                    .store
                    .put_user_key(user.user_id, &sealed, now_utc())
                    .await?;
                Ok(StatusCode::OK)
            }
        }
    }
    .await;
    let action = match write {
        KeyWrite::Create => "create",
        KeyWrite::CreateOrReplace => "put",
    };
    audit(&user, &request, action, &result);
    result
}

async fn seal(
    state: &AppState,
    user: &AuthenticatedUser,
    key: &UserKey,
) -> Result<String, ApiError> {
    let form = state.binding.seal_form().await?;
    state
        .cipher
        .seal_user_key(key, user.user_id, form)
        .map_err(|e| ApiError::Unavailable(format!("could not encrypt the key: {e}")))
}

/// The body of a POST or PUT, not read yet: reading it can fail, and that failure belongs to
/// the request's outcome (and its audit line) like any other.
pub struct KeyWriteBody {
    headers: HeaderMap,
    body: Body,
    /// How long the body may take to arrive, from the connection's limits.
    timeout: Duration,
}

impl<S: Send + Sync> FromRequest<S> for KeyWriteBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let timeout = parts
            .extensions
            .get::<BodyReadTimeout>()
            // A router driven without a listener gets the listeners' default.
            .map_or_else(
                || ConnectionLimits::default().request_headers_timeout,
                |limit| limit.0,
            );
        Ok(Self {
            headers: parts.headers,
            body,
            timeout,
        })
    }
}

impl KeyWriteBody {
    /// Reads `{"key": "<base64>"}` (property name in any case) into the key's bytes.
    async fn read(self) -> Result<UserKey, ApiError> {
        require_json_content_type(&self.headers)?;
        let read = axum::body::to_bytes(self.body, MAX_BODY_BYTES);
        let bytes: Bytes = match tokio::time::timeout(self.timeout, read).await {
            Err(_) => return Err(ApiError::RequestTimeout(self.timeout)),
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) if is_length_limit(&error) => {
                return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
            }
            Ok(Err(_)) => {
                return Err(ApiError::BadRequest(
                    "the request body could not be read to its end".into(),
                ));
            }
        };
        parse_user_key_body(&bytes)
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ));
    };
    let media_type = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let is_json = media_type == "application/json"
        || media_type == "text/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "content type `{media_type}` is not JSON; send `Content-Type: application/json`"
        )))
    }
}

/// The body as far as the parser needs it: whether it is an object, and the values of its
/// properties named `key` in any case. Read straight from the JSON: a parsed map would keep
/// one of two properties spelt the same and hide that the body names `key` twice.
enum BodyShape {
    NotObject,
    Object { keys: Vec<serde_json::Value> },
}

impl<'de> serde::Deserialize<'de> for BodyShape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyShapeVisitor)
    }
}

struct BodyShapeVisitor;

impl<'de> serde::de::Visitor<'de> for BodyShapeVisitor {
    type Value = BodyShape;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<BodyShape, A::Error> {
        let mut keys = Vec::new();
        while let Some(IsKeyProperty(is_key)) = map.next_key()? {
            if is_key && keys.len() < 2 {
                keys.push(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(BodyShape::Object { keys })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<BodyShape, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(BodyShape::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<BodyShape, E> {
        Ok(BodyShape::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<BodyShape, E> {
        Ok(BodyShape::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<BodyShape, E> {
        Ok(BodyShape::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<BodyShape, E> {
        Ok(BodyShape::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<BodyShape, E> {
        Ok(BodyShape::NotObject)
    }

    fn visit_unit<E>(self) -> Result<BodyShape, E> {
        Ok(BodyShape::NotObject)
    }
}

/// Whether a property name is `key` in any case (ASP.NET model binding's matching).
struct IsKeyProperty(bool);

impl<'de> serde::Deserialize<'de> for IsKeyProperty {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl serde::de::Visitor<'_> for NameVisitor {
            type Value = IsKeyProperty;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a property name")
            }
            fn visit_str<E>(self, name: &str) -> Result<IsKeyProperty, E> {
                Ok(IsKeyProperty(name.eq_ignore_ascii_case("key")))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Parses the request body. Public for fuzzing and unit tests.
pub fn parse_user_key_body(bytes: &[u8]) -> Result<UserKey, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request body is empty; send {\"key\": \"<base64>\"}".into(),
        ));
    }
    let shape: BodyShape = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the request body is not valid JSON ({e}); send {{\"key\": \"<base64>\"}}"
        ))
    })?;
    let BodyShape::Object { mut keys } = shape else {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object {\"key\": \"<base64>\"}".into(),
        ));
    };
    if keys.len() > 1 {
        return Err(ApiError::BadRequest(
            "the request body has more than one `key` property (names are case-insensitive)".into(),
        ));
    }
    let Some(key) = keys.pop() else {
        return Err(ApiError::BadRequest(
            "the request body has no `key` property".into(),
        ));
    };
    let serde_json::Value::String(text) = key else {
        return Err(ApiError::BadRequest(
            "`key` must be a string holding base64".into(),
        ));
    };
    let text = Zeroizing::new(text);
    // .NET ignores whitespace inside base64; so does this, for the same clients.
    let compact: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
            .collect(),
    );
    if compact.is_empty() {
        return Err(ApiError::BadRequest("`key` must not be empty".into()));
    }
    let decoded = DOTNET_BASE64
        .decode(compact.as_bytes())
        .map_err(|_| ApiError::BadRequest("`key` is not valid base64".into()))?;
    Ok(UserKey::new(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_key_in_any_case() {
        for body in [
            r#"{"key":"AQID"}"#,
            r#"{"Key":"AQID"}"#,
            r#"{"KEY":"AQID","other":1}"#,
        ] {
            assert_eq!(
                parse_user_key_body(body.as_bytes()).unwrap().as_bytes(),
                [1, 2, 3]
            );
        }
    }

    #[test]
    fn rejects_every_malformed_body() {
        for body in [
            "",
            "  ",
            "not json",
            "[]",
            "\"AQID\"",
            "{}",
            r#"{"key":null}"#,
            r#"{"key":123}"#,
            r#"{"key":""}"#,
            r#"{"key":"   "}"#,
            r#"{"key":"!!!!"}"#,
            r#"{"key":"AQI"}"#,
            r#"{"key":"AQID","Key":"AQID"}"#,
            r#"{"key":"AQID","key":"BBBB"}"#,
            r#"{"key":"AQID","other":{"key":1},"KEY":"AQID"}"#,
            r#"{"key":"AQID""#,
        ] {
            assert!(
                matches!(
                    parse_user_key_body(body.as_bytes()),
                    Err(ApiError::BadRequest(_))
                ),
                "{body:?} should be rejected"
            );
        }
    }

    #[test]
    fn tolerates_whitespace_and_trailing_bits_like_dotnet() {
        assert_eq!(
            parse_user_key_body(br#"{"key":"AQ ID"}"#)
                .unwrap()
                .as_bytes(),
            [1, 2, 3]
        );
        assert_eq!(
            parse_user_key_body(br#"{"key":"AR=="}"#)
                .unwrap()
                .as_bytes(),
            [1]
        );
    }
}
