//! Where the workspace's build outputs are.

use std::path::PathBuf;

/// The Cargo workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

/// The target dir cargo builds into: `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        None => workspace_root().join("target"),
    }
}

/// The `berthd` binary under test: `BERTHD_BIN`, or the debug build in the target dir.
/// Panics with the command to run when it is missing, because building a binary from
/// inside a test would race with the other tests doing the same.
pub fn berthd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BERTHD_BIN") {
        return PathBuf::from(bin);
    }
    let bin = target_dir().join("debug").join("berthd");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace --bins` first (hack/test does), or set BERTHD_BIN",
        bin.display()
    );
    bin
}
