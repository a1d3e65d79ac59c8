//! Running code inside a network namespace.
//!
//! setns(CLONE_NEWNET) changes only the calling thread, so the work runs on a short-lived
//! thread of its own: the caller's thread (maybe a tokio worker of berthd) never changes
//! namespace, and nothing has to be switched back if the work fails half way. Sockets
//! (netlink included) stay in the namespace they were created in, so the usual pattern is
//! to create a netlink socket in there and use it from anywhere.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// statfs f_type of nsfs, the filesystem namespace files live on.
const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);

/// An open network namespace (the file keeps it alive while we use it).
#[derive(Debug)]
pub struct Netns {
    file: File,
}

impl Netns {
    /// Opens the namespace at `path` (a bind mount under /run/netns or /proc/<pid>/ns/net).
    /// A path that is not a namespace (e.g. the file left after the bind mount was
    /// removed) is `NotFound`: for a runtime that means "gone".
    pub fn open(path: &Path) -> io::Result<Netns> {
        let file = File::open(path)?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(io::Error::from)?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a network namespace (any more)", path.display()),
            ));
        }
        Ok(Netns { file })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `work` on a new thread that has entered this namespace and returns its result.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(self.file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                    Ok(work())
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(io::Error::other("thread in the network namespace panicked"))
                })
        })
    }
}

/// Writes a sysctl under /proc/sys (path relative to it, `/`-separated, e.g.
/// `net/ipv4/conf/cni0/route_localnet`) in the namespace of the calling thread.
pub fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = Path::new("/proc/sys").join(key);
    // Skip the write when it already holds the value: fewer writes, and read-only /proc/sys
    // (as in some containers) only fails when a change is really needed.
    if let Ok(current) = std::fs::read_to_string(&path) {
        if current.trim() == value {
            return Ok(());
        }
    }
    std::fs::write(&path, value)
}
