//! The container's mounts: the defaults every container has (containerd's set), the pod's
//! files, and the CRI bind mounts.
//!
//! - A CRI mount replaces a default or pod file mount at the same destination; a CRI mount
//!   at `/dev` also replaces every default mount under `/dev`.
//! - CRI mount sources must exist on the host (symlinks are resolved here, as containerd
//!   does, so the runtime binds what the kubelet meant even if the link changes later).
//! - Propagation: PRIVATE -> `rprivate`, HOST_TO_CONTAINER -> `rslave` (the source must
//!   be on a shared or slave mount), BIDIRECTIONAL -> `rshared` (the source must be on a
//!   shared mount). Either makes the rootfs `rslave` / `rshared` so events can travel.
//! - The list is sorted by destination depth (stable), so a parent is mounted before its
//!   children whatever order the kubelet sent.
//! - selinux_relabel is ignored (no SELinux on berth's hosts).

use std::path::{Path, PathBuf};

use k8s_cri::v1::{LinuxContainerSecurityContext, MountPropagation};
use oci_spec::runtime::Mount;

use super::process::clean_absolute;
use super::{ContainerSpecInput, PodNamespaceModes, SpecError};

/// Mounts plus the rootfs propagation they need (`linux.rootfsPropagation`).
#[derive(Debug, Clone, Default)]
pub struct BuiltMounts {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(PathBuf::from(source)))
        .set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(destination: &Path, source: &Path, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.to_path_buf())
        .set_typ(Some("bind".to_string()))
        .set_source(Some(source.to_path_buf()))
        .set_options(Some(options));
    m
}

/// The mounts every container gets. `/sys` and `/sys/fs/cgroup` are writable only for
/// privileged containers. sysfs can only be mounted by the owner of the network namespace,
/// so with the host network `/sys` is a bind of the host's.
pub fn default_mounts(privileged: bool, host_network: bool) -> Vec<Mount> {
    let ro = if privileged { "rw" } else { "ro" };
    let sys = if host_network {
        mount("/sys", "bind", "/sys", &["rbind", "rprivate", "nosuid", "noexec", "nodev", ro])
    } else {
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        sys,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", ro]),
    ]
}

/// The container's `/dev/shm`: the pod's shared one, the host's (host IPC), or its own tmpfs.
fn shm_mount(input: &ContainerSpecInput, host_ipc: bool) -> Mount {
    if let Some(pod_shm) = &input.pod_files.shm {
        return bind(Path::new("/dev/shm"), pod_shm, vec!["rbind".into(), "rprivate".into(), "rw".into()]);
    }
    if host_ipc {
        return bind(Path::new("/dev/shm"), Path::new("/dev/shm"), vec!["rbind".into(), "rprivate".into(), "rw".into()]);
    }
    mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])
}

pub fn build_mounts(
    input: &ContainerSpecInput,
    sc: &LinuxContainerSecurityContext,
    pod_modes: PodNamespaceModes,
) -> Result<BuiltMounts, SpecError> {
    let mut mountinfo = MountInfo::lazy();
    let mut rootfs_propagation: Option<String> = None;
    let mut cri: Vec<Mount> = Vec::new();
    for m in &input.config.mounts {
        let (converted, propagation) = cri_mount(m, &mut mountinfo)?;
        if cri.iter().any(|c| c.destination() == converted.destination()) {
            return Err(SpecError::invalid(format!("two mounts have container path {:?}", converted.destination())));
        }
        match propagation {
            MountPropagation::PropagationBidirectional => rootfs_propagation = Some("rshared".into()),
            MountPropagation::PropagationHostToContainer if rootfs_propagation.is_none() => {
                rootfs_propagation = Some("rslave".into())
            }
            _ => {}
        }
        cri.push(converted);
    }
    let taken = |dest: &Path| cri.iter().any(|c| c.destination() == dest);
    let cri_dev = taken(Path::new("/dev"));

    let mut mounts: Vec<Mount> = default_mounts(sc.privileged, pod_modes.host_network);
    mounts.push(shm_mount(input, pod_modes.host_ipc));
    mounts.retain(|m| !(taken(m.destination()) || (cri_dev && m.destination().starts_with("/dev"))));

    let access = if sc.readonly_rootfs { "ro" } else { "rw" };
    let pod_files = [
        ("/etc/hostname", &input.pod_files.hostname),
        ("/etc/hosts", &input.pod_files.hosts),
        ("/etc/resolv.conf", &input.pod_files.resolv_conf),
    ];
    for (dest, source) in pod_files {
        if let Some(source) = source {
            if !taken(Path::new(dest)) {
                mounts.push(bind(Path::new(dest), source, vec!["rbind".into(), "rprivate".into(), access.into()]));
            }
        }
    }
    mounts.extend(cri);
    // Stable: among equal depths the order above (defaults, pod files, CRI) is kept.
    mounts.sort_by_key(|m| m.destination().components().count());
    Ok(BuiltMounts { mounts, rootfs_propagation })
}

