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
//! and an unknown `kid` refreshes the JWKS at most once per
//! [`IdentityServerIntervals::min_refresh`].
//!
//! Key rotation: a token whose `kid` the known keys do not have is first tried against every
//! published key, as upstream's token handler does (`TryAllIssuerSigningKeys`): the signature
//! is what proves the token, the `kid` is only a hint. If none verifies, the token waits for
//! a JWKS fetch that starts after it arrived (the next one the rate limit permits, at most one
//! interval away) rather than being refused: a flood of made-up key ids must not keep a key
//! the identity server has just published from being trusted, nor reach the identity server
//! more than once per interval. Keys are also refreshed every few minutes.
//!
//! Withdrawal: a key set that differs from the last one by key identity (material, `kid`,
//! algorithm pin; see [`jwks::IdentityKeys::vouches_as`]) starts a new epoch. The new keys
//! are swapped in first, then the epoch is published, then the token cache is cleared; the
//! cache serves an entry only in the epoch of the keys it was verified against, so a key that
//! is withdrawn stops vouching at the refresh that sees it gone, even for a token a request
//! was verifying against the old keys at that moment.
//!
//! Time: every interval comes from [`IdentityServerIntervals`] (the application's
//! `Settings::intervals`) and is measured on tokio's clock, so tests shorten them or run on
//! a paused clock. Token lifetimes (`exp`, `nbf`) are wall-clock time, as the identity
//! server writes them.

pub mod jwks;
pub mod jws;
mod token_cache;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::intervals::IdentityServerIntervals;

pub use jwks::RSA_ALGORITHMS;
use jwks::{FetchError, IdentityKeys, fetch_identity_keys, foreign_jwks_warning};
use jws::{CheckedClaims, CompactToken};
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
    /// The identity server's keys are not available. The reason (its URL, the transport
    /// error, what it answered) is for the logs only: clients get a fixed message.
    #[error("tokens cannot be checked right now: {0}")]
    Unavailable(String),
}

/// Tunables; the defaults are what production uses. The intervals come from the
/// application's settings (`Settings::intervals`), which tests shorten.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// Accepted distance past `exp` / before `nbf`.
    pub clock_skew: Duration,
    /// Refresh, retry and timeout of the identity server's keys.
    pub intervals: IdentityServerIntervals,
    /// Memory for remembering verified tokens, in bytes (about 110 bytes a token).
    pub token_cache_bytes: usize,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            clock_skew: CLOCK_SKEW,
            intervals: IdentityServerIntervals::default(),
            token_cache_bytes: 4 << 20,
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
    /// Where the keys were last fetched from, to warn once per change of it.
    jwks_uri: Option<String>,
}

/// The identity server's keys, and the epoch they belong to.
#[derive(Clone)]
struct TrustedKeys {
    keys: Arc<IdentityKeys>,
    /// Bumped each time the keys change by identity: cached tokens verified in an earlier
    /// epoch are not served.
    epoch: u64,
}

/// Validates bearer tokens against the identity server's discovery document and JWKS.
pub struct Authenticator {
    discovery_url: String,
    http: reqwest::Client,
    options: AuthOptions,
    keys: RwLock<Option<TrustedKeys>>,
    /// The epoch of the keys in `keys`, published after they are swapped in: the one cache
    /// lookups ask for.
    epoch: std::sync::atomic::AtomicU64,
    refresh: tokio::sync::Mutex<RefreshState>,
    generation: std::sync::atomic::AtomicU64,
    cache: TokenCache,
    /// Whether keys were ever loaded, for [`Authenticator::wait_until_ready`].
    ready: tokio::sync::watch::Sender<bool>,
}

impl Authenticator {
    pub fn new(
        identity_server_uri: &str,
        intervals: IdentityServerIntervals,
    ) -> Result<Arc<Self>, reqwest::Error> {
        Self::with_options(
            identity_server_uri,
            AuthOptions {
                intervals,
                ..AuthOptions::default()
            },
        )
    }

