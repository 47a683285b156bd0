//! Bearer-token authentication against the Bitwarden identity server.
//!
//! Validation follows what upstream's ASP.NET `JwtBearer` does with its settings: keys and
//! issuer from the OIDC discovery document, RSA signatures only (never `none`, never HMAC,
//! whatever the token's header claims), lifetime with ASP.NET's default five-minute clock
//! skew, no audience check. Authorization is upstream's `Application` policy: `amr` contains
//! `Application` or `external`, `scope` contains `api`. The user is `sub`, a GUID.
//!
//! The identity server being unreachable is a temporary fault: requests get
//! [`AuthError::Unavailable`] (503) while no keys are known, a background task keeps trying,
//! and an unknown `kid` refreshes the JWKS at most once per [`AuthOptions::min_refresh_interval`].
//!
//! Key rotation: a token whose `kid` the known keys do not have is first tried against every
//! published key, as upstream's token handler does (`TryAllIssuerSigningKeys`): the signature
//! is what proves the token, the `kid` is only a hint. If none verifies, the token waits for
//! a JWKS fetch that starts after it arrived (the next one the rate limit permits, at most one
//! interval away) rather than being refused: a flood of made-up key ids must not keep a key
//! the identity server has just published from being trusted, nor reach the identity server
//! more than once per interval. Keys are also refreshed every few minutes, so a withdrawn key
//! stops vouching for tokens soon.

pub mod jwks;
mod token_cache;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use jwks::RSA_ALGORITHMS;
use jwks::{FetchError, IdentityKeys, fetch_identity_keys};
use token_cache::TokenCache;

/// ASP.NET's default `ClockSkew`: tokens are accepted up to five minutes past `exp` and
/// before `nbf`, so clients with slightly wrong clocks are not logged out.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The user a valid, authorized token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub user_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    MissingToken,
    #[error("the bearer token is not valid: {0}")]
    InvalidToken(String),
    #[error("the token does not allow this: {0}")]
    Forbidden(String),
    #[error("tokens cannot be checked right now: {0}")]
    Unavailable(String),
}

/// Tunables; the defaults are what production uses, tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// Accepted distance past `exp` / before `nbf`.
    pub clock_skew: Duration,
    /// At most one JWKS refresh per this interval, whatever triggers it.
    pub min_refresh_interval: Duration,
    /// How often keys are refreshed when all is well.
    pub periodic_refresh: Duration,
    /// Longest wait between attempts while the identity server is unreachable.
    pub max_retry_backoff: Duration,
    /// Timeout of each HTTP request to the identity server.
    pub http_timeout: Duration,
    /// Verified tokens remembered at most.
    pub token_cache_capacity: usize,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            clock_skew: CLOCK_SKEW,
            min_refresh_interval: Duration::from_secs(2),
            periodic_refresh: Duration::from_secs(300),
            max_retry_backoff: Duration::from_secs(5),
            http_timeout: Duration::from_secs(10),
            token_cache_capacity: 100_000,
        }
    }
}

/// The outcome of the last attempt to load keys, for deciding between 401 and 503.
#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    /// When the last fetch that succeeded began.
    last_success_started: Option<Instant>,
    /// Bumped on every successful load, so waiters know someone else refreshed.
    generation: u64,
}

/// Validates bearer tokens against the identity server's discovery document and JWKS.
pub struct Authenticator {
    discovery_url: String,
    http: reqwest::Client,
    options: AuthOptions,
    keys: RwLock<Option<Arc<IdentityKeys>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    generation: std::sync::atomic::AtomicU64,
    cache: TokenCache,
}

impl Authenticator {
    pub fn new(identity_server_uri: &str) -> Arc<Self> {
        Self::with_options(identity_server_uri, AuthOptions::default())
    }

