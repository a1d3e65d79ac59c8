//! Pulls from a registry that requires credentials (htpasswd, HTTP Basic): credentials
//! come from the request's AuthConfig; missing or wrong ones give a clear authentication
//! error and record nothing.

use base64::Engine as _;
use berth_imagegen::{push_standard_with, LocalRegistry};
use berth_tests::cri::{list_images, pull_with_auth};
use berth_tests::fixtures::{self, reference};
use berth_tests::{store, Berthd};
use k8s_cri::v1::AuthConfig;
use tonic::Code;

const USER: &str = "berth";
const PASSWORD: &str = "s3cret-pass";

/// A registry with htpasswd auth holding `busybox:latest`; returns it and the image id.
fn authenticated_registry() -> (LocalRegistry, String) {
    let registry = fixtures::registry_with_auth(USER, PASSWORD);
    let pushed = push_standard_with(&registry.addr(), "busybox", &["busybox"], Some((USER, PASSWORD)))
        .unwrap_or_else(|e| panic!("push busybox with credentials: {e:#}"));
    (registry, pushed.images[0].config_digest.clone())
}

async fn assert_refused(registry: &LocalRegistry, auth: Option<AuthConfig>, what: &str) {
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = reference(registry, "busybox:latest");
    let err = pull_with_auth(&mut images, &image, auth).await.expect_err(what);
    assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    let message = err.message().to_lowercase();
    assert!(
        message.contains(&registry.addr()) || message.contains(&image.to_lowercase()),
        "{what}: the error names the registry or image: {err:?}"
    );
    assert!(
        ["auth", "credential", "unauthorized", "denied"].iter().any(|w| message.contains(w)),
        "{what}: the error says it is about authentication: {err:?}"
    );
    assert!(list_images(&mut images).await.expect("ListImages").is_empty(), "{what}: nothing recorded");
    assert!(store::snapshot_dirs(berthd.root()).is_empty(), "{what}: nothing unpacked");
    berthd.assert_no_temp_leftovers();
}

#[tokio::test]
async fn no_credentials_is_an_authentication_error() {
    let (registry, _) = authenticated_registry();
    assert_refused(&registry, None, "pull without credentials").await;
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error() {
    let (registry, _) = authenticated_registry();
    let auth = AuthConfig { username: USER.into(), password: "wrong".into(), ..Default::default() };
    assert_refused(&registry, Some(auth), "pull with a wrong password").await;
}

#[tokio::test]
async fn wrong_auth_string_is_an_authentication_error() {
    let (registry, _) = authenticated_registry();
    let auth = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode(format!("{USER}:nope")),
        ..Default::default()
    };
    assert_refused(&registry, Some(auth), "pull with a wrong auth string").await;
}

#[tokio::test]
async fn username_and_password_pull() {
    let (registry, id) = authenticated_registry();
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let auth = AuthConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        server_address: registry.addr(),
        ..Default::default()
    };
    let pulled = pull_with_auth(&mut images, &reference(&registry, "busybox:latest"), Some(auth))
        .await
        .expect("pull with username and password");
    assert_eq!(pulled, id);
}

#[tokio::test]
async fn base64_auth_pull() {
    let (registry, id) = authenticated_registry();
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let auth = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")),
        ..Default::default()
    };
    let pulled = pull_with_auth(&mut images, &reference(&registry, "busybox:latest"), Some(auth))
        .await
        .expect("pull with an auth string");
    assert_eq!(pulled, id);
}
