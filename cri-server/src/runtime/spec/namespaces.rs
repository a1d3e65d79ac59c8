//! The container's namespaces: joined from the pod, new, or the host's (absent).
//!
//! | namespace | rule                                                                    |
//! |-----------|-------------------------------------------------------------------------|
//! | mount     | always new                                                              |
//! | network   | host network: the host's; else the pod's path (new if none given)      |
//! | ipc       | host IPC: the host's; else the pod's path (new if none given)          |
//! | uts       | host network: the host's; else the pod's path (new if none given)      |
//! | pid       | CONTAINER: new; POD/TARGET: the given path (required); NODE: the host's |
//! | cgroup    | new when `options.cgroup_namespace` and not privileged                  |
//!
//! The pod's modes come from the pod config (the pod owns its network and IPC); pid mode
//! comes from the container's namespace options (kubelet sets it per container), falling
//! back to the pod's.

use std::path::PathBuf;

use k8s_cri::v1::{LinuxContainerSecurityContext, NamespaceMode, PodSandboxConfig};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{ContainerSpecInput, PodNamespaceModes, SpecError};

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ).set_path(path);
    ns
}

/// The container's pid mode: its own namespace options, else the pod's.
pub fn pid_mode(sc: &LinuxContainerSecurityContext, sandbox: &PodSandboxConfig) -> NamespaceMode {
    let from_container = sc.namespace_options.as_ref().map(|o| o.pid);
    let from_pod = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|o| o.pid);
    let raw = from_container.or(from_pod).unwrap_or(NamespaceMode::Container as i32);
    // Unknown values: a private namespace is the safe reading.
    NamespaceMode::try_from(raw).unwrap_or(NamespaceMode::Container)
}

