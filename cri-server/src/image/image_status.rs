//! ImageStatus: one image's record, or nothing when it is not here.

use berth_images::ErrorKind;
use k8s_cri::v1::{ImageStatusRequest, ImageStatusResponse};
use tonic::Status;

use super::convert::{to_cri_image, verbose_info};
use super::{requested_image, ImageBackend, ImageServer};

pub(super) async fn image_status<B: ImageBackend>(
    images: &ImageServer<B>,
    request: ImageStatusRequest,
) -> Result<ImageStatusResponse, Status> {
    let reference = requested_image("ImageStatus", request.image.as_ref())?.to_string();
    let lookup = reference.clone();
    let found = images
        .blocking("resolving an image", move |store| match store.resolve(&lookup) {
            // The CRI contract: an image that is not present is an OK answer with no image
            // (kubelet asks before every pull), never NotFound.
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            other => other,
        })
        .await?;

    let Some(image) = found else {
        tracing::debug!(%reference, "image not present");
        return Ok(ImageStatusResponse::default());
    };
    let info = if request.verbose { verbose_info(&image) } else { Default::default() };
    Ok(ImageStatusResponse { image: Some(to_cri_image(&image, &reference)), info })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::image::fake::{image, FakeStore};
    use k8s_cri::v1::ImageSpec;
    use tonic::Code;

    fn status_request(reference: &str, verbose: bool) -> ImageStatusRequest {
        ImageStatusRequest { image: Some(ImageSpec { image: reference.into(), ..Default::default() }), verbose }
    }

    #[tokio::test]
    async fn unknown_image_is_ok_with_no_image() {
        let server = ImageServer::new(Arc::new(FakeStore::with(vec![])));
        let response = image_status(&server, status_request("r/missing:1", true)).await.expect("not an error");
        assert!(response.image.is_none());
        assert!(response.info.is_empty());
    }

    #[tokio::test]
    async fn known_image_with_and_without_verbose() {
        let server = ImageServer::new(Arc::new(FakeStore::with(vec![image(&"a".repeat(64), "r/a:1", Some("nobody"))])));
        let plain = image_status(&server, status_request("r/a:1", false)).await.expect("status");
        let found = plain.image.expect("image present");
        assert_eq!(found.username, "nobody");
        assert_eq!(found.spec.expect("spec").user_specified_image, "r/a:1");
        assert!(plain.info.is_empty());

        let verbose = image_status(&server, status_request("r/a:1", true)).await.expect("status");
        assert!(verbose.info["info"].contains("imageSpec"));
    }

    #[tokio::test]
    async fn malformed_or_missing_reference_is_invalid_argument() {
        let server = ImageServer::new(Arc::new(FakeStore::with(vec![])));
        let status = image_status(&server, status_request("Not A Ref", false)).await.expect_err("malformed");
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = image_status(&server, ImageStatusRequest::default()).await.expect_err("empty");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
