//! The container's root: propagation of "/", the rootfs bind, the spec's mounts and /dev,
//! pivot_root with the old root detached, then (inside) masked and read-only paths and a
//! read-only root. Runs in the container's new mount namespace.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Mount;

use super::devices::{self, DeviceNode};
use super::error::{ContainerError, StepExt};
use super::mounts::{self, bind_remount, CgroupMode, CgroupSource};
use super::syscall::{FileKind, Syscall};

/// Everything the rootfs steps need, taken from the spec before the fork.
#[derive(Clone, Debug)]
pub struct RootfsPlan {
    pub rootfs: PathBuf,
    pub readonly: bool,
    /// Applied recursively to "/" first. runc's default is rslave: the container's mounts do
    /// not leak to the host, but host mounts still reach binds asked to be rslave
    /// (kubelet's HostToContainer propagation), which rprivate would cut off.
    pub root_propagation: MsFlags,
    /// Applied to the new "/" after pivot_root (rootfsPropagation "shared"/"unbindable": a
    /// shared parent would make pivot_root fail, so it can only be set afterwards).
    pub final_propagation: Option<MsFlags>,
    pub mounts: Vec<Mount>,
    /// None when /dev is a bind of the host's (left as it is).
    pub devices: Option<Vec<DeviceNode>>,
    pub has_devpts: bool,
    pub cgroups: CgroupMode,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
}

/// rootfsPropagation -> (flags for "/" before, flags for "/" after pivot_root).
pub fn root_propagation(
    spec_value: Option<&str>,
) -> Result<(MsFlags, Option<MsFlags>), ContainerError> {
    let rslave = MsFlags::MS_SLAVE | MsFlags::MS_REC;
    Ok(match spec_value.unwrap_or("") {
        "" | "slave" | "rslave" => (rslave, None),
        "private" | "rprivate" => (MsFlags::MS_PRIVATE | MsFlags::MS_REC, None),
        "shared" | "rshared" => (rslave, Some(MsFlags::MS_SHARED | MsFlags::MS_REC)),
        "unbindable" | "runbindable" => (rslave, Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC)),
        other => {
            return Err(ContainerError::InvalidSpec(format!(
                "rootfsPropagation {other:?} is not a propagation mode"
            )))
        }
    })
}

