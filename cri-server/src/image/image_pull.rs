//! PullImage: fetch an image from its registry into the store.

use std::sync::Arc;
use std::time::Instant;

use berth_images::Credentials;
use k8s_cri::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use tonic::Status;
use tracing::Instrument;

use super::{requested_image, ImageBackend, ImageServer};
use crate::errors::{image_error_status, task_failed_status};

pub(super) async fn pull_image<B: ImageBackend>(
    images: &ImageServer<B>,
    request: PullImageRequest,
) -> Result<PullImageResponse, Status> {
    let reference = requested_image("PullImage", request.image.as_ref())?.to_string();
    let credentials = request.auth.and_then(credentials_from);
    tracing::info!(%reference, authenticated = credentials.is_some(), "pulling image");
    let started = Instant::now();

    // The pull runs as its own task: if kubelet gives up on this RPC (timeout, restart),
    // the download still completes and lands in the store, where the retry finds it
    // instead of starting over. The store dedupes concurrent pulls of the same image.
    let store = Arc::clone(&images.store);
    let task_reference = reference.clone();
    let pulled = tokio::spawn(async move { store.pull(&task_reference, credentials).await }.in_current_span())
        .await
        .map_err(|join_err| task_failed_status("pulling an image", join_err))?;

    let elapsed_ms = started.elapsed().as_millis() as u64;
    match pulled {
        Ok(image) => {
            tracing::info!(%reference, id = %image.id, size = image.size, elapsed_ms, "pulled image");
            // As containerd: the image ref kubelet keeps is the image id.
            Ok(PullImageResponse { image_ref: image.id })
        }
        Err(err) => {
            tracing::warn!(%reference, error = %err, elapsed_ms, "pull failed");
            Err(image_error_status(&err))
        }
    }
}

/// The request's AuthConfig as store credentials; `None` when it carries none.
/// `server_address` is informational (kubelet's keyring match) and not needed: the
/// credentials are for the registry of the reference being pulled.
pub(crate) fn credentials_from(auth: AuthConfig) -> Option<Credentials> {
    let credentials = Credentials {
        username: auth.username,
        password: auth.password,
        auth: auth.auth,
        identity_token: auth.identity_token,
        registry_token: auth.registry_token,
    };
    (credentials != Credentials::default()).then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::fake::{image, FakeStore};
    use k8s_cri::v1::ImageSpec;
    use tonic::Code;

    fn pull_request(reference: &str, auth: Option<AuthConfig>) -> PullImageRequest {
        PullImageRequest {
            image: Some(ImageSpec { image: reference.into(), ..Default::default() }),
            auth,
            sandbox_config: None,
        }
    }

    #[tokio::test]
    async fn answers_the_image_id_and_passes_credentials() {
        let id_hex = "a".repeat(64);
        let store = Arc::new(FakeStore::with(vec![image(&id_hex, "r/busybox:1", None)]));
        let server = ImageServer::new(Arc::clone(&store));
        let auth = AuthConfig { username: "u".into(), password: "p".into(), server_address: "r".into(), ..Default::default() };
        let response = pull_image(&server, pull_request("r/busybox:1", Some(auth))).await.expect("pull");
        assert_eq!(response.image_ref, format!("sha256:{id_hex}"));
        let pulls = store.pulls.lock().expect("lock");
        let credentials = pulls[0].1.as_ref().expect("credentials passed");
        assert_eq!((credentials.username.as_str(), credentials.password.as_str()), ("u", "p"));
    }

    #[tokio::test]
    async fn empty_auth_is_no_credentials() {
        let store = Arc::new(FakeStore::with(vec![image(&"a".repeat(64), "r/x:1", None)]));
        let server = ImageServer::new(Arc::clone(&store));
        let only_address = AuthConfig { server_address: "r".into(), ..Default::default() };
        pull_image(&server, pull_request("r/x:1", Some(only_address))).await.expect("pull");
        assert!(store.pulls.lock().expect("lock")[0].1.is_none());
    }

    #[tokio::test]
    async fn empty_image_is_invalid_argument() {
        let server = ImageServer::new(Arc::new(FakeStore::with(vec![])));
        let status = pull_image(&server, pull_request("  ", None)).await.expect_err("empty image");
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = pull_image(&server, PullImageRequest::default()).await.expect_err("no spec");
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn store_errors_keep_their_code() {
        let server = ImageServer::new(Arc::new(FakeStore::with(vec![])));
        let status = pull_image(&server, pull_request("r/missing:1", None)).await.expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("r/missing:1"), "{}", status.message());
        let status = pull_image(&server, pull_request("R/Bad", None)).await.expect_err("malformed");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
