//! berth-cri: `berthd`, berth's CRI v1 server.
//!
//! - [`config`]: the config file and the flags that override it.
//! - [`server`]: startup (dirs, redb, image store, socket), serving, graceful shutdown.
//! - [`runtime`]: CRI RuntimeService (Version, Status, RuntimeConfig; the rest not yet).
//! - [`image`]: CRI ImageService, one file per RPC, over [`berth_images::ImageStore`].
//! - [`errors`]: image store and runtime errors to gRPC codes, in one place.
//! - [`store`]: pod and container records (`runtime.redb`) and CRI name reservations.
//! - [`sandbox`]: a pod's resources: pinned namespaces, files, cgroup, network seam.
//! - [`container`]: shims, rootfs, exits: what the container RPCs put together.
//! - [`progress`]: berth.v1.Progress, a pull whose per-layer progress berthctl can watch.
//! - [`request_span`]: a span per request with its request id and RPC name.

pub mod config;
pub mod container;
pub mod errors;
pub mod image;
pub mod progress;
pub mod request_span;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod store;
