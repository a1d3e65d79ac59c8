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

/// The directory holding the layer's files inside a snapshot dir: `<dir>/fs` when the
/// store keeps metadata beside the files (as containerd's overlay snapshotter does), else
/// `<dir>` itself.
pub fn snapshot_files_dir(snapshot_dir: &Path) -> PathBuf {
    let fs = snapshot_dir.join("fs");
    if fs.is_dir() {
        fs
    } else {
        snapshot_dir.to_path_buf()
    }
}

/// The files dir of the snapshot of `chain_id`; panics naming what exists when it is missing.
pub fn layer_dir(root: &Path, chain_id: &str) -> PathBuf {
    match snapshot_dir(root, chain_id) {
        Some(dir) => snapshot_files_dir(&dir),
        None => panic!("no snapshot for chain id {chain_id}; snapshots: {:?}", snapshot_dirs(root)),
    }
}

/// Chain ids of layers with these diff ids, bottom first, computed as the OCI image spec
/// defines them: `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!("sha256:{:x}", Sha256::digest(format!("{parent} {diff_id}").as_bytes())),
        };
        chain.push(next);
    }
    chain
}

/// A read-only overlay of `lower_dirs` (bottom first, as in an image) mounted at `target`.
/// Unmounted on drop.
pub struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    pub fn mount(lower_dirs_bottom_first: &[PathBuf], target: &Path) -> OverlayMount {
        assert!(lower_dirs_bottom_first.len() >= 2, "a read-only overlay needs at least two lower dirs");
        std::fs::create_dir_all(target).expect("create overlay mount point");
        let lowers: Vec<String> =
            lower_dirs_bottom_first.iter().rev().map(|d| d.to_string_lossy().into_owned()).collect();
        let options = format!("lowerdir={}", lowers.join(":"));
        nix::mount::mount(Some("overlay"), target, Some("overlay"), nix::mount::MsFlags::MS_RDONLY, Some(options.as_str()))
            .unwrap_or_else(|e| panic!("mount overlay at {} ({options}): {e}", target.display()));
        OverlayMount { target: target.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}


/// Blobs whose bytes do not hash to their name (a partial or corrupt blob made visible),
/// as `(digest, actual)`. Uses `sha256sum`, which is fast even when this crate is built
/// without optimisation.
pub fn unverified_blobs(root: &Path) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    for digest in blobs(root) {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            continue;
        };
        let path = root.join("content/blobs/sha256").join(hex);
        let output = std::process::Command::new("sha256sum").arg(&path).output().expect("run sha256sum");
        let actual = String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or("").to_string();
        if actual != hex {
            bad.push((digest, format!("sha256:{actual}")));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id_and_then_hashes() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b]);
        assert_eq!(chain[0], a);
        assert!(chain[1].starts_with("sha256:") && chain[1].len() == 71 && chain[1] != a);
    }
}
