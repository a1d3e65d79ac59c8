//! Containers below the CRI handlers: the pieces `runtime/container_*.rs` put together.
//!
//! - [`shim`]: `berth-shim create` and the blocking control client on the blocking pool.
//! - [`rootfs`]: the overlay rootfs (image lease + mount) and the container dir.
//! - [`exit`]: exit records to CRI reasons (Completed, Error, OOMKilled, StartError, Unknown).
//! - [`signal`]: the image's StopSignal.
//! - [`name`]: the reservation name of a container.
//! - [`lifecycle`]: stop, remove, exit observation and watching (SANDBOX calls
//!   [`stop_container`] and [`remove_container`]).
//! - [`service`]: per-container operation locks and watched set.
//! - [`watch`]: the shim's Wait on an async socket.
//! - [`step_timer`]: debug-level per-step timings of an RPC.
//! - [`undo`]: the undo stack that makes a failed CreateContainer leave nothing.

pub mod exit;
pub mod lifecycle;
pub mod name;
pub mod rootfs;
pub mod service;
pub mod shim;
pub mod signal;
pub mod step_timer;
pub mod undo;
pub mod watch;

pub use lifecycle::{remove_container, remove_container_with, stop_container, stop_container_with};
pub use service::ContainerService;
pub use shim::{spawn_shim, ShimCommand, SpawnShimError};
