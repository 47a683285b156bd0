//! Building and running the service: store, RSA key, symmetric key, listeners.
//!
//! [`Application::build`] does everything that can fail before the first request (and
//! retries what is only temporarily unavailable); [`Application::run_until_stopped`] serves
//! until the shutdown signal, lets in-flight requests finish, and flushes pending writes.
//!
//! Every interval the service runs with comes from `Settings::intervals`
//! ([`crate::config::intervals`]), handed here to the parts that use it: tests build the
//! application with short ones.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower::util::MapRequestLayer;

use crate::auth::Authenticator;
use crate::config::intervals::Backoff;
use crate::config::{ListenHost, ListenUrl, SettingsGroup};
use crate::connections::{self, ConnectionGate, ConnectionLimits};
use crate::crypto::binding::BindingPolicy;
use crate::crypto::symmetric_key::{
    BootstrapError, SymmetricKeyOrigin, load_or_create_symmetric_key,
};
use crate::keys::health::HealthCache;
use crate::keys::{KeyProviderError, RsaKeyProvider, open_rsa_key_provider};
use crate::operations::{KeyDatabase, transfer};
use crate::routes;
use crate::settings::Settings;
use crate::state::{AppState, Services};
use crate::store::last_access::LastAccessRecorder;
use crate::store::{KeyStore, StoreError, open_store};

/// Why the service could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the key store: {0}")]
    Store(StoreError),
    #[error("cannot load the RSA key: {0}")]
    RsaKey(KeyProviderError),
    #[error("{0}")]
    SymmetricKey(BootstrapError),
    #[error("{0}")]
    Recovery(crate::operations::recovery_wraps::RecoveryWrapError),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// A built service, listening, not yet serving.
pub struct Application {
    listeners: Vec<TcpListener>,
    /// `https://` listeners and the certificate they serve.
    tls: Option<(Vec<TcpListener>, Arc<rustls::ServerConfig>)>,
    /// The opt-in Prometheus listeners and the recorder they render.
    metrics: Option<(
        Vec<TcpListener>,
        metrics_exporter_prometheus::PrometheusHandle,
    )>,
    state: AppState,
    web_vault_origin: String,
    limits: ConnectionLimits,
    /// How often pending `LastAccessDate`s are written.
    last_access_flush: Duration,
    background: CancellationToken,
}

impl Application {
    /// Opens the store and key provider, unwraps or creates the symmetric key, starts token
    /// discovery and binds every listener.
    pub async fn build(settings: &Settings, listen: &[ListenUrl]) -> Result<Self, StartupError> {
        let retry = settings.intervals.start_up_retry;
        let store = retry_transient(
            "key store",
            retry,
            || open_store(&settings.database),
            |e| matches!(e, StoreError::Unavailable(_)),
        )
        .await
        .map_err(StartupError::Store)?;
        tracing::info!(provider = store.kind(), "key store opened");

        let rsa_key = retry_transient(
            "RSA key provider",
            retry,
            || open_rsa_key_provider(&settings.rsa_key, SettingsGroup::Main),
            |e| matches!(e, KeyProviderError::Unavailable { .. }),
        )
        .await
        .map_err(StartupError::RsaKey)?;
        tracing::info!(provider = %rsa_key.describe(), "RSA key loaded");

        Self::build_with(store, rsa_key, settings, listen).await
    }