    /// An error when the HTTP client cannot be built: never one without timeouts instead.
    pub fn with_options(
        identity_server_uri: &str,
        options: AuthOptions,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = jwks::identity_http_client(options.intervals.http_timeout)?;
        Ok(Arc::new(Self {
            discovery_url: format!(
                "{}/.well-known/openid-configuration",
                identity_server_uri.trim_end_matches('/')
            ),
            http,
            cache: TokenCache::new(options.token_cache_bytes),
            options,
            keys: RwLock::new(None),
            epoch: std::sync::atomic::AtomicU64::new(0),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            ready: tokio::sync::watch::Sender::new(false),
        }))
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
            let intervals = &this.options.intervals;
            let mut backoff = intervals.retry.first;
            loop {
                let wait = match this.refresh_keys(true).await {
                    Ok(()) => {
                        backoff = intervals.retry.first;
                        intervals.periodic_refresh
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "identity server keys not loaded; retrying");
                        let wait = backoff;
                        backoff = intervals.retry.after(backoff);
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
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(limit, ready.wait_for(|ready| *ready))
            .await
            .is_ok_and(|loaded| loaded.is_ok())
    }

    fn current_keys(&self) -> Option<TrustedKeys> {
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
            && last.elapsed() < self.options.intervals.min_refresh
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
    /// Strictly after: a fetch that began at the same instant (on a coarse or paused clock)
    /// may have read the keys before the token's key was published.
    async fn refresh_keys_after(&self, arrival: Instant) -> Result<(), String> {
        loop {
            let mut state = self.refresh.lock().await;
            if state
                .last_success_started
                .is_some_and(|started| started > arrival)
            {
                return Ok(());
            }
            if let Some(last) = state.last_attempt
                && last > arrival
                && let Some(error) = &state.last_error
            {
                return Err(error.clone());
            }
            let permitted = state.last_attempt.map_or(Instant::now(), |last| {
                last + self.options.intervals.min_refresh
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
            Ok(published) => {
                if state.jwks_uri.as_deref() != Some(published.jwks_uri.as_str()) {
                    if let Some(warning) =
                        foreign_jwks_warning(&self.discovery_url, &published.jwks_uri)
                    {
                        tracing::warn!("{warning}");
                    }
                    state.jwks_uri = Some(published.jwks_uri);
                }
                let keys = published.keys;
                let previous = self.current_keys();
                let first = previous.is_none();
                let changed = previous
                    .as_ref()
                    .is_some_and(|previous| !previous.keys.vouches_as(&keys));
                let epoch = previous.map_or(0, |previous| previous.epoch + u64::from(changed));
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(TrustedKeys {
                    keys: Arc::new(keys),
                    epoch,
                });
                if changed {
                    // In this order: from the moment the epoch is published no token cached
                    // against the old keys is served, and the new keys are already the ones
                    // a cache miss verifies against. Clearing then only frees the room.
                    self.epoch
                        .store(epoch, std::sync::atomic::Ordering::Release);
                    self.cache.clear();
                    tracing::info!("the identity server's signing keys changed");
                }
                state.generation += 1;
                state.last_error = None;
                state.last_success_started = Some(started);
                self.generation
                    .store(state.generation, std::sync::atomic::Ordering::Release);
                if first {
                    self.ready.send_replace(true);
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
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        if let Some(user_id) = self.cache.get(&digest, epoch) {
            return Ok(AuthenticatedUser { user_id });
        }

        let token = CompactToken::parse(token)?;

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
        let (claims, epoch) = match token.kid.as_deref() {
            Some(kid) if !keys.keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid)) => {
                self.verify_unknown_kid(&token, kid, keys, arrival).await?
            }
            kid => (
                self.verify(&token, kid, &keys.keys)?
                    .ok_or_else(no_key_verifies)?,
                keys.epoch,
            ),
        };
        let user_id = claims.user?;
        let now = unix_now();
        let remaining = claims
            .exp
            .saturating_add(self.options.clock_skew.as_secs())
            .saturating_sub(now);
        if remaining > 0 {
            self.cache.insert(
                digest,
                user_id,
                Instant::now() + Duration::from_secs(remaining.min(86_400)),
                epoch,
            );
        }
        Ok(AuthenticatedUser { user_id })
    }

    /// A token naming a key id that is not published (yet): every published key is tried;
    /// if none verifies, the keys are fetched again (see the module documentation) and the
    /// token checked against what the identity server publishes then. With the claims comes
    /// the epoch of the keys that verified them.
    async fn verify_unknown_kid(
        &self,
        token: &CompactToken<'_>,
        kid: &str,
        keys: TrustedKeys,
        arrival: Instant,
    ) -> Result<(CheckedClaims, u64), AuthError> {
        if let Some(claims) = self.verify(token, None, &keys.keys)? {
            return Ok((claims, keys.epoch));
        }
        self.refresh_keys_after(arrival)
            .await
            .map_err(AuthError::Unavailable)?;
        let keys = self.current_keys().unwrap_or(keys);
        let published = keys.keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid));
        match self.verify(token, published.then_some(kid), &keys.keys)? {
            Some(claims) => Ok((claims, keys.epoch)),
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
        token: &CompactToken<'_>,
        kid: Option<&str>,
        keys: &IdentityKeys,
    ) -> Result<Option<CheckedClaims>, AuthError> {
        verify_with_keys(token, kid, keys, self.options.clock_skew)
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
    let token = CompactToken::parse(token)?;
    let kid = token
        .kid
        .as_deref()
        .filter(|kid| keys.keys.iter().any(|k| k.kid.as_deref() == Some(*kid)));
    let claims = verify_with_keys(&token, kid, keys, clock_skew)?.ok_or_else(no_key_verifies)?;
    claims.user
}

/// Verifies the signature against the candidate keys (the one named by `kid`, or every key
/// when `None`; a key pinned to another algorithm never), then issuer and lifetime: the
/// claims, or `None` when no candidate verifies the signature.
fn verify_with_keys(
    token: &CompactToken<'_>,
    kid: Option<&str>,
    keys: &IdentityKeys,
    clock_skew: Duration,
) -> Result<Option<CheckedClaims>, AuthError> {
    let signed = keys.keys.iter().any(|k| {
        kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
            && k.algorithm.is_none_or(|pinned| pinned == token.algorithm)
            && token.is_signed_by(&k.verifier)
    });
    if !signed {
        return Ok(None);
    }
    token
        .checked_claims(&keys.issuer, clock_skew.as_secs(), unix_now())
        .map(Some)
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
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

/// The forms .NET's `Guid.TryParse` accepts: hyphenated, 32 digits, braces, parentheses.
pub(crate) fn parse_dotnet_guid(text: &str) -> Option<Uuid> {
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
