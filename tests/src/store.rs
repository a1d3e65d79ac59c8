//! A read-only view of berthd's image store on disk (`<root>/content`, `<root>/snapshots`),
//! for asserting what a pull left behind. It knows only the layout in the design
//! (`content/blobs/<algorithm>/<hex>`, one snapshot directory per chain id) and tolerates
//! either `snapshots/<hex>` or `snapshots/<algorithm>/<hex>`.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::leaks::children;

/// Digests (`sha256:<hex>`) of the blobs in the content store.
pub fn blobs(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for algorithm_dir in children(&root.join("content").join("blobs")) {
        let algorithm = file_name(&algorithm_dir);
        for blob in children(&algorithm_dir) {
            found.push(format!("{algorithm}:{}", file_name(&blob)));
        }
    }
    found
}

/// Whether the content store holds `digest` (`sha256:<hex>`).
pub fn has_blob(root: &Path, digest: &str) -> bool {
    blobs(root).iter().any(|b| b == digest)
}

/// The snapshot directories (one per unpacked layer), temp dirs excluded.
pub fn snapshot_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in children(&root.join("snapshots")) {
        let name = file_name(&entry);
        if name.starts_with('.') || !entry.is_dir() {
            continue;
        }
        if name == "sha256" || name == "sha512" {
            found.extend(children(&entry).into_iter().filter(|p| p.is_dir() && !file_name(p).starts_with('.')));
        } else {
            found.push(entry);
        }
    }
    found
}

/// The snapshot directory of `chain_id` (`sha256:<hex>` or `<hex>`), if it exists.
pub fn snapshot_dir(root: &Path, chain_id: &str) -> Option<PathBuf> {
    let hex = chain_id.rsplit(':').next().unwrap_or(chain_id);
    snapshot_dirs(root).into_iter().find(|dir| file_name(dir).contains(hex))
}

/// Overlayfs whiteouts (character devices 0:0) under `dir`, as paths relative to it.
pub fn whiteouts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(dir, &mut |path, meta| {
        use std::os::unix::fs::MetadataExt;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            found.push(path.strip_prefix(dir).unwrap_or(path).to_path_buf());
        }
    });
    found
}

/// Paths (relative to `dir`) carrying the `trusted.overlay.opaque=y` xattr.
pub fn opaque_dirs_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(dir, &mut |path, meta| {
        if meta.is_dir() && is_opaque(path) {
            found.push(path.strip_prefix(dir).unwrap_or(path).to_path_buf());
        }
    });
    found
}

fn is_opaque(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: both pointers are valid for the lengths given.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Visits every entry under `dir` (not following symlinks).
pub fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    for entry in children(dir) {
        let Ok(meta) = std::fs::symlink_metadata(&entry) else {
            continue;
        };
        visit(&entry, &meta);
        if meta.is_dir() {
            walk(&entry, visit);
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
