//! berth-shim: the per-container monitor and the low-level OCI runtime berth uses instead of runc.
//!
//! - [`cgroups`]: one manager over cgroup v2 and v1 (also used by berthd for pod cgroups),
//!   including the cgroup v2 eBPF device filter.
//! - [`container`]: builds a container from an OCI bundle (namespaces, rootfs, pivot_root,
//!   /dev, /proc, masked paths, capabilities, seccomp, user, rlimits) through a syscall seam.
//! - [`protocol`]: the control-socket messages berthd and the shim exchange.
//! - [`client`]: the blocking client berthd uses to talk to a shim.
//! - [`monitor`]: the shim process itself: subreaper, CRI log writer, exit file, control loop.

pub mod cgroups;
pub mod client;
pub mod container;
pub mod monitor;
pub mod protocol;
