//! Pulls from a registry behind Docker-style Bearer token auth (a [`TokenAuthProxy`] in
//! front of a local registry): username/password go through the challenge and token
//! service, an identity token is exchanged as an OAuth2 refresh token, a registry token is
//! sent as the Bearer token directly. Wrong or missing credentials give Unauthenticated
//! and record nothing.

use berth_imagegen::LocalRegistry;
use berth_tests::cri::{list_images, pull_with_auth};
use berth_tests::fixtures;
use berth_tests::token_proxy::{TokenAuthProxy, TokenAuthSettings, SERVICE};
use berth_tests::{store, Berthd};
use k8s_cri::v1::AuthConfig;
use tonic::Code;

const USER: &str = "berth";
const PASSWORD: &str = "s3cret-pass";
const REFRESH_TOKEN: &str = "R-refresh-42";
const ACCESS_TOKEN: &str = "T1";

/// A plain registry holding `busybox:latest`, the token proxy in front of it, and the image id.
async fn token_registry() -> (LocalRegistry, TokenAuthProxy, String) {
    let registry = fixtures::registry();
    let pushed = fixtures::push_std(&registry, "busybox");
    let settings = TokenAuthSettings {
        username: USER.into(),
        password: PASSWORD.into(),
        refresh_token: REFRESH_TOKEN.into(),
        access_token: ACCESS_TOKEN.into(),
    };
    let proxy = TokenAuthProxy::start(&registry.addr(), settings).await;
    (registry, proxy, pushed.images[0].config_digest.clone())
}

fn image_on(proxy: &TokenAuthProxy) -> String {
    format!("{}/busybox:latest", proxy.addr())
}

/// Pulls through berthd with `auth`, expects success with image `id`, and checks berthd lists it.
async fn assert_pulls(proxy: &TokenAuthProxy, auth: AuthConfig, id: &str, what: &str) {
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = image_on(proxy);
    let pulled = pull_with_auth(&mut images, &image, Some(auth))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}\ntoken requests: {:?}", proxy.token_requests()));
    assert_eq!(pulled, id, "{what}");
    let listed = list_images(&mut images).await.expect("ListImages");
    assert!(
        listed.iter().any(|i| i.id == id && i.repo_tags.contains(&image)),
        "{what}: berthd lists {image} as {id}: {listed:?}"
    );
    assert!(!proxy.forwarded().is_empty(), "{what}: requests reached the registry with the token");
}

/// Pulls through berthd with `auth`, expects Unauthenticated and nothing recorded.
async fn assert_refused(proxy: &TokenAuthProxy, auth: Option<AuthConfig>, what: &str) {
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = image_on(proxy);
    let err = pull_with_auth(&mut images, &image, auth).await.expect_err(what);
    assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    let message = err.message().to_lowercase();
    assert!(
        message.contains(&proxy.addr()) || message.contains(&image.to_lowercase()),
        "{what}: the error names the registry or image: {err:?}"
    );
    assert!(
        ["auth", "credential", "unauthorized", "denied", "token"].iter().any(|w| message.contains(w)),
        "{what}: the error says it is about authentication: {err:?}"
    );
    assert!(list_images(&mut images).await.expect("ListImages").is_empty(), "{what}: nothing recorded");
    assert!(store::snapshot_dirs(berthd.root()).is_empty(), "{what}: nothing unpacked");
    assert!(proxy.forwarded().is_empty(), "{what}: nothing reached the registry: {:?}", proxy.forwarded());
    berthd.assert_no_temp_leftovers();
}

#[tokio::test]
async fn username_and_password_go_through_the_token_service() {
    let (_registry, proxy, id) = token_registry().await;
    let auth = AuthConfig { username: USER.into(), password: PASSWORD.into(), ..Default::default() };
    assert_pulls(&proxy, auth, &id, "pull with username and password").await;
    let requests = proxy.token_requests();
    let granted = requests.iter().find(|r| r.granted).unwrap_or_else(|| panic!("a token was handed out: {requests:?}"));
    assert_eq!(granted.method, "GET", "{requests:?}");
    assert_eq!(granted.params.get("service").map(String::as_str), Some(SERVICE), "{requests:?}");
    assert_eq!(
        granted.params.get("scope").map(String::as_str),
        Some("repository:busybox:pull"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error() {
    let (_registry, proxy, _) = token_registry().await;
    let auth = AuthConfig { username: USER.into(), password: "wrong".into(), ..Default::default() };
    assert_refused(&proxy, Some(auth), "pull with a wrong password").await;
    assert!(proxy.token_requests().iter().all(|r| !r.granted), "{:?}", proxy.token_requests());
}

#[tokio::test]
async fn identity_token_is_exchanged_as_a_refresh_token() {
    let (_registry, proxy, id) = token_registry().await;
    let auth = AuthConfig { identity_token: REFRESH_TOKEN.into(), ..Default::default() };
    assert_pulls(&proxy, auth, &id, "pull with an identity token").await;
    let requests = proxy.token_requests();
    let granted = requests.iter().find(|r| r.granted).unwrap_or_else(|| panic!("a token was handed out: {requests:?}"));
    assert_eq!(granted.method, "POST", "{requests:?}");
    assert_eq!(granted.params.get("grant_type").map(String::as_str), Some("refresh_token"), "{requests:?}");
    assert_eq!(granted.params.get("service").map(String::as_str), Some(SERVICE), "{requests:?}");
    assert_eq!(
        granted.params.get("scope").map(String::as_str),
        Some("repository:busybox:pull"),
        "{requests:?}"
    );
    assert!(granted.params.get("client_id").is_some_and(|c| !c.is_empty()), "{requests:?}");
}

#[tokio::test]
async fn wrong_identity_token_is_an_authentication_error() {
    let (_registry, proxy, _) = token_registry().await;
    let auth = AuthConfig { identity_token: "not-the-refresh-token".into(), ..Default::default() };
    assert_refused(&proxy, Some(auth), "pull with a wrong identity token").await;
    assert!(proxy.token_requests().iter().all(|r| !r.granted), "{:?}", proxy.token_requests());
}

#[tokio::test]
async fn registry_token_is_sent_as_bearer_directly() {
    let (_registry, proxy, id) = token_registry().await;
    let auth = AuthConfig { registry_token: ACCESS_TOKEN.into(), ..Default::default() };
    assert_pulls(&proxy, auth, &id, "pull with a registry token").await;
    assert!(proxy.token_requests().is_empty(), "no token service needed: {:?}", proxy.token_requests());
}

#[tokio::test]
async fn no_credentials_is_an_authentication_error() {
    let (_registry, proxy, _) = token_registry().await;
    assert_refused(&proxy, None, "pull without credentials").await;
}
