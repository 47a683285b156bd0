//! A panic while answering one request is that request's 500, never the service's end.
//! No input is known to reach a panic (the fuzz targets look for one); this store panics on
//! purpose, for one user, to prove the containment.

use std::sync::Arc;

use async_trait::async_trait;
use key_connector::config::SettingsGroup;
use key_connector::startup::Application;
use key_connector::store::{
    CreateOutcome, KeyStore, PropertyStore, PutOutcome, RecoveryWrapStore, StoreBackend,
    StoreError, StoredRecoveryWrap, StoredUserKey, SymmetricKeyStore, UserKeyStore,
};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::support::app::{StoreKind, loopback_port_zero, settings_for};
use crate::support::{TestIdp, random_key};

/// A real store that panics when asked for one user's key.
struct PanicsForOneUser {
    inner: Arc<dyn KeyStore>,
    cursed: Uuid,
}

#[async_trait]
impl StoreBackend for PanicsForOneUser {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

#[async_trait]
impl SymmetricKeyStore for PanicsForOneUser {
    async fn read_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        self.inner.read_symmetric_key().await
    }
    async fn insert_symmetric_key_if_absent(&self, wrapped: &str) -> Result<String, StoreError> {
        self.inner.insert_symmetric_key_if_absent(wrapped).await
    }
    async fn replace_symmetric_key(&self, old: &str, new: &str) -> Result<bool, StoreError> {
        self.inner.replace_symmetric_key(old, new).await
    }
    async fn read_pending_symmetric_key(&self) -> Result<Option<String>, StoreError> {
        self.inner.read_pending_symmetric_key().await
    }
    async fn save_pending_symmetric_key_if_absent(&self, w: &str) -> Result<String, StoreError> {
        self.inner.save_pending_symmetric_key_if_absent(w).await
    }
    async fn promote_pending_symmetric_key(&self, current: &str) -> Result<bool, StoreError> {
        self.inner.promote_pending_symmetric_key(current).await
    }
}

#[async_trait]
impl UserKeyStore for PanicsForOneUser {
    async fn reseal_user_key(&self, id: Uuid, old: &str, new: &str) -> Result<bool, StoreError> {
        self.inner.reseal_user_key(id, old, new).await
    }
    async fn read_user_key(&self, id: Uuid) -> Result<Option<StoredUserKey>, StoreError> {
        assert_ne!(id, self.cursed, "a bug met by this one request");
        self.inner.read_user_key(id).await
    }
    async fn create_user_key(&self, key: &StoredUserKey) -> Result<CreateOutcome, StoreError> {
        self.inner.create_user_key(key).await
    }
    async fn put_user_key(
        &self,
        id: Uuid,
        sealed_key: &str,
        now: OffsetDateTime,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put_user_key(id, sealed_key, now).await
    }
    async fn record_last_access(
        &self,
        accesses: &[(Uuid, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        self.inner.record_last_access(accesses).await
    }
    async fn list_user_keys(&self) -> Result<Vec<StoredUserKey>, StoreError> {
        self.inner.list_user_keys().await
    }
}

#[async_trait]
impl RecoveryWrapStore for PanicsForOneUser {
    async fn read_recovery_wraps(&self) -> Result<Vec<StoredRecoveryWrap>, StoreError> {
        self.inner.read_recovery_wraps().await
    }
    async fn save_recovery_wrap(&self, wrap: &StoredRecoveryWrap) -> Result<(), StoreError> {
        self.inner.save_recovery_wrap(wrap).await
    }
    async fn retain_recovery_wraps(&self, keep: &[String]) -> Result<(), StoreError> {
        self.inner.retain_recovery_wraps(keep).await
    }
}

#[async_trait]
impl PropertyStore for PanicsForOneUser {
    async fn read_property(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.read_property(name).await
    }
    async fn write_property(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.inner.write_property(name, value).await
    }
}

async fn a_panicking_handler_answers_500_with_json_and_the_service_keeps_serving() {
    let idp = TestIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_for(StoreKind::Sqlite, dir.path(), &idp.url);
    let cursed = Uuid::new_v4();
    let store = Arc::new(PanicsForOneUser {
        inner: key_connector::store::open_store(&settings.database)
            .await
            .unwrap(),
        cursed,
    });
    let rsa_key =
        key_connector::keys::open_rsa_key_provider(&settings.rsa_key, SettingsGroup::Main)
            .await
            .unwrap();
    let app = Application::build_with(store, rsa_key, &settings, &loopback_port_zero())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addrs()[0]);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    for _ in 0..3 {
        let response = client
            .get(format!("{base}/user-keys"))
            .bearer_auth(idp.token_for(cursed))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "internal_error");
        assert!(
            !body["message"].as_str().unwrap().contains("bug met"),
            "the panic's message is logged, not sent: {body}"
        );
    }
    // Everyone else is served as before, on the same process.
    let (user, key) = (Uuid::new_v4(), random_key());
    let token = idp.token_for(user);
    let posted = client
        .post(format!("{base}/user-keys"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(
        crate::support::binary::read_key(&client, &base, &token).await,
        Ok(key)
    );
    let _ = stop.send(());
    server.await.unwrap();
}

crate::tests! {
    current_thread: [
        a_panicking_handler_answers_500_with_json_and_the_service_keeps_serving,
    ],
}
