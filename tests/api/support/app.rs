//! The real application on port 0 with real stores in temporary directories, and a client
//! for its API (zero2prod's `spawn_app`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use key_connector::config::{DatabaseSettings, ListenHost, ListenUrl, SqliteConnection};
use key_connector::keys::RsaKeySettings;
use key_connector::keys::certificate::CertificateSettings;
use key_connector::pkcs12::generate_self_signed_pfx;
use key_connector::settings::Settings;
use key_connector::startup::{Application, StartupError};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{TestIdp, random_key};

pub const WEB_VAULT_ORIGIN: &str = "https://vault.example.test";

/// Which store a test app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Json,
}

/// Options for [`spawn_app`].
pub struct AppOptions {
    pub store: StoreKind,
    /// Reuse this data directory (restart tests); a fresh one otherwise.
    pub data_dir: Option<Arc<tempfile::TempDir>>,
    /// The identity server URI the app is configured with; the test IdP's by default.
    pub identity_server_uri: Option<String>,
    /// A database to use instead of `store`'s file in the data directory.
    pub database: Option<DatabaseSettings>,
    /// `transferTo` settings.
    pub transfer_to: Option<key_connector::settings::TransferToSettings>,
    /// An RSA key instead of the shared test certificate.
    pub rsa_key: Option<RsaKeySettings>,
    /// Connection limits instead of the defaults.
    pub limits: Option<key_connector::connections::ConnectionLimits>,
    /// `recoveryKey` settings.
    pub recovery_key: Option<key_connector::config::RecoveryKeySettings>,
    /// `userKeyBinding`.
    pub user_key_binding: key_connector::config::UserKeyBinding,
    /// The intervals the application runs with: short ones make a test quick, and on a
    /// paused clock (`start_paused`) any interval is passed exactly by `tokio::time::advance`.
    pub intervals: key_connector::config::Intervals,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            store: StoreKind::Sqlite,
            data_dir: None,
            identity_server_uri: None,
            database: None,
            transfer_to: None,
            rsa_key: None,
            limits: None,
            recovery_key: None,
            user_key_binding: key_connector::config::UserKeyBinding::Off,
            intervals: key_connector::config::Intervals::default(),
        }
    }
}

/// A running application plus everything a test needs to talk to it.
pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub idp: Arc<TestIdp>,
    pub data_dir: Arc<tempfile::TempDir>,
    pub store: StoreKind,
    store_handle: Arc<dyn key_connector::store::UserKeyStore>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// The certificate every test app uses: generating RSA keys is slow, so once per binary.
fn shared_pfx() -> &'static [u8] {
    static PFX: OnceLock<Vec<u8>> = OnceLock::new();
    PFX.get_or_init(|| {
        generate_self_signed_pfx(2048, "key connector tests", Some("test-password")).unwrap()
    })
}

/// `data_dir/key.pfx`, the certificate every test app uses (password `test-password`),
/// written unless it is there.
pub fn key_pfx_in(data_dir: &Path) -> PathBuf {
    let pfx_path = data_dir.join("key.pfx");
    if !pfx_path.exists() {
        std::fs::write(&pfx_path, shared_pfx()).unwrap();
    }
    pfx_path
}

pub fn settings_for(store: StoreKind, data_dir: &Path, identity_server_uri: &str) -> Settings {
    let pfx_path = key_pfx_in(data_dir);
    let database = match store {
        StoreKind::Sqlite => DatabaseSettings::Sqlite {
            connection: SqliteConnection {
                path: data_dir.join("keys.db"),
                read_only: false,
            },
        },
        StoreKind::Json => DatabaseSettings::Json {
            path: data_dir.join("data.json"),
        },
    };
    Settings {
        web_vault_origin: WEB_VAULT_ORIGIN.to_owned(),
        identity_server_uri: identity_server_uri.to_owned(),
        database,
        rsa_key: RsaKeySettings::Certificate(CertificateSettings::Filesystem {
            path: pfx_path,
            password: Some("test-password".to_owned().into()),
        }),
        transfer_to: None,
        rotate_to: None,
        recovery_key: None,
        https_certificate: None,
        user_key_binding: Default::default(),
        intervals: Default::default(),
    }
}

pub fn loopback_port_zero() -> Vec<ListenUrl> {
    vec![ListenUrl {
        tls: false,
        host: ListenHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port: 0,
    }]
}

/// Builds and starts the application with a fresh (or given) identity provider.
pub async fn spawn_app_with(idp: Arc<TestIdp>, options: AppOptions) -> TestApp {
    try_spawn_app_with(idp, options)
        .await
        .expect("application starts")
}

