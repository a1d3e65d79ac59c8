//! Status: the runtime and network conditions kubelet gates node readiness on.

use std::collections::HashMap;

use k8s_cri::v1::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse,
};

pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";
/// The reason kubelet and containerd use when no pod network is configured.
pub const NETWORK_NOT_READY_REASON: &str = "NetworkPluginNotReady";

/// `config_json` is berthd's effective configuration, shown in verbose mode.
pub(super) fn status(request: StatusRequest, config_json: &str) -> StatusResponse {
    let conditions = vec![
        RuntimeCondition { r#type: RUNTIME_READY.to_string(), status: true, reason: String::new(), message: String::new() },
        // Truthful: berth cannot set up pod networking yet, so the node must not look
        // ready for pods.
        RuntimeCondition {
            r#type: NETWORK_READY.to_string(),
            status: false,
            reason: NETWORK_NOT_READY_REASON.to_string(),
            message: "berth does not set up pod networking yet: CNI support lands with the network milestone".to_string(),
        },
    ];
    let info = if request.verbose {
        HashMap::from([("config".to_string(), config_json.to_string())])
    } else {
        HashMap::new()
    };
    StatusResponse {
        status: Some(RuntimeStatus { conditions }),
        info,
        // The default handler (""), with the features berth does not offer yet said so.
        runtime_handlers: vec![RuntimeHandler {
            name: String::new(),
            features: Some(RuntimeHandlerFeatures { recursive_read_only_mounts: false, user_namespaces: false }),
        }],
        features: Some(RuntimeFeatures { supplemental_groups_policy: false }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_ready_network_not_ready() {
        let response = status(StatusRequest { verbose: false }, "{}");
        let conditions = response.status.expect("status").conditions;
        let runtime = conditions.iter().find(|c| c.r#type == RUNTIME_READY).expect("runtime condition");
        assert!(runtime.status);
        let network = conditions.iter().find(|c| c.r#type == NETWORK_READY).expect("network condition");
        assert!(!network.status);
        assert_eq!(network.reason, "NetworkPluginNotReady");
        assert!(network.message.contains("networking"));
        assert!(response.info.is_empty());
    }

    #[test]
    fn verbose_shows_the_config() {
        let response = status(StatusRequest { verbose: true }, r#"{"root":"/r"}"#);
        assert_eq!(response.info["config"], r#"{"root":"/r"}"#);
    }
}
