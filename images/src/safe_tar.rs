//! Tar extraction that cannot write outside its root directory.
//!
//! Every path is resolved by the kernel inside the root: the parent directory of each
//! entry is opened with `openat2(root_fd, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
//! | RESOLVE_NO_XDEV)`, so `..` and symlinks (absolute or relative) can never lead out of
//! it, and the entry itself is created with `*at` calls relative to that parent fd, never
//! following a symlink in its last component (`O_NOFOLLOW`, `O_EXCL`, `AT_SYMLINK_NOFOLLOW`).
//! Paths are never built by joining strings.
//!
//! On top of that containment, entries that only a hostile layer has are refused outright
//! (the layer fails with `HostileLayer`): `..` components, absolute paths, hardlinks whose
//! target has `..` or is absolute, block and char device nodes, and entries whose parent
//! is a symlink that does not resolve to a directory inside the layer.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.<name>` -> char device 0/0 `<name>`,
//! `.wh..wh..opq` -> xattr `trusted.overlay.opaque=y` on the directory. Modes (with
//! setuid/setgid/sticky, no umask), owners, mtimes and PAX `SCHILY.xattr.*` xattrs are
//! preserved; xattrs the filesystem does not support are skipped, and `trusted.overlay.*`
//! from the layer itself is dropped (only our whiteout conversion may set overlay xattrs).
//!
//! The caller owns the root directory and must not let anyone else modify it during
//! extraction (it is a private temp snapshot).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
const COPY_BUFFER: usize = 256 * 1024;

const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;
const RESOLVE_FLAGS: u64 = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