/// One CRI mount as an OCI bind mount.
fn cri_mount(m: &k8s_cri::v1::Mount, mountinfo: &mut MountInfo) -> Result<(Mount, MountPropagation), SpecError> {
    if m.container_path.is_empty() || !m.container_path.starts_with('/') {
        return Err(SpecError::invalid(format!("mount container_path {:?} is not an absolute path", m.container_path)));
    }
    if m.image.is_some() {
        return Err(SpecError::invalid(format!("mount at {:?}: image volumes are not supported", m.container_path)));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::invalid(format!("mount at {:?}: id-mapped mounts are not supported", m.container_path)));
    }
    if m.host_path.is_empty() || !m.host_path.starts_with('/') {
        return Err(SpecError::invalid(format!("mount host_path {:?} (for {:?}) is not an absolute path", m.host_path, m.container_path)));
    }
    let destination = clean_absolute(Path::new(&m.container_path));
    let source = std::fs::canonicalize(&m.host_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SpecError::MountSourceMissing { path: PathBuf::from(&m.host_path), container_path: m.container_path.clone() },
        _ => SpecError::Io { context: "resolving mount source", path: PathBuf::from(&m.host_path), source: e },
    })?;
    let propagation = MountPropagation::try_from(m.propagation)
        .map_err(|_| SpecError::invalid(format!("mount at {:?}: unknown propagation {}", m.container_path, m.propagation)))?;
    let propagation_option = match propagation {
        MountPropagation::PropagationPrivate => "rprivate",
        MountPropagation::PropagationHostToContainer => {
            let (mount_point, optional) = mount_of(mountinfo.get()?, &source).ok_or_else(|| SpecError::Internal(format!("no mount found for {source:?}")))?;
            if !optional.iter().any(|o| o.starts_with("shared:") || o.starts_with("master:")) {
                return Err(SpecError::invalid(format!(
                    "mount at {:?}: host path {source:?} is on mount {mount_point:?}, which is neither a shared nor a slave mount (needed for HostToContainer propagation)",
                    m.container_path
                )));
            }
            "rslave"
        }
        MountPropagation::PropagationBidirectional => {
            let (mount_point, optional) = mount_of(mountinfo.get()?, &source).ok_or_else(|| SpecError::Internal(format!("no mount found for {source:?}")))?;
            if !optional.iter().any(|o| o.starts_with("shared:")) {
                return Err(SpecError::invalid(format!(
                    "mount at {:?}: host path {source:?} is on mount {mount_point:?}, which is not a shared mount (needed for Bidirectional propagation)",
                    m.container_path
                )));
            }
            "rshared"
        }
    };
    let mut options = vec!["rbind".to_string(), propagation_option.to_string(), if m.readonly { "ro" } else { "rw" }.to_string()];
    if m.recursive_read_only {
        if !m.readonly {
            return Err(SpecError::invalid(format!("mount at {:?}: recursive_read_only needs readonly", m.container_path)));
        }
        if propagation != MountPropagation::PropagationPrivate {
            return Err(SpecError::invalid(format!("mount at {:?}: recursive_read_only needs private propagation", m.container_path)));
        }
        options.push("rro".to_string());
    }
    Ok((bind(&destination, &source, options), propagation))
}

