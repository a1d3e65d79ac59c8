//! Writing a bundle's `config.json` so that a crash never leaves a half-written one: temp
//! file, fsync, rename over, fsync the directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::SpecError;

pub const CONFIG_FILE_NAME: &str = "config.json";

/// Writes `<dir>/config.json` atomically and durably; returns its path.
pub fn write_bundle(dir: &Path, spec: &Spec) -> Result<PathBuf, SpecError> {
    let io = |context: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| SpecError::Io { context, path, source }
    };
    let json = serde_json::to_vec_pretty(spec).map_err(|e| SpecError::Internal(format!("serializing the OCI spec: {e}")))?;
    let final_path = dir.join(CONFIG_FILE_NAME);
    let tmp_path = dir.join(format!(".{CONFIG_FILE_NAME}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_0600()
            .open(&tmp_path)
            .map_err(io("creating", &tmp_path))?;
        file.write_all(&json).map_err(io("writing", &tmp_path))?;
        file.sync_all().map_err(io("syncing", &tmp_path))?;
        std::fs::rename(&tmp_path, &final_path).map_err(io("renaming into", &final_path))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing bundle directory", dir))?;
        Ok(final_path.clone())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result
}

/// `OpenOptions::mode` behind a name that says why: the spec holds the container's
/// environment, which may carry secrets.
trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        spec.set_hostname(Some("first".into()));
        let path = write_bundle(dir.path(), &spec).unwrap();
        assert_eq!(path, dir.path().join("config.json"));
        assert_eq!(Spec::load(&path).unwrap().hostname().as_deref(), Some("first"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        spec.set_hostname(Some("second".into()));
        write_bundle(dir.path(), &spec).unwrap();
        assert_eq!(Spec::load(&path).unwrap().hostname().as_deref(), Some("second"));
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
    }

    #[test]
    fn missing_directory_is_an_internal_error() {
        let err = write_bundle(Path::new("/nonexistent/berth-bundle"), &Spec::default()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }
}