pub fn container_namespaces(
    input: &ContainerSpecInput,
    sc: &LinuxContainerSecurityContext,
    pod_modes: PodNamespaceModes,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    reject_user_namespaces(sc, &input.sandbox_config)?;
    let ns = &input.namespaces;
    let mut out = Vec::new();
    match pid_mode(sc, &input.sandbox_config) {
        NamespaceMode::Node => {}
        NamespaceMode::Container => out.push(namespace(LinuxNamespaceType::Pid, None)),
        mode @ (NamespaceMode::Pod | NamespaceMode::Target) => match &ns.pid {
            Some(path) => out.push(namespace(LinuxNamespaceType::Pid, Some(path.clone()))),
            None => {
                return Err(SpecError::Internal(format!(
                    "pid namespace mode {} needs the namespace to join, and the pod has none",
                    mode.as_str_name()
                )))
            }
        },
    }
    if !pod_modes.host_network {
        out.push(namespace(LinuxNamespaceType::Network, ns.net.clone()));
        out.push(namespace(LinuxNamespaceType::Uts, ns.uts.clone()));
    }
    if !pod_modes.host_ipc {
        out.push(namespace(LinuxNamespaceType::Ipc, ns.ipc.clone()));
    }
    out.push(namespace(LinuxNamespaceType::Mount, None));
    if input.options.cgroup_namespace && !sc.privileged {
        out.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

/// User namespaces (`hostUsers: false`) are not supported yet: refuse them rather than run
/// the pod with host users while the kubelet believes they are mapped.
fn reject_user_namespaces(sc: &LinuxContainerSecurityContext, sandbox: &PodSandboxConfig) -> Result<(), SpecError> {
    let pod_opts = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    for opts in [sc.namespace_options.as_ref(), pod_opts].into_iter().flatten() {
        if let Some(userns) = &opts.userns_options {
            if userns.mode != NamespaceMode::Node as i32 {
                return Err(SpecError::invalid(
                    "user namespaces (hostUsers: false) are not supported by berth yet; run the pod with hostUsers: true",
                ));
            }
        }
    }
    Ok(())
}

/// The hostname the runtime sets: the pod's, only in the pod's own UTS namespace (in the
/// host's it would rename the node).
pub fn container_hostname(sandbox: &PodSandboxConfig, pod_modes: PodNamespaceModes) -> Option<String> {
    (!pod_modes.host_network && !sandbox.hostname.is_empty()).then(|| sandbox.hostname.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption};

    fn sandbox(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            hostname: "podhost".into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        pid: pid as i32,
                        ipc: ipc as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_sc(pid: NamespaceMode) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption { pid: pid as i32, ..Default::default() }),
            ..Default::default()
        }
    }

    fn render(list: &[LinuxNamespace]) -> Vec<String> {
        list.iter()
            .map(|n| match n.path() {
                Some(p) => format!("{}={}", n.typ(), p.display()),
                None => n.typ().to_string(),
            })
            .collect()
    }

    fn input(sandbox_config: PodSandboxConfig, pid_path: bool) -> ContainerSpecInput {
        ContainerSpecInput {
            sandbox_config,
            namespaces: super::super::SandboxNamespaces {
                net: Some("/run/berth/pods/p/ns/net".into()),
                ipc: Some("/run/berth/pods/p/ns/ipc".into()),
                uts: Some("/run/berth/pods/p/ns/uts".into()),
                pid: pid_path.then(|| "/proc/42/ns/pid".into()),
            },
            ..Default::default()
        }
    }

    #[test]
    fn namespace_table() {
        use NamespaceMode::*;
        let cases: Vec<(NamespaceMode, NamespaceMode, NamespaceMode, &[&str])> = vec![
            // pod network, container pid, pod ipc -> namespaces
            (Pod, Container, Pod, &["pid", "net=/run/berth/pods/p/ns/net", "uts=/run/berth/pods/p/ns/uts", "ipc=/run/berth/pods/p/ns/ipc", "mnt"]),
            (Node, Container, Pod, &["pid", "ipc=/run/berth/pods/p/ns/ipc", "mnt"]),
            (Pod, Pod, Node, &["pid=/proc/42/ns/pid", "net=/run/berth/pods/p/ns/net", "uts=/run/berth/pods/p/ns/uts", "mnt"]),
            (Node, Node, Node, &["mnt"]),
            (Pod, Target, Pod, &["pid=/proc/42/ns/pid", "net=/run/berth/pods/p/ns/net", "uts=/run/berth/pods/p/ns/uts", "ipc=/run/berth/pods/p/ns/ipc", "mnt"]),
        ];
        for (net, pid, ipc, want) in cases {
            let sb = sandbox(net, pid, ipc);
            let modes = PodNamespaceModes::of(&sb);
            let got = container_namespaces(&input(sb, true), &container_sc(pid), modes).unwrap();
            assert_eq!(render(&got), want.to_vec(), "{net:?} {pid:?} {ipc:?}");
        }
    }

    #[test]
    fn pod_pid_without_a_holder_is_an_error() {
        let sb = sandbox(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        let modes = PodNamespaceModes::of(&sb);
        let err = container_namespaces(&input(sb, false), &container_sc(NamespaceMode::Pod), modes).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }

    #[test]
    fn user_namespaces_are_refused() {
        use k8s_cri::v1::UserNamespace;
        let mut sc = container_sc(NamespaceMode::Container);
        sc.namespace_options.as_mut().unwrap().userns_options = Some(UserNamespace { mode: NamespaceMode::Node as i32, ..Default::default() });
        let sb = sandbox(NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
        let modes = PodNamespaceModes::of(&sb);
        assert!(container_namespaces(&input(sb.clone(), false), &sc, modes).is_ok());
        sc.namespace_options.as_mut().unwrap().userns_options = Some(UserNamespace { mode: NamespaceMode::Pod as i32, ..Default::default() });
        let err = container_namespaces(&input(sb, false), &sc, modes).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn pid_mode_falls_back_to_the_pod() {
        let sb = sandbox(NamespaceMode::Pod, NamespaceMode::Node, NamespaceMode::Pod);
        assert_eq!(pid_mode(&LinuxContainerSecurityContext::default(), &sb), NamespaceMode::Node);
        assert_eq!(pid_mode(&container_sc(NamespaceMode::Pod), &sb), NamespaceMode::Pod);
        assert_eq!(pid_mode(&LinuxContainerSecurityContext::default(), &PodSandboxConfig::default()), NamespaceMode::Container);
    }

    #[test]
    fn missing_paths_give_new_namespaces_and_cgroupns_is_optional() {
        let sb = sandbox(NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
        let modes = PodNamespaceModes::of(&sb);
        let mut inp = ContainerSpecInput { sandbox_config: sb, ..Default::default() };
        inp.options.cgroup_namespace = true;
        let got = container_namespaces(&inp, &LinuxContainerSecurityContext::default(), modes).unwrap();
        assert_eq!(render(&got), vec!["pid", "net", "uts", "ipc", "mnt", "cgroup"]);
        let privileged = LinuxContainerSecurityContext { privileged: true, ..Default::default() };
        let got = container_namespaces(&inp, &privileged, modes).unwrap();
        assert!(!render(&got).contains(&"cgroup".to_string()));
    }

    #[test]
    fn hostname_only_in_the_pods_uts() {
        let sb = sandbox(NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
        assert_eq!(container_hostname(&sb, PodNamespaceModes::of(&sb)).as_deref(), Some("podhost"));
        let sb = sandbox(NamespaceMode::Node, NamespaceMode::Container, NamespaceMode::Pod);
        assert_eq!(container_hostname(&sb, PodNamespaceModes::of(&sb)), None);
    }
}
