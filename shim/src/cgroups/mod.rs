//! cgroups for containers and pods: one manager trait over cgroup v2 and cgroup v1.
//!
//! The shim uses it for the container's cgroup (`create`, `apply`, `add_task` before the init
//! runs, `oom_kill_count` and `destroy` after it exits) and berthd for pod cgroups
//! ([`ensure_pod_cgroup`], then `destroy` of the ones it created).
//!
//! Choice: plain cgroupfs file writes, not `cgroups-rs`. A manager is a path and a handful of
//! `write(2)`s; `cgroups-rs` brings a large API surface for that, still needs its own v2
//! device handling (it has none, see [`bpf`]), and the shim has to idle in a few hundred KB.
//! The cgroupfs ("cgroupfs driver") layout is used on both versions; there is no systemd
//! driver: paths are directories below the hierarchy root.
//!
//! - v2 ([`v2`]): the unified hierarchy at `/sys/fs/cgroup`. Creating a cgroup enables the
//!   controllers we write to (cpu, cpuset, io, memory, hugetlb, pids) in each ancestor's
//!   `cgroup.subtree_control`. Devices are limited by an eBPF program ([`bpf`]).
//! - v1 ([`v1`]): one hierarchy per controller at `/sys/fs/cgroup/<controller>` (cpu,
//!   cpuacct, cpuset, memory, devices, freezer, blkio, pids, hugetlb when mounted); a hybrid
//!   host's `unified` and `systemd` trees are ignored. Co-mounted controllers (`cpu,cpuacct`
//!   behind two symlinks) are one hierarchy.
//!
//! The filesystem root is a seam ([`CgroupRoot`]): unit tests root a manager at a temp dir.

mod bpf;
pub mod convert;
pub mod devices;
mod error;
#[cfg(test)]
mod fake_tests;
mod fsutil;
mod v1;
mod v2;

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

pub use error::CgroupError;
use fsutil::FsMode;

/// Where the system's cgroup filesystem is mounted.
pub const SYSTEM_CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Cheap counters of a cgroup, for ContainerStats; None where this cgroup version or host
/// does not have the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory charged to the cgroup, bytes (v2 memory.current, v1 memory.usage_in_bytes).
    pub memory_usage_bytes: Option<u64>,
    /// Working set as kubelet computes it: usage minus inactive file pages.
    pub memory_working_set_bytes: Option<u64>,
    /// CPU time used, nanoseconds (v2 cpu.stat usage_usec, v1 cpuacct.usage).
    pub cpu_usage_ns: Option<u64>,
    /// Number of tasks (pids.current).
    pub pids_current: Option<u64>,
}

/// One cgroup (the same relative path in every v1 hierarchy, or one v2 directory).
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    fn version(&self) -> CgroupVersion;
    /// The cgroups path as given, e.g. `/berth/pod-<id>/<cid>`.
    fn path(&self) -> &str;
    /// Creates the cgroup (and missing ancestors). Idempotent.
    fn create(&self) -> Result<(), CgroupError>;
    /// Writes the resource limits (and the device rules). May be called again to update.
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    /// Moves a process (all its threads) into the cgroup.
    fn add_task(&self, pid: Pid) -> Result<(), CgroupError>;
    /// The processes directly in this cgroup (v1: in any of its hierarchies).
    fn procs(&self) -> Result<Vec<Pid>, CgroupError>;
    /// Signals every process in this cgroup and the cgroups below it. v2 uses `cgroup.kill`
    /// for SIGKILL when the kernel has it (no fork race).
    fn kill_all(&self, signal: Signal) -> Result<(), CgroupError>;
    /// How many processes the kernel OOM killer killed in this cgroup (and below) so far.
    fn oom_kill_count(&self) -> Result<u64, CgroupError>;
    /// Kills everything (SIGKILL), waits up to ~2 s for the cgroup to empty, and removes it
    /// and any cgroup below it in every hierarchy. Idempotent: a missing cgroup is fine.
    fn destroy(&self) -> Result<(), CgroupError>;
    /// True when the cgroup directory exists (v1: in at least one hierarchy).
    fn exists(&self) -> bool;
    /// Memory, cpu and pids counters.
    fn stats(&self) -> Result<CgroupStats, CgroupError>;
}

/// How long `destroy` waits for the processes to die and the directories to go.
pub(crate) const DESTROY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A cgroup filesystem root: the system's, or a plain directory in tests.
#[derive(Clone, Debug)]
pub struct CgroupRoot {
    base: PathBuf,
    version: CgroupVersion,
    mode: FsMode,
}

impl CgroupRoot {
    /// The system's cgroup filesystem at [`SYSTEM_CGROUP_ROOT`], version detected.
    pub fn system() -> Result<CgroupRoot, CgroupError> {
        Ok(CgroupRoot {
            base: PathBuf::from(SYSTEM_CGROUP_ROOT),
            version: detect()?,
            mode: FsMode::Real,
        })
    }

