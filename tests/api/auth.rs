//! The 401 and 403 matrices, alg confusion, JWKS rotation and an identity server outage,
//! all through HTTP against the real router.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use key_connector::config::intervals::IdentityServerIntervals;
use key_connector::dev::issuer::DevIssuer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{AppOptions, TestApp, TestIdp, random_key, spawn_app, spawn_app_with};

async fn status_with_header(app: &TestApp, authorization: Option<&str>) -> StatusCode {
    let mut request = app.client.get(app.url("/user-keys"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    if !status.is_success() {
        let body: Value = response.json().await.expect("error bodies are JSON");
        assert!(body["message"].is_string());
    }
    status
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn every_401_case_is_rejected() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let idp = &app.idp;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let valid = idp.claims_for(user);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = valid.clone();
        change(&mut claims);
        claims
    };

    let foreign = DevIssuer::generate().unwrap();
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &valid,
        &jsonwebtoken::EncodingKey::from_secret(idp.issuer.public_key_pem().as_bytes()),
    )
    .unwrap();
    let hs256_with_der = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &valid,
        &jsonwebtoken::EncodingKey::from_secret(&idp.issuer.public_key_der()),
    )
    .unwrap();
    let tampered = {
        let token = idp.mint(valid.clone());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let other = with(&|c| c["sub"] = json!(Uuid::new_v4().to_string()));
        parts[1] = URL_SAFE_NO_PAD.encode(other.to_string());
        parts.join(".")
    };

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("bearer only", Some("Bearer".into())),
        ("malformed token", Some("Bearer not-a-jwt".into())),
        ("three garbage parts", Some("Bearer a.b.c".into())),
        (
            "foreign key",
            Some(format!("Bearer {}", foreign.mint(&idp.url, valid.clone()))),
        ),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                idp.mint(with(&|c| c["iss"] = json!("https://evil.example")))
            )),
        ),
        (
            "issuer null",
            Some(format!(
                "Bearer {}",
                idp.mint(with(&|c| c["iss"] = Value::Null))
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                idp.mint(with(&|c| c["exp"] = json!(now - 600)))
            )),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                idp.mint(with(&|c| c["nbf"] = json!(now + 600)))
            )),
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                idp.mint(with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }))
            )),
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                unsigned(json!({"alg": "none", "typ": "JWT"}), &valid)
            )),
        ),
        (
            "alg none with kid",
            Some(format!(
                "Bearer {}",
                unsigned(json!({"alg": "none", "kid": idp.issuer.kid()}), &valid)
            )),
        ),
        (
            "HS256 with the public key PEM",
            Some(format!("Bearer {hs256_with_public_key}")),
        ),
        (
            "HS256 with the public key DER",
            Some(format!("Bearer {hs256_with_der}")),
        ),
    ];
    for (name, header) in cases {
        assert_eq!(
            status_with_header(&app, header.as_deref()).await,
            StatusCode::UNAUTHORIZED,
            "{name}"
        );
    }
}

async fn every_403_case_is_forbidden() {
    let app = spawn_app().await;
    let valid = app.idp.claims_for(Uuid::new_v4());
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = valid.clone();
        change(&mut claims);
        claims
    };
    let remove = |name: &'static str| {
        with(&move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(name);
        })
    };
    let cases = vec![
        (
            "scope without api",
            with(&|c| c["scope"] = json!(["offline_access"])),
        ),
        (
            "space-delimited scope",
            with(&|c| c["scope"] = json!("api offline_access")),
        ),
        ("scope missing", remove("scope")),
        (
            "scope API in upper case",
            with(&|c| c["scope"] = json!(["API"])),
        ),
        ("amr sso", with(&|c| c["amr"] = json!(["sso"]))),
        ("amr missing", remove("amr")),
        (
            "amr lower-case application",
            with(&|c| c["amr"] = json!(["application"])),
        ),
        ("sub missing", remove("sub")),
        ("sub not a GUID", with(&|c| c["sub"] = json!("alice"))),
        ("sub a number", with(&|c| c["sub"] = json!(12345))),
    ];
    for (name, claims) in cases {
        let token = app.idp.mint(claims);
        assert_eq!(
            status_with_header(&app, Some(&format!("Bearer {token}"))).await,
            StatusCode::FORBIDDEN,
            "{name}"
        );
    }
}

