//! Reading a small file of an image's rootfs without ever leaving the rootfs.
//!
//! An image is untrusted: `/etc/passwd` may be a symlink to `/etc/shadow`, to
//! `../../../../etc/shadow` or to `/proc/self/root/...`. The file is opened with
//! `openat2(rootfs_fd, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel resolves
//! every symlink and `..` as if the rootfs were `/`, so it can only land inside the rootfs,
//! and `/proc` magic links are refused. The file must be a regular file (a FIFO or a device
//! would block or read the host's hardware) and is read up to a size cap.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::SpecError;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// /etc/passwd and /etc/group larger than this are not a container image's.
pub const MAX_FILE_SIZE: u64 = 8 << 20;

/// Reads `relative` (e.g. `etc/passwd`) inside `rootfs`. `Ok(None)` when the file does not
/// exist, is not a regular file, or its path cannot be resolved inside the rootfs (a
/// dangling or magic link): the image simply has no such file.
pub fn read_rootfs_file(rootfs: &Path, relative: &str) -> Result<Option<String>, SpecError> {
    let root = open_root(rootfs)?;
    let c_rel = CString::new(relative.trim_start_matches('/'))
        .map_err(|_| SpecError::Internal(format!("path {relative:?} contains a NUL byte")))?;
    let fd = match openat2(
        root.as_raw_fd(),
        &c_rel,
        libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)) => {
            tracing::debug!(rootfs = %rootfs.display(), file = relative, error = %e, "image file not readable inside the rootfs; treating it as absent");
            return Ok(None);
        }
        Err(e) => return Err(SpecError::Io { context: "opening the image's", path: rootfs.join(relative), source: e }),
    };
    let mut file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| SpecError::Io { context: "inspecting the image's", path: rootfs.join(relative), source: e })?;
    if !meta.file_type().is_file() {
        tracing::warn!(rootfs = %rootfs.display(), file = relative, "image file is not a regular file; ignoring it");
        return Ok(None);
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SpecError::Io { context: "reading the image's", path: rootfs.join(relative), source: e })?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(SpecError::invalid(format!("the image's /{relative} is larger than {MAX_FILE_SIZE} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn open_root(rootfs: &Path) -> Result<OwnedFd, SpecError> {
    let c = CString::new(rootfs.as_os_str().as_bytes())
        .map_err(|_| SpecError::Internal(format!("rootfs path {rootfs:?} contains a NUL byte")))?;
    // SAFETY: a valid C string; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SpecError::Io {
            context: "opening container rootfs",
            path: rootfs.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)`; the kernel resolves `path` with `dir` as the root.
fn openat2(dir: RawFd, path: &CString, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    // struct open_how from <linux/openat2.h>.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    let mut attempts = 0;
    loop {
        // SAFETY: valid pointers for the duration of the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_openat2, dir, path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
        };
        if rc >= 0 {
            // SAFETY: the kernel returned a new descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // EAGAIN: a concurrent rename on the filesystem; the kernel asks us to retry.
            Some(libc::EAGAIN) if attempts < 64 => attempts += 1,
            Some(libc::EINTR) => {}
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        assert_eq!(read_rootfs_file(dir.path(), "etc/passwd").unwrap().as_deref(), Some("root:x:0:0::/root:/bin/sh\n"));
        assert_eq!(read_rootfs_file(dir.path(), "/etc/passwd").unwrap().as_deref(), Some("root:x:0:0::/root:/bin/sh\n"));
        assert_eq!(read_rootfs_file(dir.path(), "etc/group").unwrap(), None);
    }

    #[test]
    fn symlinks_cannot_leave_the_rootfs() {
        // A host file the image must not be able to read through a symlink.
        let host = tempfile::tempdir().unwrap();
        let secret = host.path().join("secret");
        std::fs::write(&secret, "HOST SECRET").unwrap();

        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        // Absolute symlink to the host file's path: resolved inside the rootfs, where it is absent.
        symlink(&secret, rootfs.path().join("etc/passwd")).unwrap();
        // Relative climb.
        let depth = rootfs.path().components().count() + 2;
        let climb = format!("{}{}", "../".repeat(depth), secret.display().to_string().trim_start_matches('/'));
        symlink(&climb, rootfs.path().join("etc/group")).unwrap();
        // Magic link through /proc.
        symlink(format!("/proc/self/root{}", secret.display()), rootfs.path().join("etc/magic")).unwrap();
        // A directory symlink on the way.
        symlink(host.path(), rootfs.path().join("hostdir")).unwrap();

        for file in ["etc/passwd", "etc/group", "etc/magic", "hostdir/secret"] {
            let got = read_rootfs_file(rootfs.path(), file).unwrap();
            assert!(got.as_deref() != Some("HOST SECRET"), "{file} escaped the rootfs");
            assert_eq!(got, None, "{file}");
        }

        // The same absolute symlink, when its target exists INSIDE the rootfs, reads that one.
        let inside = rootfs.path().join(secret.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, "image file").unwrap();
        assert_eq!(read_rootfs_file(rootfs.path(), "etc/passwd").unwrap().as_deref(), Some("image file"));
    }

    #[test]
    fn non_regular_files_are_ignored() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("etc/passwd")).unwrap();
        assert_eq!(read_rootfs_file(rootfs.path(), "etc/passwd").unwrap(), None);
        let fifo = rootfs.path().join("etc/group");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        // Must not block on the FIFO.
        assert_eq!(read_rootfs_file(rootfs.path(), "etc/group").unwrap(), None);
    }

    #[test]
    fn missing_rootfs_is_an_internal_error() {
        let err = read_rootfs_file(Path::new("/nonexistent/berth-rootfs"), "etc/passwd").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }
}
