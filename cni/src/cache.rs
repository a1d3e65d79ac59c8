//! The results cache: one file per attachment (network name + container id + ifname) under
//! a directory that survives berthd restarts. It holds what DEL needs without anything
//! else: the conflist as it was at ADD, the CNI_ARGS, the runtime config and the result
//! (the `prevResult` of DEL). An entry is written *before* ADD runs (without a result), so
//! a crash in the middle of ADD still leaves something to DEL.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::CapabilityArgs;

const KIND: &str = "berthCniCacheV1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub kind: String,
    pub network_name: String,
    pub container_id: String,
    pub ifname: String,
    /// The netns path ADD was given.
    pub netns: PathBuf,
    pub args: Vec<(String, String)>,
    #[serde(default)]
    pub capability_args: CapabilityArgs,
    /// The conflist ADD ran (see [`crate::types::ConfList::to_value`]).
    pub conflist: Value,
    /// The ADD result; None while ADD runs or when it did not finish.
    #[serde(default)]
    pub result: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("results cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("results cache {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ResultsCache {
    dir: PathBuf,
}

/// Keeps a key part to characters safe in a file name.
fn key_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

impl ResultsCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResultsCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{}-{}-{}.json", key_part(network), key_part(container_id), key_part(ifname)))
    }

    /// Writes an entry atomically and durably (temp file, fsync, rename): a DEL after a
    /// power cut must find either the old or the new entry.
    pub fn put(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.ifname);
        let io = |source| CacheError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let bytes = serde_json::to_vec(entry).map_err(|source| CacheError::Json { path: path.clone(), source })?;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    pub fn get(&self, network: &str, container_id: &str, ifname: &str) -> Result<Option<CacheEntry>, CacheError> {
        Self::read(&self.path(network, container_id, ifname))
    }

    fn read(path: &Path) -> Result<Option<CacheEntry>, CacheError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path: path.to_path_buf(), source }),
        };
        let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|source| CacheError::Json { path: path.to_path_buf(), source })?;
        Ok((entry.kind == KIND).then_some(entry))
    }

    /// Removes an entry; a missing one is fine.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CacheError> {
        let path = self.path(network, container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }

    /// Every readable entry (unreadable files are logged and skipped: one corrupt file must
    /// not stop the reconcile of all others).
    pub fn list(&self) -> Result<Vec<CacheEntry>, CacheError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CacheError::Io { path: self.dir.clone(), source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match Self::read(&path) {
                Ok(Some(entry)) => out.push(entry),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "skipping an unreadable CNI cache entry"),
            }
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(out)
    }
}

impl CacheEntry {
    pub fn new(network_name: &str, container_id: &str, ifname: &str, netns: &Path, args: &[(String, String)], capability_args: &CapabilityArgs, conflist: Value) -> Self {
        CacheEntry {
            kind: KIND.to_string(),
            network_name: network_name.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            args: args.to_vec(),
            capability_args: capability_args.clone(),
            conflist,
            result: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultsCache::new(dir.path().join("cache"));
        assert!(cache.list().unwrap().is_empty());
        assert_eq!(cache.get("net", "c1", "eth0").unwrap(), None);
        let mut entry = CacheEntry::new("net", "c1", "eth0", Path::new("/run/x"), &[("A".into(), "b".into())], &CapabilityArgs::default(), serde_json::json!({"name": "net"}));
        cache.put(&entry).unwrap();
        entry.result = Some(serde_json::json!({"cniVersion": "1.0.0"}));
        cache.put(&entry).unwrap();
        assert_eq!(cache.get("net", "c1", "eth0").unwrap(), Some(entry.clone()));
        let other = CacheEntry::new("net", "c0/../x", "eth0", Path::new("/run/y"), &[], &CapabilityArgs::default(), serde_json::json!({}));
        cache.put(&other).unwrap();
        // The odd id stays inside the dir.
        assert!(cache.path("net", "c0/../x", "eth0").starts_with(dir.path().join("cache")));
        std::fs::write(dir.path().join("cache/garbage.json"), "{").unwrap();
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].container_id, "c0/../x");
        cache.remove("net", "c1", "eth0").unwrap();
        cache.remove("net", "c1", "eth0").unwrap();
        assert_eq!(cache.list().unwrap().len(), 1);
    }
}