/// `/proc/self/mountinfo`, read only when a propagation check needs it.
struct MountInfo {
    entries: Option<Vec<MountInfoEntry>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfoEntry {
    pub mount_point: PathBuf,
    /// Optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub optional: Vec<String>,
}

impl MountInfo {
    fn lazy() -> Self {
        MountInfo { entries: None }
    }

    fn get(&mut self) -> Result<&[MountInfoEntry], SpecError> {
        if self.entries.is_none() {
            let text = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| SpecError::Io { context: "reading", path: "/proc/self/mountinfo".into(), source: e })?;
            self.entries = Some(parse_mountinfo(&text));
        }
        Ok(self.entries.as_deref().unwrap_or_default())
    }
}

/// The mount `path` lives on: the longest mount point that is a path prefix of it (of equal
/// ones the last listed wins, being mounted on top). Returns its mount point and optional
/// fields.
pub fn mount_of<'a>(entries: &'a [MountInfoEntry], path: &Path) -> Option<(&'a Path, &'a [String])> {
    let mut best: Option<&MountInfoEntry> = None;
    for e in entries {
        if path.starts_with(&e.mount_point) && best.is_none_or(|b| e.mount_point.components().count() >= b.mount_point.components().count()) {
            best = Some(e);
        }
    }
    best.map(|e| (e.mount_point.as_path(), e.optional.as_slice()))
}

