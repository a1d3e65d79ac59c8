//! One directory per layer, keyed by chain id, and overlay rootfs assembly.
//!
//! Layout under the image store root:
//! - `<root>/snapshots/<chain id hex>/fs/`: the unpacked layer (its diff only, with
//!   overlayfs whiteouts), what goes into an overlay `lowerdir`. The `fs/` level leaves
//!   room for per-snapshot metadata files next to it later.
//! - `<root>/snapshots/.tmp-<unique>/fs/`: a layer being unpacked. It becomes
//!   `<chain id hex>` by one atomic `rename` (RENAME_NOREPLACE) once the layer verified,
//!   so a snapshot that exists is complete. `.tmp-*` leftovers of a crash are removed by
//!   [`SnapshotStore::cleanup_tmp`].
//! - Removal renames the snapshot to `.tmp-del-<unique>` first, so it disappears at once
//!   and a crash mid-delete leaves only a `.tmp-*` dir.
//!
//! API:
//! - `chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest` (OCI image spec).
//! - `chain_ids(diff_ids bottom first) -> Vec<Digest>`.
//! - `SnapshotStore::open(root)`; `path(&chain_id)` (the `fs/` dir), `dir(&chain_id)`,
//!   `exists`, `remove -> Result<bool>`, `list`, `cleanup_tmp`, `begin() -> TempSnapshot`
//!   (used by [`crate::unpack`]), `layout(chain ids bottom first, container_dir)`.
//! - `TempSnapshot`: `fs_path()`, `commit(chain_id) -> Result<bool>` (false: another
//!   unpack of the same chain id won the race; ours was dropped), removed on drop.
//! - `prepare_layout(lower dirs bottom first, container_dir) -> RootfsLayout`: creates
//!   `<container_dir>/upper` and `<container_dir>/work`.
//! - `mount_overlay(&RootfsLayout, target)`, `unmount(target)`.
//! - `remove_tree(path)`: removal that copes with whiteout device nodes and dirs without
//!   write permission.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::content::unique_suffix;
use crate::digest::{digests_in_dir, Digest, Sha256Hasher};
use crate::error::{Error, Result};
use crate::model::RootfsLayout;

const TMP_PREFIX: &str = ".tmp-";

/// The chain id of a layer: its diff id for the bottom layer, otherwise
/// `sha256("<parent chain id> <diff id>")` (OCI image spec, "ChainID").
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => {
            let mut hasher = Sha256Hasher::new();
            hasher.update(parent.as_str().as_bytes());
            hasher.update(b" ");
            hasher.update(diff_id.as_str().as_bytes());
            hasher.finish()
        }
    }
}

/// Chain ids of all layers, bottom first, from their diff ids (bottom first).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = chain_id(out.last(), diff_id);
        out.push(next);
    }
    out
}

/// The snapshot directories under `<root>/snapshots`.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating if needed) `<root>/snapshots`.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating snapshot directory", &dir, e))?;
        Ok(Self { dir })
    }

    /// `<root>/snapshots`.
    pub fn base_dir(&self) -> &Path {
        &self.dir
    }

    /// `<root>/snapshots/<hex>`: the snapshot's own directory.
    pub fn dir(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex())
    }

    /// `<root>/snapshots/<hex>/fs`: the layer's files, an overlay lowerdir.
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.dir(chain_id).join("fs")
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    /// Removes a snapshot. `Ok(false)` if there was none. The caller makes sure no
    /// container uses it (leases live in the metadata store).
    pub fn remove(&self, chain_id: &Digest) -> Result<bool> {
        let dir = self.dir(chain_id);
        let doomed = self
            .dir
            .join(format!("{TMP_PREFIX}del-{}", unique_suffix()));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("removing snapshot", dir, e)),
        }
        remove_tree(&doomed).map_err(|e| Error::io("removing snapshot", &doomed, e))?;
        tracing::debug!(chain_id = %chain_id, "snapshot removed");
        Ok(true)
    }

    /// Chain ids of all complete snapshots.
    pub fn list(&self) -> Result<Vec<Digest>> {
        digests_in_dir(&self.dir, "listing snapshots")
    }

    /// Removes `.tmp-*` leftovers (unpacks or deletes interrupted by a crash). Call at
    /// startup before any pull runs. Returns how many went.
    pub fn cleanup_tmp(&self) -> Result<usize> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| Error::io("listing snapshots", &self.dir, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing snapshots", &self.dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                remove_tree(&path)
                    .map_err(|e| Error::io("removing leftover temp snapshot", &path, e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %self.dir.display(), "removed leftover temp snapshots of interrupted unpacks");
        }
        Ok(removed)
    }

    /// Creates an empty temp snapshot to unpack into.
    pub fn begin(&self) -> Result<TempSnapshot> {
        let dir = self.dir.join(format!("{TMP_PREFIX}{}", unique_suffix()));
        fs::create_dir(&dir).map_err(|e| Error::io("creating temp snapshot", &dir, e))?;
        let snapshot = TempSnapshot {
            dir,
            snapshots_dir: self.dir.clone(),
        };
        let fs_dir = snapshot.fs_path();
        fs::create_dir(&fs_dir).map_err(|e| Error::io("creating temp snapshot", &fs_dir, e))?;
        // Layer roots are 0755 unless the layer says otherwise (mkdir obeys the umask).
        fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("creating temp snapshot", &fs_dir, e))?;
        Ok(snapshot)
    }

    /// The overlay layout for a container over these snapshots (chain ids bottom first),
    /// with fresh `upper/` and `work/` under `container_dir`. Every snapshot must exist.
    pub fn layout(
        &self,
        chain_ids_bottom_first: &[Digest],
        container_dir: &Path,
    ) -> Result<RootfsLayout> {
        let mut lowers = Vec::with_capacity(chain_ids_bottom_first.len());
        for id in chain_ids_bottom_first {
            let path = self.path(id);
            if !path.is_dir() {
                return Err(Error::io(
                    "preparing rootfs: snapshot is missing",
                    path,
                    io::Error::from(io::ErrorKind::NotFound),
                ));
            }
            lowers.push(path);
        }
        prepare_layout(&lowers, container_dir)
    }
}