    pub fn with_options(identity_server_uri: &str, options: AuthOptions) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.http_timeout.min(Duration::from_secs(5)))
            .timeout(options.http_timeout)
            .user_agent(concat!("key-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Arc::new(Self {
            discovery_url: format!(
                "{}/.well-known/openid-configuration",
                identity_server_uri.trim_end_matches('/')
            ),
            http,
            cache: TokenCache::new(options.token_cache_capacity),
            options,
            keys: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether discovery and keys are loaded (tokens can be checked).
    pub fn is_ready(&self) -> bool {
        self.current_keys().is_some()
    }

    /// Starts loading discovery and JWKS in the background: retries with backoff while the
    /// identity server is unreachable, then refreshes periodically, keeping the last good
    /// keys when a refresh fails.
    pub fn spawn_discovery(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let wait = match this.refresh_keys(true).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(500);
                        this.options.periodic_refresh
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "identity server keys not loaded; retrying");
                        let wait = backoff;
                        backoff = (backoff * 2).min(this.options.max_retry_backoff);
                        wait
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Waits up to `limit` for the first keys, so a freshly started service does not answer
    /// its first requests with 503 while discovery is in flight. Returns readiness.
    pub async fn wait_until_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.is_ready() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn current_keys(&self) -> Option<Arc<IdentityKeys>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads discovery and JWKS. Single-flight: concurrent callers wait for one fetch.
    /// Unless `forced`, at most one fetch per `min_refresh_interval`; a caller turned away
    /// gets the last attempt's error, if it failed.
    async fn refresh_keys(&self, forced: bool) -> Result<(), String> {
        let seen = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut state = self.refresh.lock().await;
        if state.generation != seen {
            return Ok(()); // someone refreshed while this caller waited
        }
        if !forced
            && let Some(last) = state.last_attempt
            && last.elapsed() < self.options.min_refresh_interval
        {
            return match &state.last_error {
                Some(error) => Err(error.clone()),
                None => Ok(()),
            };
        }
        self.fetch_keys(&mut state).await
    }

    /// Waits for a fetch of the keys that begins after `arrival`, starting it when the rate
    /// limit permits (at most one interval from now), single-flight with every other caller.
    async fn refresh_keys_after(&self, arrival: Instant) -> Result<(), String> {
        loop {
            let mut state = self.refresh.lock().await;
            if state
                .last_success_started
                .is_some_and(|started| started >= arrival)
            {
                return Ok(());
            }
            if let Some(last) = state.last_attempt
                && last >= arrival
                && let Some(error) = &state.last_error
            {
                return Err(error.clone());
            }
            let permitted = state.last_attempt.map_or(Instant::now(), |last| {
                last + self.options.min_refresh_interval
            });
            let wait = permitted.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return self.fetch_keys(&mut state).await;
            }
            drop(state);
            tokio::time::sleep(wait).await;
        }
    }

    /// One fetch of discovery and JWKS, with the refresh lock held.
    async fn fetch_keys(&self, state: &mut RefreshState) -> Result<(), String> {
        let started = Instant::now();
        state.last_attempt = Some(started);
        match fetch_identity_keys(&self.http, &self.discovery_url).await {
            Ok(keys) => {
                let previous = self.current_keys();
                let first = previous.is_none();
                // A key withdrawn from the JWKS must stop vouching for cached tokens now.
                if let Some(previous) = previous
                    && previous
                        .keys
                        .iter()
                        .any(|old| !keys.keys.iter().any(|new| new.kid == old.kid))
                {
                    self.cache.clear();
                }
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
                state.generation += 1;
                state.last_error = None;
                state.last_success_started = Some(started);
                self.generation
                    .store(state.generation, std::sync::atomic::Ordering::Release);
                if first {
                    tracing::info!(url = %self.discovery_url, "identity server keys loaded");
                }
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                state.last_error = Some(message.clone());
                if let FetchError::Invalid { .. } = error {
                    tracing::error!(%error, "identity server answered with an unusable document");
                }
                Err(message)
            }
        }
    }

    /// Checks the `Authorization` header value.
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<AuthenticatedUser, AuthError> {
        let arrival = Instant::now();
        let token = bearer_token(authorization)?;
        let digest = TokenCache::digest(token);
        if let Some(user_id) = self.cache.get(&digest) {
            return Ok(AuthenticatedUser { user_id });
        }

        let header = decode_rsa_header(token)?;

        let keys = match self.current_keys() {
            Some(keys) => keys,
            None => {
                self.refresh_keys(false)
                    .await
                    .map_err(AuthError::Unavailable)?;
                self.current_keys().ok_or_else(|| {
                    AuthError::Unavailable("the identity server's keys are not loaded yet".into())
                })?
            }
        };
        let claims = match header.kid.as_deref() {
            Some(kid) if !keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid)) => {
                self.verify_unknown_kid(token, header.alg, kid, keys, arrival)
                    .await?
            }
            kid => self
                .verify(token, header.alg, kid, &keys)?
                .ok_or_else(no_key_verifies)?,
        };
        let user_id = authorize(&claims)?;
        if let Some(exp) = claims.get("exp").and_then(Value::as_f64) {
            let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
            let remaining = exp - now + self.options.clock_skew.as_secs_f64();
            if remaining > 0.0 {
                self.cache.insert(
                    digest,
                    user_id,
                    Instant::now() + Duration::from_secs_f64(remaining.min(86_400.0)),
                );
            }
        }
        Ok(AuthenticatedUser { user_id })
    }

    /// A token naming a key id that is not published (yet): every published key is tried;
    /// if none verifies, the keys are fetched again (see the module documentation) and the
    /// token checked against what the identity server publishes then.
    async fn verify_unknown_kid(
        &self,
        token: &str,
        algorithm: Algorithm,
        kid: &str,
        keys: Arc<IdentityKeys>,
        arrival: Instant,
    ) -> Result<Value, AuthError> {
        if let Some(claims) = self.verify(token, algorithm, None, &keys)? {
            return Ok(claims);
        }
        self.refresh_keys_after(arrival)
            .await
            .map_err(AuthError::Unavailable)?;
        let keys = self.current_keys().unwrap_or(keys);
        let published = keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid));
        match self.verify(token, algorithm, published.then_some(kid), &keys)? {
            Some(claims) => Ok(claims),
            None if published => Err(no_key_verifies()),
            None => Err(AuthError::InvalidToken(
                "it is signed with a key the identity server does not publish".into(),
            )),
        }
    }

    /// Verifies signature, issuer and lifetime against the candidate keys: the claims, or
    /// `None` when no candidate verifies the signature.
    fn verify(
        &self,
        token: &str,
        algorithm: Algorithm,
        kid: Option<&str>,
        keys: &IdentityKeys,
    ) -> Result<Option<Value>, AuthError> {
        verify_with_keys(token, algorithm, kid, keys, self.options.clock_skew)
    }
}