/// Parses mountinfo lines: `id parent maj:min root mount_point options [optional...] - fstype source super`.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfoEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 7 {
                return None;
            }
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountInfoEntry {
                mount_point: PathBuf::from(unescape_octal(fields[4])),
                optional: fields[6..sep].iter().map(|s| s.to_string()).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerConfig, Mount as CriMount};

    fn cri(container: &str, host: &str, readonly: bool, propagation: MountPropagation) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.into(),
            readonly,
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    fn input_with(mounts: Vec<CriMount>) -> ContainerSpecInput {
        ContainerSpecInput {
            config: ContainerConfig { mounts, ..Default::default() },
            pod_files: super::super::PodFiles {
                hostname: Some("/pod/hostname".into()),
                hosts: Some("/pod/hosts".into()),
                resolv_conf: Some("/pod/resolv.conf".into()),
                shm: None,
            },
            ..Default::default()
        }
    }

    const POD: PodNamespaceModes = PodNamespaceModes { host_network: false, host_ipc: false, host_pid: false };

    fn dests(b: &BuiltMounts) -> Vec<String> {
        b.mounts.iter().map(|m| m.destination().display().to_string()).collect()
    }

    fn find<'a>(b: &'a BuiltMounts, dest: &str) -> &'a Mount {
        b.mounts.iter().find(|m| m.destination() == Path::new(dest)).unwrap_or_else(|| panic!("{dest} missing"))
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn defaults_and_pod_files() {
        let b = build_mounts(&input_with(vec![]), &LinuxContainerSecurityContext::default(), POD).unwrap();
        assert_eq!(
            dests(&b),
            vec!["/proc", "/dev", "/sys", "/dev/pts", "/dev/mqueue", "/dev/shm", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/sys/fs/cgroup"]
        );
        assert!(opts(find(&b, "/sys")).contains(&"ro".to_string()));
        assert!(opts(find(&b, "/sys/fs/cgroup")).contains(&"ro".to_string()));
        assert_eq!(find(&b, "/etc/hosts").source().as_deref(), Some(Path::new("/pod/hosts")));
        assert_eq!(opts(find(&b, "/etc/hosts")), vec!["rbind", "rprivate", "rw"]);
        assert_eq!(find(&b, "/dev/shm").typ().as_deref(), Some("tmpfs"));
        assert_eq!(b.rootfs_propagation, None);

        let privileged = LinuxContainerSecurityContext { privileged: true, readonly_rootfs: true, ..Default::default() };
        let b = build_mounts(&input_with(vec![]), &privileged, POD).unwrap();
        assert!(opts(find(&b, "/sys")).contains(&"rw".to_string()));
        assert!(opts(find(&b, "/sys/fs/cgroup")).contains(&"rw".to_string()));
        assert_eq!(opts(find(&b, "/etc/resolv.conf")), vec!["rbind", "rprivate", "ro"]);
    }

    #[test]
    fn host_namespaces_change_sys_and_shm() {
        let host = PodNamespaceModes { host_network: true, host_ipc: true, host_pid: false };
        let b = build_mounts(&input_with(vec![]), &LinuxContainerSecurityContext::default(), host).unwrap();
        let sys = find(&b, "/sys");
        assert_eq!((sys.typ().as_deref(), sys.source().as_deref()), (Some("bind"), Some(Path::new("/sys"))));
        assert!(opts(sys).contains(&"ro".to_string()));
        let shm = find(&b, "/dev/shm");
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));

        let mut inp = input_with(vec![]);
        inp.pod_files.shm = Some("/run/berth/pods/p/shm".into());
        let b = build_mounts(&inp, &LinuxContainerSecurityContext::default(), POD).unwrap();
        assert_eq!(find(&b, "/dev/shm").source().as_deref(), Some(Path::new("/run/berth/pods/p/shm")));
    }

    #[test]
    fn cri_mounts_override_and_sort() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let sub = tmp.path().join("sub");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&sub).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let hosts = tmp.path().join("myhosts");
        std::fs::write(&hosts, "").unwrap();
        let b = build_mounts(
            &input_with(vec![
                cri("/data/sub", sub.to_str().unwrap(), true, MountPropagation::PropagationPrivate),
                cri("/data/", link.to_str().unwrap(), false, MountPropagation::PropagationPrivate),
                cri("/etc/hosts", hosts.to_str().unwrap(), true, MountPropagation::PropagationPrivate),
                cri("/dev/shm", data.to_str().unwrap(), false, MountPropagation::PropagationPrivate),
            ]),
            &LinuxContainerSecurityContext::default(),
            POD,
        )
        .unwrap();
        let d = dests(&b);
        let pos = |p: &str| d.iter().position(|x| x == p).unwrap_or_else(|| panic!("{p} missing from {d:?}"));
        assert!(pos("/data") < pos("/data/sub"), "{d:?}");
        assert_eq!(d.iter().filter(|x| *x == "/etc/hosts").count(), 1);
        assert_eq!(d.iter().filter(|x| *x == "/dev/shm").count(), 1);
        // The symlinked source is resolved.
        assert_eq!(find(&b, "/data").source().as_deref(), Some(data.as_path()));
        assert_eq!(opts(find(&b, "/data")), vec!["rbind", "rprivate", "rw"]);
        assert_eq!(opts(find(&b, "/data/sub")), vec!["rbind", "rprivate", "ro"]);
        assert_eq!(find(&b, "/etc/hosts").source().as_deref(), Some(hosts.as_path()));
        assert_eq!(find(&b, "/dev/shm").typ().as_deref(), Some("bind"));
        // Every mount comes after the mount of its parent directory.
        for (i, m) in b.mounts.iter().enumerate() {
            for later in &b.mounts[i + 1..] {
                assert!(!m.destination().starts_with(later.destination()) || m.destination() == later.destination(), "{d:?}");
            }
        }
    }

    #[test]
    fn a_cri_dev_mount_replaces_all_of_dev() {
        let b = build_mounts(
            &input_with(vec![cri("/dev", "/dev", false, MountPropagation::PropagationPrivate)]),
            &LinuxContainerSecurityContext::default(),
            POD,
        )
        .unwrap();
        let d = dests(&b);
        assert_eq!(d.iter().filter(|x| x.starts_with("/dev")).collect::<Vec<_>>(), vec!["/dev"]);
    }

    #[test]
    fn bad_cri_mounts() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = tmp.path().to_str().unwrap().to_string();
        let missing = tmp.path().join("nope").to_str().unwrap().to_string();
        let err = build_mounts(&input_with(vec![cri("/x", &missing, false, MountPropagation::PropagationPrivate)]), &Default::default(), POD).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("does not exist") && err.to_string().contains("nope"), "{err}");

        let mut rro_rw = cri("/x", &ok, false, MountPropagation::PropagationPrivate);
        rro_rw.recursive_read_only = true;
        let mut image = cri("/x", &ok, false, MountPropagation::PropagationPrivate);
        image.image = Some(Default::default());
        for m in [
            cri("relative", &ok, false, MountPropagation::PropagationPrivate),
            cri("", &ok, false, MountPropagation::PropagationPrivate),
            cri("/x", "relative", false, MountPropagation::PropagationPrivate),
            CriMount { propagation: 7, ..cri("/x", &ok, false, MountPropagation::PropagationPrivate) },
            rro_rw,
            image,
        ] {
            let err = build_mounts(&input_with(vec![m.clone()]), &Default::default(), POD).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{m:?}: {err}");
        }
        let dup = vec![cri("/x", &ok, false, MountPropagation::PropagationPrivate), cri("/x/", &ok, true, MountPropagation::PropagationPrivate)];
        assert_eq!(build_mounts(&input_with(dup), &Default::default(), POD).unwrap_err().code(), tonic::Code::InvalidArgument);

        let mut rro = cri("/x", &ok, true, MountPropagation::PropagationPrivate);
        rro.recursive_read_only = true;
        let b = build_mounts(&input_with(vec![rro]), &Default::default(), POD).unwrap();
        assert_eq!(opts(find(&b, "/x")), vec!["rbind", "rprivate", "ro", "rro"]);
    }

    #[test]
    fn mountinfo_parsing_and_lookup() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:22 / /mnt/shared rw shared:5 - tmpfs tmpfs rw
