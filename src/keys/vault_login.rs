//! Logging in to HashiCorp Vault (or OpenBao) and staying logged in, for everything here that
//! calls Vault: the `vaulttransit` key provider and the `vault` certificate source.
//!
//! Three ways in, `vaultAuthMethod`: a static `token` (upstream's only way: used as given,
//! never renewed), `approle` (role id and secret id, as services log in) and `kubernetes`
//! (the pod's service-account token, as pods log in). A token obtained by logging in is
//! renewed (`auth/token/renew-self`) once two thirds of its lease have passed, and obtained
//! again by a new login when renewal is refused or the token has reached its maximum life;
//! a call Vault refuses with 403 is retried once after a fresh login, so a revoked token
//! heals by itself. Renewal happens when Vault is next called, not on a timer: the service
//! calls Vault rarely (start-up, `/health`, admin commands), and a token that lapsed
//! unused is replaced by the next login. Role ids, secret ids, tokens and service-account
//! tokens never reach a log or a message. Leases are timed on tokio's clock.
//!
//! Vault's HTTP API is small and documented, and HashiCorp publishes no Rust SDK, so this is
//! that API over reqwest, which the service already uses (see also `certificate/vault.rs`).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::catalog::GroupValues;
use crate::config::top_level::check_http_url;
use crate::config::{ConfigError, SettingPath, SettingsGroup};
use crate::keys::KeyProviderError;
use crate::keys::remote;

/// Where the pod's service-account token is, unless `vaultKubernetesTokenPath` says otherwise.
pub const KUBERNETES_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How long one Vault call may take, connection included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Vault's answers here are a few kilobytes; anything this large is not one.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The names of one group's Vault login settings (`certificate:` or `rsaKey:`), so that
/// parsing and messages name the settings the operator wrote.
#[derive(Debug, Clone, Copy)]
pub struct VaultLoginPaths {
    pub server_uri: SettingPath,
    pub namespace: SettingPath,
    pub auth_method: SettingPath,
    pub token: SettingPath,
    pub app_role_role_id: SettingPath,
    pub app_role_secret_id: SettingPath,
    pub auth_mount_point: SettingPath,
    pub kubernetes_role: SettingPath,
    pub kubernetes_token_path: SettingPath,
}

/// How to reach Vault and log in to it.
#[derive(Debug, Clone)]
pub struct VaultLogin {
    /// `vaultServerUri` without a trailing `/`.
    pub server_uri: String,
    /// `vaultNamespace`: sent as `X-Vault-Namespace` (Vault Enterprise, OpenBao).
    pub namespace: Option<String>,
    pub method: VaultAuthMethod,
    /// The names of the settings these came from, and the group they were read in.
    pub paths: &'static VaultLoginPaths,
    pub group: SettingsGroup,
}

/// `vaultAuthMethod` and what it needs.
#[derive(Debug, Clone)]
pub enum VaultAuthMethod {
    /// `token`: `vaultToken`, used as given.
    Token(SecretString),
    /// `approle`: `vaultAppRoleRoleId` and `vaultAppRoleSecretId`, at `vaultAuthMountPoint`
    /// (default `approle`).
    AppRole {
        role_id: SecretString,
        secret_id: SecretString,
        mount: String,
    },
    /// `kubernetes`: `vaultKubernetesRole` with the token in `vaultKubernetesTokenPath`, at
    /// `vaultAuthMountPoint` (default `kubernetes`).
    Kubernetes {
        role: String,
        token_path: PathBuf,
        mount: String,
    },
}

impl VaultAuthMethod {
    /// The method's name, as `vaultAuthMethod` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::AppRole { .. } => "approle",
            Self::Kubernetes { .. } => "kubernetes",
        }
    }
}

