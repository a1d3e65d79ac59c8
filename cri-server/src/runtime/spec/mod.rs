//! The OCI runtime spec (`config.json`) of a container, built from the CRI request and the
//! image config: pure logic, no side effects except reading what it must read (the image's
//! `/etc/passwd` and `/etc/group` inside the rootfs, a Localhost seccomp profile, mount
//! sources and device nodes on the host, `/proc/self/mountinfo` for propagation checks).
//!
//! The rules follow kubelet's expectations as containerd and CRI-O implement them, one
//! concern per file:
//!
//! - [`process`]: command/args against entrypoint/cmd, env, working dir, tty, rlimits.
//! - [`user`]: run-as user/group, image `USER`, groups from the rootfs, read safely.
//! - [`mounts`]: default mounts, the pod's files, CRI bind mounts and their propagation.
//! - [`security`]: capabilities, privileged, masked/read-only paths, no_new_privs.
//! - [`seccomp`] and [`seccomp_default`]: RuntimeDefault / Unconfined / Localhost profiles.
//! - [`sysctl`]: pod sysctls, allowed only in the namespaces the pod owns.
//! - [`resources`]: cgroup limits and oom_score_adj.
//! - [`namespaces`]: which namespaces are new, joined (pod paths) or the host's.
//! - [`devices`]: CRI devices and the device cgroup allow list.
//! - [`annotations`]: the `io.kubernetes.cri.*` annotations containerd sets.
//! - [`pid_holder`]: the spec of a pod's shared PID namespace holder.
//! - [`bundle`]: writing `config.json` atomically.

pub mod annotations;
pub mod bundle;
pub mod devices;
pub mod mounts;
pub mod namespaces;
pub mod pid_holder;
pub mod process;
pub mod resources;
pub mod rootfs_file;
pub mod seccomp;
pub mod seccomp_default;
pub mod security;
pub mod sysctl;
pub mod user;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use berth_images::ImageConfig;
use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, NamespaceMode, PodSandboxConfig};
use oci_spec::runtime::{Linux, PosixRlimit, Root, Spec};

pub use bundle::{write_bundle, CONFIG_FILE_NAME};
pub use pid_holder::{pid_holder_spec, PidHolderSpecInput};
pub use sysctl::validate_sysctls;

/// The OCI spec version berth writes; runc, crun and berth-shim accept every 1.x.
pub const OCI_VERSION: &str = "1.1.0";

/// Everything [`container_spec`] needs. Owned, with `Default`, so callers fill what they
/// have and move it into `spawn_blocking` (user resolution reads files).
#[derive(Debug, Clone, Default)]
pub struct ContainerSpecInput {
    /// The container id (64 hex chars).
    pub container_id: String,
    /// The pod sandbox id.
    pub sandbox_id: String,
    /// The CRI container config as CreateContainer received it.
    pub config: ContainerConfig,
    /// The CRI config of the pod the container belongs to.
    pub sandbox_config: PodSandboxConfig,
    /// The image's config (entrypoint, cmd, env, user, working dir).
    pub image: ImageConfig,
    /// The image name for the `io.kubernetes.cri.image-name` annotation (the reference the
    /// kubelet asked for, e.g. `docker.io/library/busybox:latest`).
    pub image_name: String,
    /// Absolute path of the container's rootfs, already mounted (berthd mounts the overlay
    /// first): `root.path`, and where `/etc/passwd` and `/etc/group` are read.
    pub rootfs: PathBuf,
    /// The pod's pinned namespaces to join.
    pub namespaces: SandboxNamespaces,
    /// The pod's files bound into every container.
    pub pod_files: PodFiles,
    /// The container's cgroup, e.g. `/berth/pod-<podid>/<cid>` (`linux.cgroupsPath`).
    pub cgroups_path: String,
    /// The lowest oom_score_adj this host lets berth set (berthd's own value: without
    /// CAP_SYS_RESOURCE a process cannot go below it). Requests below are raised to it.
    pub host_min_oom_score_adj: i32,
    /// Node-level knobs from berthd's config.
    pub options: SpecOptions,
}

