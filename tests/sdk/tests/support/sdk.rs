//! A user's Bitwarden SDK client, set up as the web and mobile apps set theirs up: the app
//! holds the access token and the SDK asks for it on every authenticated request
//! (`ClientManagedTokens`); the Bitwarden API is the stand-in, the Key Connector the service.
//! Each `SdkUser` is a fresh client with no state of its own (a new device, a new login).

use std::sync::Arc;

use bitwarden_api_key_connector::apis::Error as KeyConnectorApiError;
use bitwarden_auth::AuthClientExt;
use bitwarden_auth::registration::{KeyConnectorRegistrationResult, RegistrationError};
use bitwarden_core::auth::{ClientManagedTokenHandler, ClientManagedTokens};
use bitwarden_core::client::encryption_settings::EncryptionSettingsError;
use bitwarden_core::key_management::SymmetricKeySlotId;
use bitwarden_core::key_management::account_cryptographic_state::WrappedAccountCryptographicState;
use bitwarden_core::key_management::crypto::{InitUserCryptoMethod, InitUserCryptoRequest};
use bitwarden_core::{Client, ClientSettings, DeviceType, UserId};
use bitwarden_crypto::{Decryptable, EncString, Kdf, PrimitiveEncryptable};
use uuid::Uuid;

use super::{BitwardenServer, Service};

/// The organisation's SSO identifier, as the registration sends it to the Bitwarden server.
const SSO_ORGANIZATION: &str = "sdk-test-organization";

/// The access token the app holds for its user.
#[derive(Debug)]
struct AppHeldToken(String);

#[async_trait::async_trait]
impl ClientManagedTokens for AppHeldToken {
    async fn get_access_token(&self) -> Option<String> {
        Some(self.0.clone())
    }
}

/// One user's fresh SDK client, pointed at `service` as its Key Connector.
pub struct SdkUser {
    pub id: Uuid,
    client: Client,
    key_connector_url: String,
}

impl SdkUser {
    pub fn new(id: Uuid, token: String, service: &Service, bitwarden: &BitwardenServer) -> Self {
        let settings = ClientSettings {
            api_url: bitwarden.url.clone(),
            identity_url: bitwarden.url.clone(),
            device_type: DeviceType::SDK,
            ..ClientSettings::default()
        };
        let client = Client::new_with_token_handler(
            Some(settings),
            ClientManagedTokenHandler::new(Arc::new(AppHeldToken(token))),
        );
        Self {
            id,
            client,
            key_connector_url: service.url.clone(),
        }
    }

    /// The same client given the Key Connector URL as an administrator typed it.
    pub fn with_key_connector_url(mut self, url: String) -> Self {
        self.key_connector_url = url;
        self
    }

    /// Key Connector registration as the SDK performs it
    /// (`RegistrationClient::post_keys_for_key_connector_registration`): new account keys, the
    /// Key Connector key stored at the service (GET, then PUT if one exists, POST otherwise),
    /// the wrapped user key sent to the Bitwarden server.
    pub async fn register(&self) -> Result<KeyConnectorRegistrationResult, RegistrationError> {
        self.client
            .auth_new()
            .registration()
            .post_keys_for_key_connector_registration(
                self.key_connector_url.clone(),
                SSO_ORGANIZATION.to_owned(),
            )
            .await
    }

    /// The Key Connector key the service holds for this user, read with the SDK's own Key
    /// Connector API client (the one unlock and registration use).
    pub async fn stored_key(&self) -> Result<String, KeyConnectorApiError> {
        self.client
            .internal
            .get_key_connector_client(self.key_connector_url.clone())
            .user_keys_api()
            .get_user_key()
            .await
            .map(|response| response.key)
    }

    /// Unlock as a logged-in Key Connector user's client does it
    /// (`InitUserCryptoMethod::KeyConnectorUrl`): the SDK fetches the Key Connector key from
    /// the service and unwraps the user key with it.
    pub async fn unlock_with_key_connector(
        &self,
        account_cryptographic_state: WrappedAccountCryptographicState,
        key_connector_key_wrapped_user_key: EncString,
    ) -> Result<(), EncryptionSettingsError> {
        self.initialize_user_crypto(
            account_cryptographic_state,
            InitUserCryptoMethod::KeyConnectorUrl {
                url: self.key_connector_url.clone(),
                key_connector_key_wrapped_user_key,
            },
        )
        .await
    }

    /// Unlock with the user key that registration handed back, as the registering client
    /// does to reach an unlocked state without a second round trip.
    pub async fn unlock_after_registration(&self, registration: &KeyConnectorRegistrationResult) {
        self.initialize_user_crypto(
            registration.account_cryptographic_state.clone(),
            InitUserCryptoMethod::DecryptedKey {
                decrypted_user_key: registration.user_key.to_string(),
            },
        )
        .await
        .expect("the registering client unlocks with the user key it made");
    }

    async fn initialize_user_crypto(
        &self,
        account_cryptographic_state: WrappedAccountCryptographicState,
        method: InitUserCryptoMethod,
    ) -> Result<(), EncryptionSettingsError> {
        self.client
            .crypto()
            .initialize_user_crypto(InitUserCryptoRequest {
                user_id: Some(UserId::new(self.id)),
                kdf_params: Kdf::default_pbkdf2(),
                email: format!("{}@example.test", self.id.simple()),
                account_cryptographic_state,
                method,
                upgrade_token: None,
            })
            .await
    }

    /// Account keys and a user key wrapped by a Key Connector key, made locally without
    /// storing anything anywhere: enough for an unlock to reach the service.
    pub fn unregistered_unlock_material(&self) -> (WrappedAccountCryptographicState, EncString) {
        let made = self
            .client
            .crypto()
            .make_user_key_connector_registration()
            .expect("the SDK makes account keys");
        (
            made.account_cryptographic_state,
            made.key_connector_key_wrapped_user_key,
        )
    }

    /// `text` encrypted under the unlocked user key, as the SDK encrypts vault data.
    pub fn encrypt(&self, text: &str) -> EncString {
        let mut context = self.client.internal.get_key_store().context();
        text.encrypt(&mut context, SymmetricKeySlotId::User)
            .expect("an unlocked client encrypts with its user key")
    }

    /// `encrypted` decrypted with the unlocked user key.
    pub fn decrypt(&self, encrypted: &EncString) -> String {
        let mut context = self.client.internal.get_key_store().context();
        encrypted
            .decrypt(&mut context, SymmetricKeySlotId::User)
            .expect("an unlocked client decrypts with its user key")
    }
}