impl VaultLogin {
    /// Reads the login settings of `input`'s group; `token_use` says what the static token
    /// must be allowed (for the message when it is missing).
    pub(crate) fn parse(
        input: &GroupValues<'_>,
        names: &'static VaultLoginPaths,
        token_use: &str,
    ) -> Result<Self, ConfigError> {
        let paths = VaultLoginPaths {
            server_uri: input.at(names.server_uri),
            namespace: input.at(names.namespace),
            auth_method: input.at(names.auth_method),
            token: input.at(names.token),
            app_role_role_id: input.at(names.app_role_role_id),
            app_role_secret_id: input.at(names.app_role_secret_id),
            auth_mount_point: input.at(names.auth_mount_point),
            kubernetes_role: input.at(names.kubernetes_role),
            kubernetes_token_path: input.at(names.kubernetes_token_path),
        };
        let values = input.values;
        let server_uri = values
            .require_setting(
                paths.server_uri,
                "the Vault server URL, e.g. https://vault.example.com:8200",
            )?
            .trim();
        check_http_url(paths.server_uri, server_uri)?;
        let mount = |default: &str| {
            values
                .setting(paths.auth_mount_point)
                .map(|m| m.trim().trim_matches('/'))
                .filter(|m| !m.is_empty())
                .unwrap_or(default)
                .to_owned()
        };
        let secret = |path: SettingPath, what: &str| {
            values
                .require_setting(path, what)
                .map(|v| SecretString::from(v.trim().to_owned()))
        };
        let method = match values
            .setting(paths.auth_method)
            .map(|m| m.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("token") => VaultAuthMethod::Token(secret(paths.token, token_use)?),
            Some("approle") => VaultAuthMethod::AppRole {
                role_id: secret(paths.app_role_role_id, "the AppRole's role id")?,
                secret_id: secret(paths.app_role_secret_id, "a secret id of the AppRole")?,
                mount: mount("approle"),
            },
            Some("kubernetes") => VaultAuthMethod::Kubernetes {
                role: values
                    .require_setting(
                        paths.kubernetes_role,
                        "the Vault role bound to this pod's service account",
                    )?
                    .trim()
                    .to_owned(),
                token_path: values
                    .setting(paths.kubernetes_token_path)
                    .map(|p| PathBuf::from(p.trim()))
                    .unwrap_or_else(|| PathBuf::from(KUBERNETES_TOKEN_PATH)),
                mount: mount("kubernetes"),
            },
            Some(other) => {
                return Err(ConfigError::at(
                    paths.auth_method,
                    format!(
                        "`{other}` is not a Vault login method; use token, approle or kubernetes"
                    ),
                ));
            }
        };
        Ok(Self {
            server_uri: server_uri.trim_end_matches('/').to_owned(),
            namespace: values
                .setting(paths.namespace)
                .map(|n| n.trim().trim_matches('/').to_owned())
                .filter(|n| !n.is_empty()),
            method,
            paths: names,
            group: input.group,
        })
    }

    /// The setting `pick` chooses, in the group these were read in.
    pub fn setting(&self, pick: fn(&VaultLoginPaths) -> SettingPath) -> SettingPath {
        pick(self.paths).in_group(self.group)
    }

    /// The setting that names who logs in: the token, the AppRole's role id, or the
    /// Kubernetes role.
    pub fn credentials_setting(&self) -> SettingPath {
        self.setting(match self.method {
            VaultAuthMethod::Token(_) => |p| p.token,
            VaultAuthMethod::AppRole { .. } => |p| p.app_role_role_id,
            VaultAuthMethod::Kubernetes { .. } => |p| p.kubernetes_role,
        })
    }

    /// The settings to check when Vault refuses this login's token.
    fn credentials_hint(&self) -> String {
        match &self.method {
            VaultAuthMethod::Token(_) => format!("check {}", self.setting(|p| p.token)),
            VaultAuthMethod::AppRole { .. } => format!(
                "check {} and {}, and the policies of the AppRole",
                self.setting(|p| p.app_role_role_id),
                self.setting(|p| p.app_role_secret_id)
            ),
            VaultAuthMethod::Kubernetes { .. } => format!(
                "check {} and the policies of that role",
                self.setting(|p| p.kubernetes_role)
            ),
        }
    }
}

/// A token in use, and when to renew or replace it.
struct CurrentToken {
    token: SecretString,
    /// When to renew it (two thirds into its lease); `None`: never (a static token, or
    /// one without expiry).
    renew_at: Option<Instant>,
    /// Whether Vault said it may be renewed.
    renewable: bool,
}

/// Vault's answer to one call.
pub struct VaultAnswer {
    pub status: StatusCode,
    pub body: Value,
}

impl VaultAnswer {
    /// Vault's own explanation, `{"errors":["..."]}`, joined (it names no secrets).
    pub fn reasons(&self) -> String {
        self.body
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

/// A logged-in connection to Vault, shared by every call of one provider.
pub struct VaultSession {
    login: VaultLogin,
    client: reqwest::Client,
    token: Mutex<Option<CurrentToken>>,
}

impl std::fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSession")
            .field("server_uri", &self.login.server_uri)
            .field("namespace", &self.login.namespace)
            .field("method", &self.login.method.name())
            .finish_non_exhaustive()
    }
}

