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

/// `config_json` is berthd's effective configuration, shown in verbose mode;
/// `network_ready` is the pod network's readiness (the reason when it is not ready).
pub(super) fn status(request: StatusRequest, config_json: &str, network_ready: Result<(), String>) -> StatusResponse {
    let network = match network_ready {
        Ok(()) => RuntimeCondition { r#type: NETWORK_READY.to_string(), status: true, reason: String::new(), message: String::new() },
        // Truthful: a node whose pods cannot get a network must not look ready for pods.
        Err(message) => RuntimeCondition {
            r#type: NETWORK_READY.to_string(),
            status: false,
            reason: NETWORK_NOT_READY_REASON.to_string(),
            message,
        },
    };
    let conditions = vec![
        RuntimeCondition { r#type: RUNTIME_READY.to_string(), status: true, reason: String::new(), message: String::new() },
        network,
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
    fn network_ready_follows_the_network() {
        let response = status(StatusRequest { verbose: false }, "{}", Ok(()));
        let conditions = response.status.expect("status").conditions;
        assert!(conditions.iter().all(|c| c.status), "{conditions:?}");
    }

    #[test]
    fn runtime_ready_network_not_ready() {
        let response = status(StatusRequest { verbose: false }, "{}", Err("no pod networking here".into()));
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
        let response = status(StatusRequest { verbose: true }, r#"{"root":"/r"}"#, Ok(()));
        assert_eq!(response.info["config"], r#"{"root":"/r"}"#);
    }
}
