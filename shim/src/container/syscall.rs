//! The seam between the setup logic and the kernel. The steps (rootfs, mounts, devices,
//! namespaces, user, capabilities) call the kernel only through [`Syscall`], so their order
//! and arguments are unit-tested with [`RecordingSyscall`] without root; the container's
//! process uses [`LinuxSyscall`].

use std::ffi::CString;
#[cfg(test)]
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// What is at a path (not following a final symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Other,
}

pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    fn chdir(&self, path: &Path) -> Result<(), Errno>;
    /// Create a directory and its missing parents.
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), Errno>;
    /// Create an empty file if nothing is at `path` (a bind mount target for a file).
    fn create_file(&self, path: &Path) -> Result<(), Errno>;
    fn symlink(&self, target: &Path, link: &Path) -> Result<(), Errno>;
    fn mknod(&self, path: &Path, kind_and_mode: u32, dev: u64) -> Result<(), Errno>;
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno>;
    fn chmod(&self, path: &Path, mode: u32) -> Result<(), Errno>;
    /// What is at `path`; None when nothing is.
    fn file_kind(&self, path: &Path) -> Option<FileKind>;
    fn read_link(&self, path: &Path) -> Result<PathBuf, Errno>;
    fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Errno>;
    /// The flags of the mount at `path` that a bind remount must keep (ro, nosuid, nodev, noexec...).
    fn mount_flags(&self, path: &Path) -> Result<MsFlags, Errno>;
    fn sethostname(&self, name: &str) -> Result<(), Errno>;
    fn setdomainname(&self, name: &str) -> Result<(), Errno>;
    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> Result<(), Errno>;
    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno>;
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno>;
    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno>;
    fn setresgid(&self, gid: u32) -> Result<(), Errno>;
    fn setresuid(&self, uid: u32) -> Result<(), Errno>;
    fn set_keepcaps(&self, keep: bool) -> Result<(), Errno>;
    fn drop_bounding_cap(&self, cap: u32) -> Result<(), Errno>;
    /// capset of the effective, permitted and inheritable sets (bit masks).
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    fn clear_ambient_caps(&self) -> Result<(), Errno>;
    fn raise_ambient_cap(&self, cap: u32) -> Result<(), Errno>;
    fn set_no_new_privs(&self) -> Result<(), Errno>;
}

fn cpath(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// The real kernel.
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), Errno> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(io_errno)
    }

    fn create_file(&self, path: &Path) -> Result<(), Errno> {
        if self.file_kind(path).is_some() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent, 0o755)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
            .map_err(io_errno)
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<(), Errno> {
        std::os::unix::fs::symlink(target, link).map_err(io_errno)
    }

    fn mknod(&self, path: &Path, kind_and_mode: u32, dev: u64) -> Result<(), Errno> {
        let c = cpath(path)?;
        // SAFETY: c is a valid NUL-terminated path.
        Errno::result(unsafe { libc::mknod(c.as_ptr(), kind_and_mode, dev) }).map(drop)
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
        nix::unistd::chown(
            path,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
    }

    fn chmod(&self, path: &Path, mode: u32) -> Result<(), Errno> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_errno)
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        let kind = meta.file_type();
        Some(if kind.is_dir() {
            FileKind::Dir
        } else if kind.is_file() {
            FileKind::File
        } else if kind.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, Errno> {
        std::fs::read_link(path).map_err(io_errno)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Errno> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_errno)?;
        file.write_all(data).map_err(io_errno)
    }

    fn mount_flags(&self, path: &Path) -> Result<MsFlags, Errno> {
        use nix::sys::statvfs::FsFlags;
        let stat = nix::sys::statvfs::statvfs(path)?;
        let flags = stat.flags();
        let mut out = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if flags.contains(fs) {
                out |= ms;
            }
        }
        Ok(out)
    }

    fn sethostname(&self, name: &str) -> Result<(), Errno> {
        nix::unistd::sethostname(name)
    }

    fn setdomainname(&self, name: &str) -> Result<(), Errno> {
        // SAFETY: the pointer and length describe `name`'s bytes.
        Errno::result(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) }).map(drop)
    }

    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> Result<(), Errno> {
        nix::sched::setns(fd, nstype)
    }

    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno> {
        nix::sched::unshare(flags)
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: limit is a valid rlimit; resource is checked by the kernel.
        Errno::result(unsafe { libc::setrlimit(resource as _, &limit) }).map(drop)
    }

    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno> {
        // SAFETY: the pointer and length describe `gids`. The raw syscall (not glibc's
        // setgroups) changes only this thread, which is all this single-threaded process has.
        Errno::result(unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) })
            .map(drop)
    }

    fn setresgid(&self, gid: u32) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
    }

    fn setresuid(&self, uid: u32) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
    }

    fn set_keepcaps(&self, keep: bool) -> Result<(), Errno> {
        prctl(libc::PR_SET_KEEPCAPS, keep.into(), 0)
    }

    fn drop_bounding_cap(&self, cap: u32) -> Result<(), Errno> {
        prctl(libc::PR_CAPBSET_DROP, cap.into(), 0)
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let low = |v: u64| v as u32;
        let high = |v: u64| (v >> 32) as u32;
        let data = [
            Data {
                effective: low(effective),
                permitted: low(permitted),
                inheritable: low(inheritable),
            },
            Data {
                effective: high(effective),
                permitted: high(permitted),
                inheritable: high(inheritable),
            },
        ];
        // SAFETY: header and data are the v3 layouts the kernel expects (two data words).
        Errno::result(unsafe {
            libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr())
        })
        .map(drop)
    }

    fn clear_ambient_caps(&self) -> Result<(), Errno> {
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        )
    }

    fn raise_ambient_cap(&self, cap: u32) -> Result<(), Errno> {
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            cap.into(),
        )
    }

    fn set_no_new_privs(&self) -> Result<(), Errno> {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
    }
}