async fn tokens_the_identity_server_may_issue_are_accepted() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let valid = app.idp.claims_for(user);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = valid.clone();
        change(&mut claims);
        claims
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cases = vec![
        ("typical", valid.clone()),
        ("scope string api", with(&|c| c["scope"] = json!("api"))),
        ("amr external", with(&|c| c["amr"] = json!(["external"]))),
        (
            "amr string Application",
            with(&|c| c["amr"] = json!("Application")),
        ),
        (
            "upper-case sub",
            with(&|c| c["sub"] = json!(user.to_string().to_uppercase())),
        ),
        (
            "braced sub",
            with(&|c| c["sub"] = json!(format!("{{{user}}}"))),
        ),
        (
            "expired within clock skew",
            with(&|c| c["exp"] = json!(now - 60)),
        ),
        (
            "audience anything",
            with(&|c| c["aud"] = json!("someone-else")),
        ),
    ];
    for (name, claims) in cases {
        let token = app.idp.mint(claims);
        assert_eq!(
            status_with_header(&app, Some(&format!("Bearer {token}"))).await,
            StatusCode::NOT_FOUND,
            "{name}: authenticated, and the user has no key yet"
        );
    }
    let lower_scheme = format!("bearer {}", app.token_for(user));
    assert_eq!(
        status_with_header(&app, Some(&lower_scheme)).await,
        StatusCode::NOT_FOUND
    );
}

async fn guid_spellings_of_one_user_reach_the_same_key() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let key = random_key();
    assert_eq!(
        app.post_key(&app.token_for(user), &key).await.status(),
        StatusCode::OK
    );
    let mut claims = app.idp.claims_for(user);
    claims["sub"] = json!(user.simple().to_string().to_uppercase());
    assert_eq!(app.read_key(&app.idp.mint(claims)).await, Ok(key));
}

async fn the_identity_servers_issuer_is_trusted_even_when_it_differs_from_the_configured_uri() {
    // Configure the service with `http://localhost:PORT/` while the discovery document says
    // `http://127.0.0.1:PORT`, as self-hosted installs do (`http://identity:5000` vs `http://identity`).
    let idp = Arc::new(TestIdp::start().await);
    let configured = idp.url.replace("127.0.0.1", "localhost") + "/";
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            identity_server_uri: Some(configured),
            ..AppOptions::default()
        },
    )
    .await;
    let token = app.token_for(Uuid::new_v4());
    assert_eq!(app.read_key(&token).await, Err(404));
}

// The tests of refreshing run on a paused clock: the rate limit's interval passes exactly
// when every task waits for it (tokio auto-advances an idle runtime), and no test sleeps for
// it. Everything they talk to (the application, the identity provider, SQLite's blocking
// threads) runs in the test's own runtime (they are listed under `paused` at the end).

async fn a_rotated_signing_key_is_picked_up_by_refreshing_the_jwks() {
    let first = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(Arc::clone(&first), AppOptions::default()).await;
    let user = Uuid::new_v4();
    let key = random_key();
    assert_eq!(
        app.post_key(&first.token_for(user), &key).await.status(),
        StatusCode::OK
    );

    let rotated = restart_with_a_new_signing_key(&first).await;
    let new_token = rotated.token_for(user);
    // An unknown `kid` refreshes the JWKS, at most once per rate-limit interval, and the
    // token waits for that refresh: the first request with the new key is answered.
    let asked = tokio::time::Instant::now();
    assert_eq!(app.read_key(&new_token).await, Ok(key));
    assert!(
        asked.elapsed() <= IdentityServerIntervals::default().min_refresh,
        "answered {:?} after it was asked, more than one interval",
        asked.elapsed()
    );
    assert_eq!(rotated.jwks_fetches(), 1);
    // The old key is no longer published: a token it signed now, never seen before, is
    // rejected (its `kid` is unknown even after the refresh).
    let old_key_token = first.token_for(user);
    assert_ne!(old_key_token, new_token);
    assert_eq!(app.read_key(&old_key_token).await, Err(401));
}

