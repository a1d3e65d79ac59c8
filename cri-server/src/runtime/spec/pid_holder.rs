//! The spec of a pod's shared PID namespace holder: a berth-shim started with
//! `--builtin-init`, whose PID 1 is the shim's own tiny init (it reaps and waits for
//! SIGTERM). The pod's containers join its PID namespace through `/proc/<pid>/ns/pid`.
//!
//! It needs nothing from a container: no rootfs change (`root.path` = "/", which
//! berth-shim accepts only in builtin-init mode), no mounts, no capabilities, no new
//! mount namespace. It joins the pod's net/ipc/uts so that `/proc/1` of the pod looks like
//! the pod's, and it lives in its own cgroup under the pod's.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1::PodSandboxConfig;
use oci_spec::runtime::{LinuxCapabilities, LinuxNamespace, LinuxNamespaceType, Linux, Process, Root, Spec, User};

use super::annotations;
use super::process::DEFAULT_PATH_ENV;
use super::{PodNamespaceModes, SandboxNamespaces, OCI_VERSION};

/// The argv recorded in the holder's spec. berth-shim's builtin init never execs it; it is
/// there because the OCI spec requires `process.args`.
pub const PID_HOLDER_ARGS: [&str; 1] = ["berth-pid-holder"];

/// The holder's cgroup below the pod's.
pub const PID_HOLDER_CGROUP_LEAF: &str = "pid-holder";

/// containerd gives its pause container this oom_score_adj: the last thing to be killed.
const PID_HOLDER_OOM_SCORE_ADJ: i32 = -998;

#[derive(Debug, Clone, Default)]
pub struct PidHolderSpecInput {
    pub sandbox_id: String,
    pub sandbox_config: PodSandboxConfig,
    /// The pod's pinned net/ipc/uts (pid is ignored: the holder creates it).
    pub namespaces: SandboxNamespaces,
    /// The pod's cgroup; the holder goes into `<pod cgroup>/pid-holder`.
    pub pod_cgroup_path: String,
    pub host_min_oom_score_adj: i32,
}

