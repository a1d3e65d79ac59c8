//! Device nodes in the container (`linux.devices`) and the device cgroup rules
//! (`linux.resources.devices`).
//!
//! Every container starts from "deny everything" plus the devices any program expects
//! (null, zero, full, random, urandom, tty, console, ptmx, /dev/pts/*) and mknod of any
//! char/block node (creating a node is harmless when opening it is denied). CRI devices
//! are stat'ed on the host (a directory adds every device node under it) and allowed with
//! their permissions. Privileged containers may open every device, and by default get the
//! host's device nodes too (containerd's `WithHostDevices`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1::ContainerConfig;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::process::clean_absolute;
use super::SpecError;

/// (path, type, major, minor): device nodes every container has.
const DEFAULT_DEVICES: [(&str, LinuxDeviceType, i64, i64); 6] = [
    ("/dev/null", LinuxDeviceType::C, 1, 3),
    ("/dev/zero", LinuxDeviceType::C, 1, 5),
    ("/dev/full", LinuxDeviceType::C, 1, 7),
    ("/dev/random", LinuxDeviceType::C, 1, 8),
    ("/dev/urandom", LinuxDeviceType::C, 1, 9),
    ("/dev/tty", LinuxDeviceType::C, 5, 0),
];

fn rule(allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow).set_typ(Some(typ)).set_major(major).set_minor(minor).set_access(Some(access.to_string()));
    r
}

/// The device cgroup rules every container starts with. Privileged: allow all.
pub fn default_device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    if privileged {
        return vec![rule(true, A, None, None, "rwm")];
    }
    let mut rules = vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
    ];
    for (_, typ, major, minor) in DEFAULT_DEVICES {
        rules.push(rule(true, typ, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(true, C, Some(5), Some(1), "rwm")); // /dev/console
    rules.push(rule(true, C, Some(5), Some(2), "rwm")); // /dev/ptmx
    rules.push(rule(true, C, Some(136), None, "rwm")); // /dev/pts/*
    rules
}

fn device(path: &str, typ: LinuxDeviceType, major: i64, minor: i64, mode: u32, uid: u32, gid: u32) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(path))
        .set_typ(typ)
        .set_major(major)
        .set_minor(minor)
        .set_file_mode(Some(mode))
        .set_uid(Some(uid))
        .set_gid(Some(gid));
    d
}

/// `linux.devices` and the extra allow rules of a container.
pub fn container_devices(
    config: &ContainerConfig,
    privileged: bool,
    privileged_without_host_devices: bool,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut devices: Vec<LinuxDevice> =
        DEFAULT_DEVICES.iter().map(|(p, t, ma, mi)| device(p, *t, *ma, *mi, 0o666, 0, 0)).collect();
    let mut rules = Vec::new();
    if privileged && !privileged_without_host_devices {
        for d in host_devices(Path::new("/dev"), "/dev")? {
            push_device(&mut devices, d);
        }
    }
    for d in &config.devices {
        let permissions = validate_permissions(&d.permissions)?;
        if d.host_path.is_empty() {
            return Err(SpecError::invalid("a device has an empty host_path"));
        }
        let container_path = if d.container_path.is_empty() { d.host_path.as_str() } else { d.container_path.as_str() };
        if !container_path.starts_with('/') {
            return Err(SpecError::invalid(format!("device container_path {container_path:?} is not absolute")));
        }
        let container_path = clean_absolute(Path::new(container_path));
        let found = devices_from_path(Path::new(&d.host_path), &container_path)?;
        for dev in found {
            let mut r = LinuxDeviceCgroup::from(&dev);
            r.set_access(Some(permissions.clone()));
            rules.push(r);
            push_device(&mut devices, dev);
        }
    }
    Ok((devices, rules))
}

/// Adds a device, replacing one at the same container path.
fn push_device(devices: &mut Vec<LinuxDevice>, dev: LinuxDevice) {
    match devices.iter_mut().find(|d| d.path() == dev.path()) {
        Some(slot) => *slot = dev,
        None => devices.push(dev),
    }
}

/// `rwm` letters, each at most once; empty means all three (kubelet always sends some).
fn validate_permissions(perms: &str) -> Result<String, SpecError> {
    if perms.is_empty() {
        return Ok("rwm".to_string());
    }
    let mut seen = String::new();
    for c in perms.chars() {
        if !matches!(c, 'r' | 'w' | 'm') || seen.contains(c) {
            return Err(SpecError::invalid(format!("device permissions {perms:?} must be letters of \"rwm\"")));
        }
        seen.push(c);
    }
    Ok(seen)
}

/// The device at `host_path` (symlinks followed), or every device under it if it is a
/// directory, placed at `container_path` (and below it).
fn devices_from_path(host_path: &Path, container_path: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let meta = std::fs::metadata(host_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SpecError::invalid(format!("device {host_path:?} does not exist on the host"))
        } else {
            SpecError::Io { context: "inspecting device", path: host_path.to_path_buf(), source: e }
        }
    })?;
    if meta.is_dir() {
        let resolved = std::fs::canonicalize(host_path)
            .map_err(|e| SpecError::Io { context: "resolving device directory", path: host_path.to_path_buf(), source: e })?;
        return host_devices(&resolved, &container_path.to_string_lossy());
    }
    match device_from_metadata(&meta, &container_path.to_string_lossy()) {
        Some(d) => Ok(vec![d]),
        None => Err(SpecError::invalid(format!("{host_path:?} is not a character or block device"))),
    }
}

