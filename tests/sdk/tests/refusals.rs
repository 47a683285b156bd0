//! What the SDK reports when the service refuses: its Key Connector API client keeps the
//! HTTP status (401 bad token, 403 token without the `api` scope, 404 no key yet, 503 identity
//! server unreachable), while unlock reports `KeyConnectorRetrievalFailed` for every one of
//! them (the apps then log the user out) and registration reports `KeyConnectorApi` and
//! leaves the Bitwarden server untouched.

use bitwarden_api_key_connector::apis::Error as KeyConnectorApiError;
use bitwarden_auth::registration::RegistrationError;
use bitwarden_core::client::encryption_settings::EncryptionSettingsError;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::{BitwardenServer, SdkUser, Service, TestIdp, unreachable_url};

#[tokio::test]
async fn a_forged_token_is_reported_as_401() {
    let idp = TestIdp::start().await;
    let service = Service::start(&idp.url).await;
    let bitwarden = BitwardenServer::start().await;
    let user = Uuid::new_v4();
    let sdk = SdkUser::new(user, idp.forged_token_for(user), &service, &bitwarden);

    sdk_reports_refusal(&sdk, StatusCode::UNAUTHORIZED).await;
    registration_fails_at_the_key_connector(&sdk, &bitwarden).await;
}

#[tokio::test]
async fn a_token_without_the_api_scope_is_reported_as_403() {
    let idp = TestIdp::start().await;
    let service = Service::start(&idp.url).await;
    let bitwarden = BitwardenServer::start().await;
    let user = Uuid::new_v4();
    let sdk = SdkUser::new(
        user,
        idp.token_without_api_scope(user),
        &service,
        &bitwarden,
    );

    sdk_reports_refusal(&sdk, StatusCode::FORBIDDEN).await;
    registration_fails_at_the_key_connector(&sdk, &bitwarden).await;
}

#[tokio::test]
async fn a_user_without_a_key_is_reported_as_404() {
    let idp = TestIdp::start().await;
    let service = Service::start(&idp.url).await;
    let bitwarden = BitwardenServer::start().await;
    let user = Uuid::new_v4();
    let sdk = SdkUser::new(user, idp.token_for(user), &service, &bitwarden);

    sdk_reports_refusal(&sdk, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn an_unreachable_identity_server_is_reported_as_503() {
    let idp = TestIdp::start().await;
    let service = Service::start(&unreachable_url()).await;
    let bitwarden = BitwardenServer::start().await;
    let user = Uuid::new_v4();
    let sdk = SdkUser::new(user, idp.token_for(user), &service, &bitwarden);

    sdk_reports_refusal(&sdk, StatusCode::SERVICE_UNAVAILABLE).await;
    // The SDK answers a failed GET with a POST; that must not store a key either.
    registration_fails_at_the_key_connector(&sdk, &bitwarden).await;
}

/// The SDK's Key Connector client reports `status` for the user's key, and unlock through
/// the service fails with `KeyConnectorRetrievalFailed`.
async fn sdk_reports_refusal(sdk: &SdkUser, status: StatusCode) {
    match sdk.stored_key().await {
        Err(KeyConnectorApiError::Reqwest(error)) if error.status() == Some(status) => {}
        other => panic!("the SDK's Key Connector client should report {status}, got {other:?}"),
    }

    let (account_cryptographic_state, wrapped_user_key) = sdk.unregistered_unlock_material();
    let unlock = sdk
        .unlock_with_key_connector(account_cryptographic_state, wrapped_user_key)
        .await;
    assert!(
        matches!(
            unlock,
            Err(EncryptionSettingsError::KeyConnectorRetrievalFailed)
        ),
        "unlock should fail to retrieve the key, got {unlock:?}"
    );
}

/// Registration (GET refused, so the SDK POSTs, refused too) fails at the Key Connector and
/// sends nothing to the Bitwarden server.
async fn registration_fails_at_the_key_connector(sdk: &SdkUser, bitwarden: &BitwardenServer) {
    let registration = sdk.register().await;
    assert!(
        matches!(registration, Err(RegistrationError::KeyConnectorApi)),
        "registration should fail at the Key Connector, got {:?}",
        registration.map(|_| "a registered key")
    );
    assert!(bitwarden.wrapped_user_keys().is_empty());
}
