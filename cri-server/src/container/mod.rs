//! Containers below the CRI handlers: the pieces `runtime/container_*.rs` put together.
//!
//! - [`shim`]: `berth-shim create` and the blocking control client on the blocking pool.
//! - [`rootfs`]: the overlay rootfs (image lease + mount) and the container dir.
//! - [`exit`]: exit records to CRI reasons (Completed, Error, OOMKilled, StartError, Unknown).
//! - [`signal`]: the image's StopSignal.
//! - [`name`]: the reservation name of a container.
//! - [`undo`]: the undo stack that makes a failed CreateContainer leave nothing.

pub mod exit;
pub mod name;
pub mod rootfs;
pub mod shim;
pub mod signal;
pub mod undo;

pub use shim::{spawn_shim, ShimCommand, SpawnShimError};