/// Checks a token against `keys` alone: header, algorithm, signature (by the named key, or
/// by any published key when the `kid` matches none), issuer, lifetime and authorization.
/// No cache and no refresh: what [`Authenticator::authenticate`] decides once the keys are
/// fetched. Public for the fuzz targets.
pub fn validate_with_keys(
    token: &str,
    keys: &IdentityKeys,
    clock_skew: Duration,
) -> Result<Uuid, AuthError> {
    let header = decode_rsa_header(token)?;
    let kid = header
        .kid
        .as_deref()
        .filter(|kid| keys.keys.iter().any(|k| k.kid.as_deref() == Some(*kid)));
    let claims =
        verify_with_keys(token, header.alg, kid, keys, clock_skew)?.ok_or_else(no_key_verifies)?;
    authorize(&claims)
}

/// The token's header, if it is a JWT signed with an RSA algorithm.
fn decode_rsa_header(token: &str) -> Result<jsonwebtoken::Header, AuthError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| AuthError::InvalidToken("it is not a well-formed signed JWT".into()))?;
    if !RSA_ALGORITHMS.contains(&header.alg) {
        return Err(AuthError::InvalidToken(format!(
            "algorithm {:?} is not accepted; tokens must be RSA-signed",
            header.alg
        )));
    }
    Ok(header)
}

/// Verifies signature, issuer and lifetime against the candidate keys: the claims, or
/// `None` when no candidate verifies the signature.
fn verify_with_keys(
    token: &str,
    algorithm: Algorithm,
    kid: Option<&str>,
    keys: &IdentityKeys,
    clock_skew: Duration,
) -> Result<Option<Value>, AuthError> {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = clock_skew.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_issuer(&[&keys.issuer]);
    validation.set_required_spec_claims(&["exp", "iss"]);

    let candidates = keys.keys.iter().filter(|k| {
        kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
            && k.algorithm.is_none_or(|pinned| pinned == algorithm)
    });
    for key in candidates {
        match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
            Ok(data) => return Ok(Some(data.claims)),
            Err(error) => {
                let rejection = match error.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) => continue,
                    ErrorKind::ExpiredSignature => AuthError::InvalidToken("it has expired".into()),
                    ErrorKind::ImmatureSignature => {
                        AuthError::InvalidToken("it is not valid yet (nbf)".into())
                    }
                    ErrorKind::InvalidIssuer => AuthError::InvalidToken(
                        "it was not issued by the configured identity server".into(),
                    ),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        AuthError::InvalidToken(format!("claim `{claim}` is missing"))
                    }
                    ErrorKind::InvalidClaimFormat(claim) => {
                        AuthError::InvalidToken(format!("claim `{claim}` is malformed"))
                    }
                    _ => AuthError::InvalidToken("it is not a well-formed signed JWT".into()),
                };
                return Err(rejection);
            }
        }
    }
    Ok(None)
}

