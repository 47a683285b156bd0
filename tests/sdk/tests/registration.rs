//! Key Connector registration as the SDK performs it, against the service: a new user's key
//! is created (GET 404, then POST), a user who already has one gets it replaced (GET 200,
//! then PUT), and in both cases the service ends holding the key the SDK made.

use uuid::Uuid;

use crate::support::{BitwardenServer, SdkUser, Service, TestIdp};

#[tokio::test]
async fn registration_of_a_new_user_posts_its_key() {
    let idp = TestIdp::start().await;
    let service = Service::start(&idp.url).await;
    let bitwarden = BitwardenServer::start().await;
    let user = Uuid::new_v4();
    let sdk = SdkUser::new(user, idp.token_for(user), &service, &bitwarden);

    let registration = sdk
        .register()
        .await
        .expect("the SDK registers a new user with the service");

    assert_eq!(
        sdk.stored_key().await.expect("the service holds a key"),
        registration.key_connector_key.to_string(),
        "the service holds the key the SDK registered"
    );
    assert_eq!(
        bitwarden.wrapped_user_keys(),
        [registration.key_connector_key_wrapped_user_key.to_string()],
        "the SDK went on to give the Bitwarden server the user key wrapped by that key"
    );
}

#[tokio::test]
async fn registration_of_a_user_who_has_a_key_puts_the_new_one_in_its_place() {
    let idp = TestIdp::start().await;
    let service = Service::start(&idp.url).await;
    let bitwarden = BitwardenServer::start().await;
    let user = Uuid::new_v4();
    let first = SdkUser::new(user, idp.token_for(user), &service, &bitwarden)
        .register()
        .await
        .expect("the first registration stores a key");

    // A second registration of the same user (provisioned again, another device): the SDK
    // finds a key and PUTs; a POST would be refused with 400 because one exists.
    let sdk = SdkUser::new(user, idp.token_for(user), &service, &bitwarden);
    let second = sdk
        .register()
        .await
        .expect("the SDK registers a user who already has a key");

    assert_ne!(second.key_connector_key, first.key_connector_key);
    assert_eq!(
        sdk.stored_key().await.expect("the service holds a key"),
        second.key_connector_key.to_string(),
        "the service holds the key of the latest registration"
    );
}
