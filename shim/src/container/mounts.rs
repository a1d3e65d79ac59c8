//! The spec's `mounts`, in order, under the new root: option parsing (flags, propagation,
//! filesystem data), destinations resolved inside the rootfs without following symlinks out
//! of it, bind mounts with a read-only/nosuid/... remount, cgroup mounts for v2 (skipped on v1).

use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use super::error::{ContainerError, StepExt};
use super::syscall::{FileKind, Syscall};

/// A spec mount's options, split into what mount(2) takes.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the first mount(2) call.
    pub flags: MsFlags,
    /// Flags that clear a default (e.g. "rw", "suid"): only matter for the remount.
    pub cleared: MsFlags,
    /// Propagation changes applied by separate mount(2) calls after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options, comma-joined ("mode=755,size=65536k").
    pub data: String,
    pub bind: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            data: String::new(),
            bind: false,
        }
    }
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut out = MountOptions::default();
        for option in options {
            let (set, clear): (MsFlags, MsFlags) = match option.as_str() {
                "bind" => {
                    out.bind = true;
                    (MsFlags::MS_BIND, MsFlags::empty())
                }
                "rbind" => {
                    out.bind = true;
                    (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
                }
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "defaults" => (MsFlags::empty(), MsFlags::empty()),
                other => {
                    if let Some(flag) = propagation_flag(other) {
                        out.propagation.push(flag);
                    } else if !other.is_empty() {
                        if !out.data.is_empty() {
                            out.data.push(',');
                        }
                        out.data.push_str(other);
                    }
                    continue;
                }
            };
            out.flags |= set;
            out.flags &= !clear;
            out.cleared |= clear;
        }
        out
    }
}

/// "rshared" -> MS_SHARED|MS_REC, ...; None if `option` is no propagation option.
pub fn propagation_flag(option: &str) -> Option<MsFlags> {
    Some(match option {
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// `path` (absolute, as seen inside the container) resolved under `root`: symlinks met on the
/// way are followed as if `root` were "/", so nothing resolves outside of it (an image's
/// `/proc -> /etc` or `../../host` links stay inside the rootfs).
pub fn secure_join(sys: &dyn Syscall, root: &Path, path: &Path) -> Result<PathBuf, ContainerError> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<std::ffi::OsString> = components_reversed(path);
    let mut links_followed = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        if sys.file_kind(&root.join(&candidate)) == Some(FileKind::Symlink) {
            links_followed += 1;
            if links_followed > 255 {
                return Err(ContainerError::Step(format!(
                    "resolving {} in the rootfs: too many symbolic links",
                    path.display()
                )));
            }
            let target = sys
                .read_link(&root.join(&candidate))
                .step(|| format!("readlink {}", candidate.display()))?;
            if target.is_absolute() {
                resolved = PathBuf::new();
            }
            pending.extend(components_reversed(&target));
            continue;
        }
        resolved = candidate;
    }
    Ok(root.join(resolved))
}

/// Normal components and ".." of `path`, last first (a stack to pop from).
fn components_reversed(path: &Path) -> Vec<std::ffi::OsString> {
    let mut parts: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

/// Which cgroup hierarchy the host has, for `cgroup` mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// Unified hierarchy at /sys/fs/cgroup.
    V2,
    /// v1 or hybrid: cgroup mounts are skipped (the container sees no /sys/fs/cgroup).
    V1,
}

impl CgroupMode {
    pub fn detect() -> CgroupMode {
        const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
        match nix::sys::statfs::statfs("/sys/fs/cgroup") {
            Ok(fs) if fs.filesystem_type().0 == CGROUP2_SUPER_MAGIC => CgroupMode::V2,
            _ => CgroupMode::V1,
        }
    }
}

/// How a `cgroup` mount is done on v2: a fresh cgroup2 mount is right only inside a cgroup
/// namespace (it then shows the container's own cgroup); without one, the container's cgroup
/// directory is bound instead so the host's tree is not exposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupSource {
    Namespace,
    /// /sys/fs/cgroup/<the process's cgroup> on the host.
    Bind(PathBuf),
}

