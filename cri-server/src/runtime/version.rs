//! Version: who answers on this socket.

use k8s_cri::v1::{VersionRequest, VersionResponse};

/// The version of the kubelet-runtime API this server speaks (CRI's own `version`, which
/// kubelet only checks is non-empty).
pub const KUBELET_API_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "berth";
pub const RUNTIME_API_VERSION: &str = "v1";

pub(super) fn version(_request: VersionRequest) -> VersionResponse {
    VersionResponse {
        version: KUBELET_API_VERSION.to_string(),
        runtime_name: RUNTIME_NAME.to_string(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime_api_version: RUNTIME_API_VERSION.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_berth_and_cri_v1() {
        let response = version(VersionRequest { version: "v1".into() });
        assert_eq!(response.version, "0.1.0");
        assert_eq!(response.runtime_name, "berth");
        assert_eq!(response.runtime_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(response.runtime_api_version, "v1");
    }
}
