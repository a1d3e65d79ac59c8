//! RuntimeConfig: what kubelet must match, read once at kubelet start.

use k8s_cri::v1::{CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse};

/// berth manages cgroups through the cgroup filesystem directly (no systemd slices), so
/// kubelet must use the cgroupfs driver for the cgroup parents it hands us.
pub(super) fn runtime_config(_request: RuntimeConfigRequest) -> RuntimeConfigResponse {
    RuntimeConfigResponse { linux: Some(LinuxRuntimeConfiguration { cgroup_driver: CgroupDriver::Cgroupfs as i32 }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_driver() {
        let response = runtime_config(RuntimeConfigRequest {});
        assert_eq!(response.linux.expect("linux").cgroup_driver(), CgroupDriver::Cgroupfs);
    }
}
