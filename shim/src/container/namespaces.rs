//! Which namespaces the container joins (a `path` in the spec: pod namespaces, a shared PID
//! namespace) and which it gets new. The PID namespace is special: it applies to children
//! only, so it is entered by the intermediate process before it forks the container's
//! process; every other one is entered by that process itself, after it was placed in its
//! cgroup (a new cgroup namespace must be rooted at the container's cgroup).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::error::{ContainerError, StepExt};
use super::syscall::Syscall;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// The caller's (no pid entry in the spec).
    Inherit,
    New,
    Join(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePlan {
    pub pid: PidNamespace,
    /// Joined by setns, mount namespace last.
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// Made by unshare (never CLONE_NEWPID, see `pid`).
    pub new: CloneFlags,
}

impl NamespacePlan {
    pub fn has_new(&self, flag: CloneFlags) -> bool {
        self.new.contains(flag)
    }

    /// A mount namespace of its own (new or joined): needed to change the root.
    pub fn has_mount_namespace(&self) -> bool {
        self.new.contains(CloneFlags::CLONE_NEWNS)
            || self
                .join
                .iter()
                .any(|(flag, _)| *flag == CloneFlags::CLONE_NEWNS)
    }
}

pub fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name under /proc/<pid>/ns/.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

pub fn plan(namespaces: &[LinuxNamespace]) -> Result<NamespacePlan, ContainerError> {
    let mut out = NamespacePlan {
        pid: PidNamespace::Inherit,
        join: Vec::new(),
        new: CloneFlags::empty(),
    };
    let mut mount_join = None;
    for ns in namespaces {
        let typ = ns.typ();
        if matches!(typ, LinuxNamespaceType::User | LinuxNamespaceType::Time) {
            return Err(ContainerError::InvalidSpec(format!(
                "{} namespaces are not supported by the built-in runtime",
                proc_name(typ)
            )));
        }
        let flag = clone_flag(typ);
        let seen = out.new.contains(flag)
            || out.join.iter().any(|(f, _)| *f == flag)
            || mount_join.is_some() && flag == CloneFlags::CLONE_NEWNS;
        if seen || (typ == LinuxNamespaceType::Pid && out.pid != PidNamespace::Inherit) {
            return Err(ContainerError::InvalidSpec(format!(
                "the {} namespace is listed twice",
                proc_name(typ)
            )));
        }
        match (typ, ns.path()) {
            (LinuxNamespaceType::Pid, Some(path)) => out.pid = PidNamespace::Join(path.clone()),
            (LinuxNamespaceType::Pid, None) => out.pid = PidNamespace::New,
            (LinuxNamespaceType::Mount, Some(path)) => mount_join = Some(path.clone()),
            (_, Some(path)) => out.join.push((flag, path.clone())),
            (_, None) => out.new |= flag,
        }
    }
    if let Some(path) = mount_join {
        out.join.push((CloneFlags::CLONE_NEWNS, path));
    }
    Ok(out)
}

/// The plan for a process exec'd into a running container: join all of its namespaces.
pub fn plan_exec(
    container_pid: i32,
    namespaces: &[LinuxNamespace],
) -> Result<NamespacePlan, ContainerError> {
    let mut joined: Vec<LinuxNamespace> = Vec::with_capacity(namespaces.len());
    for ns in namespaces {
        let mut entry = ns.clone();
        entry.set_path(Some(PathBuf::from(format!(
            "/proc/{container_pid}/ns/{}",
            proc_name(ns.typ())
        ))));
        joined.push(entry);
    }
    plan(&joined)
}

/// The namespace files, opened before anything is entered (after a mount namespace is
/// joined, host paths are gone).
pub struct OpenedNamespaces {
    pub pid: Option<OwnedFd>,
    pub join: Vec<(CloneFlags, OwnedFd)>,
}

pub fn open(plan: &NamespacePlan) -> Result<OpenedNamespaces, ContainerError> {
    let open_ns = |flag: CloneFlags, path: &Path| {
        nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).step(|| {
            format!(
                "opening the {} namespace {}",
                flag_name(flag),
                path.display()
            )
        })
    };
    let pid = match &plan.pid {
        PidNamespace::Join(path) => Some(open_ns(CloneFlags::CLONE_NEWPID, path)?),
        _ => None,
    };
    let mut join = Vec::with_capacity(plan.join.len());
    for (flag, path) in &plan.join {
        join.push((*flag, open_ns(*flag, path)?));
    }
    Ok(OpenedNamespaces { pid, join })
}

