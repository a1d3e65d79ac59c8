//! berth's image store.
//!
//! The pieces, from the wire to the disk:
//!
//! - [`reference`]: parse and normalise image references (`busybox` ->
//!   `docker.io/library/busybox:latest`), as Docker and containerd do.
//! - [`registry`]: the OCI distribution client (on `oci-client`) with auth, plain-HTTP
//!   fallback for loopback registries, skip-verify and ordered mirrors from [`RegistryConfig`].
//! - [`content`]: the content-addressed blob store. Blobs are written under a temp name
//!   and renamed into `content/blobs/sha256/<hex>` only after their digest verified.
//! - [`unpack`]: streaming decompression (gzip, zstd, none) and tar extraction that can
//!   never write outside its snapshot directory; OCI whiteouts become overlayfs whiteouts.
//! - [`snapshot`]: one directory per layer keyed by chain id, and overlay rootfs assembly.
//! - [`metadata`]: image records and leases in the embedded redb database.
//! - [`store`]: [`ImageStore`], the service the CRI ImageService sits on: pull, list,
//!   status, remove, fs usage, leases and garbage collection.

pub mod content;
pub mod digest;
pub mod error;
pub mod metadata;
pub mod model;
pub mod reference;
pub mod registry;
pub mod safe_tar;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use error::{Error, ErrorKind};
pub use model::{Credentials, FsUsage, Image, ImageConfig, ImagesConfig, PullProgress, RegistryConfig, RegistryHost, RootfsLayout};
pub use store::ImageStore;
