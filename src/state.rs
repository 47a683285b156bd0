//! What every request handler needs, built once at start-up.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::crypto::UserKeyCipher;
use crate::keys::RsaKeyProvider;
use crate::keys::health::HealthCache;
use crate::store::UserKeyStore;
use crate::store::last_access::LastAccessRecorder;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn UserKeyStore>,
    pub cipher: Arc<UserKeyCipher>,
    pub rsa_key: Arc<dyn RsaKeyProvider>,
    pub auth: Arc<Authenticator>,
    pub last_access: LastAccessRecorder,
    /// The shared answer of `/health` (see `routes::health`).
    pub health: Arc<HealthCache>,
}