/// Paths of the pod's pinned namespaces (nsfs bind mounts or `/proc/<pid>/ns/<type>`).
///
/// A namespace the pod shares with the host (hostNetwork, hostIPC) is taken from the pod
/// config, not from here; a `None` path for a namespace the pod does own gives the
/// container a new private one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The PID namespace to join when the container's pid mode is POD (the pod's shared
    /// PID holder, `/proc/<pid>/ns/pid`) or TARGET (berthd resolves the target container).
    pub pid: Option<PathBuf>,
}

/// The pod's files on the host, bind-mounted into each container at `/etc/hostname`,
/// `/etc/hosts`, `/etc/resolv.conf` (unless the container mounts that path itself), and an
/// optional pod-wide `/dev/shm`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// A tmpfs shared by the pod's containers. `None`: each container gets its own tmpfs
    /// (or the host's `/dev/shm` when the pod uses the host IPC namespace).
    pub shm: Option<PathBuf>,
}

/// Node-level settings that change every container's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecOptions {
    /// rlimits set on every container process. Empty: the limits berth-shim inherits
    /// (the kernel's / systemd's), as containerd does.
    pub rlimits: Vec<PosixRlimit>,
    /// A pids cgroup limit for every container (`None`: unlimited, kubelet limits the pod).
    pub pids_limit: Option<i64>,
    /// Give containers their own cgroup namespace (containerd does on cgroup v2).
    pub cgroup_namespace: bool,
    /// Privileged containers get only the device cgroup "allow all" rule, not the host's
    /// device nodes (containerd's `privileged_without_host_devices`).
    pub privileged_without_host_devices: bool,
}

/// How berthd answers a failed spec build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// The request is wrong: the caller must change it.
    InvalidArgument,
    /// Something the request names does not exist (a user in the image, a seccomp profile).
    NotFound,
    /// berth's side: I/O errors on its own files, inconsistent inputs from berthd.
    Internal,
}

/// Why a container's spec cannot be built. Messages name the field and the value.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified: the container config has no command or args and image {image:?} has neither an entrypoint nor a cmd")]
    NoCommand { image: String },
    #[error("invalid container config: {0}")]
    Invalid(String),
    #[error("mount source {path:?} (for container path {container_path:?}) does not exist")]
    MountSourceMissing { path: PathBuf, container_path: String },
    #[error("user {user:?} not found in the image's /etc/passwd{detail}")]
    UserNotFound { user: String, detail: String },
    #[error("group {group:?} not found in the image's /etc/group{detail}")]
    GroupNotFound { group: String, detail: String },
    #[error("seccomp profile {path:?} not found")]
    SeccompProfileNotFound { path: PathBuf },
    #[error("seccomp profile {path:?} is invalid: {reason}")]
    SeccompProfileInvalid { path: PathBuf, reason: String },
    #[error("{context} {path:?}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl SpecError {
    pub fn kind(&self) -> SpecErrorKind {
        match self {
            SpecError::NoCommand { .. }
            | SpecError::Invalid(_)
            | SpecError::MountSourceMissing { .. }
            | SpecError::SeccompProfileInvalid { .. } => SpecErrorKind::InvalidArgument,
            SpecError::UserNotFound { .. } | SpecError::GroupNotFound { .. } | SpecError::SeccompProfileNotFound { .. } => {
                SpecErrorKind::NotFound
            }
            SpecError::Io { .. } | SpecError::Internal(_) => SpecErrorKind::Internal,
        }
    }

    /// The gRPC code a CRI caller sees.
    pub fn code(&self) -> tonic::Code {
        match self.kind() {
            SpecErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            SpecErrorKind::NotFound => tonic::Code::NotFound,
            SpecErrorKind::Internal => tonic::Code::Internal,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        SpecError::Invalid(msg.into())
    }
}

