//! What every request handler needs, built once at start-up.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::crypto::UserKeyCipher;
use crate::crypto::binding::BindingPolicy;
use crate::keys::RsaKeyProvider;
use crate::keys::health::HealthCache;
use crate::store::UserKeyStore;
use crate::store::last_access::LastAccessRecorder;

/// The handlers' shared state, behind one reference count. axum clones the state for each
/// request it hands to a handler; with one `Arc` that is one atomic increment and one
/// decrement on a cache line both worker threads share, where cloning the fields would be
/// seven of each.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Services {
    pub store: Arc<dyn UserKeyStore>,
    pub cipher: Arc<UserKeyCipher>,
    /// Which form keys are sealed in, and whether unbound ones are still accepted.
    pub binding: Arc<BindingPolicy>,
    pub rsa_key: Arc<dyn RsaKeyProvider>,
    pub auth: Arc<Authenticator>,
    pub last_access: LastAccessRecorder,
    /// The shared answer of `/health` (see `routes::health`).
    pub health: Arc<HealthCache>,
}