pub fn pid_holder_spec(input: &PidHolderSpecInput) -> Spec {
    let modes = PodNamespaceModes::of(&input.sandbox_config);
    let ns = |typ, path: &Option<PathBuf>| {
        let mut n = LinuxNamespace::default();
        n.set_typ(typ).set_path(path.clone());
        n
    };
    let mut namespaces = vec![ns(LinuxNamespaceType::Pid, &None)];
    if !modes.host_network {
        namespaces.push(ns(LinuxNamespaceType::Network, &input.namespaces.net));
        namespaces.push(ns(LinuxNamespaceType::Uts, &input.namespaces.uts));
    }
    if !modes.host_ipc {
        namespaces.push(ns(LinuxNamespaceType::Ipc, &input.namespaces.ipc));
    }

    let empty = LinuxCapabilities::default();
    let mut caps = empty.clone();
    caps.set_bounding(Some(Default::default()))
        .set_effective(Some(Default::default()))
        .set_permitted(Some(Default::default()))
        .set_inheritable(Some(Default::default()))
        .set_ambient(Some(Default::default()));

    let mut user = User::default();
    user.set_uid(0).set_gid(0).set_additional_gids(None);

    let mut process = Process::default();
    process
        .set_terminal(Some(false))
        .set_user(user)
        .set_args(Some(PID_HOLDER_ARGS.iter().map(|s| s.to_string()).collect()))
        .set_env(Some(vec![DEFAULT_PATH_ENV.to_string()]))
        .set_cwd(PathBuf::from("/"))
        .set_capabilities(Some(caps))
        .set_rlimits(None)
        .set_no_new_privileges(Some(true))
        .set_apparmor_profile(None)
        .set_selinux_label(None)
        .set_oom_score_adj(Some(PID_HOLDER_OOM_SCORE_ADJ.max(input.host_min_oom_score_adj.clamp(-1000, 1000))));

    let cgroup = format!("{}/{PID_HOLDER_CGROUP_LEAF}", input.pod_cgroup_path.trim_end_matches('/'));
    let mut linux = Linux::default();
    linux
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_sysctl(None)
        .set_resources(None)
        .set_cgroups_path(Some(PathBuf::from(cgroup)))
        .set_namespaces(Some(namespaces))
        .set_devices(None)
        .set_seccomp(None)
        .set_rootfs_propagation(None)
        .set_masked_paths(None)
        .set_readonly_paths(None)
        .set_mount_label(None);

    let mut root = Root::default();
    root.set_path(PathBuf::from("/")).set_readonly(Some(true));

    let mut annotations = HashMap::new();
    annotations.insert(annotations::CONTAINER_TYPE.to_string(), annotations::CONTAINER_TYPE_SANDBOX.to_string());
    annotations.insert(annotations::SANDBOX_ID.to_string(), input.sandbox_id.clone());
    if let Some(meta) = &input.sandbox_config.metadata {
        annotations.insert(annotations::SANDBOX_NAME.to_string(), meta.name.clone());
        annotations.insert(annotations::SANDBOX_NAMESPACE.to_string(), meta.namespace.clone());
        annotations.insert(annotations::SANDBOX_UID.to_string(), meta.uid.clone());
    }

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string())
        .set_root(Some(root))
        .set_mounts(Some(Vec::new()))
        .set_process(Some(process))
        .set_hostname(None)
        .set_domainname(None)
        .set_hooks(None)
        .set_annotations(Some(annotations))
        .set_linux(Some(linux));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption};

    fn input(host_network: bool) -> PidHolderSpecInput {
        let mode = if host_network { NamespaceMode::Node } else { NamespaceMode::Pod } as i32;
        PidHolderSpecInput {
            sandbox_id: "sb".into(),
            sandbox_config: PodSandboxConfig {
                linux: Some(LinuxPodSandboxConfig {
                    security_context: Some(LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption { network: mode, pid: NamespaceMode::Pod as i32, ..Default::default() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            namespaces: SandboxNamespaces {
                net: Some("/run/berth/pods/sb/ns/net".into()),
                ipc: Some("/run/berth/pods/sb/ns/ipc".into()),
                uts: Some("/run/berth/pods/sb/ns/uts".into()),
                pid: Some("/ignored".into()),
            },
            pod_cgroup_path: "/berth/pod-sb/".into(),
            host_min_oom_score_adj: 0,
        }
    }

    #[test]
    fn minimal_holder() {
        let spec = pid_holder_spec(&input(false));
        assert_eq!(spec.root().as_ref().unwrap().path(), &PathBuf::from("/"));
        assert!(spec.mounts().as_ref().unwrap().is_empty());
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(std::path::Path::new("/berth/pod-sb/pid-holder")));
        let ns: Vec<String> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| format!("{}={}", n.typ(), n.path().as_ref().map(|p| p.display().to_string()).unwrap_or_default()))
            .collect();
        assert_eq!(ns, vec!["pid=", "net=/run/berth/pods/sb/ns/net", "uts=/run/berth/pods/sb/ns/uts", "ipc=/run/berth/pods/sb/ns/ipc"]);
        let process = spec.process().as_ref().unwrap();
        assert!(process.capabilities().as_ref().unwrap().bounding().as_ref().unwrap().is_empty());
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.oom_score_adj(), Some(0), "clamped to the host minimum");
        assert_eq!(spec.annotations().as_ref().unwrap()[annotations::CONTAINER_TYPE], "sandbox");
        // Round-trips through config.json.
        let back: Spec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn host_network_keeps_host_net_and_uts() {
        let spec = pid_holder_spec(&input(true));
        let types: Vec<LinuxNamespaceType> = spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        assert_eq!(types, vec![LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc]);
    }
}