/// The namespace modes of a pod, from its config (kubelet sets the same modes on every
/// container of the pod, except pid which may be per container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNamespaceModes {
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
}

impl PodNamespaceModes {
    pub fn of(sandbox: &PodSandboxConfig) -> Self {
        let opts = sandbox
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let node = NamespaceMode::Node as i32;
        PodNamespaceModes {
            host_network: opts.is_some_and(|o| o.network == node),
            host_ipc: opts.is_some_and(|o| o.ipc == node),
            host_pid: opts.is_some_and(|o| o.pid == node),
        }
    }
}

/// The container's security context, or the empty one.
pub(crate) fn security_context(config: &ContainerConfig) -> LinuxContainerSecurityContext {
    config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default()
}

/// Builds the OCI runtime spec of a container. See the module docs for the rules.
pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    let config = &input.config;
    let sc = security_context(config);
    let pod_modes = PodNamespaceModes::of(&input.sandbox_config);
    let sandbox_privileged = input
        .sandbox_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if sc.privileged && !sandbox_privileged {
        return Err(SpecError::invalid("a privileged container needs a privileged pod sandbox (the pod's security context is not privileged)"));
    }
    if !config.cdi_devices.is_empty() {
        // Running without the devices the pod asked for would be worse than failing.
        let names: Vec<&str> = config.cdi_devices.iter().map(|d| d.name.as_str()).collect();
        return Err(SpecError::invalid(format!("CDI devices {names:?} are not supported by berth yet")));
    }
    if !input.rootfs.is_absolute() {
        return Err(SpecError::Internal(format!("container rootfs {:?} is not an absolute path", input.rootfs)));
    }

    let caps = security::capabilities(&sc)?;
    let mut process = process::build_process(input, pod_modes)?;
    let user = user::resolve_user(&input.rootfs, &sc, input.image.user.as_deref())?;
    process.set_user(user.to_oci());
    process.set_capabilities(Some(caps.to_oci()));
    process.set_no_new_privileges(Some(sc.no_new_privs));
    process.set_oom_score_adj(Some(resources::oom_score_adj(config, input.host_min_oom_score_adj)));

    let built_mounts = mounts::build_mounts(input, &sc, pod_modes)?;
    let (devices, mut device_rules) = devices::container_devices(config, sc.privileged, input.options.privileged_without_host_devices)?;
    let mut resources = resources::build_resources(config, &input.options)?;
    let mut rules = devices::default_device_rules(sc.privileged);
    rules.append(&mut device_rules);
    resources.set_devices(Some(rules));

    let mut linux = Linux::default();
    linux
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_sysctl(Some(sysctl::validate_sysctls(&sandbox_sysctls(&input.sandbox_config), pod_modes)?))
        .set_resources(Some(resources))
        .set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)))
        .set_namespaces(Some(namespaces::container_namespaces(input, &sc, pod_modes)?))
        .set_devices(Some(devices))
        .set_seccomp(seccomp::container_seccomp(&sc, &caps)?)
        .set_rootfs_propagation(built_mounts.rootfs_propagation.clone())
        .set_masked_paths(Some(security::masked_paths(&sc)))
        .set_readonly_paths(Some(security::readonly_paths(&sc)))
        .set_mount_label(None)
        .set_intel_rdt(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.clone()).set_readonly(Some(sc.readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string())
        .set_root(Some(root))
        .set_mounts(Some(built_mounts.mounts))
        .set_process(Some(process))
        .set_hostname(namespaces::container_hostname(&input.sandbox_config, pod_modes))
        .set_domainname(None)
        .set_hooks(None)
        .set_annotations(Some(annotations::container_annotations(input)))
        .set_linux(Some(linux));
    tracing::debug!(container_id = %input.container_id, "built OCI spec");
    Ok(spec)
}

fn sandbox_sysctls(sandbox: &PodSandboxConfig) -> std::collections::HashMap<String, String> {
    sandbox.linux.as_ref().map(|l| l.sysctls.clone()).unwrap_or_default()
}
