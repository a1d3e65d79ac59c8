//! The pod cgroup: the kubelet's `cgroup_parent`, or `<cgroup_root>/pod-<id>` when the pod
//! has none (crictl). berth creates it when missing and remembers that it did, because it
//! may remove only cgroups it created (kubelet owns its own `/kubepods/...` cgroups).

use crate::errors::RuntimeError;

/// The pod cgroup's path (cgroupfs driver).
pub fn pod_cgroup_path(cgroup_parent: &str, cgroup_root: &str, sandbox_id: &str) -> String {
    if !cgroup_parent.is_empty() {
        return cgroup_parent.to_string();
    }
    format!("{}/pod-{sandbox_id}", cgroup_root.trim_end_matches('/'))
}

/// Creates the pod cgroup if missing; true when berth created it. Blocking.
pub fn ensure_pod_cgroup(path: &str) -> Result<bool, RuntimeError> {
    berth_shim::cgroups::ensure_pod_cgroup(path).map_err(|e| match e {
        berth_shim::cgroups::CgroupError::InvalidPath { .. } => RuntimeError::InvalidArgument(format!("pod cgroup_parent {path:?}: {e}")),
        e => RuntimeError::internal_ctx(format!("creating the pod cgroup {path}"), e),
    })
}

/// Removes a pod cgroup berth created (killing anything left in it). Idempotent. Blocking.
pub fn remove_pod_cgroup(path: &str) -> Result<(), RuntimeError> {
    let manager = berth_shim::cgroups::manager(path).map_err(|e| RuntimeError::internal_ctx(format!("pod cgroup {path}"), e))?;
    manager.destroy().map_err(|e| RuntimeError::internal_ctx(format!("removing the pod cgroup {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_parent_wins_else_root_and_id() {
        assert_eq!(pod_cgroup_path("/kubepods/besteffort/podabc", "/berth", "x"), "/kubepods/besteffort/podabc");
        assert_eq!(pod_cgroup_path("", "/berth", "x"), "/berth/pod-x");
        assert_eq!(pod_cgroup_path("", "/berth/", "x"), "/berth/pod-x");
    }
}
