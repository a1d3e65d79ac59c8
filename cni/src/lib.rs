//! berth-cni: the CNI spec client berthd uses for pod networks, and berth's own plugins.
//!
//! - [`types`]: the CNI spec's types (commands, environment, results, errors).
//! - [`plugins`]: built-in bridge, host-local, loopback and portmap, run in-process or as
//!   the `berth-cni` multi-call plugin binary.

pub mod plugins;
pub mod types;