25 22 0:23 / /mnt/slave rw master:5 - tmpfs tmpfs rw
26 22 0:24 / /mnt/private rw - tmpfs tmpfs rw
27 22 0:25 / /mnt/with\\040space rw shared:9 - tmpfs tmpfs rw
28 24 0:26 / /mnt/shared rw - tmpfs tmpfs rw
";
        let entries = parse_mountinfo(text);
        assert_eq!(entries.len(), 7);
        assert_eq!(entries[5].mount_point, PathBuf::from("/mnt/with space"));
        let (mp, opt) = mount_of(&entries, Path::new("/mnt/slave/a/b")).unwrap();
        assert_eq!((mp, opt), (Path::new("/mnt/slave"), &["master:5".to_string()][..]));
        let (mp, opt) = mount_of(&entries, Path::new("/var/lib")).unwrap();
        assert_eq!((mp, opt), (Path::new("/"), &["shared:1".to_string()][..]));
        // Over-mounted: the later, private one counts.
        let (_, opt) = mount_of(&entries, Path::new("/mnt/shared/x")).unwrap();
        assert!(opt.is_empty());
        // Prefix by component, not by string.
        let (mp, _) = mount_of(&entries, Path::new("/mnt/privateer")).unwrap();
        assert_eq!(mp, Path::new("/"));
    }

    #[test]
    fn propagation_needs_a_matching_host_mount() {
        // The test's temp dir lives on whatever mount /tmp is; read its real propagation and
        // check both outcomes are decided by it.
        let tmp = tempfile::tempdir().unwrap();
        let source = std::fs::canonicalize(tmp.path()).unwrap();
        let entries = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        let (_, optional) = mount_of(&entries, &source).unwrap();
        let shared = optional.iter().any(|o| o.starts_with("shared:"));
        let slave_or_shared = shared || optional.iter().any(|o| o.starts_with("master:"));

        let host = source.to_str().unwrap();
        let b = build_mounts(&input_with(vec![cri("/b", host, false, MountPropagation::PropagationBidirectional)]), &Default::default(), POD);
        assert_eq!(b.is_ok(), shared, "{b:?}");
        if let Ok(b) = b {
            assert_eq!(b.rootfs_propagation.as_deref(), Some("rshared"));
            assert_eq!(opts(find(&b, "/b")), vec!["rbind", "rshared", "rw"]);
        } else if let Err(e) = b {
            assert!(e.to_string().contains("not a shared mount"), "{e}");
        }
        let b = build_mounts(&input_with(vec![cri("/s", host, true, MountPropagation::PropagationHostToContainer)]), &Default::default(), POD);
        assert_eq!(b.is_ok(), slave_or_shared);
        if let Ok(b) = b {
            assert_eq!(b.rootfs_propagation.as_deref(), Some("rslave"));
            assert_eq!(opts(find(&b, "/s")), vec!["rbind", "rslave", "ro"]);
        }
    }
}
