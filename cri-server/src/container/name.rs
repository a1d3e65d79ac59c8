//! The unique name a container is reserved under, as kubelet's dockershim and containerd
//! build it: `<container>_<pod>_<namespace>_<pod uid>_<attempt>`. Two CreateContainer
//! calls for the same container of the same pod and attempt collide on it.

use k8s_cri::v1::{ContainerMetadata, PodSandboxMetadata};

/// Why a container's metadata cannot name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("container config has no metadata")]
    NoMetadata,
    #[error("container metadata has an empty name")]
    EmptyName,
    #[error("pod sandbox config has no metadata")]
    NoPodMetadata,
}

/// The reservation name of a container.
pub fn container_name(container: Option<&ContainerMetadata>, pod: Option<&PodSandboxMetadata>) -> Result<String, NameError> {
    let container = container.ok_or(NameError::NoMetadata)?;
    if container.name.is_empty() {
        return Err(NameError::EmptyName);
    }
    let pod = pod.ok_or(NameError::NoPodMetadata)?;
    Ok(format!("{}_{}_{}_{}_{}", container.name, pod.name, pod.namespace, pod.uid, container.attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_the_parts() {
        let c = ContainerMetadata { name: "app".into(), attempt: 2 };
        let p = PodSandboxMetadata { name: "web".into(), uid: "u1".into(), namespace: "ns".into(), attempt: 0 };
        assert_eq!(container_name(Some(&c), Some(&p)).unwrap(), "app_web_ns_u1_2");
        assert_eq!(container_name(None, Some(&p)), Err(NameError::NoMetadata));
        let unnamed = ContainerMetadata { name: String::new(), attempt: 0 };
        assert_eq!(container_name(Some(&unnamed), Some(&p)), Err(NameError::EmptyName));
        assert_eq!(container_name(Some(&c), None), Err(NameError::NoPodMetadata));
    }
}
