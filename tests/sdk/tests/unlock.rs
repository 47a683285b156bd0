//! Unlock as the SDK performs it for a Key Connector user
//! (`InitUserCryptoMethod::KeyConnectorUrl`): a fresh client, holding only what the Bitwarden
//! server keeps for the user, fetches the Key Connector key from the service and can read
//! what the registering client encrypted.

use uuid::Uuid;

use crate::support::{BitwardenServer, SdkUser, Service, TestIdp};

#[tokio::test]
async fn a_fresh_client_unlocks_through_the_service_and_decrypts_what_the_first_encrypted() {
    fresh_client_decrypts_after_registration(|service| service.url.clone()).await;
}

#[tokio::test]
async fn a_key_connector_url_ending_in_a_slash_still_registers_and_unlocks() {
    // The SDK appends "/user-keys" as it is, so it asks for "//user-keys".
    fresh_client_decrypts_after_registration(|service| format!("{}/", service.url)).await;
}

/// One client registers at the Key Connector URL `url_of(service)` and encrypts; a fresh
/// client of the same user unlocks through that URL and decrypts.
async fn fresh_client_decrypts_after_registration(url_of: fn(&Service) -> String) {
    let idp = TestIdp::start().await;
    let service = Service::start(&idp.url).await;
    let bitwarden = BitwardenServer::start().await;
    let user = Uuid::new_v4();
    let key_connector_url = url_of(&service);

    let registering = SdkUser::new(user, idp.token_for(user), &service, &bitwarden)
        .with_key_connector_url(key_connector_url.clone());
    let registration = registering.register().await.expect("registration");
    registering.unlock_after_registration(&registration).await;
    let secret = "the vault item only this user can read";
    let encrypted = registering.encrypt(secret);

    // The next login: a new client with a new token, given the wrapped user key as the
    // Bitwarden server stored it during registration.
    let [wrapped_user_key] = bitwarden.wrapped_user_keys().try_into().unwrap();
    let fresh = SdkUser::new(user, idp.token_for(user), &service, &bitwarden)
        .with_key_connector_url(key_connector_url);
    fresh
        .unlock_with_key_connector(
            registration.account_cryptographic_state,
            wrapped_user_key.parse().expect("an EncString"),
        )
        .await
        .expect("the fresh client unlocks with the key the service returns");

    assert_eq!(fresh.decrypt(&encrypted), secret);
}
