//! The seam between the CRI handlers and the image store.
//!
//! The handlers need six operations of [`berth_images::ImageStore`]; naming them in a trait
//! lets the handler logic (CRI contracts such as "unknown image is not an error") be tested
//! against an in-memory store, without a registry or root.

use std::future::Future;
use std::path::Path;

use berth_images::error::Result;
use berth_images::{Credentials, FsUsage, Image, ImageStore};

pub trait ImageBackend: Send + Sync + 'static {
    /// Pulls and records `reference`; see [`ImageStore::pull`].
    fn pull(&self, reference: &str, credentials: Option<Credentials>) -> impl Future<Output = Result<Image>> + Send;
    /// All images. May touch disk: called from `spawn_blocking`.
    fn list(&self) -> Result<Vec<Image>>;
    /// Image by id, tag or digest reference; `Ok(None)` when unknown. Called from `spawn_blocking`.
    fn resolve(&self, reference_or_id: &str) -> Result<Option<Image>>;
    /// Removes by id, tag or digest; `Ok(false)` when unknown. Called from `spawn_blocking`.
    fn remove(&self, reference_or_id: &str) -> Result<bool>;
    /// Bytes and inodes of the store. Walks the disk: called from `spawn_blocking`.
    fn fs_usage(&self) -> Result<FsUsage>;
    /// The path ImageFsInfo reports as the image filesystem's mountpoint.
    fn root(&self) -> &Path;
}

impl ImageBackend for ImageStore {
    fn pull(&self, reference: &str, credentials: Option<Credentials>) -> impl Future<Output = Result<Image>> + Send {
        ImageStore::pull(self, reference, credentials, None)
    }
    fn list(&self) -> Result<Vec<Image>> {
        ImageStore::list(self)
    }
    fn resolve(&self, reference_or_id: &str) -> Result<Option<Image>> {
        ImageStore::resolve(self, reference_or_id)
    }
    fn remove(&self, reference_or_id: &str) -> Result<bool> {
        ImageStore::remove(self, reference_or_id)
    }
    fn fs_usage(&self) -> Result<FsUsage> {
        ImageStore::fs_usage(self)
    }
    fn root(&self) -> &Path {
        ImageStore::root(self)
    }
}