/// A snapshot being unpacked, under `.tmp-<unique>`. Removed on drop unless committed.
#[derive(Debug)]
pub struct TempSnapshot {
    dir: PathBuf,
    snapshots_dir: PathBuf,
}

impl TempSnapshot {
    /// Where the layer's files go.
    pub fn fs_path(&self) -> PathBuf {
        self.dir.join("fs")
    }

    /// Renames the snapshot into place as `chain_id`. Returns `Ok(false)` when a snapshot
    /// with that chain id already exists (a concurrent unpack won): ours is removed and
    /// theirs, equally complete, stays.
    pub fn commit(mut self, chain_id: &Digest) -> Result<bool> {
        let target = self.snapshots_dir.join(chain_id.hex());
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &self.dir,
            nix::fcntl::AT_FDCWD,
            &target,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                self.dir = PathBuf::new();
                if let Err(e) = fs::File::open(&self.snapshots_dir).and_then(|d| d.sync_all()) {
                    tracing::warn!(dir = %self.snapshots_dir.display(), error = %e, "could not fsync the snapshot directory");
                }
                Ok(true)
            }
            Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => {
                tracing::debug!(chain_id = %chain_id, "snapshot already unpacked by a concurrent pull; dropping ours");
                Ok(false) // Drop removes ours
            }
            Err(e) => Err(Error::io("committing snapshot", target, e.into())),
        }
    }

    /// Removes the temp snapshot now (what drop does), reporting failure.
    pub fn discard(mut self) -> Result<()> {
        let dir = std::mem::take(&mut self.dir);
        remove_tree(&dir).map_err(|e| Error::io("removing temp snapshot", dir, e))
    }
}

impl Drop for TempSnapshot {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if let Err(e) = remove_tree(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "could not remove temp snapshot");
        }
    }
}

/// Removes a directory tree without following symlinks (std's `remove_dir_all` works by
/// file descriptor, so a hostile symlink cannot redirect it). If that fails (a directory
/// without write/exec permission, possible for a non-root caller), makes every directory
/// 0700 and tries again. A missing path is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "removal failed; opening up directory modes and retrying")
        }
    }
    chmod_dirs(path);
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn chmod_dirs(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                chmod_dirs(&entry.path());
            }
        }
    }
}

/// Builds the overlay layout for a container: `lower_dirs_bottom_first` become the
/// lowerdirs (reversed: overlay wants the top layer first), and `<container_dir>/upper`,
/// `<container_dir>/work` are created empty (upper 0755: it is the rootfs's `/`). An image
/// without layers gets an empty `<container_dir>/lower` (overlay needs one lowerdir).
pub fn prepare_layout(
    lower_dirs_bottom_first: &[PathBuf],
    container_dir: &Path,
) -> Result<RootfsLayout> {
    let upper_dir = container_dir.join("upper");
    let work_dir = container_dir.join("work");
    let mut lower_dirs: Vec<PathBuf> = lower_dirs_bottom_first.iter().rev().cloned().collect();
    let mut dirs = vec![&upper_dir, &work_dir];
    let empty_lower = container_dir.join("lower");
    if lower_dirs.is_empty() {
        dirs.push(&empty_lower);
    }
    for dir in dirs {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating rootfs directory", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("creating rootfs directory", dir, e))?;
    }
    if lower_dirs.is_empty() {
        lower_dirs.push(empty_lower);
    }
    Ok(RootfsLayout {
        lower_dirs,
        upper_dir,
        work_dir,
    })
}