/// Before pivot_root: "/" propagation, the rootfs as a mount point, the spec's mounts, /dev.
pub fn prepare(
    sys: &dyn Syscall,
    plan: &RootfsPlan,
    cgroup_source: &CgroupSource,
) -> Result<(), ContainerError> {
    sys.mount(None, Path::new("/"), None, plan.root_propagation, None)
        .step(|| "making / private to the container (mount propagation)".into())?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(
        Some(&plan.rootfs),
        &plan.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .step(|| format!("bind mount of the rootfs {}", plan.rootfs.display()))?;
    for mount in &plan.mounts {
        mounts::mount_one(sys, &plan.rootfs, mount, plan.cgroups, cgroup_source)?;
    }
    if let Some(devices) = &plan.devices {
        devices::create_devices(sys, &plan.rootfs, devices, false)?;
        devices::create_symlinks(sys, &plan.rootfs, plan.has_devpts)?;
    }
    Ok(())
}

/// Make the rootfs "/" and detach the old root, so no host path stays reachable.
pub fn pivot(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), ContainerError> {
    // pivot_root(".", "."): the old root ends up stacked under the new one at "/", from where
    // it is detached; this needs no put_old directory inside the image.
    sys.chdir(&plan.rootfs)
        .step(|| format!("chdir {}", plan.rootfs.display()))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .step(|| format!("pivot_root {}", plan.rootfs.display()))?;
    // The detach must not propagate to the host's mounts.
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .step(|| "making the old root a slave".into())?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .step(|| "detaching the old root".into())?;
    sys.chdir(Path::new("/")).step(|| "chdir /".into())?;
    if let Some(flags) = plan.final_propagation {
        sys.mount(None, Path::new("/"), None, flags, None)
            .step(|| "setting rootfsPropagation on /".into())?;
    }
    Ok(())
}

/// Inside the new root: read-only paths (before masking, as runc: a masked path under a
/// read-only one still gets masked).
pub fn readonly_paths(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), ContainerError> {
    for path in &plan.readonly_paths {
        if sys.file_kind(path).is_none() {
            continue;
        }
        let what = || format!("read-only path {}", path.display());
        sys.mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .step(|| format!("{}: bind", what()))?;
        bind_remount(sys, path, MsFlags::MS_RDONLY | MsFlags::MS_REC)
            .step(|| format!("{}: remount ro", what()))?;
    }
    Ok(())
}

/// Inside the new root: files are covered with /dev/null, directories with an empty
/// read-only tmpfs.
pub fn masked_paths(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), ContainerError> {
    for path in &plan.masked_paths {
        let what = || format!("masked path {}", path.display());
        match sys.file_kind(path) {
            None => continue,
            Some(FileKind::Dir) => sys
                .mount(
                    Some(Path::new("tmpfs")),
                    path,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                )
                .step(|| format!("{}: tmpfs", what()))?,
            Some(_) => sys
                .mount(
                    Some(Path::new("/dev/null")),
                    path,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )
                .step(|| format!("{}: bind /dev/null", what()))?,
        }
    }
    Ok(())
}

/// Last of the mount steps: root.readonly.
pub fn readonly_root(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), ContainerError> {
    if plan.readonly {
        bind_remount(sys, Path::new("/"), MsFlags::MS_RDONLY)
            .step(|| "remounting the root read-only".into())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::RecordingSyscall;
    use oci_spec::runtime::MountBuilder;

    fn plan() -> RootfsPlan {
        RootfsPlan {
            rootfs: "/b/rootfs".into(),
            readonly: true,
            root_propagation: MsFlags::MS_SLAVE | MsFlags::MS_REC,
            final_propagation: None,
            mounts: vec![MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .source("proc")
                .build()
                .unwrap()],
            devices: Some(vec![devices::default_devices().remove(0)]),
            has_devpts: false,
            cgroups: CgroupMode::V1,
            masked_paths: vec!["/proc/kcore".into(), "/proc/acpi".into(), "/nothere".into()],
            readonly_paths: vec!["/proc/sys".into()],
        }
    }

    #[test]
    fn mounts_come_after_the_rootfs_bind_and_before_devices() {
        let sys = RecordingSyscall::default();
        prepare(&sys, &plan(), &CgroupSource::Namespace).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], "mount - / - MS_REC | MS_SLAVE -");
        assert_eq!(calls[1], "mount /b/rootfs /b/rootfs - MS_BIND | MS_REC -");
        assert_eq!(calls[2], "mkdir_all /b/rootfs/proc");
        assert_eq!(calls[3], "mount proc /b/rootfs/proc proc (empty) -");
        assert!(
            calls[5].starts_with("mknod /b/rootfs/dev/null"),
            "{calls:?}"
        );
        assert!(calls
            .iter()
            .any(|c| c == "symlink /proc/self/fd /b/rootfs/dev/fd"));
    }

    #[test]
    fn pivot_detaches_the_old_root() {
        let sys = RecordingSyscall::default();
        pivot(&sys, &plan()).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "chdir /b/rootfs",
                "pivot_root . .",
                "mount - . - MS_REC | MS_SLAVE -",
                "umount2 . MNT_DETACH",
                "chdir /"
            ]
        );
    }

    #[test]
    fn masked_files_get_dev_null_and_dirs_a_read_only_tmpfs() {
        let sys = RecordingSyscall::with_files(&[
            ("/proc/kcore", FileKind::File),
            ("/proc/acpi", FileKind::Dir),
            ("/proc/sys", FileKind::Dir),
        ]);
        readonly_paths(&sys, &plan()).unwrap();
        masked_paths(&sys, &plan()).unwrap();
        readonly_root(&sys, &plan()).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "mount /proc/sys /proc/sys - MS_BIND | MS_REC -",
                "mount - /proc/sys - MS_RDONLY | MS_REMOUNT | MS_BIND | MS_REC -",
                "mount /dev/null /proc/kcore - MS_BIND -",
                "mount tmpfs /proc/acpi tmpfs MS_RDONLY -",
                "mount - / - MS_RDONLY | MS_REMOUNT | MS_BIND -",
            ]
        );
    }

    #[test]
    fn rootfs_propagation_modes() {
        assert_eq!(
            root_propagation(None).unwrap(),
            (MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
        );
        assert_eq!(
            root_propagation(Some("rprivate")).unwrap().0,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC
        );
        assert_eq!(
            root_propagation(Some("rshared")).unwrap().1,
            Some(MsFlags::MS_SHARED | MsFlags::MS_REC)
        );
        assert!(root_propagation(Some("sideways")).is_err());
    }
}