fn no_key_verifies() -> AuthError {
    AuthError::InvalidToken("no published key verifies its signature".into())
}

/// Extracts the token from `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(authorization: Option<&HeaderValue>) -> Result<&str, AuthError> {
    let value = authorization
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::InvalidToken("the Authorization header is not text".into()))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// Upstream's `Application` policy, then the user id.
fn authorize(claims: &Value) -> Result<Uuid, AuthError> {
    if !claim_contains(claims, "amr", &["Application", "external"]) {
        return Err(AuthError::Forbidden(
            "claim `amr` must contain `Application` or `external`".into(),
        ));
    }
    if !claim_contains(claims, "scope", &["api"]) {
        return Err(AuthError::Forbidden(
            "claim `scope` must contain `api`".into(),
        ));
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::Forbidden("the token names no user (`sub`)".into()))?;
    parse_dotnet_guid(subject)
        .ok_or_else(|| AuthError::Forbidden("the token's `sub` is not a user id (GUID)".into()))
}

/// Whether the claim (a string, or an array of strings as Bitwarden's identity server emits
/// them) holds one of `wanted`, compared ordinally as ASP.NET's `RequireClaim` does. A
/// space-delimited string is one value, as upstream treats it.
fn claim_contains(claims: &Value, name: &str, wanted: &[&str]) -> bool {
    match claims.get(name) {
        Some(Value::String(value)) => wanted.contains(&value.as_str()),
        Some(Value::Array(values)) => values
            .iter()
            .filter_map(Value::as_str)
            .any(|value| wanted.contains(&value)),
        _ => false,
    }
}

/// The forms .NET's `Guid.TryParse` accepts: hyphenated, 32 digits, braces, parentheses.
fn parse_dotnet_guid(text: &str) -> Option<Uuid> {
    let text = text.trim();
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(text);
    if inner.starts_with("urn:") {
        return None;
    }
    Uuid::try_parse(inner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(bearer_token(Some(&header("Bearer abc"))).unwrap(), "abc");
        assert_eq!(bearer_token(Some(&header("bearer  abc "))).unwrap(), "abc");
        assert!(matches!(bearer_token(None), Err(AuthError::MissingToken)));
        assert!(matches!(
            bearer_token(Some(&header("Basic abc"))),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            bearer_token(Some(&header("Bearer"))),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            bearer_token(Some(&header("Bearer   "))),
            Err(AuthError::MissingToken)
        ));
    }

    #[test]
    fn policy_follows_upstreams_application_policy() {
        let user = Uuid::new_v4();
        let ok = json!({"amr": ["Application"], "scope": ["api", "offline_access"], "sub": user.to_string()});
        assert_eq!(authorize(&ok).unwrap(), user);
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            c
        };
        assert!(authorize(&with("amr", json!("external"))).is_ok());
        assert!(authorize(&with("scope", json!("api"))).is_ok());
        for bad in [
            with("amr", json!(["sso"])),
            with("amr", json!(["application"])),
            with("scope", json!("api offline_access")),
            with("scope", json!(["offline_access"])),
            with("scope", json!(null)),
            with("sub", json!("alice")),
            with("sub", json!(42)),
        ] {
            assert!(
                matches!(authorize(&bad), Err(AuthError::Forbidden(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn guids_parse_in_every_dotnet_form() {
        let id = Uuid::new_v4();
        for text in [
            id.to_string(),
            id.to_string().to_uppercase(),
            id.simple().to_string(),
            format!("{{{id}}}"),
            format!("({id})"),
        ] {
            assert_eq!(parse_dotnet_guid(&text), Some(id), "{text}");
        }
        assert_eq!(parse_dotnet_guid("not-a-guid"), None);
        assert_eq!(parse_dotnet_guid(&format!("urn:uuid:{id}")), None);
    }
}
