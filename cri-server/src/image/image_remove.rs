//! RemoveImage: by id, tag or digest reference; idempotent.

use berth_images::ErrorKind;
use k8s_cri::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use super::{requested_image, ImageBackend, ImageServer};

pub(super) async fn remove_image<B: ImageBackend>(
    images: &ImageServer<B>,
    request: RemoveImageRequest,
) -> Result<RemoveImageResponse, Status> {
    let reference = requested_image("RemoveImage", request.image.as_ref())?.to_string();
    let target = reference.clone();
    let removed = images
        .blocking("removing an image", move |store| match store.remove(&target) {
            // kubelet's image GC retries removals; an image already gone is success.
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            other => other,
        })
        .await?;
    if removed {
        tracing::info!(%reference, "removed image");
    } else {
        tracing::debug!(%reference, "image to remove was not present");
    }
    Ok(RemoveImageResponse {})
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::image::fake::{image, FakeStore};
    use k8s_cri::v1::ImageSpec;
    use tonic::Code;

    fn remove_request(reference: &str) -> RemoveImageRequest {
        RemoveImageRequest { image: Some(ImageSpec { image: reference.into(), ..Default::default() }) }
    }

    #[tokio::test]
    async fn removes_then_stays_ok() {
        let store = Arc::new(FakeStore::with(vec![image(&"a".repeat(64), "r/a:1", None)]));
        let server = ImageServer::new(Arc::clone(&store));
        remove_image(&server, remove_request("r/a:1")).await.expect("remove");
        assert!(store.images.lock().expect("lock").is_empty());
        remove_image(&server, remove_request("r/a:1")).await.expect("second remove is OK");
    }

    #[tokio::test]
    async fn malformed_reference_is_invalid_argument() {
        let server = ImageServer::new(Arc::new(FakeStore::with(vec![])));
        let status = remove_image(&server, remove_request("Bad Ref")).await.expect_err("malformed");
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = remove_image(&server, RemoveImageRequest::default()).await.expect_err("empty");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
