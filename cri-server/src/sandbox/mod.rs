//! A pod sandbox's resources, one service per file: the pieces RunPodSandbox assembles and
//! Stop/RemovePodSandbox take apart (the RPCs themselves are in `runtime/sandbox_*.rs`).
//!
//! - [`namespaces`]: pinned net/ipc/uts namespaces (nsfs bind mounts under
//!   `<state>/pods/<id>/ns/`), the pod hostname and namespaced sysctls set inside them.
//! - [`files`]: the pod's hostname, hosts and resolv.conf under `<root>/pods/<id>/`.
//! - [`cgroup`]: the pod cgroup under the kubelet's `cgroup_parent`.
//! - [`network`]: the seam for pod networking; [`cni_network`]: the CNI pod network behind it.
//! - [`pid_holder`]: the shim whose built-in init is PID 1 of a pod's shared PID namespace.
//! - [`filter`]: ListPodSandbox filters.

pub mod cgroup;
pub mod cni_network;
pub mod files;
pub mod filter;
pub mod namespaces;
pub mod network;
pub mod pid_holder;