/// Mount one spec entry under `rootfs` (before pivot_root; sources are host paths).
pub fn mount_one(
    sys: &dyn Syscall,
    rootfs: &Path,
    mount: &Mount,
    cgroups: CgroupMode,
    cgroup_source: &CgroupSource,
) -> Result<(), ContainerError> {
    let destination = mount.destination();
    let what = || format!("mount {}", destination.display());
    if !destination.is_absolute() {
        return Err(ContainerError::InvalidSpec(format!(
            "mount destination {} is not absolute",
            destination.display()
        )));
    }
    let options = MountOptions::parse(mount.options().as_deref().unwrap_or(&[]));
    let fstype = mount
        .typ()
        .as_deref()
        .unwrap_or(if options.bind { "bind" } else { "" });
    let bind = options.bind || fstype == "bind";
    let target = secure_join(sys, rootfs, destination)?;

    if fstype == "cgroup" || fstype == "cgroup2" {
        return mount_cgroup(sys, &target, &options, cgroups, cgroup_source, &what);
    }

    if bind {
        let source = mount.source().as_deref().ok_or_else(|| {
            ContainerError::InvalidSpec(format!("{}: bind mount without a source", what()))
        })?;
        let kind = match sys.file_kind(source) {
            None => {
                return Err(ContainerError::Step(format!(
                    "{}: source {} does not exist",
                    what(),
                    source.display()
                )))
            }
            Some(kind) => kind,
        };
        make_target(sys, &target, kind == FileKind::Dir, &what)?;
        let first = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
        sys.mount(Some(source), &target, None, first, None)
            .step(|| format!("{}: bind {}", what(), source.display()))?;
        // A bind mount takes ro/nosuid/... only on a remount.
        let remount_flags =
            options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !remount_flags.is_empty() {
            bind_remount(sys, &target, remount_flags)
                .step(|| format!("{}: remount {}", what(), describe_flags(remount_flags)))?;
        }
    } else {
        make_target(sys, &target, true, &what)?;
        let source = mount
            .source()
            .clone()
            .unwrap_or_else(|| PathBuf::from(fstype));
        let data = (!options.data.is_empty()).then_some(options.data.as_str());
        let flags = options.flags;
        match sys.mount(Some(&source), &target, Some(fstype), flags, data) {
            Ok(()) => {}
            // mqueue/sysfs can be refused where the namespace does not own them (rootless,
            // shared netns in a user ns): runc falls back to a bind of the host's for sysfs.
            Err(Errno::EPERM) if fstype == "sysfs" => {
                sys.mount(
                    Some(Path::new("/sys")),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .step(|| format!("{}: bind /sys", what()))?;
                let flags = flags
                    & (MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC);
                if !flags.is_empty() {
                    bind_remount(sys, &target, flags)
                        .step(|| format!("{}: remount {}", what(), describe_flags(flags)))?;
                }
            }
            Err(errno) => {
                return Err(ContainerError::sys(
                    format!("{}: {} {}", what(), fstype, options_text(&options)),
                    errno,
                ))
            }
        }
    }
    for flag in &options.propagation {
        sys.mount(None, &target, None, *flag, None)
            .step(|| format!("{}: set propagation {:?}", what(), flag))?;
    }
    Ok(())
}

fn mount_cgroup(
    sys: &dyn Syscall,
    target: &Path,
    options: &MountOptions,
    cgroups: CgroupMode,
    source: &CgroupSource,
    what: &dyn Fn() -> String,
) -> Result<(), ContainerError> {
    if cgroups == CgroupMode::V1 {
        // v1 would need a tmpfs with one bind per controller; kubelet does not need it.
        tracing::debug!("{}: skipped, the host has cgroup v1", what());
        return Ok(());
    }
    make_target(sys, target, true, what)?;
    let flags = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    match source {
        CgroupSource::Namespace => {
            sys.mount(
                Some(Path::new("cgroup2")),
                target,
                Some("cgroup2"),
                flags,
                None,
            )
            .step(|| format!("{}: cgroup2", what()))?;
        }
        CgroupSource::Bind(dir) => {
            sys.mount(Some(dir), target, None, MsFlags::MS_BIND, None)
                .step(|| format!("{}: bind {}", what(), dir.display()))?;
            if !flags.is_empty() {
                bind_remount(sys, target, flags)
                    .step(|| format!("{}: remount {}", what(), describe_flags(flags)))?;
            }
        }
    }
    Ok(())
}

/// Remount a bind mount with `flags`, keeping the flags the kernel locks on it (a remount
/// that would drop e.g. nosuid of the source mount is refused with EPERM).
pub fn bind_remount(sys: &dyn Syscall, target: &Path, flags: MsFlags) -> Result<(), Errno> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match sys.mount(None, target, None, base | flags, None) {
        Err(Errno::EPERM) => {
            let locked = sys.mount_flags(target)? & !MsFlags::MS_RDONLY;
            sys.mount(None, target, None, base | flags | locked, None)
        }
        other => other,
    }
}