    /// A plain directory laid out like a cgroup root, for tests: files are created when
    /// written, removal is recursive, no eBPF program is loaded, and signals go only to the
    /// pids the test wrote into `cgroup.procs`. v1 hierarchies are the subdirectories named
    /// after controllers that exist when a manager is made.
    pub fn fake(base: impl Into<PathBuf>, version: CgroupVersion) -> CgroupRoot {
        CgroupRoot {
            base: base.into(),
            version,
            mode: FsMode::Fake,
        }
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// A manager for `cgroups_path` below this root (nothing is created yet).
    pub fn manager(&self, cgroups_path: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
        let rel = relative_path(cgroups_path)?;
        Ok(match self.version {
            CgroupVersion::V2 => Box::new(v2::V2Manager::new(self, cgroups_path, rel)),
            CgroupVersion::V1 => Box::new(v1::V1Manager::new(self, cgroups_path, rel)?),
        })
    }

    /// See [`ensure_pod_cgroup`].
    pub fn ensure_pod_cgroup(&self, cgroups_path: &str) -> Result<bool, CgroupError> {
        let manager = self.manager(cgroups_path)?;
        let existed = manager.exists();
        manager.create()?;
        if !existed {
            tracing::info!(cgroup = cgroups_path, "pod cgroup created");
        }
        Ok(!existed)
    }
}

static DETECTED: OnceLock<Result<CgroupVersion, String>> = OnceLock::new();

/// The host's cgroup version: V2 when `/sys/fs/cgroup` is a cgroup2 mount, V1 when it is a
/// tmpfs of v1 hierarchies (a hybrid host's `unified` tree is not used). Cached.
pub fn detect() -> Result<CgroupVersion, CgroupError> {
    DETECTED
        .get_or_init(|| detect_at(Path::new(SYSTEM_CGROUP_ROOT)).map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| CgroupError::NoCgroupFs {
            path: PathBuf::from(SYSTEM_CGROUP_ROOT),
            reason,
        })
}

fn detect_at(base: &Path) -> Result<CgroupVersion, CgroupError> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};
    let no_fs = |reason: String| CgroupError::NoCgroupFs {
        path: base.to_path_buf(),
        reason,
    };
    let fs_type = statfs(base)
        .map_err(|e| no_fs(format!("statfs: {e}")))?
        .filesystem_type();
    if fs_type == CGROUP2_SUPER_MAGIC {
        return Ok(CgroupVersion::V2);
    }
    if fs_type == TMPFS_MAGIC {
        // v1 (or hybrid): the controllers are mounted below it.
        for controller in v1::CONTROLLERS {
            if let Ok(st) = statfs(&base.join(controller)) {
                if st.filesystem_type() == CGROUP_SUPER_MAGIC {
                    return Ok(CgroupVersion::V1);
                }
            }
        }
        return Err(no_fs(
            "a tmpfs without cgroup v1 controller hierarchies".into(),
        ));
    }
    Err(no_fs(format!("unknown filesystem type {fs_type:?}")))
}

/// A manager on the system's cgroup filesystem for `cgroups_path` (cgroupfs driver:
/// `/berth/pod-<id>/<cid>`, or a kubelet `cgroup_parent` such as `/kubepods/burstable/pod<uid>`).
pub fn manager(cgroups_path: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    CgroupRoot::system()?.manager(cgroups_path)
}

/// Makes sure the pod cgroup exists; answers true when this call created it (v1: when it was
/// in no hierarchy before), which is when berthd owns it and must `destroy` it on removal.
/// An existing cgroup (kubelet's) is never modified, except that on v2 the controllers berth
/// needs are enabled in its `cgroup.subtree_control` when its child is created.
pub fn ensure_pod_cgroup(cgroups_path: &str) -> Result<bool, CgroupError> {
    CgroupRoot::system()?.ensure_pod_cgroup(cgroups_path)
}

/// The cgroups path as a relative path below the hierarchy root. Absolute and relative paths
/// both count from the root (no systemd driver); the root itself, `..` and `.` are refused,
/// so no manager can ever remove a directory outside the one it was given.
fn relative_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let invalid = |reason: &str| CgroupError::InvalidPath {
        path: cgroups_path.to_string(),
        reason: reason.to_string(),
    };
    if !cgroups_path.contains('/') && cgroups_path.matches(':').count() == 2 {
        return Err(invalid(
            "systemd driver paths (slice:prefix:name) are not supported",
        ));
    }
    let mut rel = PathBuf::new();
    for component in Path::new(cgroups_path).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => rel.push(part),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid("'.' and '..' are not allowed"))
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(invalid("the root cgroup cannot be managed"));
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_root() {
        assert_eq!(
            relative_path("/berth/pod-1/c1").unwrap(),
            PathBuf::from("berth/pod-1/c1")
        );
        assert_eq!(
            relative_path("kubepods//x/").unwrap(),
            PathBuf::from("kubepods/x")
        );
        assert!(relative_path("/").is_err());
        assert!(relative_path("").is_err());
        assert!(relative_path("/berth/../etc").is_err());
        assert!(relative_path("system.slice:berth:abc").is_err());
    }

    #[test]
    fn detect_finds_this_host() {
        // Whatever the host is, detection must answer (tests run on v1 here, v2 in the guest).
        let version = detect().unwrap();
        let fs_type = nix::sys::statfs::statfs(SYSTEM_CGROUP_ROOT)
            .unwrap()
            .filesystem_type();
        assert_eq!(
            version == CgroupVersion::V2,
            fs_type == nix::sys::statfs::CGROUP2_SUPER_MAGIC
        );
    }
}
