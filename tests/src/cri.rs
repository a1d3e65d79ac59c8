//! CRI v1 clients over a unix socket, and small helpers for the image calls tests repeat.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    AuthConfig, Image, ImageSpec, ImageStatusRequest, ImageStatusResponse, ListImagesRequest, PullImageRequest,
    RemoveImageRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

pub type RuntimeClient = RuntimeServiceClient<Channel>;
pub type ImageClient = ImageServiceClient<Channel>;

/// The runtime that drives every client connection of the harness.
///
/// Tests block their own thread at times (stopping berthd waits synchronously, and Drop
/// cannot await). A connection driven by the test's runtime would then stop answering
/// berthd's GOAWAY and PING during graceful shutdown, and berthd would wait for it. On
/// this runtime's own thread connections keep running whatever the test thread does; the
/// channels work from any runtime.
pub(crate) fn client_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cri-clients")
            .enable_all()
            .build()
            .expect("build the CRI client runtime")
    })
}

/// Opens a gRPC channel to the unix socket at `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket: PathBuf = socket.to_path_buf();
    let connecting = client_runtime().spawn(async move {
        // The URI is required by tonic but unused: the connector dials the socket.
        Endpoint::from_static("http://[::1]:50051")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
            }))
            .await
    });
    match connecting.await {
        Ok(result) => result,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

/// An `ImageSpec` naming `image`.
pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec { image: image.to_string(), ..Default::default() }
}

/// PullImage without credentials; returns the image ref (the image id).
pub async fn pull(images: &mut ImageClient, image: &str) -> Result<String, tonic::Status> {
    pull_with_auth(images, image, None).await
}

/// PullImage with `auth`; returns the image ref (the image id).
pub async fn pull_with_auth(
    images: &mut ImageClient,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    let request = PullImageRequest { image: Some(image_spec(image)), auth, sandbox_config: None };
    Ok(images.pull_image(request).await?.into_inner().image_ref)
}

/// ImageStatus of `image`.
pub async fn image_status(
    images: &mut ImageClient,
    image: &str,
    verbose: bool,
) -> Result<ImageStatusResponse, tonic::Status> {
    let request = ImageStatusRequest { image: Some(image_spec(image)), verbose };
    Ok(images.image_status(request).await?.into_inner())
}

/// ListImages without a filter.
pub async fn list_images(images: &mut ImageClient) -> Result<Vec<Image>, tonic::Status> {
    Ok(images.list_images(ListImagesRequest { filter: None }).await?.into_inner().images)
}

/// RemoveImage of `image`.
pub async fn remove_image(images: &mut ImageClient, image: &str) -> Result<(), tonic::Status> {
    images.remove_image(RemoveImageRequest { image: Some(image_spec(image)) }).await?;
    Ok(())
}
