//! The CRI ImageService client over a unix socket, shared by both runtimes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{
    Image, ImageSpec, ImageStatusRequest, PullImageRequest, RemoveImageRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// One gRPC channel to a CRI unix socket; image and runtime clients share it (as kubelet's do).
/// Connects eagerly so a missing or dead socket fails here with its path in the message.
pub async fn connect_channel(socket: &Path) -> anyhow::Result<Channel> {
    let socket: PathBuf = socket.to_path_buf();
    let socket_for_connector = socket.clone();
    // The URI is ignored: every connection goes to the unix socket.
    Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = socket_for_connector.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to CRI socket {}", socket.display()))
}

pub struct CriImages {
    client: ImageServiceClient<Channel>,
}

impl CriImages {
    pub async fn connect(socket: &Path) -> anyhow::Result<Self> {
        Ok(Self::with_channel(connect_channel(socket).await?))
    }

    pub fn with_channel(channel: Channel) -> Self {
        let client = ImageServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024);
        Self { client }
    }

    fn spec(image: &str) -> Option<ImageSpec> {
        Some(ImageSpec { image: image.to_string(), ..Default::default() })
    }

    pub async fn status(&mut self, image: &str) -> anyhow::Result<Option<Image>> {
        let response = self
            .client
            .image_status(ImageStatusRequest { image: Self::spec(image), verbose: false })
            .await
            .with_context(|| format!("ImageStatus {image}"))?;
        Ok(response.into_inner().image)
    }

    pub async fn remove(&mut self, image: &str) -> anyhow::Result<()> {
        self.client
            .remove_image(RemoveImageRequest { image: Self::spec(image) })
            .await
            .with_context(|| format!("RemoveImage {image}"))?;
        Ok(())
    }

    /// Returns the image ref the runtime answers with.
    pub async fn pull(&mut self, image: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .pull_image(PullImageRequest { image: Self::spec(image), auth: None, sandbox_config: None })
            .await
            .with_context(|| format!("PullImage {image}"))?;
        Ok(response.into_inner().image_ref)
    }
}
