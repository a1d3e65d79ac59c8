//! [`ImageStore`]: the service behind CRI's ImageService.

use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::model::{Credentials, FsUsage, Image, ImagesConfig, PullProgress, RootfsLayout};

/// The image store: content, snapshots and image records under one root directory
/// (`<root>/content`, `<root>/snapshots`) plus tables in the shared redb database.
pub struct ImageStore {
    _private: (),
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`, with records in `db`.
    /// Removes leftovers of pulls that were interrupted by a crash (temp blobs, half
    /// unpacked snapshots).
    pub fn open(_root: &Path, _db: Arc<redb::Database>, _config: ImagesConfig) -> Result<Self> {
        unimplemented!("ImageStore::open")
    }

    /// Pulls `reference` (normalised by [`crate::reference`]) and records the image.
    /// Concurrent pulls of the same image or layer share the work. On failure nothing
    /// partial remains. `progress` (if any) receives per-layer updates.
    pub async fn pull(
        &self,
        _reference: &str,
        _credentials: Option<Credentials>,
        _progress: Option<tokio::sync::mpsc::UnboundedSender<PullProgress>>,
    ) -> Result<Image> {
        unimplemented!("ImageStore::pull")
    }

    /// All images.
    pub fn list(&self) -> Result<Vec<Image>> {
        unimplemented!("ImageStore::list")
    }

    /// Resolves an image by id (`sha256:<hex>`, bare hex, or a unique id prefix), tag
    /// reference (normalised) or digest reference. `Ok(None)` when there is no such image.
    pub fn resolve(&self, _reference_or_id: &str) -> Result<Option<Image>> {
        unimplemented!("ImageStore::resolve")
    }

    /// Removes an image. By tag: untags; the image goes only with its last tag, as
    /// containerd does. By id or digest: the whole image. Unknown image: `Ok(false)`.
    /// Content still leased by a container stays until its lease is released.
    pub fn remove(&self, _reference_or_id: &str) -> Result<bool> {
        unimplemented!("ImageStore::remove")
    }

    /// Bytes and inodes used under the store's root (content + snapshots).
    pub fn fs_usage(&self) -> Result<FsUsage> {
        unimplemented!("ImageStore::fs_usage")
    }

    /// The filesystem path ImageFsInfo reports as the mountpoint.
    pub fn root(&self) -> &Path {
        unimplemented!("ImageStore::root")
    }

    /// Takes a lease on the image's snapshots for `holder` (a container id), and returns
    /// the overlay layout for that container's rootfs with fresh upper and work dirs
    /// under `container_dir`. While the lease exists, GC keeps the snapshots.
    pub fn prepare_rootfs(&self, _image_id: &str, _holder: &str, _container_dir: &Path) -> Result<RootfsLayout> {
        unimplemented!("ImageStore::prepare_rootfs")
    }

    /// Releases `holder`'s lease; unreferenced content goes at the next GC.
    pub fn release(&self, _holder: &str) -> Result<()> {
        unimplemented!("ImageStore::release")
    }

    /// Deletes blobs and snapshots referenced by no image and no lease.
    pub fn gc(&self) -> Result<()> {
        unimplemented!("ImageStore::gc")
    }
}
