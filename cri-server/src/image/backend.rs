//! The seam between the CRI handlers and the image store.
//!
//! The handlers need seven operations of [`berth_images::ImageStore`]; naming them in a trait
//! lets the handler logic (CRI contracts such as "unknown image is not an error") be tested
//! against an in-memory store, without a registry or root.

use std::future::Future;
use std::path::Path;

use berth_images::error::Result;
use berth_images::{Credentials, FsUsage, Image, ImageStore, PullProgress};
use tokio::sync::mpsc::UnboundedSender;

pub trait ImageBackend: Send + Sync + 'static {
    /// Pulls and records `reference`; see [`ImageStore::pull`].
    fn pull(&self, reference: &str, credentials: Option<Credentials>) -> impl Future<Output = Result<Image>> + Send;
    /// As [`ImageBackend::pull`], sending per-layer updates to `progress` (berth.v1.Progress).
    /// A store that cannot report progress just pulls.
    fn pull_with_progress(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: UnboundedSender<PullProgress>,
    ) -> impl Future<Output = Result<Image>> + Send {
        drop(progress);
        self.pull(reference, credentials)
    }
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
    fn pull_with_progress(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: UnboundedSender<PullProgress>,
    ) -> impl Future<Output = Result<Image>> + Send {
        ImageStore::pull(self, reference, credentials, Some(progress))
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
