//! The annotations containerd puts on a container's spec, so tools that read bundles
//! (runc hooks, NRI plugins, debugging) find the same keys under berth.

use std::collections::HashMap;

use super::ContainerSpecInput;

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CONTAINER_TYPE_CONTAINER: &str = "container";
pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

pub fn container_annotations(input: &ContainerSpecInput) -> HashMap<String, String> {
    let mut out = HashMap::new();
    out.insert(CONTAINER_TYPE.to_string(), CONTAINER_TYPE_CONTAINER.to_string());
    out.insert(SANDBOX_ID.to_string(), input.sandbox_id.clone());
    if let Some(meta) = &input.sandbox_config.metadata {
        out.insert(SANDBOX_NAME.to_string(), meta.name.clone());
        out.insert(SANDBOX_NAMESPACE.to_string(), meta.namespace.clone());
        out.insert(SANDBOX_UID.to_string(), meta.uid.clone());
    }
    let name = input.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    out.insert(CONTAINER_NAME.to_string(), name);
    out.insert(IMAGE_NAME.to_string(), input.image_name.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerConfig, ContainerMetadata, PodSandboxConfig, PodSandboxMetadata};

    #[test]
    fn containerd_keys() {
        let input = ContainerSpecInput {
            sandbox_id: "sb1".into(),
            image_name: "docker.io/library/busybox:latest".into(),
            config: ContainerConfig { metadata: Some(ContainerMetadata { name: "web".into(), attempt: 0 }), ..Default::default() },
            sandbox_config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata { name: "pod".into(), uid: "u1".into(), namespace: "ns".into(), attempt: 0 }),
                ..Default::default()
            },
            ..Default::default()
        };
        let a = container_annotations(&input);
        assert_eq!(a[CONTAINER_TYPE], "container");
        assert_eq!(a[SANDBOX_ID], "sb1");
        assert_eq!(a[CONTAINER_NAME], "web");
        assert_eq!(a[IMAGE_NAME], "docker.io/library/busybox:latest");
        assert_eq!((a[SANDBOX_NAME].as_str(), a[SANDBOX_NAMESPACE].as_str(), a[SANDBOX_UID].as_str()), ("pod", "ns", "u1"));
    }
}
