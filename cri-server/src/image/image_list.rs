//! ListImages: every image, or the one a filter names.

use k8s_cri::v1::{ListImagesRequest, ListImagesResponse};
use tonic::Status;

use super::convert::to_cri_image;
use super::{ImageBackend, ImageServer};

pub(super) async fn list_images<B: ImageBackend>(
    images: &ImageServer<B>,
    request: ListImagesRequest,
) -> Result<ListImagesResponse, Status> {
    let filter = request
        .filter
        .and_then(|filter| filter.image)
        .map(|spec| spec.image.trim().to_string())
        .filter(|image| !image.is_empty());

    let found = match filter {
        // A filter is a reference or id; it matches the one image it resolves to.
        Some(reference) => images.blocking("resolving an image", move |store| store.resolve(&reference)).await?.into_iter().collect(),
        None => images.blocking("listing images", |store| store.list()).await?,
    };
    Ok(ListImagesResponse { images: found.iter().map(|image| to_cri_image(image, "")).collect() })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::image::fake::{image, FakeStore};
    use k8s_cri::v1::{ImageFilter, ImageSpec};

    fn filtered(reference: &str) -> ListImagesRequest {
        ListImagesRequest { filter: Some(ImageFilter { image: Some(ImageSpec { image: reference.into(), ..Default::default() }) }) }
    }

    #[tokio::test]
    async fn lists_all_or_the_filtered_one() {
        let store = FakeStore::with(vec![image(&"a".repeat(64), "r/a:1", None), image(&"b".repeat(64), "r/b:1", None)]);
        let server = ImageServer::new(Arc::new(store));

        let all = list_images(&server, ListImagesRequest::default()).await.expect("list");
        assert_eq!(all.images.len(), 2);
        let empty_filter = list_images(&server, filtered("")).await.expect("list");
        assert_eq!(empty_filter.images.len(), 2, "an empty filter filters nothing");

        let one = list_images(&server, filtered("r/b:1")).await.expect("list");
        assert_eq!(one.images.len(), 1);
        assert_eq!(one.images[0].id, format!("sha256:{}", "b".repeat(64)));

        let none = list_images(&server, filtered("r/c:1")).await.expect("unknown filter is not an error");
        assert!(none.images.is_empty());
    }
}
