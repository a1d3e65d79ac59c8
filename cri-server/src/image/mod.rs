//! CRI ImageService: thin handlers over the image store, one file per RPC.
//!
//! Each handler validates the request, calls the store (blocking calls on the blocking
//! pool, since they read redb and walk the disk), and converts the answer. The CRI
//! contracts kubelet relies on live here: ImageStatus of an unknown image is OK with no
//! image, RemoveImage of an unknown image is OK.

mod backend;
pub mod convert;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
pub(crate) use image_pull::credentials_from;

use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::{
    ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec, ImageStatusRequest, ImageStatusResponse, ListImagesRequest,
    ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest, RemoveImageResponse,
};
use tonic::{Request, Response, Status};

pub use backend::ImageBackend;

use crate::errors::{image_error_status, task_failed_status};

/// The ImageService, generic over the store so handlers are testable without a registry.
pub struct ImageServer<B> {
    store: Arc<B>,
}

impl<B: ImageBackend> ImageServer<B> {
    pub fn new(store: Arc<B>) -> Self {
        Self { store }
    }

    /// The store behind this service, shared with berth.v1.Progress on the same socket.
    pub fn store(&self) -> Arc<B> {
        Arc::clone(&self.store)
    }

    /// Runs a blocking store call on the blocking pool, so a slow disk or a long redb
    /// transaction never stalls the async workers serving other RPCs.
    async fn blocking<T, F>(&self, what: &'static str, call: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&B) -> berth_images::error::Result<T> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        // The blocking pool does not inherit the span; carry it so store logs keep the
        // request id.
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| call(&store))).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(image_error_status(&err)),
            Err(join_err) => Err(task_failed_status(what, join_err)),
        }
    }
}

/// The image reference a request names, or InvalidArgument saying what is missing.
fn requested_image<'a>(rpc: &str, spec: Option<&'a ImageSpec>) -> Result<&'a str, Status> {
    match spec.map(|spec| spec.image.trim()) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(Status::invalid_argument(format!(
            "{rpc}: the request names no image: set image.image to a reference \
             (docker.io/library/busybox:latest), a digest reference or an image id"
        ))),
    }
}

#[tonic::async_trait]
impl<B: ImageBackend> ImageService for ImageServer<B> {
    async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        image_list::list_images(self, request.into_inner()).await.map(Response::new)
    }

    async fn image_status(&self, request: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
        image_status::image_status(self, request.into_inner()).await.map(Response::new)
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        image_pull::pull_image(self, request.into_inner()).await.map(Response::new)
    }

    async fn remove_image(&self, request: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        image_remove::remove_image(self, request.into_inner()).await.map(Response::new)
    }

    async fn image_fs_info(&self, request: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        image_fs_info::image_fs_info(self, request.into_inner()).await.map(Response::new)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory image store for handler tests.

    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use berth_images::error::Result;
    use berth_images::{Credentials, Error, FsUsage, Image, ImageConfig};

    use super::ImageBackend;

    pub struct FakeStore {
        pub images: Mutex<Vec<Image>>,
        pub pulls: Mutex<Vec<(String, Option<Credentials>)>>,
        pub root: PathBuf,
    }

    impl FakeStore {
        pub fn with(images: Vec<Image>) -> Self {
            Self { images: Mutex::new(images), pulls: Mutex::new(Vec::new()), root: PathBuf::from("/fake/root") }
        }
    }

    pub fn image(id_hex: &str, tag: &str, user: Option<&str>) -> Image {
        Image {
            id: format!("sha256:{id_hex}"),
            repo_tags: vec![tag.to_string()],
            repo_digests: vec![format!("{}@sha256:{}", tag.split(':').next().unwrap_or(tag), "d".repeat(64))],
            manifest_digest: format!("sha256:{}", "d".repeat(64)),
            size: 1234,
            chain_ids: vec![format!("sha256:{}", "c".repeat(64))],
            config: ImageConfig { user: user.map(str::to_string), architecture: "amd64".into(), os: "linux".into(), ..Default::default() },
            config_json: r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]}}"#.into(),
            pulled_at_ns: 1,
            pinned: false,
        }
    }

    fn check_reference(reference: &str) -> Result<()> {
        if reference.chars().any(|c| c.is_ascii_uppercase() || c.is_whitespace()) {
            return Err(Error::InvalidReference { reference: reference.into(), reason: "uppercase or space".into() });
        }
        Ok(())
    }

    impl ImageBackend for FakeStore {
        async fn pull(&self, reference: &str, credentials: Option<Credentials>) -> Result<Image> {
            check_reference(reference)?;
            self.pulls.lock().expect("lock").push((reference.to_string(), credentials));
            self.resolve(reference)?.ok_or_else(|| Error::NotInRegistry { reference: reference.into(), registry: "fake".into() })
        }
        fn list(&self) -> Result<Vec<Image>> {
            Ok(self.images.lock().expect("lock").clone())
        }
        fn resolve(&self, reference: &str) -> Result<Option<Image>> {
            check_reference(reference)?;
            Ok(self.images.lock().expect("lock").iter().find(|image| image.id == reference || image.repo_tags.iter().any(|t| t == reference)).cloned())
        }
        fn remove(&self, reference: &str) -> Result<bool> {
            check_reference(reference)?;
            let mut images = self.images.lock().expect("lock");
            let before = images.len();
            images.retain(|image| image.id != reference && !image.repo_tags.iter().any(|t| t == reference));
            Ok(images.len() != before)
        }
        fn fs_usage(&self) -> Result<FsUsage> {
            Ok(FsUsage { used_bytes: 4096, inodes_used: 7, timestamp_ns: 42 })
        }
        fn root(&self) -> &Path {
            &self.root
        }
    }
}