impl VaultSession {
    pub fn new(login: VaultLogin) -> Result<Self, KeyProviderError> {
        let token = match &login.method {
            VaultAuthMethod::Token(token) => Some(CurrentToken {
                token: token.clone(),
                renew_at: None,
                renewable: false,
            }),
            _ => None,
        };
        Ok(Self {
            client: remote::http_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT)?,
            login,
            token: Mutex::new(token),
        })
    }

    pub fn login(&self) -> &VaultLogin {
        &self.login
    }

    /// `peer` for messages: "Vault at https://…".
    pub fn peer(&self) -> String {
        format!("Vault at {}", self.login.server_uri)
    }

    /// One authenticated call to `/v1/{path}`. A 403 to a token this session logged in for
    /// is answered by one fresh login and one retry (the token may have been revoked).
    /// Transport failures are `Unavailable`; any answer, success or not, is returned.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<VaultAnswer, KeyProviderError> {
        let token = self.current_token(false).await?;
        let answer = self.send(method.clone(), path, body, Some(&token)).await?;
        if answer.status != StatusCode::FORBIDDEN
            || matches!(self.login.method, VaultAuthMethod::Token(_))
        {
            return Ok(answer);
        }
        tracing::info!(
            method = self.login.method.name(),
            "Vault refused the token; logging in again"
        );
        let token = self.current_token(true).await?;
        self.send(method, path, body, Some(&token)).await
    }

    /// A usable token: the current one, renewed when due; a new login when there is none,
    /// when renewal fails, or when `fresh` asks for one.
    async fn current_token(&self, fresh: bool) -> Result<SecretString, KeyProviderError> {
        let mut current = self.token.lock().await;
        if fresh && !matches!(self.login.method, VaultAuthMethod::Token(_)) {
            *current = None;
        }
        if let Some(token) = current.as_ref() {
            let due = token.renew_at.is_some_and(|at| Instant::now() >= at);
            if !due {
                return Ok(token.token.clone());
            }
            if token.renewable
                && let Some(renewed) = self.renew(&token.token).await?
            {
                let value = renewed.token.clone();
                *current = Some(renewed);
                return Ok(value);
            }
            // Not renewable, or no longer: log in again.
            *current = None;
        }
        let fresh = self.log_in().await?;
        let value = fresh.token.clone();
        *current = Some(fresh);
        Ok(value)
    }

    /// `auth/token/renew-self`; `None` when Vault will not renew it (expired, revoked, at
    /// its maximum life: the caller logs in again).
    async fn renew(&self, token: &SecretString) -> Result<Option<CurrentToken>, KeyProviderError> {
        let answer = self
            .send(
                Method::POST,
                "auth/token/renew-self",
                Some(&json!({})),
                Some(token),
            )
            .await?;
        if !answer.status.is_success() {
            tracing::info!(status = %answer.status, "Vault did not renew the token; logging in again");
            return Ok(None);
        }
        let renewed = token_of(&answer.body);
        // A token at its maximum life is renewed for less than asked; once that is nearly
        // nothing, a new login is due.
        Ok(renewed.filter(|t| t.renew_at.is_none_or(|at| at > Instant::now())))
    }

    /// Logs in with the configured method; the token and its lease.
    async fn log_in(&self) -> Result<CurrentToken, KeyProviderError> {
        let (mount, body) = match &self.login.method {
            VaultAuthMethod::Token(token) => {
                return Ok(CurrentToken {
                    token: token.clone(),
                    renew_at: None,
                    renewable: false,
                });
            }
            VaultAuthMethod::AppRole {
                role_id,
                secret_id,
                mount,
            } => (
                mount,
                json!({ "role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret() }),
            ),
            VaultAuthMethod::Kubernetes {
                role,
                token_path,
                mount,
            } => {
                let jwt = tokio::fs::read_to_string(token_path).await.map_err(|e| {
                    KeyProviderError::config(format!(
                        "cannot read the service-account token {} ({}): {e}",
                        token_path.display(),
                        self.login.setting(|p| p.kubernetes_token_path)
                    ))
                    .caused_by(e)
                })?;
                (mount, json!({ "role": role, "jwt": jwt.trim() }))
            }
        };
        let path = format!("auth/{}/login", encode_path(mount));
        let answer = self.send(Method::POST, &path, Some(&body), None).await?;
        let method = self.login.method.name();
        if answer.status.is_success()
            && let Some(token) = token_of(&answer.body)
        {
            tracing::info!(method, "logged in to Vault");
            return Ok(token);
        }
        let reasons = answer.reasons();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(": {reasons}")
        };
        Err(match answer.status.as_u16() {
            412 | 429 | 500..=599 => KeyProviderError::unavailable(format!(
                "{} answered the {method} login with {}{reasons}",
                self.peer(),
                answer.status
            )),
            _ => KeyProviderError::config(format!(
                "{} refused the {method} login at `auth/{mount}/` ({}{reasons}); {} ({})",
                self.peer(),
                answer.status,
                self.login.credentials_hint(),
                self.login.setting(|p| p.auth_mount_point)
            )),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&SecretString>,
    ) -> Result<VaultAnswer, KeyProviderError> {
        let mut request = self
            .client
            .request(method, format!("{}/v1/{path}", self.login.server_uri))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                KeyProviderError::config(format!(
                    "the Vault token has characters an HTTP header cannot carry ({})",
                    self.login.setting(|p| p.token)
                ))
            })?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = &self.login.namespace {
            let value = HeaderValue::from_str(namespace).map_err(|_| {
                KeyProviderError::config(format!(
                    "{} has characters an HTTP header cannot carry",
                    self.login.setting(|p| p.namespace)
                ))
            })?;
            request = request.header("X-Vault-Namespace", value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let peer = self.peer();
        let response = request
            .send()
            .await
            .map_err(|e| remote::unreachable(&peer, e))?;
        let status = response.status();
        let bytes = remote::read_capped_body(
            response,
            &peer,
            MAX_ANSWER_BYTES,
            "no Vault answer is that large",
        )
        .await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(VaultAnswer { status, body })
    }
}

/// The token and lease of a login or renewal answer (`auth.client_token`,
/// `auth.lease_duration`, `auth.renewable`).
fn token_of(body: &Value) -> Option<CurrentToken> {
    let auth = body.get("auth")?;
    let token = auth.get("client_token")?.as_str()?;
    let lease = auth
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(CurrentToken {
        token: SecretString::from(token.to_owned()),
        // Two thirds into the lease; a lease of 0 never expires.
        renew_at: (lease > 0).then(|| Instant::now() + Duration::from_secs(lease) * 2 / 3),
        renewable: auth.get("renewable").and_then(Value::as_bool) == Some(true),
    })
}

/// Percent-encodes everything but unreserved characters and the `/` between segments.
pub(crate) fn encode_path(path: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_renewed_two_thirds_in_and_a_lease_of_zero_never() {
        let now = Instant::now();
        let token = token_of(&json!({
            "auth": { "client_token": "s.x", "lease_duration": 30, "renewable": true }
        }))
        .unwrap();
        assert_eq!(token.renew_at, Some(now + Duration::from_secs(20)));
        assert!(token.renewable);
        let forever =
            token_of(&json!({ "auth": { "client_token": "s.x", "lease_duration": 0 } })).unwrap();
        assert!(forever.renew_at.is_none() && !forever.renewable);
        assert!(token_of(&json!({ "auth": null })).is_none());
    }

    #[test]
    fn paths_are_percent_encoded_but_for_separators() {
        assert_eq!(encode_path("team kv/a b"), "team%20kv/a%20b");
        assert_eq!(encode_path("transit"), "transit");
    }

    #[test]
    fn a_session_prints_no_secret() {
        let login = VaultLogin {
            server_uri: "https://vault.example.test".into(),
            namespace: None,
            method: VaultAuthMethod::AppRole {
                role_id: SecretString::from("role-id-secret".to_owned()),
                secret_id: SecretString::from("secret-id-secret".to_owned()),
                mount: "approle".into(),
            },
            paths: &crate::keys::vaulttransit::LOGIN_PATHS,
            group: SettingsGroup::Main,
        };
        let printed = format!("{login:?} {:?}", VaultSession::new(login.clone()).unwrap());
        assert!(
            !printed.contains("role-id-secret") && !printed.contains("secret-id-secret"),
            "{printed}"
        );
    }
}