/// Failure of one extraction, before it is given the layer digest.
#[derive(Debug)]
pub(crate) enum ExtractError {
    /// The layer tries something only a hostile layer does.
    Hostile(String),
    /// The tar stream is malformed or ended early (or the reader failed).
    Corrupt(String),
    /// Our side: disk full, permissions, ...
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl ExtractError {
    pub(crate) fn into_error(self, layer: &str) -> Error {
        match self {
            ExtractError::Hostile(reason) => Error::HostileLayer {
                digest: layer.to_string(),
                reason,
            },
            ExtractError::Corrupt(reason) => Error::CorruptLayer {
                digest: layer.to_string(),
                reason: shorten(reason),
            },
            ExtractError::Io {
                context,
                path,
                source,
            } => Error::Io {
                context,
                path,
                source,
            },
        }
    }
}

/// Tar errors may quote whole garbage headers; keep messages readable.
fn shorten(mut reason: String) -> String {
    const MAX: usize = 300;
    if reason.len() > MAX {
        let mut cut = MAX;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    reason
}

type Result<T, E = ExtractError> = std::result::Result<T, E>;

/// Per-entry metadata gathered from the header and its PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Extracts tar entries into one root directory.
pub(crate) struct Extractor {
    root: OwnedFd,
    root_path: PathBuf,
    buf: Vec<u8>,
    /// Directory mtimes, applied at the end: creating entries inside a directory changes
    /// its mtime, so setting it earlier would be undone.
    dir_times: Vec<(PathBuf, libc::timespec)>,
    /// The last parent directory resolved: layers list a directory's entries together, so
    /// this saves one openat2 per entry. Dropped whenever anything is removed.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    pub(crate) entries: u64,
}

impl Extractor {
    pub(crate) fn new(root_path: &Path) -> Result<Self> {
        let c = cpath(root_path.as_os_str().as_bytes())?;
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io_err(
                "opening snapshot root",
                root_path,
                io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            root_path: root_path.to_path_buf(),
            buf: vec![0u8; COPY_BUFFER],
            dir_times: Vec::new(),
            parent_cache: None,
            entries: 0,
        })
    }

    /// Extracts every entry of `archive`, then applies directory mtimes.
    pub(crate) fn extract_all<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<()> {
        let entries = archive
            .entries()
            .map_err(|e| ExtractError::Corrupt(format!("reading tar: {e}")))?;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| ExtractError::Corrupt(format!("reading tar entry header: {e}")))?;
            self.extract_entry(&mut entry)?;
            self.entries += 1;
        }
        self.apply_dir_times();
        Ok(())
    }

    fn extract_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let entry_type = entry.header().entry_type();
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        if matches!(entry_type, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let components = sanitize(&raw_path)
            .map_err(|why| ExtractError::Hostile(format!("entry {shown:?}: {why}")))?;

        let Some((name, parent)) = components.split_last() else {
            // The layer's root itself ("./"): only its metadata can be applied.
            if entry_type.is_dir() {
                let meta = self.meta(entry, &shown)?;
                let fd = self.open_dir_rdonly(Path::new(""))?;
                self.apply_fd_meta(&fd, &meta, &shown)?;
                self.dir_times.push((PathBuf::new(), meta.mtime));
                return Ok(());
            }
            return Err(ExtractError::Corrupt(format!(
                "entry {shown:?} names the layer root but is not a directory"
            )));
        };
        let parent: PathBuf = parent.iter().map(|c| OsStr::from_bytes(c)).collect();
        let name: &[u8] = name;

        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&parent, name, target, &shown);
        }

        match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let meta = self.meta(entry, &shown)?;
                let pfd = self.parent_dir(&parent, &shown)?;
                self.regular_file(&pfd, name, entry, &meta, &shown, entry_type)
            }
            tar::EntryType::Directory => {
                let meta = self.meta(entry, &shown)?;
                let pfd = self.parent_dir(&parent, &shown)?;
                let fd = self.directory(&pfd, name, &meta, &shown)?;
                let rel = parent.join(OsStr::from_bytes(name));
                self.dir_times.push((rel.clone(), meta.mtime));
                // Its children usually come next.
                self.parent_cache = Some((rel, fd));
                Ok(())
            }
            tar::EntryType::Symlink => {
                let meta = self.meta(entry, &shown)?;
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        ExtractError::Corrupt(format!("symlink {shown:?} has no target"))
                    })?
                    .into_owned();
                let pfd = self.parent_dir(&parent, &shown)?;
                self.symlink(&pfd, name, &target, &meta, &shown)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        ExtractError::Corrupt(format!("hardlink {shown:?} has no target"))
                    })?
                    .into_owned();
                let pfd = self.parent_dir(&parent, &shown)?;
                self.hardlink(&pfd, &parent, name, &target, &shown)
            }
            tar::EntryType::Fifo => {
                let meta = self.meta(entry, &shown)?;
                let pfd = self.parent_dir(&parent, &shown)?;
                self.fifo(&pfd, name, &meta, &shown)
            }
            tar::EntryType::Char | tar::EntryType::Block => Err(ExtractError::Hostile(format!(
                "entry {shown:?} is a device node ({}); layers may not create devices",
                if entry_type == tar::EntryType::Char {
                    "char"
                } else {
                    "block"
                }
            ))),
            other => Err(ExtractError::Corrupt(format!(
                "entry {shown:?} has an unsupported tar entry type {other:?}"
            ))),
        }
    }

    // ----- entry kinds -----

    fn regular_file<R: Read>(
        &mut self,
        pfd: &OwnedFd,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        shown: &str,
        entry_type: tar::EntryType,
    ) -> Result<()> {
        let cname = cpath(name)?;
        let flags =
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = match openat(pfd, &cname, flags, 0o600) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove_existing(pfd, &cname, shown)?;
                openat(pfd, &cname, flags, 0o600).map_err(|e| self.io("creating file", shown, e))?
            }
            Err(e) => return Err(self.io("creating file", shown, e)),
        };
        let mut file = File::from(fd);
        let mut copied: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ExtractError::Corrupt(format!(
                        "reading the data of {shown:?}: {e}"
                    )))
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| self.io("writing file", shown, e))?;
            copied += n as u64;
        }
        // The tar reader stops quietly where its input ended; a short file is a cut layer.
        if entry_type != tar::EntryType::GNUSparse && copied != entry.size() {
            return Err(ExtractError::Corrupt(format!(
                "file {shown:?} is cut short: {copied} of {} bytes",
                entry.size()
            )));
        }
        let fd = OwnedFd::from(file);
        self.apply_fd_meta(&fd, meta, shown)?;
        futimens(&fd, meta.mtime).map_err(|e| self.io("setting file times", shown, e))
    }

    fn directory(
        &mut self,
        pfd: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<OwnedFd> {
        let cname = cpath(name)?;
        if unsafe { libc::mkdirat(pfd.as_raw_fd(), cname.as_ptr(), 0o700) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(self.io("creating directory", shown, e));
            }
            // A directory again (a layer may list one twice): keep it and its content.
            // Anything else in the way is replaced.
            if !is_dir_at(pfd, &cname) {
                self.remove_existing(pfd, &cname, shown)?;
                if unsafe { libc::mkdirat(pfd.as_raw_fd(), cname.as_ptr(), 0o700) } != 0 {
                    return Err(self.io("creating directory", shown, io::Error::last_os_error()));
                }
            }
        }
        let fd = openat(
            pfd,
            &cname,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| self.io("opening directory", shown, e))?;
        self.apply_fd_meta(&fd, meta, shown)?;
        Ok(fd)
    }

    fn symlink(
        &mut self,
        pfd: &OwnedFd,
        name: &[u8],
        target: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<()> {
        // The target is stored as written: it is resolved inside the container later, and
        // extraction never writes through it (parents are resolved IN_ROOT).
        let cname = cpath(name)?;
        let ctarget = cpath(target)?;
        let create = || {
            if unsafe { libc::symlinkat(ctarget.as_ptr(), pfd.as_raw_fd(), cname.as_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        match create() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove_existing(pfd, &cname, shown)?;
                create().map_err(|e| self.io("creating symlink", shown, e))?;
            }
            Err(e) => return Err(self.io("creating symlink", shown, e)),
        }
        self.apply_at_meta(pfd, &cname, meta, shown, false)
    }

    fn hardlink(
        &mut self,
        pfd: &OwnedFd,
        parent: &Path,
        name: &[u8],
        target: &[u8],
        shown: &str,
    ) -> Result<()> {
        let target_shown = String::from_utf8_lossy(target).into_owned();
        let components = sanitize(target).map_err(|why| {
            ExtractError::Hostile(format!(
                "hardlink {shown:?} -> {target_shown:?}: target {why}"
            ))
        })?;
        let Some((tname, tparent)) = components.split_last() else {
            return Err(ExtractError::Hostile(format!(
                "hardlink {shown:?} points at the layer root"
            )));
        };
        let tparent: PathBuf = tparent.iter().map(|c| OsStr::from_bytes(c)).collect();
        let tpfd = self.resolve_dir(&tparent).map_err(|e| {
            ExtractError::Corrupt(format!(
                "hardlink {shown:?} -> {target_shown:?}: target directory: {e}"
            ))
        })?;
        let ctname = cpath(tname)?;
        let cname = cpath(name)?;
        match stat_at(&tpfd, &ctname) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(ExtractError::Hostile(format!(
                    "hardlink {shown:?} -> {target_shown:?} targets a directory"
                )));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(ExtractError::Corrupt(format!(
                    "hardlink {shown:?} -> {target_shown:?}: target is not in the layer ({e})"
                )))
            }
        }
        if tparent == parent && *tname == name {
            return Ok(()); // a link to itself: nothing to do
        }
        // flags 0: link the target entry itself, never what a symlink there points at.
        let link = || {
            if unsafe {
                libc::linkat(
                    tpfd.as_raw_fd(),
                    ctname.as_ptr(),
                    pfd.as_raw_fd(),
                    cname.as_ptr(),
                    0,
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        match link() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove_existing(pfd, &cname, shown)?;
                link().map_err(|e| self.io("creating hardlink", shown, e))
            }
            Err(e) => Err(self.io("creating hardlink", shown, e)),
        }
    }

    fn fifo(&mut self, pfd: &OwnedFd, name: &[u8], meta: &Meta, shown: &str) -> Result<()> {
        let cname = cpath(name)?;
        self.mknod_replacing(pfd, &cname, libc::S_IFIFO | 0o600, shown)?;
        self.apply_at_meta(pfd, &cname, meta, shown, true)
    }

    fn whiteout(&mut self, parent: &Path, name: &[u8], target: &[u8], shown: &str) -> Result<()> {
        if name == OPAQUE_WHITEOUT {
            self.parent_dir(parent, shown)?; // creates it if the layer did not list it
            let fd = self.open_dir_rdonly(parent)?;
            return fsetxattr(&fd, OPAQUE_XATTR, b"y")
                .map_err(|e| self.io("marking directory opaque", shown, e));
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.*` names are aufs bookkeeping (hardlink dirs); meaningless here.
            tracing::debug!(entry = shown, "skipping aufs metadata entry");
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
            return Err(ExtractError::Hostile(format!(
                "whiteout {shown:?} names no valid entry"
            )));
        }
        let pfd = self.parent_dir(parent, shown)?;
        let ctarget = cpath(target)?;
        // overlayfs' own whiteout: a char device 0/0 with mode 0.
        self.mknod_replacing(&pfd, &ctarget, libc::S_IFCHR, shown)
    }

    // ----- helpers -----

    fn mknod_replacing(
        &mut self,
        pfd: &OwnedFd,
        cname: &CStr,
        mode: u32,
        shown: &str,
    ) -> Result<()> {
        let mk = || {
            if unsafe { libc::mknodat(pfd.as_raw_fd(), cname.as_ptr(), mode, libc::makedev(0, 0)) }
                != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        match mk() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove_existing(pfd, cname, shown)?;
                mk().map_err(|e| self.io("creating node", shown, e))
            }
            Err(e) => Err(self.io("creating node", shown, e)),
        }
    }

    /// Removes whatever is at `pfd/name` (a directory with its content), without following
    /// symlinks.
    fn remove_existing(&mut self, pfd: &OwnedFd, cname: &CStr, shown: &str) -> Result<()> {
        self.parent_cache = None;
        if is_dir_at(pfd, cname) {
            // std's remove_dir_all works by fd and never follows symlinks; the /proc path
            // only names our (already contained) parent fd.
            let path = proc_fd_path(pfd, cname);
            crate::snapshot::remove_tree(&path)
                .map_err(|e| self.io("replacing directory", shown, e))
        } else if unsafe { libc::unlinkat(pfd.as_raw_fd(), cname.as_ptr(), 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            Err(self.io("replacing entry", shown, e))
        } else {
            Ok(())
        }
    }

    /// Owner, mode and xattrs for an open file or directory. Order matters: chown clears
    /// setuid bits and file capabilities, so mode and xattrs come after it.
    fn apply_fd_meta(&self, fd: &OwnedFd, meta: &Meta, shown: &str) -> Result<()> {
        if unsafe { libc::fchown(fd.as_raw_fd(), meta.uid, meta.gid) } != 0 {
            return Err(self.io("setting owner", shown, io::Error::last_os_error()));
        }
        if unsafe { libc::fchmod(fd.as_raw_fd(), meta.mode) } != 0 {
            return Err(self.io("setting mode", shown, io::Error::last_os_error()));
        }
        for (name, value) in &meta.xattrs {
            let Ok(cname) = CString::new(name.as_str()) else {
                continue;
            };
            match fsetxattr(fd, &cname, value) {
                Ok(()) => {}
                Err(e) if is_unsupported(&e) => {
                    tracing::debug!(entry = shown, xattr = %name, error = %e, "xattr not supported here; skipped")
                }
                Err(e) => return Err(self.io("setting xattr", shown, e)),
            }
        }
        Ok(())
    }

    /// Owner, (mode), xattrs and times for a symlink or fifo, by name in its parent.
    fn apply_at_meta(
        &self,
        pfd: &OwnedFd,
        cname: &CStr,
        meta: &Meta,
        shown: &str,
        chmod: bool,
    ) -> Result<()> {
        let nofollow = libc::AT_SYMLINK_NOFOLLOW;
        if unsafe {
            libc::fchownat(
                pfd.as_raw_fd(),
                cname.as_ptr(),
                meta.uid,
                meta.gid,
                nofollow,
            )
        } != 0
        {
            return Err(self.io("setting owner", shown, io::Error::last_os_error()));
        }
        // fchmodat cannot take AT_SYMLINK_NOFOLLOW portably; only fifos get here with chmod.
        if chmod && unsafe { libc::fchmodat(pfd.as_raw_fd(), cname.as_ptr(), meta.mode, 0) } != 0 {
            return Err(self.io("setting mode", shown, io::Error::last_os_error()));
        }
        if !meta.xattrs.is_empty() {
            let path = CString::new(proc_fd_path(pfd, cname).into_os_string().into_vec())
                .map_err(|_| ExtractError::Corrupt(format!("entry {shown:?}: NUL in name")))?;
            for (name, value) in &meta.xattrs {
                let Ok(cxname) = CString::new(name.as_str()) else {
                    continue;
                };
                let rc = unsafe {
                    libc::lsetxattr(
                        path.as_ptr(),
                        cxname.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        0,
                    )
                };
                if rc != 0 {
                    let e = io::Error::last_os_error();
                    if is_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) {
                        tracing::debug!(entry = shown, xattr = %name, error = %e, "xattr not supported here; skipped");
                    } else {
                        return Err(self.io("setting xattr", shown, e));
                    }
                }
            }
        }
        let times = [meta.mtime, meta.mtime];
        if unsafe { libc::utimensat(pfd.as_raw_fd(), cname.as_ptr(), times.as_ptr(), nofollow) }
            != 0
        {
            return Err(self.io("setting times", shown, io::Error::last_os_error()));
        }
        Ok(())
    }

    fn apply_dir_times(&mut self) {
        let dir_times = std::mem::take(&mut self.dir_times);
        for (rel, mtime) in dir_times.iter().rev() {
            // A directory replaced later in the layer may be gone; its time does not matter.
            if let Ok(fd) =
                self.open_in_root(rel, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            {
                let _ = futimens(&fd, *mtime);
            }
        }
    }

    /// Header + PAX metadata of an entry.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta> {
        let corrupt = |what: &str, e: io::Error| {
            ExtractError::Corrupt(format!("entry {shown:?}: bad {what}: {e}"))
        };
        let header = entry.header();
        let mode = header.mode().map_err(|e| corrupt("mode", e))? & 0o7777;
        // An empty numeric field reads as 0, as GNU tar and Go's archive/tar read it.
        let old = header.as_old();
        let numeric = |value: io::Result<u64>, raw: &[u8], what: &str| match value {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
            Err(e) => Err(corrupt(what, e)),
        };
        let mut uid = numeric(header.uid(), &old.uid, "uid")?;
        let mut gid = numeric(header.gid(), &old.gid, "gid")?;
        let mtime_secs = numeric(header.mtime(), &old.mtime, "mtime")?;
        let mut mtime = libc::timespec {
            tv_sec: mtime_secs as libc::time_t,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| corrupt("PAX header", e))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| corrupt("PAX record", e))?;
                let Ok(key) = ext.key() else { continue };
                match key {
                    "uid" => {
                        uid = parse_pax_u64(ext.value_bytes())
                            .ok_or_else(|| corrupt("uid", io::ErrorKind::InvalidData.into()))?
                    }
                    "gid" => {
                        gid = parse_pax_u64(ext.value_bytes())
                            .ok_or_else(|| corrupt("gid", io::ErrorKind::InvalidData.into()))?
                    }
                    "mtime" => {
                        if let Some(t) = parse_pax_time(ext.value_bytes()) {
                            mtime = t;
                        }
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                            if name.starts_with("trusted.overlay.") {
                                tracing::warn!(
                                    entry = shown,
                                    xattr = name,
                                    "dropping overlay xattr carried by the layer"
                                );
                                continue;
                            }
                            xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        let uid =
            u32::try_from(uid).map_err(|_| corrupt("uid", io::ErrorKind::InvalidData.into()))?;
        let gid =
            u32::try_from(gid).map_err(|_| corrupt("gid", io::ErrorKind::InvalidData.into()))?;
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// The parent directory of an entry, created (0755, as tar does) if the layer did not
    /// list it. A component that exists but does not resolve to a directory inside the
    /// root (a symlink pointing out, or at nothing) is refused.
    fn parent_dir(&mut self, parent: &Path, shown: &str) -> Result<OwnedFd> {
        if let Some((cached, fd)) = &self.parent_cache {
            if cached == parent {
                return fd
                    .try_clone()
                    .map_err(|e| self.io("duplicating fd", shown, e));
            }
        }
        let fd = match self.resolve_dir(parent) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.mkdir_all(parent, shown)?,
            Err(e) => return Err(self.resolve_error(parent, shown, e)),
        };
        let dup = fd
            .try_clone()
            .map_err(|e| self.io("duplicating fd", shown, e))?;
        self.parent_cache = Some((parent.to_path_buf(), dup));
        Ok(fd)
    }

    fn mkdir_all(&mut self, parent: &Path, shown: &str) -> Result<OwnedFd> {
        let mut prefix = PathBuf::new();
        let mut current = self
            .resolve_dir(&prefix)
            .map_err(|e| self.io("opening snapshot root", shown, e))?;
        for component in parent.iter() {
            prefix.push(component);
            match self.resolve_dir(&prefix) {
                Ok(fd) => {
                    current = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.resolve_error(&prefix, shown, e)),
            }
            let cname = cpath(component.as_bytes())?;
            if unsafe { libc::mkdirat(current.as_raw_fd(), cname.as_ptr(), 0o755) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EEXIST) {
                    // It exists but did not resolve: a symlink to somewhere not in the layer.
                    return Err(ExtractError::Hostile(format!(
                        "entry {shown:?}: {:?} is a symlink that does not lead to a directory inside the layer",
                        prefix
                    )));
                }
                return Err(self.io("creating parent directory", shown, e));
            }
            // mkdirat obeys the umask; implicit parents are 0755 like tar makes them.
            unsafe { libc::fchmodat(current.as_raw_fd(), cname.as_ptr(), 0o755, 0) };
            current = self
                .resolve_dir(&prefix)
                .map_err(|e| self.resolve_error(&prefix, shown, e))?;
        }
        Ok(current)
    }

    fn resolve_error(&self, path: &Path, shown: &str, e: io::Error) -> ExtractError {
        match e.raw_os_error() {
            Some(libc::ENOTDIR) | Some(libc::ENOENT) => ExtractError::Hostile(format!(
                "entry {shown:?}: {path:?} is not a directory inside the layer"
            )),
            Some(libc::ELOOP) | Some(libc::EXDEV) => ExtractError::Hostile(format!(
                "entry {shown:?}: {path:?} resolves through a symlink loop or out of the layer"
            )),
            _ => self.io("resolving parent directory", shown, e),
        }
    }

    /// Opens a directory inside the root (O_PATH), symlinks resolved IN_ROOT.
    fn resolve_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_in_root(rel, libc::O_PATH | libc::O_DIRECTORY)
    }

    fn open_dir_rdonly(&self, rel: &Path) -> Result<OwnedFd> {
        self.open_in_root(rel, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| self.resolve_error(rel, &rel.to_string_lossy(), e))
    }

    fn open_in_root(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let bytes = rel.as_os_str().as_bytes();
        let c = CString::new(if bytes.is_empty() { &b"."[..] } else { bytes })
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        openat2(self.root.as_raw_fd(), &c, flags, RESOLVE_FLAGS)
    }

    fn io(&self, context: &'static str, shown: &str, source: io::Error) -> ExtractError {
        ExtractError::Io {
            context,
            path: self.root_path.join(shown.trim_start_matches('/')),
            source,
        }
    }
}

/// Splits a tar path into its components, refusing absolute paths and `..`. `.` and
/// empty components (`./a//b/`) are dropped.
fn sanitize(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("is an absolute path");
    }
    let mut out = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("has a '..' component"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn parse_pax_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.123456789`.
fn parse_pax_time(v: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let mut nanos: String = frac.chars().take(9).collect();
    if !nanos.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while nanos.len() < 9 {
        nanos.push('0');
    }
    let tv_nsec: i64 = nanos.parse().ok()?;
    Some(libc::timespec {
        tv_sec: tv_sec as libc::time_t,
        tv_nsec: tv_nsec as _,
    })
}

fn cpath(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| {
        ExtractError::Corrupt(format!(
            "name {:?} contains a NUL byte",
            String::from_utf8_lossy(bytes)
        ))
    })
}

fn io_err(context: &'static str, path: &Path, source: io::Error) -> ExtractError {
    ExtractError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP))
}

fn proc_fd_path(fd: &OwnedFd, name: &CStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    p.push(OsStr::from_bytes(name.to_bytes()));
    p
}

fn openat(
    dir: &OwnedFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)`; the kernel resolves `path` as if `dir` were `/`.
fn openat2(dir: RawFd, path: &CStr, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    // struct open_how from <linux/openat2.h>; libc's is non_exhaustive, so our own copy.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    let mut attempts = 0;
    loop {
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if rc >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // EAGAIN: a concurrent rename somewhere on the filesystem; the kernel asks to retry.
            Some(libc::EAGAIN) if attempts < 64 => attempts += 1,
            Some(libc::EINTR) => {}
            Some(libc::ENOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "openat2(2) is not available: berth needs Linux 5.6 or later",
                ))
            }
            _ => return Err(e),
        }
    }
}

fn stat_at(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn is_dir_at(dir: &OwnedFd, name: &CStr) -> bool {
    stat_at(dir, name)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(false)
}

fn futimens(fd: &OwnedFd, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    if unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fsetxattr(fd: &OwnedFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    if unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_paths() {
        assert_eq!(sanitize(b"./a//b/").unwrap(), vec![&b"a"[..], &b"b"[..]]);
        assert!(sanitize(b"./").unwrap().is_empty());
        assert!(sanitize(b"/etc/x").is_err());
        assert!(sanitize(b"a/../../etc").is_err());
        assert!(sanitize(b"..").is_err());
        assert_eq!(sanitize(b"a/..b").unwrap(), vec![&b"a"[..], &b"..b"[..]]);
    }

    #[test]
    fn pax_time() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1700000000, 500_000_000));
        let t = parse_pax_time(b"12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time(b"x").is_none());
    }
}
