//! Network configuration loading: the first `*.conflist`, `*.conf` or `*.json` file (by
//! file name, as libcni and kubelet pick) in the conf dir is the pod network.

use std::path::{Path, PathBuf};

use crate::types::ConfList;

/// File extensions a network config may have.
pub const CONFIG_EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("no network config (*.conflist, *.conf, *.json) in {0}")]
    NotFound(PathBuf),
    #[error("reading network config dir {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading network config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The config files in `dir`, sorted by file name.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ConfError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfError::ReadDir { dir: dir.to_path_buf(), source }),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().and_then(|e| e.to_str()).is_some_and(|ext| CONFIG_EXTENSIONS.contains(&ext))
                && path.is_file()
        })
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Reads one config file: a `.conflist`, or a single plugin `.conf`/`.json` wrapped into
/// a list (a `.conf` that has `plugins` is read as a list too, as libcni does not, but
/// users write them).
pub fn load_file(path: &Path) -> Result<ConfList, ConfError> {
    let bytes = std::fs::read(path).map_err(|source| ConfError::Read { path: path.to_path_buf(), source })?;
    let mut list = ConfList::parse(&bytes).map_err(|message| ConfError::Invalid { path: path.to_path_buf(), message })?;
    list.source = path.to_path_buf();
    Ok(list)
}

/// The pod network: the first config file in `dir` by name. A broken first file is an
/// error, not a reason to take the next one: the admin meant that file.
pub fn load_first(dir: &Path) -> Result<ConfList, ConfError> {
    let files = config_files(dir)?;
    let first = files.first().ok_or_else(|| ConfError::NotFound(dir.to_path_buf()))?;
    load_file(first)
}

/// Finds plugin `plugin_type` as an executable file in the bin dirs, in order.
pub fn find_plugin(plugin_type: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    bin_dirs.iter().map(|dir| dir.join(plugin_type)).find(|path| {
        std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_by_name_and_single_conf_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load_first(dir.path()), Err(ConfError::NotFound(_))));
        std::fs::write(dir.path().join("README"), "not a config").unwrap();
        std::fs::write(dir.path().join("20-b.conflist"), r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#).unwrap();
        std::fs::write(dir.path().join("10-a.conf"), r#"{"cniVersion":"0.4.0","name":"a","type":"ptp"}"#).unwrap();
        let list = load_first(dir.path()).unwrap();
        assert_eq!(list.name, "a");
        assert_eq!(list.plugins[0].plugin_type, "ptp");
        assert_eq!(list.source, dir.path().join("10-a.conf"));
        // A broken first file is reported with its path.
        std::fs::write(dir.path().join("05-broken.json"), "{").unwrap();
        let err = load_first(dir.path()).unwrap_err().to_string();
        assert!(err.contains("05-broken.json") && err.contains("JSON"), "{err}");
        // Missing dir = no config.
        assert!(matches!(load_first(&dir.path().join("nope")), Err(ConfError::NotFound(_))));
    }

    #[test]
    fn plugin_lookup_needs_an_executable() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("bridge"), "").unwrap(); // not executable
        std::fs::write(b.path().join("bridge"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.path().join("bridge"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("bridge", &dirs), Some(b.path().join("bridge")));
        assert_eq!(find_plugin("portmap", &dirs), None);
    }
}
