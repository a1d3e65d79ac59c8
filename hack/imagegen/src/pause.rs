//! `pause:3.9`: a tiny static pause image for runtimes that need one for every pod
//! (containerd's `sandbox_image`). berth itself runs pods without it; the benchmark
//! (`hack/bench`) gives it to containerd so both sides run from the same local registry.
//!
//! The binary is `pause/pause.c` compiled with `gcc -static` when the image is built
//! (sleeps until SIGTERM/SIGINT, then exits 0; reaps reparented children). Without gcc
//! the image falls back to busybox-static running a small shell loop with the same
//! behaviour, so pushing the standard images never needs a C toolchain.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::image::{Compression, ImageConfig, ImageSpec, DEFAULT_PATH_ENV};
use crate::layer::Layer;

/// The C source of the pause binary.
pub const PAUSE_C_SOURCE: &str = include_str!("../pause/pause.c");

/// Path of the entrypoint inside the image.
pub const PAUSE_PATH: &str = "/pause";

/// The shell fallback: `wait` returns when a trapped signal arrives, so the trap runs at once.
const PAUSE_SH: &str = "#!/bin/sh\n\
# berth test pause: sleep until SIGTERM/SIGINT; sh reaps its children\n\
trap 'exit 0' TERM INT\n\
while :; do sleep 2147483647 & wait $!; done\n";

/// Compiles [`PAUSE_C_SOURCE`] statically, once per process. `None` (with the reason on
/// stderr) when gcc is missing or cannot link statically (no libc6-dev).
fn static_pause_binary() -> Option<&'static [u8]> {
    static BINARY: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    BINARY
        .get_or_init(|| match compile_static(PAUSE_C_SOURCE) {
            Ok(bytes) => Some(bytes),
            Err(reason) => {
                eprintln!("imagegen: pause image falls back to busybox sh: {reason}");
                None
            }
        })
        .as_deref()
}

fn compile_static(source: &str) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let source_path = dir.path().join("pause.c");
    let binary_path = dir.path().join("pause");
    std::fs::write(&source_path, source).map_err(|e| format!("writing {}: {e}", source_path.display()))?;
    let output = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&binary_path)
        .arg(&source_path)
        .output()
        .map_err(|e| format!("running gcc: {e}"))?;
    if !output.status.success() {
        return Err(format!("gcc -static failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    read_binary(&binary_path)
}

fn read_binary(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// `pause:3.9`: one gzip layer holding `/pause` (static C binary, or the busybox fallback).
pub fn pause() -> ImageSpec {
    let layer = match static_pause_binary() {
        // Mount points the runtime would otherwise have to create in the rootfs.
        Some(binary) => ["dev", "etc", "proc", "sys"]
            .iter()
            .fold(Layer::new(), |layer, dir| layer.dir(dir, 0o755))
            .file(PAUSE_PATH, binary, 0o755),
        None => Layer::new().rootfs_skeleton().busybox().file(PAUSE_PATH, PAUSE_SH, 0o755),
    };
    let config = ImageConfig {
        entrypoint: Some(vec![PAUSE_PATH.to_string()]),
        env: vec![DEFAULT_PATH_ENV.into()],
        working_dir: Some("/".into()),
        stop_signal: Some("SIGTERM".into()),
        ..Default::default()
    };
    ImageSpec { layers: vec![(layer, Compression::Gzip)], config, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_image_has_one_executable_entrypoint() {
        let spec = pause();
        assert_eq!(spec.layers.len(), 1);
        assert_eq!(spec.config.entrypoint.as_deref(), Some(&[PAUSE_PATH.to_string()][..]));
        let entry = spec.layers[0]
            .0
            .entries()
            .iter()
            .find(|e| e.name == b"pause")
            .expect("/pause in the layer");
        assert_eq!(entry.mode, 0o755);
    }
}