/// In the intermediate process: the PID namespace its next child will be in.
pub fn enter_pid(
    sys: &dyn Syscall,
    plan: &NamespacePlan,
    opened: &OpenedNamespaces,
) -> Result<(), ContainerError> {
    match (&plan.pid, &opened.pid) {
        (PidNamespace::Join(path), Some(fd)) => sys
            .setns(fd.as_fd(), CloneFlags::CLONE_NEWPID)
            .step(|| format!("joining the pid namespace {}", path.display())),
        (PidNamespace::New, _) => sys
            .unshare(CloneFlags::CLONE_NEWPID)
            .step(|| "creating a pid namespace".into()),
        _ => Ok(()),
    }
}

/// In the container's process: join the given namespaces, then make the new ones.
pub fn enter_others(
    sys: &dyn Syscall,
    plan: &NamespacePlan,
    opened: &OpenedNamespaces,
) -> Result<(), ContainerError> {
    for ((flag, fd), (_, path)) in opened.join.iter().zip(&plan.join) {
        sys.setns(fd.as_fd(), *flag).step(|| {
            format!(
                "joining the {} namespace {}",
                flag_name(*flag),
                path.display()
            )
        })?;
    }
    if !plan.new.is_empty() {
        sys.unshare(plan.new)
            .step(|| format!("creating namespaces ({})", flag_names(plan.new)))?;
    }
    Ok(())
}

fn flag_name(flag: CloneFlags) -> &'static str {
    [
        (CloneFlags::CLONE_NEWNS, "mnt"),
        (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWPID, "pid"),
        (CloneFlags::CLONE_NEWNET, "net"),
    ]
    .iter()
    .find(|(f, _)| *f == flag)
    .map_or("?", |(_, name)| name)
}

fn flag_names(flags: CloneFlags) -> String {
    let names: Vec<&str> = flags.iter().map(flag_name).collect();
    names.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut n = LinuxNamespace::default();
        n.set_typ(typ).set_path(path.map(PathBuf::from));
        n
    }

    #[test]
    fn joined_and_new_namespaces_are_split_with_mount_last() {
        let got = plan(&[
            ns(LinuxNamespaceType::Pid, Some("/proc/7/ns/pid")),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/run/p/ns/net")),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Ipc, Some("/run/p/ns/ipc")),
        ])
        .unwrap();
        assert_eq!(got.pid, PidNamespace::Join("/proc/7/ns/pid".into()));
        assert_eq!(got.new, CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS);
        assert_eq!(
            got.join
                .iter()
                .map(|(f, _)| flag_name(*f))
                .collect::<Vec<_>>(),
            vec!["net", "ipc"]
        );
        assert!(got.has_mount_namespace());

        let exec = plan_exec(
            42,
            &[
                ns(LinuxNamespaceType::Mount, None),
                ns(LinuxNamespaceType::Pid, None),
                ns(LinuxNamespaceType::Network, None),
            ],
        )
        .unwrap();
        assert_eq!(exec.pid, PidNamespace::Join("/proc/42/ns/pid".into()));
        assert_eq!(
            exec.join,
            vec![
                (CloneFlags::CLONE_NEWNET, "/proc/42/ns/net".into()),
                (CloneFlags::CLONE_NEWNS, "/proc/42/ns/mnt".into())
            ]
        );
        assert!(exec.new.is_empty());
    }

    #[test]
    fn user_namespaces_and_duplicates_are_refused() {
        assert!(plan(&[ns(LinuxNamespaceType::User, None)])
            .unwrap_err()
            .to_string()
            .contains("user namespaces are not supported"));
        assert!(plan(&[
            ns(LinuxNamespaceType::Network, None),
            ns(LinuxNamespaceType::Network, Some("/x"))
        ])
        .is_err());
    }

    #[test]
    fn a_missing_namespace_file_names_the_path() {
        let p = plan(&[ns(LinuxNamespaceType::Network, Some("/nonexistent/ns/net"))]).unwrap();
        let err = open(&p).err().unwrap().to_string();
        assert!(
            err.starts_with("opening the net namespace /nonexistent/ns/net: ENOENT"),
            "{err}"
        );
    }
}
