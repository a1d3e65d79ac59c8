//! One directory per layer, keyed by chain id, and overlay rootfs assembly.
//!
//! Planned API (disk side):
//! - `chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest`
//! - `SnapshotStore::open(root)`, `path(&Digest)`, `exists(&Digest)`, `remove(&Digest)`, `list()`
//! - `mount_overlay(layout: &RootfsLayout, target: &Path) -> Result<()>`, `unmount(target)`
