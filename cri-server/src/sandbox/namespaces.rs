//! Pinned pod namespaces.
//!
//! A pod without a pause process still needs its network, IPC and UTS namespaces to exist
//! between containers. A short-lived thread `unshare(2)`s them (net, ipc and uts are
//! per-thread, so berthd itself never changes namespace), bind-mounts
//! `/proc/thread-self/ns/<kind>` onto an empty file `<state>/pods/<id>/ns/<kind>` (the
//! mount keeps the namespace alive after the thread is gone, as `ip netns add` does), sets
//! the pod hostname and the pod's namespaced sysctls while it is inside, then exits. The
//! thread is a plain OS thread, never a pool thread: a thread in other namespaces must not
//! go back to run other work.
//!
//! Unpinning is a lazy unmount and removal of the files; it is idempotent.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::errors::RuntimeError;

/// A namespace kind berth pins for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNamespace {
    Net,
    Ipc,
    Uts,
}

impl PodNamespace {
    /// The name under `/proc/<pid>/ns/` and of the pinned file.
    pub fn name(self) -> &'static str {
        match self {
            PodNamespace::Net => "net",
            PodNamespace::Ipc => "ipc",
            PodNamespace::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            PodNamespace::Net => CloneFlags::CLONE_NEWNET,
            PodNamespace::Ipc => CloneFlags::CLONE_NEWIPC,
            PodNamespace::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// What to set inside the new namespaces before they are pinned.
#[derive(Debug, Clone, Default)]
pub struct NamespaceSetup {
    /// Set in the new UTS namespace (ignored without it).
    pub hostname: Option<String>,
    /// `(path under /proc/sys, value)`, already validated against the pod's namespaces.
    pub sysctls: Vec<(String, String)>,
}

/// Creates new namespaces of `kinds`, pins them as `<ns_dir>/<kind>`, and applies `setup`
/// inside them. On failure nothing stays pinned. Blocking (run it on the blocking pool).
pub fn pin_namespaces(ns_dir: &Path, kinds: &[PodNamespace], setup: &NamespaceSetup) -> Result<Vec<PathBuf>, RuntimeError> {
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(ns_dir).map_err(|e| RuntimeError::internal_ctx(format!("creating {}", ns_dir.display()), e))?;
    let ns_dir = ns_dir.to_path_buf();
    let kinds = kinds.to_vec();
    let setup = setup.clone();
    let thread = std::thread::Builder::new()
        .name("berth-pin-ns".into())
        .spawn(move || pin_in_this_thread(&ns_dir, &kinds, &setup))
        .map_err(|e| RuntimeError::internal_ctx("starting the namespace thread", e))?;
    thread.join().map_err(|_| RuntimeError::internal("the namespace thread panicked"))?
}

/// Runs in a dedicated thread that exits afterwards.
fn pin_in_this_thread(ns_dir: &Path, kinds: &[PodNamespace], setup: &NamespaceSetup) -> Result<Vec<PathBuf>, RuntimeError> {
    let flags = kinds.iter().fold(CloneFlags::empty(), |flags, kind| flags | kind.clone_flag());
    unshare(flags).map_err(|e| RuntimeError::internal_ctx(format!("unshare({flags:?})"), e))?;
    let mut pinned = Vec::new();
    let result = (|| {
        for kind in kinds {
            let target = ns_dir.join(kind.name());
            File::create(&target).map_err(|e| RuntimeError::internal_ctx(format!("creating {}", target.display()), e))?;
            let source = format!("/proc/thread-self/ns/{}", kind.name());
            mount(Some(source.as_str()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| RuntimeError::internal_ctx(format!("pinning {source} at {}", target.display()), e))?;
            pinned.push(target);
        }
        if kinds.contains(&PodNamespace::Uts) {
            if let Some(hostname) = setup.hostname.as_deref().filter(|h| !h.is_empty()) {
                nix::unistd::sethostname(hostname)
                    .map_err(|e| RuntimeError::InvalidArgument(format!("setting the pod hostname {hostname:?}: {e}")))?;
            }
        }
        for (path, value) in &setup.sysctls {
            write_sysctl(path, value)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(pinned),
        Err(err) => {
            for target in &pinned {
                unpin(target);
            }
            Err(err)
        }
    }
}

fn write_sysctl(proc_path: &str, value: &str) -> Result<(), RuntimeError> {
    let file = Path::new("/proc/sys").join(proc_path);
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).map_err(|e| {
        let name = proc_path.replace('/', ".");
        if e.kind() == std::io::ErrorKind::NotFound {
            RuntimeError::InvalidArgument(format!("sysctl {name} does not exist on this node"))
        } else {
            RuntimeError::internal_ctx(format!("opening {}", file.display()), e)
        }
    })?;
    f.write_all(value.as_bytes())
        .map_err(|e| RuntimeError::InvalidArgument(format!("setting sysctl {} to {value:?}: {e}", proc_path.replace('/', "."))))
}

/// Unmounts (lazily: a process may still have the file open) and removes a pinned
/// namespace file. Idempotent; logs what it cannot do.
pub fn unpin(target: &Path) {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(err) => tracing::warn!(path = %target.display(), error = %err, "could not unmount pinned namespace"),
    }
    if let Err(err) = std::fs::remove_file(target) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %target.display(), error = %err, "could not remove pinned namespace file");
        }
    }
}