/// The prctl options used here take at most two integer arguments; the rest must be 0.
fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: integer arguments only; no pointer is passed or kept.
    Errno::result(unsafe {
        libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong)
    })
    .map(drop)
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// A fake kernel for unit tests: records every call as a line of text and answers
/// `file_kind` from a table (everything else succeeds).
#[cfg(test)]
#[derive(Default)]
pub struct RecordingSyscall {
    pub calls: std::cell::RefCell<Vec<String>>,
    /// Paths that exist (and what they are); everything else is missing.
    pub files: std::cell::RefCell<std::collections::HashMap<PathBuf, FileKind>>,
    /// A call whose line starts with this fails with the errno.
    pub fail: std::cell::RefCell<Option<(String, Errno)>>,
}

#[cfg(test)]
impl RecordingSyscall {
    pub fn with_files(files: &[(&str, FileKind)]) -> Self {
        let fake = RecordingSyscall::default();
        for (path, kind) in files {
            fake.files.borrow_mut().insert(PathBuf::from(path), *kind);
        }
        fake
    }

    fn record(&self, line: String) -> Result<(), Errno> {
        let failed = self
            .fail
            .borrow()
            .as_ref()
            .filter(|(prefix, _)| line.starts_with(prefix.as_str()))
            .map(|(_, errno)| *errno);
        self.calls.borrow_mut().push(line);
        match failed {
            Some(errno) => Err(errno),
            None => Ok(()),
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

/// "MS_BIND | MS_REC" rather than "MsFlags(MS_BIND | MS_REC)".
#[cfg(test)]
fn bits<T: std::fmt::Debug>(flags: T) -> String {
    let text = format!("{flags:?}");
    let inner = text
        .split_once('(')
        .map_or(text.as_str(), |(_, rest)| rest.trim_end_matches(')'));
    if inner == "0x0" {
        "(empty)".to_string()
    } else {
        inner.to_string()
    }
}

#[cfg(test)]
impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        self.record(format!(
            "mount {} {} {} {} {}",
            source.map_or("-".into(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("-"),
            bits(flags),
            data.unwrap_or("-")
        ))
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        self.record(format!("umount2 {} {}", target.display(), bits(flags)))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        self.record(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ))
    }
    fn chdir(&self, path: &Path) -> Result<(), Errno> {
        self.record(format!("chdir {}", path.display()))
    }
    fn mkdir_all(&self, path: &Path, _mode: u32) -> Result<(), Errno> {
        self.files
            .borrow_mut()
            .insert(path.to_path_buf(), FileKind::Dir);
        self.record(format!("mkdir_all {}", path.display()))
    }
    fn create_file(&self, path: &Path) -> Result<(), Errno> {
        self.files
            .borrow_mut()
            .entry(path.to_path_buf())
            .or_insert(FileKind::File);
        self.record(format!("create_file {}", path.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> Result<(), Errno> {
        self.record(format!("symlink {} {}", target.display(), link.display()))
    }
    fn mknod(&self, path: &Path, kind_and_mode: u32, dev: u64) -> Result<(), Errno> {
        self.record(format!("mknod {} {kind_and_mode:o} {dev}", path.display()))
    }
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
        self.record(format!("chown {} {uid:?} {gid:?}", path.display()))
    }
    fn chmod(&self, path: &Path, mode: u32) -> Result<(), Errno> {
        self.record(format!("chmod {} {mode:o}", path.display()))
    }
    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        self.files.borrow().get(path).copied()
    }
    fn read_link(&self, _path: &Path) -> Result<PathBuf, Errno> {
        Err(Errno::EINVAL)
    }
    fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Errno> {
        self.record(format!(
            "write {} {}",
            path.display(),
            String::from_utf8_lossy(data)
        ))
    }
    fn mount_flags(&self, _path: &Path) -> Result<MsFlags, Errno> {
        Ok(MsFlags::empty())
    }
    fn sethostname(&self, name: &str) -> Result<(), Errno> {
        self.record(format!("sethostname {name}"))
    }
    fn setdomainname(&self, name: &str) -> Result<(), Errno> {
        self.record(format!("setdomainname {name}"))
    }
    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> Result<(), Errno> {
        self.record(format!("setns {} {}", fd.as_raw_fd(), bits(nstype)))
    }
    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno> {
        self.record(format!("unshare {}", bits(flags)))
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        self.record(format!("setrlimit {resource} {soft} {hard}"))
    }
    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno> {
        self.record(format!("setgroups {gids:?}"))
    }
    fn setresgid(&self, gid: u32) -> Result<(), Errno> {
        self.record(format!("setresgid {gid}"))
    }
    fn setresuid(&self, uid: u32) -> Result<(), Errno> {
        self.record(format!("setresuid {uid}"))
    }
    fn set_keepcaps(&self, keep: bool) -> Result<(), Errno> {
        self.record(format!("keepcaps {keep}"))
    }
    fn drop_bounding_cap(&self, cap: u32) -> Result<(), Errno> {
        self.record(format!("capbset_drop {cap}"))
    }
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        self.record(format!(
            "capset {effective:x} {permitted:x} {inheritable:x}"
        ))
    }
    fn clear_ambient_caps(&self) -> Result<(), Errno> {
        self.record("ambient_clear".into())
    }
    fn raise_ambient_cap(&self, cap: u32) -> Result<(), Errno> {
        self.record(format!("ambient_raise {cap}"))
    }
    fn set_no_new_privs(&self) -> Result<(), Errno> {
        self.record("no_new_privs".into())
    }
}
