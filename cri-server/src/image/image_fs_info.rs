//! ImageFsInfo: bytes and inodes the image store uses, for kubelet's image GC.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_cri::v1::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value};
use tonic::Status;

use super::{ImageBackend, ImageServer};

pub(super) async fn image_fs_info<B: ImageBackend>(
    images: &ImageServer<B>,
    _request: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, Status> {
    let usage = images.blocking("measuring the image store", |store| store.fs_usage()).await?;
    let timestamp = if usage.timestamp_ns != 0 { usage.timestamp_ns } else { now_unix_nanos() };
    let filesystem = FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier { mountpoint: images.store.root().display().to_string() }),
        used_bytes: Some(UInt64Value { value: usage.used_bytes }),
        inodes_used: Some(UInt64Value { value: usage.inodes_used }),
    };
    // Container writable layers live under the same root as the images (containers/<id>/),
    // so the container filesystem is the same filesystem, as kubelet's split-fs check
    // expects when image and container storage are not separated.
    Ok(ImageFsInfoResponse { image_filesystems: vec![filesystem.clone()], container_filesystems: vec![filesystem] })
}

fn now_unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::image::fake::FakeStore;

    #[tokio::test]
    async fn reports_the_store_usage_at_its_root() {
        let server = ImageServer::new(Arc::new(FakeStore::with(vec![])));
        let response = image_fs_info(&server, ImageFsInfoRequest {}).await.expect("fs info");
        assert_eq!(response.image_filesystems.len(), 1);
        assert_eq!(response.container_filesystems, response.image_filesystems);
        let fs = &response.image_filesystems[0];
        assert_eq!(fs.fs_id.as_ref().map(|id| id.mountpoint.as_str()), Some("/fake/root"));
        assert_eq!(fs.used_bytes, Some(UInt64Value { value: 4096 }));
        assert_eq!(fs.inodes_used, Some(UInt64Value { value: 7 }));
        assert_eq!(fs.timestamp, 42);
    }
}