async fn a_flood_of_unknown_key_ids_refreshes_the_jwks_at_most_once_per_interval() {
    let app = Arc::new(spawn_app().await);
    let before = app.idp.jwks_fetches();
    let stranger = Arc::new(DevIssuer::generate().unwrap());
    // Fifty at once: each waits for a fetch that began after it arrived, and they share it
    // (two at most: one may already be under way when the rest arrive).
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (app, stranger) = (Arc::clone(&app), Arc::clone(&stranger));
        flood.spawn(async move {
            let token =
                stranger.mint_user_token(&app.idp.url, Uuid::new_v4(), Duration::from_secs(60));
            app.read_key(&token).await
        });
    }
    while let Some(answer) = flood.join_next().await {
        assert_eq!(answer.unwrap(), Err(401));
    }
    let refreshes = app.idp.jwks_fetches() - before;
    assert!(
        (1..=2).contains(&refreshes),
        "{refreshes} JWKS fetches for 50 unknown key ids"
    );
}

async fn a_newly_published_key_is_trusted_at_once_during_a_flood_of_unknown_key_ids() {
    let interval = IdentityServerIntervals::default().min_refresh;
    let first = Arc::new(TestIdp::start().await);
    let app = Arc::new(spawn_app_with(Arc::clone(&first), AppOptions::default()).await);
    let user = Uuid::new_v4();
    let key = random_key();
    assert_eq!(
        app.post_key(&first.token_for(user), &key).await.status(),
        StatusCode::OK
    );
    // Made-up key ids arrive all the time (one every 150 ms of the paused clock), keeping
    // the JWKS refresh rate-limited.
    let stranger = Arc::new(DevIssuer::generate().unwrap());
    let flooding = tokio_util::sync::CancellationToken::new();
    let (sent, mut sent_so_far) = tokio::sync::watch::channel(0u32);
    let flood = {
        let (app, stranger, flooding) = (Arc::clone(&app), Arc::clone(&stranger), flooding.clone());
        let url = first.url.clone();
        tokio::spawn(async move {
            while !flooding.is_cancelled() {
                let app = Arc::clone(&app);
                let token = stranger.mint_user_token(&url, Uuid::new_v4(), Duration::from_secs(60));
                tokio::spawn(async move { app.read_key(&token).await });
                sent.send_modify(|sent| *sent += 1);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    sent_so_far.wait_for(|sent| *sent >= 20).await.unwrap();

    let started = tokio::time::Instant::now();
    let rotated = restart_with_a_new_signing_key(&first).await;
    // The first request with the new key is answered, not refused.
    assert_eq!(app.read_key(&rotated.token_for(user)).await, Ok(key));
    sent_so_far.wait_for(|sent| *sent >= 40).await.unwrap();
    flooding.cancel();
    flood.await.unwrap();
    // Once per interval at the most, plus the fetch under way at the restart: measured on
    // the clock the rate limit reads, so the bound is exact.
    let window = started.elapsed();
    let allowed = (window.as_millis() / interval.as_millis()) as usize + 2;
    assert!(
        (1..=allowed).contains(&rotated.jwks_fetches()),
        "{} JWKS fetches in {window:?}",
        rotated.jwks_fetches()
    );
}

async fn a_token_naming_an_unpublished_key_id_but_signed_by_a_published_key_is_accepted() {
    // Upstream's token handler tries every published key when the `kid` matches none.
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let before = app.idp.jwks_fetches();
    let token =
        app.idp
            .issuer
            .mint_with_kid(&app.idp.url, app.idp.claims_for(user), "not-published");
    assert_eq!(app.read_key(&token).await, Err(404));
    assert_eq!(app.idp.jwks_fetches(), before, "no refresh was needed");
}

async fn identity_server_down_is_503_then_recovers_without_restart() {
    // Reserve a port, then free it: nothing listens there when the service starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let url = format!("http://{address}");
    let issuer = Arc::new(DevIssuer::generate().unwrap());
    let placeholder = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        placeholder,
        AppOptions {
            identity_server_uri: Some(url.clone()),
            ..AppOptions::default()
        },
    )
    .await;
    let token = issuer.mint_user_token(&url, Uuid::new_v4(), Duration::from_secs(3600));

    let response = app.get_key(&token).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let _: Value = response.json().await.unwrap();
    // Without a token the answer is still 401: nothing to validate.
    let response = app.client.get(app.url("/user-keys")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Anonymous endpoints keep working.
    let response = app.client.get(app.url("/alive")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let _idp = TestIdp::serve_on(issuer, bind_retrying(&address).await, url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        match app.read_key(&token).await {
            Err(404) => break,
            Err(503) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("expected recovery to 404, got {other:?}"),
        }
    }
}

/// The identity server restarts on the same address with a new signing key.
async fn restart_with_a_new_signing_key(first: &TestIdp) -> TestIdp {
    first.stop();
    let address = first.url.trim_start_matches("http://").to_owned();
    let listener = bind_retrying(&address).await;
    TestIdp::serve_on(
        Arc::new(DevIssuer::generate().unwrap()),
        listener,
        first.url.clone(),
    )
    .await
}

async fn bind_retrying(address: &str) -> tokio::net::TcpListener {
    for _ in 0..50 {
        if let Ok(listener) = tokio::net::TcpListener::bind(address).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {address} again");
}

async fn a_503_for_the_identity_server_names_no_url_transport_error_or_document_content() {
    // An identity server that answers with a broken JWKS: the parser's message would quote it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken = format!("http://{}", listener.local_addr().unwrap());
    let jwks_uri = format!("{broken}/private-jwks-path");
    let documents = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get({
                let discovery = json!({ "issuer": broken, "jwks_uri": jwks_uri });
                move || async move { axum::Json(discovery) }
            }),
        )
        .route(
            "/private-jwks-path",
            axum::routing::get(|| async { axum::Json(json!({ "keys": "document-fragment" })) }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, documents).await });
    // And one where nothing listens.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let absent = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    for identity in [&broken, &absent] {
        let app = spawn_app_with(
            Arc::new(TestIdp::start().await),
            AppOptions {
                identity_server_uri: Some(identity.clone()),
                ..AppOptions::default()
            },
        )
        .await;
        let issuer = DevIssuer::generate().unwrap();
        let token = issuer.mint_user_token(identity, Uuid::new_v4(), Duration::from_secs(600));
        let response = app.get_key(&token).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.text().await.unwrap();
        let port = identity.rsplit(':').next().unwrap();
        for internal in [
            "127.0.0.1",
            port,
            "http",
            "well-known",
            "private-jwks-path",
            "document-fragment",
            "sending request",
            "invalid type",
        ] {
            assert!(!body.contains(internal), "{internal:?} in {body}");
        }
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
    }
    server.abort();
}

/// An identity server whose JWKS a test replaces while the service runs.
struct SwitchableIdp {
    url: String,
    jwks: Arc<std::sync::Mutex<Value>>,
    task: tokio::task::JoinHandle<()>,
}

impl SwitchableIdp {
    async fn start(jwks: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(std::sync::Mutex::new(jwks));
        let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") });
        let served = Arc::clone(&jwks);
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let jwks = served.lock().unwrap().clone();
                    async move { axum::Json(jwks) }
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, jwks, task }
    }

    fn publish(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }

    /// Makes the service fetch the JWKS again: a token naming a key id that is not published
    /// and that no published key verifies waits for a fresh fetch, and is refused.
    async fn make_the_service_refresh(&self, app: &TestApp) {
        let stranger = DevIssuer::generate().unwrap();
        let token = stranger.mint_user_token(&self.url, Uuid::new_v4(), Duration::from_secs(60));
        assert_eq!(app.read_key(&token).await, Err(401));
    }
}

impl Drop for SwitchableIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The JWK of `issuer`'s key, under `kid` (none when `None`).
fn jwk_of(issuer: &DevIssuer, kid: Option<&str>) -> Value {
    let mut jwk = issuer.jwks()["keys"][0].clone();
    match kid {
        Some(kid) => jwk["kid"] = json!(kid),
        None => {
            jwk.as_object_mut().unwrap().remove("kid");
        }
    }
    jwk
}

async fn spawn_app_trusting(idp: &SwitchableIdp) -> TestApp {
    spawn_app_with(
        Arc::new(TestIdp::start().await),
        AppOptions {
            identity_server_uri: Some(idp.url.clone()),
            ..AppOptions::default()
        },
    )
    .await
}

async fn a_withdrawn_key_without_a_kid_stops_vouching_for_tokens_it_signed_at_once() {
    // Vaultwarden publishes keys without a kid and signs tokens without one.
    let (withdrawn, staying) = (
        DevIssuer::generate().unwrap(),
        DevIssuer::generate().unwrap(),
    );
    let idp = SwitchableIdp::start(json!({ "keys": [
        jwk_of(&withdrawn, None), jwk_of(&staying, None),
    ]}))
    .await;
    let app = spawn_app_trusting(&idp).await;
    let user = Uuid::new_v4();
    let claims = json!({
        "nbf": time::OffsetDateTime::now_utc().unix_timestamp(),
        "exp": time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
        "sub": user.to_string(), "scope": ["api"], "amr": ["Application"],
    });
    let token = withdrawn.mint_without_kid(&idp.url, claims);
    assert_eq!(app.read_key(&token).await, Err(404), "accepted and cached");

    idp.publish(json!({ "keys": [jwk_of(&staying, None)] }));
    idp.make_the_service_refresh(&app).await;
    assert_eq!(app.read_key(&token).await, Err(401));
}

async fn a_kid_republished_with_other_key_material_stops_vouching_for_the_old_keys_tokens() {
    let (old, new) = (
        DevIssuer::generate().unwrap(),
        DevIssuer::generate().unwrap(),
    );
    let idp = SwitchableIdp::start(json!({ "keys": [jwk_of(&old, Some("signing"))] })).await;
    let app = spawn_app_trusting(&idp).await;
    let user = Uuid::new_v4();
    let claims = json!({
        "nbf": time::OffsetDateTime::now_utc().unix_timestamp(),
        "exp": time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
        "sub": user.to_string(), "scope": ["api"], "amr": ["Application"],
    });
    let token = old.mint_with_kid(&idp.url, claims.clone(), "signing");
    assert_eq!(app.read_key(&token).await, Err(404), "accepted and cached");

    idp.publish(json!({ "keys": [jwk_of(&new, Some("signing"))] }));
    idp.make_the_service_refresh(&app).await;
    assert_eq!(app.read_key(&token).await, Err(401));
    // The new key's tokens are trusted.
    let token = new.mint_with_kid(&idp.url, claims, "signing");
    assert_eq!(app.read_key(&token).await, Err(404));
}

/// Serves `router` on 127.0.0.1: its URL and the task.
async fn serve_documents(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, task)
}

async fn the_discovery_document_is_not_fetched_through_a_redirect_to_another_origin() {
    let idp = Arc::new(TestIdp::start().await);
    let elsewhere = format!("{}/.well-known/openid-configuration", idp.url);
    let (url, _task) = serve_documents(axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || async move { axum::response::Redirect::temporary(&elsewhere) }),
    ))
    .await;
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            identity_server_uri: Some(url),
            ..AppOptions::default()
        },
    )
    .await;
    // The keys behind the redirect would verify this token: they are never loaded.
    assert_eq!(app.read_key(&idp.token_for(Uuid::new_v4())).await, Err(503));
}