/// The mount point: a directory, or an empty file for a file bind mount.
fn make_target(
    sys: &dyn Syscall,
    target: &Path,
    dir: bool,
    what: &dyn Fn() -> String,
) -> Result<(), ContainerError> {
    match sys.file_kind(target) {
        Some(FileKind::Dir) if dir => Ok(()),
        Some(kind) if !dir && kind != FileKind::Dir => Ok(()),
        Some(_) if !dir => Err(ContainerError::Step(format!(
            "{}: the destination is a directory, the source a file",
            what()
        ))),
        Some(_) => Err(ContainerError::Step(format!(
            "{}: the destination is not a directory",
            what()
        ))),
        None if dir => sys
            .mkdir_all(target, 0o755)
            .step(|| format!("{}: mkdir", what())),
        None => sys
            .create_file(target)
            .step(|| format!("{}: create the mount point", what())),
    }
}

fn describe_flags(flags: MsFlags) -> String {
    let names: Vec<&str> = [
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
    ]
    .iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .map(|(_, name)| *name)
    .collect();
    names.join(",")
}

fn options_text(options: &MountOptions) -> String {
    let flags = describe_flags(options.flags);
    match (flags.is_empty(), options.data.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!("({flags})"),
        (true, false) => format!("({})", options.data),
        (false, false) => format!("({flags},{})", options.data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::RecordingSyscall;
    use oci_spec::runtime::MountBuilder;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags_data_and_propagation() {
        let parsed = MountOptions::parse(&opts(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "rslave",
            "ro",
        ]));
        assert_eq!(
            parsed.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(parsed.data, "newinstance,ptmxmode=0666,mode=0620");
        assert_eq!(
            parsed.propagation,
            vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]
        );
        assert!(!parsed.bind);
        let rw = MountOptions::parse(&opts(&["rbind", "ro", "rw"]));
        assert!(rw.bind);
        assert_eq!(rw.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }

    #[test]
    fn secure_join_keeps_symlinks_inside_the_root() {
        let fake = RecordingSyscall::default();
        assert_eq!(
            secure_join(&fake, Path::new("/r"), Path::new("/a/../../b")).unwrap(),
            PathBuf::from("/r/b")
        );

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("proc")).unwrap();
        std::os::unix::fs::symlink("../../../../host", root.join("up")).unwrap();
        let sys = crate::container::syscall::LinuxSyscall;
        assert_eq!(
            secure_join(&sys, root, Path::new("/proc/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            secure_join(&sys, root, Path::new("/up/y")).unwrap(),
            root.join("host/y")
        );
    }

    #[test]
    fn bind_mount_remounts_read_only_and_sets_propagation() {
        let sys =
            RecordingSyscall::with_files(&[("/src", FileKind::Dir), ("/r/data", FileKind::Dir)]);
        let mount = MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/src")
            .options(opts(&["rbind", "ro", "nosuid", "rslave"]))
            .build()
            .unwrap();
        mount_one(
            &sys,
            Path::new("/r"),
            &mount,
            CgroupMode::V2,
            &CgroupSource::Namespace,
        )
        .unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "mount /src /r/data - MS_BIND | MS_REC -".to_string(),
                "mount - /r/data - MS_RDONLY | MS_NOSUID | MS_REMOUNT | MS_BIND -".to_string(),
                "mount - /r/data - MS_REC | MS_SLAVE -".to_string(),
            ]
        );
    }

    #[test]
    fn missing_bind_source_is_a_clear_error() {
        let sys = RecordingSyscall::default();
        let mount = MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/nope")
            .options(opts(&["rbind"]))
            .build()
            .unwrap();
        let err = mount_one(
            &sys,
            Path::new("/r"),
            &mount,
            CgroupMode::V2,
            &CgroupSource::Namespace,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "mount /data: source /nope does not exist");
    }

    #[test]
    fn cgroup_mount_is_skipped_on_v1_and_bound_without_a_namespace() {
        let mount = MountBuilder::default()
            .destination("/sys/fs/cgroup")
            .typ("cgroup")
            .source("cgroup")
            .options(opts(&["ro", "nosuid"]))
            .build()
            .unwrap();
        let sys = RecordingSyscall::default();
        mount_one(
            &sys,
            Path::new("/r"),
            &mount,
            CgroupMode::V1,
            &CgroupSource::Namespace,
        )
        .unwrap();
        assert!(sys.calls().is_empty());
        let sys = RecordingSyscall::default();
        mount_one(
            &sys,
            Path::new("/r"),
            &mount,
            CgroupMode::V2,
            &CgroupSource::Bind("/sys/fs/cgroup/pod/c".into()),
        )
        .unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "mkdir_all /r/sys/fs/cgroup".to_string(),
                "mount /sys/fs/cgroup/pod/c /r/sys/fs/cgroup - MS_BIND -".to_string(),
                "mount - /r/sys/fs/cgroup - MS_RDONLY | MS_NOSUID | MS_REMOUNT | MS_BIND -"
                    .to_string(),
            ]
        );
    }
}
