//! A container's root filesystem: an overlay of the image's snapshots (leased to the
//! container so image GC keeps them) with a private upper dir, mounted at
//! `<root>/containers/<cid>/rootfs` before the shim starts.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_images::{snapshot, ImageStore};

/// The rootfs mount point inside a container dir.
pub const ROOTFS_DIR_NAME: &str = "rootfs";

/// Leases `image_id`'s snapshots for `container_id`, creates the upper and work dirs
/// under `container_dir` and mounts the overlay at `container_dir/rootfs`. On failure
/// nothing is left: no lease, no mount (the container dir itself is the caller's).
pub fn mount_rootfs(images: &ImageStore, image_id: &str, container_id: &str, container_dir: &Path) -> Result<PathBuf, berth_images::Error> {
    let layout = images.prepare_rootfs(image_id, container_id, container_dir)?;
    let rootfs = container_dir.join(ROOTFS_DIR_NAME);
    let mounted = std::fs::create_dir_all(&rootfs)
        .map_err(|source| berth_images::Error::Io { context: "creating rootfs mount point", path: rootfs.clone(), source })
        .and_then(|()| snapshot::mount_overlay(&layout, &rootfs));
    if let Err(e) = mounted {
        if let Err(release) = images.release(container_id) {
            tracing::warn!(container = container_id, error = %release, "releasing the rootfs lease after a failed mount");
        }
        return Err(e);
    }
    Ok(rootfs)
}

/// Unmounts the container's rootfs (if mounted) and releases its image lease. Idempotent.
pub fn unmount_rootfs(images: &ImageStore, container_id: &str, container_dir: &Path) -> Result<(), berth_images::Error> {
    let rootfs = container_dir.join(ROOTFS_DIR_NAME);
    // A lazy unmount detaches at once; loop in case something stacked mounts on it.
    for _ in 0..8 {
        if !is_mount_point(&rootfs) {
            break;
        }
        snapshot::unmount(&rootfs)?;
    }
    images.release(container_id)
}

/// Removes the container dir (bundle, upper, work) after its rootfs is unmounted. Refuses
/// while the rootfs is still a mount point, so a removal can never reach into the image's
/// layers through the overlay.
pub fn remove_container_dir(container_dir: &Path) -> std::io::Result<()> {
    let rootfs = container_dir.join(ROOTFS_DIR_NAME);
    if is_mount_point(&rootfs) {
        return Err(std::io::Error::other(format!("{} is still mounted", rootfs.display())));
    }
    snapshot::remove_tree(container_dir)
}

/// True when `path` is on another device than its parent (the overlay mounted on it).
pub fn is_mount_point(path: &Path) -> bool {
    let (Ok(meta), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    match std::fs::metadata(parent) {
        Ok(parent_meta) => meta.dev() != parent_meta.dev(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_dir_is_no_mount_point_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let container_dir = dir.path().join("c");
        std::fs::create_dir_all(container_dir.join(ROOTFS_DIR_NAME)).unwrap();
        assert!(!is_mount_point(&container_dir.join(ROOTFS_DIR_NAME)));
        assert!(is_mount_point(Path::new("/proc")));
        remove_container_dir(&container_dir).unwrap();
        assert!(!container_dir.exists());
        remove_container_dir(&container_dir).unwrap();
    }
}
