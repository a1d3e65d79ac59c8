//! The results cache: one file per attachment (network name + container id + ifname) under
//! a directory that survives berthd restarts. It holds what DEL needs without anything
//! else: the conflist as it was at ADD, the CNI_ARGS, the runtime config and the result
//! (the `prevResult` of DEL). An entry is written *before* ADD runs (without a result), so
//! a crash in the middle of ADD still leaves something to DEL.
//!
//! Durability: the pre-ADD entry is the one that must survive a power cut (it is what
//! makes DEL happen after a restart), so it is written durably (temp file, fsync, rename).
//! The ADD result goes next to it into `<entry>.result`, atomically (temp file, rename)
//! but without fsync: a crash keeps it (page cache); a power cut may lose it, which costs
//! nothing but DEL's `prevResult` (every plugin's DEL works without one: it names things
//! by container id and ifname). Losing it can never hide or corrupt the entry itself.

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

    /// Where an entry's ADD result is kept (see the module doc).
    fn result_path(entry_path: &Path) -> PathBuf {
        entry_path.with_extension("json.result")
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
        // The entry now says all there is: a result file of an earlier attachment with the
        // same key must not be merged into it.
        remove_if_present(&Self::result_path(&path)).map_err(io)?;
        Ok(())
    }

    /// Records the ADD result of an entry [`put`](Self::put) before: atomically, not
    /// durably (see the module doc for why that is enough).
    pub fn put_result(&self, network: &str, container_id: &str, ifname: &str, result: &Value) -> Result<(), CacheError> {
        let path = Self::result_path(&self.path(network, container_id, ifname));
        let io = |source| CacheError::Io { path: path.clone(), source };
        let bytes = serde_json::to_vec(result).map_err(|source| CacheError::Json { path: path.clone(), source })?;
        let tmp = path.with_extension("result.tmp");
        std::fs::write(&tmp, &bytes).map_err(io)?;
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
        let mut entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|source| CacheError::Json { path: path.to_path_buf(), source })?;
        if entry.kind != KIND {
            return Ok(None);
        }
        if entry.result.is_none() {
            entry.result = Self::read_result(&Self::result_path(path));
        }
        Ok(Some(entry))
    }

    /// A result file's content; a missing or unreadable one is no result (DEL then runs
    /// without `prevResult`).
    fn read_result(path: &Path) -> Option<Value> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "unreadable CNI cache result; DEL will run without prevResult");
                None
            }
        }
    }

    /// Removes an entry; a missing one is fine. The result goes first: a crash in between
    /// leaves the entry (DEL again, harmless), never an orphaned result.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CacheError> {
        let path = self.path(network, container_id, ifname);
        let result_path = Self::result_path(&path);
        remove_if_present(&result_path).map_err(|source| CacheError::Io { path: result_path, source })?;
        remove_if_present(&path).map_err(|source| CacheError::Io { path, source })
    }

    /// The entries of one container (any network, any ifname).
    pub fn list_container(&self, container_id: &str) -> Result<Vec<CacheEntry>, CacheError> {
        // File names hold the key parts: only files that can be the container's are read.
        let infix = format!("-{}-", key_part(container_id));
        let mut entries = self.list_matching(|name| name.contains(&infix))?;
        entries.retain(|e| e.container_id == container_id);
        Ok(entries)
    }

    /// Every readable entry (unreadable files are logged and skipped: one corrupt file must
    /// not stop the reconcile of all others).
    pub fn list(&self) -> Result<Vec<CacheEntry>, CacheError> {
        self.list_matching(|_| true)
    }

    fn list_matching(&self, name_matches: impl Fn(&str) -> bool) -> Result<Vec<CacheEntry>, CacheError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CacheError::Io { path: self.dir.clone(), source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") || !path.file_name().and_then(|n| n.to_str()).is_some_and(&name_matches) {
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

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
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
        assert_eq!(cache.list_container("c1").unwrap(), vec![entry.clone()]);
        assert_eq!(cache.list_container("c0/../x").unwrap().len(), 1);
        assert!(cache.list_container("c").unwrap().is_empty());
        cache.remove("net", "c1", "eth0").unwrap();
        cache.remove("net", "c1", "eth0").unwrap();
        assert_eq!(cache.list().unwrap().len(), 1);
    }

    #[test]
    fn result_file_is_merged_and_replaced_by_a_new_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultsCache::new(dir.path());
        let entry = CacheEntry::new("net", "c1", "eth0", Path::new("/run/x"), &[], &CapabilityArgs::default(), serde_json::json!({}));
        cache.put(&entry).unwrap();
        assert_eq!(cache.get("net", "c1", "eth0").unwrap().unwrap().result, None);
        let result = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        cache.put_result("net", "c1", "eth0", &result).unwrap();
        assert_eq!(cache.get("net", "c1", "eth0").unwrap().unwrap().result, Some(result.clone()));
        // The result file is no entry of its own.
        assert_eq!(cache.list().unwrap().len(), 1);
        // A torn result (power cut) still leaves the entry, without a result.
        std::fs::write(dir.path().join("net-c1-eth0.json.result"), "{\"cniVer").unwrap();
        assert_eq!(cache.list().unwrap()[0].result, None);
        // A new ADD of the same key does not inherit an old result.
        cache.put_result("net", "c1", "eth0", &result).unwrap();
        cache.put(&entry).unwrap();
        assert_eq!(cache.get("net", "c1", "eth0").unwrap().unwrap().result, None);
        cache.put_result("net", "c1", "eth0", &result).unwrap();
        cache.remove("net", "c1", "eth0").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
