//! berth-cni: the CNI spec client berthd uses for pod networks, and berth's own plugins.
//!
//! - [`types`]: the CNI spec's types (commands, environment, results, errors, configs).
//! - [`conf`]: finding the network config and plugin binaries.
//! - [`exec`]: running a plugin executable with a deadline.
//! - [`cache`]: ADD results on disk, for DEL after a restart.
//! - [`client`]: ADD/CHECK/DEL chains over a conflist ([`CniClient`]).
//! - [`plugins`]: built-in bridge, host-local, loopback and portmap, run in-process or as
//!   the `berth-cni` multi-call plugin binary.

pub mod cache;
pub mod client;
pub mod conf;
pub mod exec;
pub mod plugins;
pub mod types;

pub use client::{Attachment, ClientConfig, CniClient, CniError};
