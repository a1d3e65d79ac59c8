//! The records berthd keeps for every pod sandbox and container.
//!
//! A record holds everything needed to answer CRI calls and to find the pod's or
//! container's resources again after a restart of berthd: the CRI configs exactly as they
//! came (k8s-cri types derive serde), the state, timestamps and the paths berth created.
//! Every field added later must carry `#[serde(default)]` so older records stay readable.

use std::path::PathBuf;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

/// A pod sandbox's state, as CRI knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Ready,
    NotReady,
}

impl SandboxState {
    /// The CRI enum value (`PodSandboxState`).
    pub fn cri(self) -> k8s_cri::v1::PodSandboxState {
        match self {
            SandboxState::Ready => k8s_cri::v1::PodSandboxState::SandboxReady,
            SandboxState::NotReady => k8s_cri::v1::PodSandboxState::SandboxNotready,
        }
    }
}

/// A container's state, as CRI knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    /// The CRI enum value (`ContainerState`).
    pub fn cri(self) -> k8s_cri::v1::ContainerState {
        match self {
            ContainerState::Created => k8s_cri::v1::ContainerState::ContainerCreated,
            ContainerState::Running => k8s_cri::v1::ContainerState::ContainerRunning,
            ContainerState::Exited => k8s_cri::v1::ContainerState::ContainerExited,
            ContainerState::Unknown => k8s_cri::v1::ContainerState::ContainerUnknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// 64 lowercase hex characters.
    pub id: String,
    /// The reserved CRI name `<name>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    pub config: PodSandboxConfig,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at_ns: i64,
    /// The RuntimeClass handler the pod was started with ("" = default).
    #[serde(default)]
    pub runtime_handler: String,
    /// Where the pinned namespaces live: `<state>/pods/<id>/ns`.
    pub ns_dir: PathBuf,
    /// The pod's files (hostname, hosts, resolv.conf): `<root>/pods/<id>`.
    pub pod_dir: PathBuf,
    /// The pod cgroup (cgroupfs path, e.g. `/kubepods/besteffort/pod<uid>` or `/berth/pod-<id>`).
    pub cgroup_path: String,
    /// True when berth created the pod cgroup (and so must remove it).
    pub cgroup_created: bool,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub host_pid: bool,
    #[serde(default)]
    pub host_ipc: bool,
    /// The shim id of the shared PID namespace holder (the pod id; its state dir is
    /// `<state>/shims/<that id>`), when the pod shares one PID namespace.
    #[serde(default)]
    pub pid_holder: Option<String>,
    /// The holder's init pid (its `/proc/<pid>/ns/pid` is the pod's PID namespace).
    #[serde(default)]
    pub pid_holder_pid: Option<i32>,
    /// The pod's IP addresses from the network setup (none for loopback-only and host network).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Which namespaces are pinned under `ns_dir` (`net`, `ipc`, `uts`).
    #[serde(default)]
    pub pinned_namespaces: Vec<String>,
    /// The pod's shared `/dev/shm` (a tmpfs mount), when the pod has its own IPC namespace.
    #[serde(default)]
    pub shm_path: Option<PathBuf>,
    /// Unix nanoseconds of the last stop (0: never stopped).
    #[serde(default)]
    pub stopped_at_ns: i64,
}

impl SandboxRecord {
    /// The pinned namespace file for `kind` (`net`, `ipc`, `uts`), if that namespace is pinned.
    pub fn namespace_path(&self, kind: &str) -> Option<PathBuf> {
        self.pinned_namespaces.iter().any(|k| k == kind).then(|| self.ns_dir.join(kind))
    }

    pub fn hostname_path(&self) -> PathBuf {
        self.pod_dir.join("hostname")
    }

    pub fn hosts_path(&self) -> PathBuf {
        self.pod_dir.join("hosts")
    }

    pub fn resolv_conf_path(&self) -> PathBuf {
        self.pod_dir.join("resolv.conf")
    }

    /// `/proc/<pid>/ns/pid` of the shared PID namespace holder, when the pod has one.
    pub fn shared_pid_namespace(&self) -> Option<PathBuf> {
        self.pid_holder_pid.map(|pid| PathBuf::from(format!("/proc/{pid}/ns/pid")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 lowercase hex characters.
    pub id: String,
    pub sandbox_id: String,
    /// The reserved CRI name `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
    #[serde(default)]
    pub name: String,
    pub config: ContainerConfig,
    /// The image as the caller named it.
    pub image_ref: String,
    /// `sha256:<config digest>`.
    pub image_id: String,
    pub state: ContainerState,
    pub created_at_ns: i64,
    #[serde(default)]
    pub started_at_ns: i64,
    #[serde(default)]
    pub finished_at_ns: i64,
    #[serde(default)]
    pub exit_code: i32,
    /// CRI reason: Completed, Error, OOMKilled, ...
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    /// `<root>/containers/<id>`: config.json and rootfs/.
    pub bundle_dir: PathBuf,
    pub rootfs_dir: PathBuf,
    /// `<state>/shims/<id>`.
    pub shim_dir: PathBuf,
    pub cgroup_path: String,
    /// External OCI runtime binary (runc, crun); None = the shim's built-in runtime.
    #[serde(default)]
    pub runtime: Option<String>,
    /// The container's init pid while it runs (0 when unknown).
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub oom_killed: bool,
}