fn device_from_metadata(meta: &std::fs::Metadata, container_path: &str) -> Option<LinuxDevice> {
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(device(
        container_path,
        typ,
        libc::major(rdev) as i64,
        libc::minor(rdev) as i64,
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid(),
    ))
}

/// Device nodes under `dir` (recursively, symlinks not followed), mapped below
/// `container_dir`. Skips the per-container filesystems (/dev/pts, /dev/shm, /dev/mqueue)
/// and /dev/console, which the runtime provides itself.
pub fn host_devices(dir: &Path, container_dir: &str) -> Result<Vec<LinuxDevice>, SpecError> {
    const SKIP: [&str; 6] = ["pts", "shm", "mqueue", "fd", ".lxc", ".udev"];
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), container_dir.trim_end_matches('/').to_string())];
    while let Some((host, inside)) = stack.pop() {
        let entries = match std::fs::read_dir(&host) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %host.display(), error = %e, "cannot list device directory; skipping it");
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
            let target = format!("{inside}/{name}");
            if meta.is_dir() {
                if !SKIP.contains(&name.as_str()) {
                    stack.push((entry.path(), target));
                }
            } else if target != "/dev/console" {
                if let Some(d) = device_from_metadata(&meta, &target) {
                    out.push(d);
                }
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Device;

    fn dev(host: &str, container: &str, perms: &str) -> Device {
        Device { host_path: host.into(), container_path: container.into(), permissions: perms.into() }
    }

    #[test]
    fn default_rules_deny_first_then_allow_the_basics() {
        let rules = default_device_rules(false);
        assert!(!rules[0].allow() && rules[0].typ() == Some(LinuxDeviceType::A) && rules[0].access().as_deref() == Some("rwm"));
        let shown: Vec<String> = rules.iter().map(|r| format!("{} {r}", r.allow())).collect();
        for want in ["true c 1:3 rwm", "true c 1:9 rwm", "true c 5:0 rwm", "true c 5:2 rwm", "true c 136:* rwm", "true c *:* m", "true b *:* m"] {
            assert!(shown.contains(&want.to_string()), "{want} missing from {shown:?}");
        }
        let privileged = default_device_rules(true);
        assert_eq!(privileged.len(), 1);
        assert_eq!(format!("{} {}", privileged[0].allow(), privileged[0]), "true a *:* rwm");
    }

    #[test]
    fn cri_devices_are_stated_on_the_host() {
        let cfg = ContainerConfig { devices: vec![dev("/dev/null", "/dev/mynull", "rw"), dev("/dev/zero", "", "")], ..Default::default() };
        let (devices, rules) = container_devices(&cfg, false, false).unwrap();
        let mynull = devices.iter().find(|d| d.path() == Path::new("/dev/mynull")).unwrap();
        assert_eq!((mynull.typ(), mynull.major(), mynull.minor()), (LinuxDeviceType::C, 1, 3));
        assert_eq!(mynull.file_mode(), Some(0o666));
        assert_eq!(format!("{}", rules[0]), "c 1:3 rw");
        assert_eq!(format!("{}", rules[1]), "c 1:5 rwm");
        // /dev/zero replaced the default entry, not duplicated.
        assert_eq!(devices.iter().filter(|d| d.path() == Path::new("/dev/zero")).count(), 1);
    }

    #[test]
    fn bad_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        std::fs::write(&file, "").unwrap();
        for d in [
            dev("/dev/berth-no-such-device", "/dev/x", "rwm"),
            dev(file.to_str().unwrap(), "/dev/x", "rwm"),
            dev("/dev/null", "relative", "rwm"),
            dev("/dev/null", "/dev/x", "rwx"),
            dev("/dev/null", "/dev/x", "rr"),
            dev("", "/dev/x", "r"),
        ] {
            let err = container_devices(&ContainerConfig { devices: vec![d.clone()], ..Default::default() }, false, false).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{d:?}: {err}");
        }
    }

    #[test]
    fn a_directory_adds_its_devices() {
        // /dev/pts does not count (skipped), so use /dev itself through a symlinked path.
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev", tmp.path().join("devlink")).unwrap();
        let cfg = ContainerConfig { devices: vec![dev(tmp.path().join("devlink").to_str().unwrap(), "/hostdev", "r")], ..Default::default() };
        let (devices, rules) = container_devices(&cfg, false, false).unwrap();
        assert!(devices.iter().any(|d| d.path() == Path::new("/hostdev/null")), "{devices:?}");
        assert!(rules.iter().all(|r| r.access().as_deref() == Some("r")));
    }

    #[test]
    fn privileged_gets_host_devices_unless_configured_not_to() {
        let (devices, _) = container_devices(&ContainerConfig::default(), true, false).unwrap();
        assert!(devices.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!devices.iter().any(|d| d.path().starts_with("/dev/pts")));
        assert!(!devices.iter().any(|d| d.path() == Path::new("/dev/console")));
        assert_eq!(devices.iter().filter(|d| d.path() == Path::new("/dev/null")).count(), 1);
        let (devices, _) = container_devices(&ContainerConfig::default(), true, true).unwrap();
        assert_eq!(devices.len(), DEFAULT_DEVICES.len());
    }
}