pub async fn try_spawn_app_with(
    idp: Arc<TestIdp>,
    options: AppOptions,
) -> Result<TestApp, StartupError> {
    let data_dir = options
        .data_dir
        .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
    let identity = options
        .identity_server_uri
        .unwrap_or_else(|| idp.url.clone());
    let mut settings = settings_for(options.store, data_dir.path(), &identity);
    if let Some(database) = options.database {
        settings.database = database;
    }
    settings.transfer_to = options.transfer_to;
    settings.recovery_key = options.recovery_key;
    settings.user_key_binding = options.user_key_binding;
    settings.intervals = options.intervals;
    if let Some(rsa_key) = options.rsa_key {
        settings.rsa_key = rsa_key;
    }
    let mut app = Application::build(&settings, &loopback_port_zero()).await?;
    if let Some(limits) = options.limits {
        app = app.with_connection_limits(limits);
    }
    let address = app.local_addrs()[0];
    let store_handle = Arc::clone(&app.state().store);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Ok(TestApp {
        base_url: format!("http://{address}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        idp,
        data_dir,
        store: options.store,
        store_handle,
        stop: Some(stop),
        server: Some(server),
    })
}

/// Serves a SQLite store in `dir` twice with a provider from `open_provider`, as two starts
/// of the service: a user key stored in the first is read back in both, and `/health` is
/// healthy in both. Returns the settings, so that the caller can inspect the store.
pub async fn keys_survive_a_restart_with<F, Fut>(dir: &Path, open_provider: F) -> Settings
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn key_connector::keys::RsaKeyProvider>>,
{
    let idp = TestIdp::start().await;
    let settings = settings_for(StoreKind::Sqlite, dir, &idp.url);
    let token = idp.token_for(Uuid::new_v4());
    let client = reqwest::Client::new();
    let key = random_key();
    for restart in [false, true] {
        let store = key_connector::store::open_store(&settings.database)
            .await
            .unwrap();
        let app = Application::build_with(
            store,
            open_provider().await,
            &settings,
            &loopback_port_zero(),
        )
        .await
        .expect("starts");
        let base = format!("http://{}", app.local_addrs()[0]);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        if !restart {
            let response = client
                .post(format!("{base}/user-keys"))
                .bearer_auth(&token)
                .json(&json!({ "key": key }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
        }
        assert_eq!(
            crate::support::binary::read_key(&client, &base, &token).await,
            Ok(key.clone())
        );
        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), reqwest::StatusCode::OK);
        let _ = stop.send(());
        server.await.unwrap();
    }
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Arc::new(TestIdp::start().await), AppOptions::default()).await
}

pub async fn spawn_app_on(store: StoreKind) -> TestApp {
    spawn_app_with(
        Arc::new(TestIdp::start().await),
        AppOptions {
            store,
            ..AppOptions::default()
        },
    )
    .await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn token_for(&self, user: Uuid) -> String {
        self.idp.token_for(user)
    }

    /// The application's own store, to look behind the API.
    pub fn state_store(&self) -> Arc<dyn key_connector::store::UserKeyStore> {
        Arc::clone(&self.store_handle)
    }

    pub async fn get_key(&self, token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/user-keys"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn send_key(
        &self,
        method: reqwest::Method,
        token: &str,
        key: &str,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url("/user-keys"))
            .bearer_auth(token)
            .json(&json!({ "key": key }))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_key(&self, token: &str, key: &str) -> reqwest::Response {
        self.send_key(reqwest::Method::POST, token, key).await
    }

    pub async fn put_key(&self, token: &str, key: &str) -> reqwest::Response {
        self.send_key(reqwest::Method::PUT, token, key).await
    }

    /// The key the API returns for `token`'s user, or the status if not 200.
    pub async fn read_key(&self, token: &str) -> Result<String, u16> {
        let response = self.get_key(token).await;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(status);
        }
        let body: Value = response.json().await.unwrap();
        Ok(body["key"].as_str().expect("key is a string").to_owned())
    }

    /// The store's file (database or JSON document).
    pub fn store_path(&self) -> PathBuf {
        match self.store {
            StoreKind::Sqlite => self.data_dir.path().join("keys.db"),
            StoreKind::Json => self.data_dir.path().join("data.json"),
        }
    }

    /// The address the app listens on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.base_url
            .trim_start_matches("http://")
            .parse()
            .expect("the base URL is an address")
    }

    /// Asks the app to stop without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for a stop begun with [`TestApp::begin_shutdown`] to finish.
    pub async fn stopped(&mut self) {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("shutdown finishes in time")
                .unwrap();
        }
    }

    /// Stops gracefully (flushing pending writes) and returns the data directory.
    pub async fn shutdown(mut self) -> Arc<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("shutdown finishes in time")
                .unwrap();
        }
        Arc::clone(&self.data_dir)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