async fn a_redirect_within_the_identity_servers_origin_is_followed() {
    let idp = Arc::new(TestIdp::start().await);
    // The document names the test identity server's keys (another origin: a warning only).
    let discovery = idp.issuer.discovery(&idp.url);
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(|| async { axum::response::Redirect::temporary("/moved") }),
        )
        .route(
            "/moved",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        );
    let (url, _task) = serve_documents(router).await;
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            identity_server_uri: Some(url),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.read_key(&idp.token_for(Uuid::new_v4())).await, Err(404));
}

async fn a_jwks_larger_than_a_mebibyte_is_not_read() {
    let issuer = Arc::new(DevIssuer::generate().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut jwks = issuer.jwks();
    // Valid, with a key that verifies the token, and padded past the cap.
    jwks["padding"] = json!("x".repeat(key_connector::auth::jwks::MAX_DOCUMENT_BYTES));
    let discovery = issuer.discovery(&url);
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/.well-known/openid-configuration/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    let _task = tokio::spawn(async move { axum::serve(listener, router).await });
    let app = spawn_app_with(
        Arc::new(TestIdp::start().await),
        AppOptions {
            identity_server_uri: Some(url.clone()),
            ..AppOptions::default()
        },
    )
    .await;
    let token = issuer.mint_user_token(&url, Uuid::new_v4(), Duration::from_secs(600));
    assert_eq!(app.read_key(&token).await, Err(503));
}

/// Vaultwarden's Key Connector support (dani-garcia/vaultwarden#7419) as a real CLI login
/// through it showed (tests/e2e): discovery at `{domain}/identity`, an issuer of the form
/// `{origin}|login` that is no URL, the JWKS at `{domain}/identity/.well-known/jwks`, and
/// access tokens without `kid` or `iat`, with `amr` `["Application","external"]`.
async fn tokens_shaped_as_vaultwarden_issues_them_are_accepted() {
    let issuer = Arc::new(DevIssuer::generate().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let issuer_name = format!("{origin}|login");
    let discovery = json!({
        "issuer": issuer_name,
        "jwks_uri": format!("{origin}/identity/.well-known/jwks"),
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let jwks = issuer.jwks();
    let router = axum::Router::new()
        .route(
            "/identity/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/identity/.well-known/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        idp,
        AppOptions {
            identity_server_uri: Some(format!("{origin}/identity")),
            ..AppOptions::default()
        },
    )
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let user = Uuid::new_v4();
    let token = issuer.mint_without_kid(
        &issuer_name,
        json!({
            "nbf": now, "exp": now + 7200, "iss": issuer_name,
            "sub": user.to_string(), "premium": true, "name": "SSO User",
            "email": "sso@example.test", "email_verified": true, "sstamp": "a1b2",
            "device": Uuid::new_v4().to_string(), "devicetype": "8",
            "scope": ["api", "offline_access"], "amr": ["Application", "external"],
        }),
    );
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), 200);
    assert_eq!(app.read_key(&token).await, Ok(key));
    // The same token from another issuer name is refused.
    let foreign = issuer.mint_without_kid(
        &issuer_name,
        json!({
            "nbf": now, "exp": now + 7200, "iss": format!("{origin}/identity"),
            "sub": user.to_string(), "scope": ["api"], "amr": ["Application"],
        }),
    );
    assert_eq!(app.read_key(&foreign).await, Err(401));
    server.abort();
}

crate::tests! {
    current_thread: [
        every_401_case_is_rejected,
        every_403_case_is_forbidden,
        tokens_the_identity_server_may_issue_are_accepted,
        guid_spellings_of_one_user_reach_the_same_key,
        the_identity_servers_issuer_is_trusted_even_when_it_differs_from_the_configured_uri,
        a_token_naming_an_unpublished_key_id_but_signed_by_a_published_key_is_accepted,
        identity_server_down_is_503_then_recovers_without_restart,
        a_503_for_the_identity_server_names_no_url_transport_error_or_document_content,
        a_withdrawn_key_without_a_kid_stops_vouching_for_tokens_it_signed_at_once,
        a_kid_republished_with_other_key_material_stops_vouching_for_the_old_keys_tokens,
        the_discovery_document_is_not_fetched_through_a_redirect_to_another_origin,
        a_redirect_within_the_identity_servers_origin_is_followed,
        a_jwks_larger_than_a_mebibyte_is_not_read,
        tokens_shaped_as_vaultwarden_issues_them_are_accepted,
    ],
    paused: [
        a_rotated_signing_key_is_picked_up_by_refreshing_the_jwks,
        a_flood_of_unknown_key_ids_refreshes_the_jwks_at_most_once_per_interval,
        a_newly_published_key_is_trusted_at_once_during_a_flood_of_unknown_key_ids,
    ],
}