    /// Like [`Application::build`] with an already opened store and provider.
    pub async fn build_with(
        store: Arc<dyn KeyStore>,
        rsa_key: Arc<dyn RsaKeyProvider>,
        settings: &Settings,
        listen: &[ListenUrl],
    ) -> Result<Self, StartupError> {
        let retry = settings.intervals.start_up_retry;
        let (cipher, origin) = retry_transient(
            "symmetric key",
            retry,
            || load_or_create_symmetric_key(store.as_ref(), rsa_key.as_ref()),
            BootstrapError::is_transient,
        )
        .await
        .map_err(StartupError::SymmetricKey)?;
        match origin {
            SymmetricKeyOrigin::Existing => tracing::info!("symmetric key unwrapped"),
            SymmetricKeyOrigin::Created => {
                tracing::info!("new database: generated and saved a symmetric key")
            }
            SymmetricKeyOrigin::CreatedConcurrently => {
                tracing::info!("another instance saved the symmetric key first; using that one")
            }
        }

        if let Some(recovery) = &settings.recovery_key {
            keep_recovery_wraps_current(store.as_ref(), rsa_key.as_ref(), recovery).await?;
        }

        let cipher = Arc::new(cipher);
        // Upstream's `transferTo` runs before the first request. A failed transfer leaves the
        // source untouched and the lock file saying "in progress": the service serves the
        // source as upstream does, and the next start resumes the copy.
        let source = KeyDatabase {
            store: Arc::clone(&store),
            rsa_key: Arc::clone(&rsa_key),
            cipher: Some(Arc::clone(&cipher)),
        };
        if let Err(error) = transfer::run_at_start_up(settings, &source).await {
            tracing::error!("transferTo failed: {error}");
        }

        let binding = retry_transient(
            "key store",
            retry,
            || BindingPolicy::load(settings.user_key_binding, store.clone()),
            |e| matches!(e, StoreError::Unavailable(_)),
        )
        .await
        .map_err(StartupError::Store)?;

        let background = CancellationToken::new();
        if let Some(warning) = crate::auth::jwks::plain_http_warning(&settings.identity_server_uri)
        {
            tracing::warn!("{warning}");
        }
        let identity_server = &settings.intervals.identity_server;
        let auth = Authenticator::new(&settings.identity_server_uri, identity_server.clone())
            .map_err(|error| {
                StartupError::Unsupported(format!(
                    "cannot build the HTTP client for the identity server: {}",
                    crate::keys::remote::error_chain(&error)
                ))
            })?;
        auth.spawn_discovery(background.child_token());
        if !auth.wait_until_ready(identity_server.first_keys_wait).await {
            tracing::warn!(
                identity_server = %settings.identity_server_uri,
                "identity server not reachable yet; answering 503 to authenticated requests until it is"
            );
        }

        let (secure, plain): (Vec<ListenUrl>, Vec<ListenUrl>) =
            listen.iter().cloned().partition(|url| url.tls);
        let tls = if secure.is_empty() {
            None
        } else {
            let certificate = settings.https_certificate.clone().ok_or_else(|| {
                StartupError::Unsupported(
                    "ASPNETCORE_URLS has an https:// address but no certificate is configured: \
                     set Kestrel__Certificates__Default__Path (a .pfx with \
                     Kestrel__Certificates__Default__Password, or a PEM chain with \
                     Kestrel__Certificates__Default__KeyPath)"
                        .into(),
                )
            })?;
            let config = certificate
                .server_config()
                .map_err(StartupError::Unsupported)?;
            Some((bind_all(&secure).await?, config))
        };
        let listeners = bind_all(&plain).await?;
        let state = AppState::new(Services {
            health: Arc::new(HealthCache::new(settings.intervals.health.clone())),
            last_access: LastAccessRecorder::new(store.clone()),
            store,
            cipher,
            binding: Arc::new(binding),
            rsa_key,
            auth,
        });
        Ok(Self {
            listeners,
            tls,
            metrics: None,
            state,
            web_vault_origin: settings.web_vault_origin.clone(),
            limits: ConnectionLimits::default(),
            last_access_flush: settings.intervals.last_access_flush,
            background,
        })
    }

    /// Replaces the default connection limits (`Kestrel:Limits` settings) of every listener.
    pub fn with_connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Installs the metrics recorder and serves Prometheus metrics at `/metrics` on `listen`
    /// (see [`crate::metrics`]).
    pub async fn enable_metrics(&mut self, listen: &[ListenUrl]) -> Result<(), StartupError> {
        let handle = crate::metrics::install().map_err(StartupError::Unsupported)?;
        self.serve_metrics(listen, handle).await
    }

    /// Serves the metrics of an installed recorder at `/metrics` on `listen`.
    pub async fn serve_metrics(
        &mut self,
        listen: &[ListenUrl],
        handle: metrics_exporter_prometheus::PrometheusHandle,
    ) -> Result<(), StartupError> {
        let listeners = bind_all(listen).await?;
        for listener in &listeners {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "serving Prometheus metrics at /metrics");
            }
        }
        self.metrics = Some((listeners, handle));
        Ok(())
    }

    /// The metrics listeners' addresses, if metrics are enabled.
    pub fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.metrics
            .iter()
            .flat_map(|(listeners, _)| listeners.iter().filter_map(|l| l.local_addr().ok()))
            .collect()
    }

    /// The addresses actually bound (port 0 resolved): plain HTTP first, then HTTPS.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .chain(self.tls.iter().flat_map(|(listeners, _)| listeners.iter()))
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains and flushes.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Self {
            listeners,
            tls,
            metrics,
            state,
            web_vault_origin,
            limits,
            last_access_flush,
            background,
        } = self;
        let flusher = state
            .last_access
            .spawn_flusher(last_access_flush, background.child_token());
        let router = routes::router(state.clone(), &web_vault_origin);
        let app = MapRequestLayer::new(routes::normalize_path).layer(router);

        let limits = Arc::new(limits);
        let api_gate = ConnectionGate::new(limits.max_connections, limits.connections_per_peer());
        let stop = CancellationToken::new();
        let mut servers = tokio::task::JoinSet::new();
        let tls =
            tls.map(|(listeners, config)| (listeners, tokio_rustls::TlsAcceptor::from(config)));
        let plain = listeners.into_iter().map(|listener| (listener, None));
        let secure = tls.into_iter().flat_map(|(listeners, acceptor)| {
            listeners
                .into_iter()
                .map(move |l| (l, Some(acceptor.clone())))
        });
        for (listener, acceptor) in plain.chain(secure) {
            servers.spawn(connections::serve(
                listener,
                acceptor,
                app.clone(),
                Arc::clone(&limits),
                api_gate.clone(),
                stop.clone(),
            ));
        }
        if let Some((listeners, handle)) = metrics {
            let metrics_app = crate::metrics::router(handle);
            let metrics_gate = ConnectionGate::new(
                connections::METRICS_CONNECTIONS,
                crate::config::connection_limits::default_connections_per_peer(
                    connections::METRICS_CONNECTIONS,
                ),
            );
            for listener in listeners {
                servers.spawn(connections::serve(
                    listener,
                    None,
                    metrics_app.clone(),
                    Arc::clone(&limits),
                    metrics_gate.clone(),
                    stop.clone(),
                ));
            }
        }

        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        stop.cancel();
        // Each connection ends itself within the grace; this bound only guards against a bug.
        let drained = tokio::time::timeout(
            connections::SHUTDOWN_GRACE + Duration::from_millis(500),
            async { while servers.join_next().await.is_some() {} },
        )
        .await;
        if drained.is_err() {
            tracing::warn!("some requests did not finish in time and were dropped");
            servers.abort_all();
        }
        background.cancel();
        let _ = flusher.await;
        state.store.close().await;
        tracing::info!("stopped");
    }
}