/// The overlay mount options for `layout`, checked against what the kernel accepts.
pub fn overlay_options(layout: &RootfsLayout, target: &Path) -> Result<String> {
    let mount_err = |reason: String| Error::Mount {
        target: target.to_path_buf(),
        reason,
    };
    if layout.lower_dirs.is_empty() {
        return Err(mount_err(
            "an overlay needs at least one lower directory".into(),
        ));
    }
    let mut all: Vec<&Path> = layout.lower_dirs.iter().map(|p| p.as_path()).collect();
    all.push(&layout.upper_dir);
    all.push(&layout.work_dir);
    for p in &all {
        let s = p
            .to_str()
            .ok_or_else(|| mount_err(format!("path {} is not UTF-8", p.display())))?;
        // ':' separates lowerdirs and ',' options; refusing them beats quoting subtleties.
        if s.contains([':', ',', '\\']) || !p.is_absolute() {
            return Err(mount_err(format!(
                "path {s:?} must be absolute and free of ':', ',' and '\\'"
            )));
        }
    }
    let lower = layout
        .lower_dirs
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={},index=off",
        layout.upper_dir.display(),
        layout.work_dir.display()
    );
    // mount(2) copies at most one page of options; longer strings are cut (EINVAL or
    // worse, a silently different mount). Say so plainly instead.
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as usize;
    if options.len() + 1 > page {
        return Err(mount_err(format!(
            "the overlay options for {} layers are {} bytes, more than the kernel's limit of {} \
             (page size); the image has too many layers for this root directory path",
            layout.lower_dirs.len(),
            options.len(),
            page - 1
        )));
    }
    Ok(options)
}

/// Mounts the overlay rootfs described by `layout` on `target` (which must exist).
pub fn mount_overlay(layout: &RootfsLayout, target: &Path) -> Result<()> {
    let options = overlay_options(layout, target)?;
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| Error::Mount {
        target: target.to_path_buf(),
        reason: format!("mount -t overlay -o {options}: {e}"),
    })?;
    tracing::debug!(target = %target.display(), layers = layout.lower_dirs.len(), "overlay mounted");
    Ok(())
}

/// Unmounts `target` (lazily, MNT_DETACH, so a busy mount still goes away). Not mounted
/// or missing is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::Mount {
            target: target.to_path_buf(),
            reason: format!("unmount: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn chain_id_follows_the_spec() {
        let a = d("a");
        let b = d("b");
        assert_eq!(chain_id(None, &a), a);
        let expected = Digest::of(format!("{a} {b}").as_bytes());
        assert_eq!(chain_id(Some(&a), &b), expected);
        assert_eq!(chain_ids(&[a.clone(), b.clone()]), vec![a, expected]);
    }

    #[test]
    fn begin_commit_race_remove_list() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let id = d("layer");
        let t1 = store.begin().unwrap();
        fs::write(t1.fs_path().join("one"), b"1").unwrap();
        let t2 = store.begin().unwrap();
        fs::write(t2.fs_path().join("two"), b"2").unwrap();
        assert!(t1.commit(&id).unwrap());
        assert!(!t2.commit(&id).unwrap());
        assert!(store.exists(&id));
        assert!(store.path(&id).join("one").exists());
        assert_eq!(store.list().unwrap(), vec![id.clone()]);
        // only the committed snapshot is left
        assert_eq!(fs::read_dir(store.base_dir()).unwrap().count(), 1);
        assert!(store.remove(&id).unwrap());
        assert!(!store.remove(&id).unwrap());
        assert_eq!(fs::read_dir(store.base_dir()).unwrap().count(), 0);
    }

    #[test]
    fn cleanup_tmp_and_locked_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let t = store.begin().unwrap();
        let sub = t.fs_path().join("locked");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("f"), b"x").unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o000)).unwrap();
        std::mem::forget(t); // simulate a crash
        assert_eq!(store.cleanup_tmp().unwrap(), 1);
        assert_eq!(fs::read_dir(store.base_dir()).unwrap().count(), 0);
    }

    #[test]
    fn layout_and_option_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = prepare_layout(
            &[tmp.path().join("l1"), tmp.path().join("l2")],
            &tmp.path().join("c"),
        )
        .unwrap();
        assert_eq!(
            layout.lower_dirs,
            vec![tmp.path().join("l2"), tmp.path().join("l1")]
        );
        assert!(layout.upper_dir.is_dir() && layout.work_dir.is_dir());
        let opts = overlay_options(&layout, Path::new("/mnt")).unwrap();
        assert!(opts.starts_with(&format!(
            "lowerdir={}:{}",
            tmp.path().join("l2").display(),
            tmp.path().join("l1").display()
        )));

        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/berth/snapshots/{:064}/fs", i)))
            .collect();
        let big = RootfsLayout {
            lower_dirs: many,
            upper_dir: "/u".into(),
            work_dir: "/w".into(),
        };
        let err = overlay_options(&big, Path::new("/mnt")).unwrap_err();
        assert!(err.to_string().contains("too many layers"), "{err}");

        let empty = prepare_layout(&[], &tmp.path().join("c2")).unwrap();
        assert_eq!(empty.lower_dirs, vec![tmp.path().join("c2").join("lower")]);
    }
}
