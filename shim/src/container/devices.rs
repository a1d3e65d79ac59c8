//! /dev of the container: the default devices every container gets, the spec's devices, and
//! the usual symlinks. A device is made with mknod; where mknod is refused (a user namespace,
//! or a host without CAP_MKNOD) the host's device is bind-mounted instead, as runc does.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::error::{ContainerError, StepExt};
use super::mounts::secure_join;
use super::syscall::Syscall;

/// One device node to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNode {
    /// Absolute path inside the container ("/dev/null").
    pub path: PathBuf,
    /// S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: u32,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What every container gets (runc's and the OCI spec's list).
pub fn default_devices() -> Vec<DeviceNode> {
    let char_dev = |name: &str, major, minor| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: None,
        gid: None,
    };
    vec![
        char_dev("null", 1, 3),
        char_dev("zero", 1, 5),
        char_dev("full", 1, 7),
        char_dev("random", 1, 8),
        char_dev("urandom", 1, 9),
        char_dev("tty", 5, 0),
    ]
}

/// The spec's devices plus the defaults the spec does not override.
pub fn device_list(spec_devices: &[LinuxDevice]) -> Result<Vec<DeviceNode>, ContainerError> {
    let mut out: Vec<DeviceNode> = Vec::with_capacity(spec_devices.len() + 6);
    for device in spec_devices {
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(ContainerError::InvalidSpec(format!(
                    "device {}: type 'a' is for cgroup rules only",
                    device.path().display()
                )))
            }
        };
        if !device.path().is_absolute() {
            return Err(ContainerError::InvalidSpec(format!(
                "device path {} is not absolute",
                device.path().display()
            )));
        }
        out.push(DeviceNode {
            path: device.path().clone(),
            kind,
            major: device.major() as u64,
            minor: device.minor() as u64,
            mode: device.file_mode().unwrap_or(0o666) & 0o7777,
            uid: device.uid(),
            gid: device.gid(),
        });
    }
    for default in default_devices() {
        if !out.iter().any(|d| d.path == default.path) {
            out.push(default);
        }
    }
    Ok(out)
}

/// Create `devices` under `rootfs` (before pivot_root). `bind_instead`: skip mknod and bind the
/// host's node right away (known to be refused, e.g. in a user namespace).
pub fn create_devices(
    sys: &dyn Syscall,
    rootfs: &Path,
    devices: &[DeviceNode],
    bind_instead: bool,
) -> Result<(), ContainerError> {
    for device in devices {
        let target = secure_join(sys, rootfs, &device.path)?;
        let what = || format!("device {}", device.path.display());
        if let Some(parent) = target.parent() {
            sys.mkdir_all(parent, 0o755)
                .step(|| format!("{}: mkdir", what()))?;
        }
        if sys.file_kind(&target).is_some() {
            // An image may ship its own /dev entries; ours replace them (runc does the same).
            let _ = std::fs::remove_file(&target);
        }
        let made = if bind_instead {
            Err(Errno::EPERM)
        } else {
            sys.mknod(
                &target,
                device.kind | device.mode,
                nix::sys::stat::makedev(device.major, device.minor),
            )
        };
        match made {
            Ok(()) => {
                // mknod applies the umask; the spec's mode is exact.
                sys.chmod(&target, device.mode)
                    .step(|| format!("{}: chmod", what()))?;
                if device.uid.is_some() || device.gid.is_some() {
                    sys.chown(&target, device.uid, device.gid)
                        .step(|| format!("{}: chown", what()))?;
                }
            }
            Err(Errno::EPERM) => bind_host_device(sys, &target, &device.path).map_err(|e| {
                ContainerError::Step(format!("{}: mknod not permitted and {e}", what()))
            })?,
            Err(errno) => return Err(ContainerError::sys(format!("{}: mknod", what()), errno)),
        }
    }
    Ok(())
}

fn bind_host_device(sys: &dyn Syscall, target: &Path, host_path: &Path) -> Result<(), String> {
    if sys.file_kind(host_path).is_none() {
        return Err(format!("the host has no {}", host_path.display()));
    }
    sys.create_file(target)
        .map_err(|e| format!("creating the bind target: {e}"))?;
    sys.mount(Some(host_path), target, None, MsFlags::MS_BIND, None)
        .map_err(|e| format!("binding {}: {e}", host_path.display()))
}

/// /dev/fd, /dev/stdin... and /dev/ptmx -> pts/ptmx (the devpts instance of the container).
pub fn create_symlinks(
    sys: &dyn Syscall,
    rootfs: &Path,
    has_devpts: bool,
) -> Result<(), ContainerError> {
    let dev = secure_join(sys, rootfs, Path::new("/dev"))?;
    let mut links: Vec<(&str, &str)> = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if sys.file_kind(Path::new("/proc/kcore")).is_some() {
        links.push(("/proc/kcore", "core"));
    }
    if has_devpts {
        let ptmx = dev.join("ptmx");
        if sys.file_kind(&ptmx).is_some() {
            let _ = std::fs::remove_file(&ptmx);
        }
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        let link = dev.join(name);
        match sys.symlink(Path::new(target), &link) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(ContainerError::sys(format!("symlink /dev/{name}"), errno)),
        }
    }
    Ok(())
}

/// Whether /dev is the container's own (then devices are made in it) rather than a bind of
/// the host's /dev (a privileged pod's choice, left alone).
pub fn dev_is_bind_mounted(mounts: &[oci_spec::runtime::Mount]) -> bool {
    mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .any(|o| o == "bind" || o == "rbind"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::{FileKind, RecordingSyscall};
    use oci_spec::runtime::LinuxDeviceBuilder;

    #[test]
    fn spec_devices_override_defaults() {
        let fuse = LinuxDeviceBuilder::default()
            .path("/dev/fuse")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .file_mode(0o600u32)
            .build()
            .unwrap();
        let null = LinuxDeviceBuilder::default()
            .path("/dev/null")
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .file_mode(0o640u32)
            .build()
            .unwrap();
        let list = device_list(&[fuse, null]).unwrap();
        assert_eq!(list.len(), 7);
        assert_eq!(
            list.iter()
                .filter(|d| d.path == Path::new("/dev/null"))
                .count(),
            1
        );
        assert_eq!(list[1].mode, 0o640);
    }

    #[test]
    fn mknod_refused_falls_back_to_a_bind_of_the_host_device() {
        let sys = RecordingSyscall::with_files(&[("/dev/null", FileKind::Other)]);
        *sys.fail.borrow_mut() = Some(("mknod".into(), Errno::EPERM));
        let null = default_devices().remove(0);
        create_devices(&sys, Path::new("/r"), &[null], false).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], "mkdir_all /r/dev");
        assert!(
            calls[1].starts_with("mknod /r/dev/null 20666 259"),
            "{calls:?}"
        );
        assert_eq!(calls[2], "create_file /r/dev/null");
        assert_eq!(calls[3], "mount /dev/null /r/dev/null - MS_BIND -");
    }
}