/// Writes the recovery wrap of the symmetric key when it is missing (a new database, a
/// recovery key configured since the last start, a crash between the key and its wrap), and
/// warns when the stored wrap is for another recovery key (kept: replacing it is the
/// operator's `replace-recovery-wrap`).
async fn keep_recovery_wraps_current(
    store: &dyn KeyStore,
    rsa_key: &dyn RsaKeyProvider,
    settings: &crate::config::RecoveryKeySettings,
) -> Result<(), StartupError> {
    use crate::crypto::recovery::{OnMismatch, RecoveryPublicKey};
    use crate::operations::recovery_wraps::{RecoveryWrapError, keep_current};

    let recovery = RecoveryPublicKey::load(&settings.public_key_path)
        .map_err(|e| StartupError::Recovery(RecoveryWrapError::Settings(e)))?;
    // The symmetric key was just read, so the store answers: a write that fails now (a
    // read-only database, a permission) would not heal by waiting. The service can serve
    // without the wrap; say so loudly, and the next start tries again.
    match keep_current(store, rsa_key, &recovery, OnMismatch::Keep).await {
        Ok(status) if status.is_current() => tracing::info!(
            fingerprint = %status.configured_fingerprint,
            bits = recovery.bits(),
            "recovery wrap of the symmetric key is current"
        ),
        Ok(_) => {}
        Err(error) => tracing::error!(
            %error,
            fingerprint = %recovery.fingerprint(),
            "the recovery wrap of the symmetric key could not be written; serving without it, \
             the next start tries again (key-connector check-config shows its state)"
        ),
    }
    Ok(())
}

/// Retries `attempt` with `backoff` (by default 1 s doubling to 30 s) while `is_transient`
/// says the failure is a peer being down, logging each attempt. Other errors return at once.
async fn retry_transient<T, E, F, Fut>(
    what: &str,
    backoff: Backoff,
    mut attempt: F,
    is_transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = backoff.first;
    let mut tries = 1u32;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, attempt = tries, retry_in = ?delay, "{what} unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = backoff.after(delay);
                tries += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Binds every listen URL. `+`/`*`/host names bind the IPv6 wildcard (dual-stack on Linux)
/// or, without IPv6, the IPv4 one; `localhost` binds both loopbacks.
async fn bind_all(listen: &[ListenUrl]) -> Result<Vec<TcpListener>, StartupError> {
    let mut listeners = Vec::new();
    for url in listen {
        match &url.host {
            ListenHost::Ip(ip) => listeners.push(bind(SocketAddr::new(*ip, url.port)).await?),
            ListenHost::Any => {
                match bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), url.port)).await {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => listeners.push(
                        bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), url.port)).await?,
                    ),
                }
            }
            ListenHost::Loopback => {
                let v4 = bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), url.port)).await?;
                // With port 0 the IPv6 loopback must share the port the IPv4 one got.
                let port = v4.local_addr().map(|a| a.port()).unwrap_or(url.port);
                listeners.push(v4);
                match bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)).await {
                    Ok(v6) => listeners.push(v6),
                    Err(error) => {
                        tracing::debug!(%error, "no IPv6 loopback; listening on 127.0.0.1 only")
                    }
                }
            }
        }
    }
    for listener in &listeners {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "listening");
        }
    }
    Ok(listeners)
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartupError::Bind {
            address: address.to_string(),
            source,
        })
}