/// Unpins every namespace under `ns_dir` and removes the directory. Idempotent.
pub fn unpin_all(ns_dir: &Path) {
    for kind in [PodNamespace::Net, PodNamespace::Ipc, PodNamespace::Uts] {
        unpin(&ns_dir.join(kind.name()));
    }
    if let Err(err) = std::fs::remove_dir(ns_dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %ns_dir.display(), error = %err, "could not remove the namespace dir");
        }
    }
}

/// True when `path` is an nsfs mount (a pinned namespace that is alive).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Brings `lo` up inside the network namespace pinned at `netns`. Blocking.
pub fn bring_loopback_up(netns: &Path) -> Result<(), RuntimeError> {
    let netns = netns.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("berth-netns-lo".into())
        .spawn(move || -> Result<(), RuntimeError> {
            let ns = File::open(&netns).map_err(|e| RuntimeError::internal_ctx(format!("opening {}", netns.display()), e))?;
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| RuntimeError::internal_ctx(format!("entering {}", netns.display()), e))?;
            set_link_up("lo").map_err(|e| RuntimeError::internal_ctx("bringing lo up in the pod network namespace", e))
        })
        .map_err(|e| RuntimeError::internal_ctx("starting the network namespace thread", e))?;
    thread.join().map_err(|_| RuntimeError::internal("the network namespace thread panicked"))?
}

/// A datagram socket for interface ioctls in the current thread's network namespace.
fn ioctl_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket() returns a new fd or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid fd nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().take(libc::IFNAMSIZ - 1).zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req
}

/// The flags of interface `name` (SIOCGIFFLAGS) in the current thread's network namespace.
fn link_flags(name: &str) -> std::io::Result<libc::c_short> {
    use std::os::fd::AsRawFd;
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(name);
    // SAFETY: the ioctl reads and writes only `req`, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

/// Sets IFF_UP on interface `name` in the current thread's network namespace.
fn set_link_up(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = link_flags(name)?;
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(name);
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: the ioctl reads only `req`, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True when `lo` is up in the network namespace pinned at `netns` (for tests and status).
pub fn loopback_is_up_in(netns: &Path) -> Result<bool, RuntimeError> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || -> Result<bool, RuntimeError> {
        let ns = File::open(&netns).map_err(|e| RuntimeError::internal_ctx(format!("opening {}", netns.display()), e))?;
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| RuntimeError::internal_ctx(format!("entering {}", netns.display()), e))?;
        let flags = link_flags("lo").map_err(|e| RuntimeError::internal_ctx("reading lo's flags", e))?;
        Ok(flags & libc::IFF_UP as libc::c_short != 0)
    })
    .join()
    .map_err(|_| RuntimeError::internal("the network namespace thread panicked"))?
}
