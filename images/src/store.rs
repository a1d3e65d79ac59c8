//! [`ImageStore`]: the service behind CRI's ImageService.
//!
//! A pull: reference -> manifest (registry) -> config (parsed, diff ids -> chain ids) ->
//! missing layers fetched in parallel, each streamed straight into its blob and snapshot
//! (disk side, [`crate::unpack`]) -> manifest and config blobs written -> one metadata
//! transaction records the image. Until that transaction, nothing names the new
//! content; if any step fails, the content this pull brought is garbage collected.
//!
//! Concurrency:
//! - two pulls of the same reference run one after the other (a per-reference lock); the
//!   second finds everything on disk and only re-resolves the manifest;
//! - two pulls that need the same layer take a per-chain-id lock; the second finds the
//!   snapshot complete and skips the download;
//! - garbage collection never deletes what a running pull uses: a pull pins its
//!   digests and chain ids (in memory) before it checks what exists, and GC holds the
//!   pin set locked while it sweeps.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use tokio::sync::Semaphore;

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::metadata::{Lease, Metadata};
use crate::model::{Credentials, FsUsage, Image, ImageConfig, ImagesConfig, PullProgress, RootfsLayout};
use crate::reference::ImageRef;
use crate::registry::{Descriptor, RegistryClient, Session, StreamFailure};
use crate::snapshot::{self, SnapshotStore};

/// The image store: content, snapshots and image records under one root directory
/// (`<root>/content`, `<root>/snapshots`) plus tables in the shared redb database.
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    metadata: Metadata,
    registry: RegistryClient,
    config: ImagesConfig,
    pull_locks: KeyedLocks,
    layer_locks: KeyedLocks,
    pins: Arc<Mutex<HashMap<String, usize>>>,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`, with records in `db`.
    /// Removes leftovers of pulls that were interrupted by a crash (temp blobs, half
    /// unpacked snapshots).
    pub fn open(root: &Path, db: Arc<redb::Database>, config: ImagesConfig) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io("creating image store root", root, e))?;
        let content = ContentStore::open(root)?;
        let snapshots = SnapshotStore::open(root)?;
        let blobs = content.cleanup_ingest()?;
        let snaps = snapshots.cleanup_tmp()?;
        if blobs + snaps > 0 {
            tracing::info!(blobs, snapshots = snaps, "removed leftovers of interrupted pulls");
        }
        let metadata = Metadata::open(db)?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            content,
            snapshots,
            metadata,
            registry: RegistryClient::new(config.clone()),
            config,
            pull_locks: KeyedLocks::default(),
            layer_locks: KeyedLocks::default(),
            pins: Arc::default(),
        })
    }

    /// Pulls `reference` (normalised by [`crate::reference`]) and records the image.
    /// Concurrent pulls of the same image or layer share the work. On failure nothing
    /// partial remains. `progress` (if any) receives per-layer updates.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: Option<tokio::sync::mpsc::UnboundedSender<PullProgress>>,
    ) -> Result<Image> {
        let image_ref = ImageRef::parse(reference)?;
        let _same_ref = self.pull_locks.lock(&image_ref.lookup_key()).await;
        let started = std::time::Instant::now();
        let mut pins = PinGuard::new(self.pins.clone());
        let result = self.pull_locked(&image_ref, credentials.as_ref(), progress.as_ref(), &mut pins).await;
        drop(pins);
        match result {
            Ok((image, removed_images)) => {
                tracing::info!(image = %image_ref, id = %image.id, layers = image.chain_ids.len(), size = image.size,
                    elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
                if removed_images {
                    self.gc_logged("after a tag moved");
                }
                Ok(image)
            }
            Err(e) => {
                tracing::warn!(image = %image_ref, error = %e, "pull failed; removing what it brought");
                self.gc_logged("after a failed pull");
                Err(e)
            }
        }
    }

    async fn pull_locked(
        &self,
        image_ref: &ImageRef,
        credentials: Option<&Credentials>,
        progress: Option<&tokio::sync::mpsc::UnboundedSender<PullProgress>>,
        pins: &mut PinGuard,
    ) -> Result<(Image, bool)> {
        let (manifest, session) = self.registry.resolve(image_ref, credentials).await?;
        let manifest_digest = Digest::parse(&manifest.digest)?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        pins.pin(manifest_digest.as_str());
        pins.pin(config_digest.as_str());
        for layer in &manifest.layers {
            pins.pin(&layer.digest);
        }

        let config_bytes = if self.content.contains(&config_digest) {
            self.content.read(&config_digest)?
        } else {
            session.fetch_small_blob(&manifest.config).await?.to_vec()
        };
        let config_json = String::from_utf8(config_bytes.clone())
            .map_err(|_| Error::Registry { registry: session.endpoint().host.clone(), reason: format!("config {config_digest} is not UTF-8") })?;
        let (config, diff_ids) = parse_image_config(&config_bytes)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::Registry {
                registry: session.endpoint().host.clone(),
                reason: format!("config {config_digest} lists {} diff ids for {} layers", diff_ids.len(), manifest.layers.len()),
            });
        }
        let chain_ids = snapshot::chain_ids(&diff_ids);
        for c in &chain_ids {
            pins.pin(c.as_str());
        }

        let downloads = Arc::new(Semaphore::new(self.config.max_concurrent_downloads.max(1)));
        let fetches = manifest.layers.iter().zip(diff_ids.iter().zip(chain_ids.iter())).map(|(layer, (diff_id, chain_id))| {
            let downloads = downloads.clone();
            let session = session.clone();
            async move {
                let _permit = downloads.acquire_owned().await.map_err(|_| Error::Database("download semaphore closed".into()))?;
                self.fetch_layer_once(&session, layer, diff_id, chain_id, progress).await
            }
        });
        // Wait for every layer, also after one failed: a sibling cut off mid-stream would
        // still be removing its temp blob and snapshot after we answered, racing the
        // kubelet's retry. The first error is the answer.
        join_all(fetches).await.into_iter().collect::<Result<Vec<()>>>()?;

        // Blobs that name the image go in last: until the record exists they are garbage.
        self.content.write_blob(&manifest_digest, &manifest.bytes)?;
        if !self.content.contains(&config_digest) {
            self.content.write_blob(&config_digest, &config_bytes)?;
        }

        // A reference with a digest records the digest only (containerd drops the tag of
        // `repo:tag@digest`). The repo digest names what the reference resolved to: the
        // index for a multi-arch image, as `docker images --digests` and containerd show.
        let top_digest = manifest.index_digest.clone().unwrap_or_else(|| manifest.digest.clone());
        let repo_tags = match (&image_ref.digest, image_ref.tag_ref()) {
            (None, Some(t)) => vec![t],
            _ => vec![],
        };
        let mut repo_digests = vec![image_ref.digest_ref(&top_digest)];
        if let Some(d) = &image_ref.digest {
            if *d != top_digest {
                repo_digests.push(image_ref.digest_ref(d));
            }
        }
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let image = Image {
            id: config_digest.to_string(),
            repo_tags,
            repo_digests,
            manifest_digest: manifest_digest.to_string(),
            size,
            chain_ids: chain_ids.iter().map(|c| c.to_string()).collect(),
            config,
            config_json,
            pulled_at_ns: now_ns(),
            pinned: false,
        };
        let metadata = self.metadata.clone();
        let (stored, outcome) = tokio::task::spawn_blocking(move || metadata.put_image(&image))
            .await
            .map_err(|e| Error::Database(format!("recording image: {e}")))??;
        Ok((stored, !outcome.removed.is_empty()))
    }

    /// Fetches one layer unless its snapshot exists; a concurrent fetch of the same chain
    /// id is waited for instead of repeated.
    async fn fetch_layer_once(
        &self,
        session: &Session,
        layer: &Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
        progress: Option<&tokio::sync::mpsc::UnboundedSender<PullProgress>>,
    ) -> Result<()> {
        let report = |downloaded: u64, done: bool| {
            if let Some(tx) = progress {
                let _ = tx.send(PullProgress { digest: layer.digest.clone(), downloaded, total: layer.size, done });
            }
        };
        let _same_layer = self.layer_locks.lock(chain_id.as_str()).await;
        if self.snapshots.exists(chain_id) {
            tracing::debug!(layer = %layer.digest, chain_id = %chain_id, "layer already unpacked");
            report(layer.size, true);
            return Ok(());
        }
        let spec = crate::unpack::LayerSpec {
            digest: Digest::parse(&layer.digest)?,
            size: layer.size,
            media_type: layer.media_type.clone(),
            diff_id: diff_id.clone(),
            chain_id: chain_id.clone(),
        };
        if self.content.contains(&spec.digest) {
            // The blob survived (its snapshot was removed, or an earlier unpack failed
            // after the download): unpack from disk instead of downloading again.
            tracing::debug!(layer = %layer.digest, chain_id = %chain_id, "unpacking stored layer blob");
            crate::unpack::unpack_stored_layer(&self.content, &self.snapshots, &spec).await?;
            report(layer.size, true);
            return Ok(());
        }
        let failure = StreamFailure::default();
        let body = failure.wrap(session.blob_stream(layer).await?);
        let started = std::time::Instant::now();
        let result = crate::unpack::fetch_layer(&self.content, &self.snapshots, &spec, body, |n| report(n, false)).await;
        match result {
            Ok(()) => {
                tracing::debug!(layer = %layer.digest, chain_id = %chain_id, bytes = layer.size,
                    elapsed_ms = started.elapsed().as_millis() as u64, "layer fetched and unpacked");
                report(layer.size, true);
                Ok(())
            }
            // A transport failure mid-body surfaces from the disk side as a read error;
            // report it as what it is: the registry went away.
            Err(e) => match failure.take() {
                Some(reason) => Err(Error::RegistryUnavailable {
                    registry: session.endpoint().host.clone(),
                    reason: format!("download of {} interrupted: {reason}", layer.digest),
                }),
                None => Err(e),
            },
        }
    }

    /// All images.
    pub fn list(&self) -> Result<Vec<Image>> {
        self.metadata.list_images()
    }

    /// Resolves an image by id (`sha256:<hex>`, bare 64-hex, or a unique id prefix of
    /// at least 12 hex digits, with or without `sha256:`), tag reference (normalised) or
    /// digest reference. `Ok(None)` when there is no such image.
    pub fn resolve(&self, reference_or_id: &str) -> Result<Option<Image>> {
        let s = reference_or_id.trim();
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let is_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if is_hex && hex.len() == 64 {
            if let Some(image) = self.metadata.get_image(&format!("sha256:{hex}"))? {
                return Ok(Some(image));
            }
        } else if is_hex && hex.len() >= 12 {
            let prefix = format!("sha256:{hex}");
            let matches: Vec<Image> = self.metadata.list_images()?.into_iter().filter(|i| i.id.starts_with(&prefix)).collect();
            if matches.len() == 1 {
                return Ok(matches.into_iter().next());
            }
        }
        if s.starts_with("sha256:") {
            // An id that matched nothing; it is no reference either.
            return Ok(None);
        }
        let image_ref = ImageRef::parse(s)?;
        let Some(id) = self.metadata.lookup_name(&image_ref.lookup_key())? else {
            return Ok(None);
        };
        self.metadata.get_image(&id)
    }

    /// Removes an image by id, tag or digest reference: the whole image with all its
    /// tags and digest references, as containerd's CRI RemoveImage does (kubelet removes
    /// images by id and expects them gone). Unknown image: `Ok(false)`. Content still
    /// leased by a container stays until its lease is released.
    pub fn remove(&self, reference_or_id: &str) -> Result<bool> {
        let Some(image) = self.resolve(reference_or_id)? else {
            return Ok(false);
        };
        self.metadata.remove_image(&image.id)?;
        tracing::info!(image = %image.id, tags = ?image.repo_tags, "image removed");
        self.gc()?;
        Ok(true)
    }

    /// Bytes and inodes used under the store's root (content + snapshots).
    pub fn fs_usage(&self) -> Result<FsUsage> {
        let mut usage = FsUsage { timestamp_ns: now_ns(), ..Default::default() };
        let mut seen = HashSet::new();
        for dir in [self.root.join("content"), self.snapshots.base_dir().to_path_buf()] {
            walk_usage(&dir, &mut usage, &mut seen)?;
        }
        Ok(usage)
    }

    /// The filesystem path ImageFsInfo reports as the mountpoint.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes a lease on the image's snapshots for `holder` (a container id), and returns
    /// the overlay layout for that container's rootfs with fresh upper and work dirs
    /// under `container_dir`. While the lease exists, GC keeps the snapshots.
    pub fn prepare_rootfs(&self, image_id: &str, holder: &str, container_dir: &Path) -> Result<RootfsLayout> {
        // The pin keeps GC off the snapshots between our look and the lease commit.
        let image = self.resolve(image_id)?.ok_or_else(|| Error::ImageNotFound(image_id.to_string()))?;
        let mut pins = PinGuard::new(self.pins.clone());
        for c in &image.chain_ids {
            pins.pin(c);
        }
        let chain_ids = image.chain_ids.iter().map(|c| Digest::parse(c)).collect::<Result<Vec<_>>>()?;
        self.metadata.put_lease(holder, &Lease { image_id: image.id.clone(), chain_ids: image.chain_ids.clone() })?;
        match self.snapshots.layout(&chain_ids, container_dir) {
            Ok(layout) => Ok(layout),
            Err(e) => {
                let _ = self.metadata.remove_lease(holder);
                Err(e)
            }
        }
    }

    /// Releases `holder`'s lease; unreferenced content goes at the next GC.
    pub fn release(&self, holder: &str) -> Result<()> {
        if self.metadata.remove_lease(holder)? {
            tracing::debug!(holder, "rootfs lease released");
        }
        Ok(())
    }

    /// Deletes blobs and snapshots referenced by no image and no lease.
    pub fn gc(&self) -> Result<()> {
        // Holding the pin set for the whole sweep: a pull that wants to reuse a snapshot
        // pins it first, so it either waits for us or is seen by us.
        let pins = self.pins.lock().map_err(|_| Error::Database("pin set poisoned".into()))?;
        let mut live: HashSet<String> = pins.keys().cloned().collect();
        for image in self.metadata.list_images()? {
            live.insert(image.id.clone());
            live.insert(image.manifest_digest.clone());
            live.extend(image.chain_ids.iter().cloned());
            if let Ok(d) = Digest::parse(&image.manifest_digest) {
                if let Ok(bytes) = self.content.read(&d) {
                    live.extend(layer_digests_of(&bytes));
                }
            }
        }
        for (_, lease) in self.metadata.list_leases()? {
            live.extend(lease.chain_ids);
        }
        let (mut snaps, mut blobs) = (0usize, 0usize);
        for chain_id in self.snapshots.list()? {
            if !live.contains(chain_id.as_str()) && self.snapshots.remove(&chain_id)? {
                snaps += 1;
            }
        }
        for digest in self.content.list()? {
            if !live.contains(digest.as_str()) && self.content.delete(&digest)? {
                blobs += 1;
            }
        }
        drop(pins);
        if snaps + blobs > 0 {
            tracing::info!(snapshots = snaps, blobs, "garbage collected unreferenced content");
        }
        Ok(())
    }

    fn gc_logged(&self, why: &str) {
        if let Err(e) = self.gc() {
            tracing::warn!(error = %e, "garbage collection {why} failed");
        }
    }
}

/// Layer digests named by a stored manifest (for GC; unreadable means none).
fn layer_digests_of(manifest: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Layers {
        #[serde(default)]
        layers: Vec<LayerDigest>,
    }
    #[derive(serde::Deserialize)]
    struct LayerDigest {
        digest: String,
    }
    serde_json::from_slice::<Layers>(manifest).map(|m| m.layers.into_iter().map(|l| l.digest).collect()).unwrap_or_default()
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Adds up st_blocks * 512 and inodes under `dir`, without following symlinks and
/// counting hard-linked inodes once.
fn walk_usage(dir: &Path, usage: &mut FsUsage, seen: &mut HashSet<(u64, u64)>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Content may vanish under us (GC, a failed pull): not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("measuring image store usage", &path, e)),
        };
        if seen.insert((meta.dev(), meta.ino())) {
            usage.used_bytes += meta.blocks() * 512;
            usage.inodes_used += 1;
        }
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("measuring image store usage", &path, e)),
            };
            for entry in entries.flatten() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Parses an OCI or Docker image config: the parts berth uses, and the layer diff ids.
pub fn parse_image_config(bytes: &[u8]) -> Result<(ImageConfig, Vec<Digest>)> {
    let bad = |reason: String| Error::Registry { registry: "image config".into(), reason };
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("config is not valid JSON: {e}")))?;
    let str_of = |v: &serde_json::Value| v.as_str().map(str::to_string);
    // Docker accepts a string where a list is expected (strslice); an empty string or
    // null means "not set".
    let list_of = |v: Option<&serde_json::Value>| -> Vec<String> {
        match v {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            Some(serde_json::Value::String(s)) if !s.is_empty() => vec![s.clone()],
            _ => vec![],
        }
    };
    let keys_of = |v: Option<&serde_json::Value>| -> Vec<String> {
        let mut keys: Vec<String> = v.and_then(|v| v.as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default();
        keys.sort();
        keys
    };
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let c = v.get("config").cloned().unwrap_or(serde_json::Value::Null);
    let labels = c
        .get("Labels")
        .and_then(|l| l.as_object())
        .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default();
    let config = ImageConfig {
        architecture: v.get("architecture").and_then(str_of).unwrap_or_default(),
        os: v.get("os").and_then(str_of).unwrap_or_default(),
        user: non_empty(c.get("User").and_then(str_of)),
        env: list_of(c.get("Env")),
        entrypoint: list_of(c.get("Entrypoint")),
        cmd: list_of(c.get("Cmd")),
        working_dir: non_empty(c.get("WorkingDir").and_then(str_of)),
        exposed_ports: keys_of(c.get("ExposedPorts")),
        volumes: keys_of(c.get("Volumes")),
        labels,
        stop_signal: non_empty(c.get("StopSignal").and_then(str_of)),
    };
    let rootfs = v.get("rootfs").ok_or_else(|| bad("config has no rootfs".into()))?;
    if let Some(t) = rootfs.get("type").and_then(|t| t.as_str()) {
        if t != "layers" {
            return Err(bad(format!("rootfs type {t:?} is not \"layers\"")));
        }
    }
    let diff_ids = rootfs
        .get("diff_ids")
        .and_then(|d| d.as_array())
        .map(|a| a.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|d| d.as_str().ok_or_else(|| bad("a diff id is not a string".into())).and_then(Digest::parse))
        .collect::<Result<Vec<_>>>()?;
    Ok((config, diff_ids))
}

/// In-memory pins: digests and chain ids a running operation needs, counted.
struct PinGuard {
    set: Arc<Mutex<HashMap<String, usize>>>,
    mine: Vec<String>,
}

impl PinGuard {
    fn new(set: Arc<Mutex<HashMap<String, usize>>>) -> Self {
        PinGuard { set, mine: Vec::new() }
    }

    fn pin(&mut self, key: &str) {
        if let Ok(mut set) = self.set.lock() {
            *set.entry(key.to_string()).or_default() += 1;
            self.mine.push(key.to_string());
        }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            for key in self.mine.drain(..) {
                if let Some(n) = set.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        set.remove(&key);
                    }
                }
            }
        }
    }
}

/// Async locks by key, created on demand and dropped when nobody holds or waits.
#[derive(Default)]
struct KeyedLocks {
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

struct KeyedGuard {
    key: String,
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    async fn lock(&self, key: &str) -> KeyedGuard {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyedGuard { key: key.to_string(), map: self.map.clone(), guard: Some(guard) }
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: nobody waits, the entry can go.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_config() {
        let json = br#"{
            "created": "2024-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": "1000:1000",
                "Env": ["PATH=/usr/bin:/bin", "A=b"],
                "Entrypoint": ["/bin/httpd"],
                "Cmd": ["-f", "-p", "80"],
                "WorkingDir": "/www",
                "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                "Volumes": {"/data": {}},
                "Labels": {"org.opencontainers.image.title": "web"},
                "StopSignal": "SIGQUIT"
            },
            "rootfs": {"type": "layers", "diff_ids": [
                "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                "sha256:2222222222222222222222222222222222222222222222222222222222222222"
            ]},
            "history": [{"created_by": "x"}]
        }"#;
        let (c, diff_ids) = parse_image_config(json).unwrap();
        assert_eq!(c.architecture, "amd64");
        assert_eq!(c.os, "linux");
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.env, vec!["PATH=/usr/bin:/bin", "A=b"]);
        assert_eq!(c.entrypoint, vec!["/bin/httpd"]);
        assert_eq!(c.cmd, vec!["-f", "-p", "80"]);
        assert_eq!(c.working_dir.as_deref(), Some("/www"));
        assert_eq!(c.exposed_ports, vec!["443/tcp", "80/tcp"]);
        assert_eq!(c.volumes, vec!["/data"]);
        assert_eq!(c.labels.get("org.opencontainers.image.title").map(String::as_str), Some("web"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(diff_ids.len(), 2);
        let chain = snapshot::chain_ids(&diff_ids);
        assert_eq!(chain[0], diff_ids[0]);
    }

    #[test]
    fn parses_docker_config() {
        // Docker's config: container_config, null Entrypoint, empty User/WorkingDir,
        // Cmd as a plain string (strslice), no Labels.
        let json = br##"{
            "architecture": "arm64", "variant": "v8", "os": "linux",
            "container": "abc",
            "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"sh\"]"]},
            "config": {"Hostname": "", "User": "", "Env": null, "Entrypoint": null,
                       "Cmd": "sh", "WorkingDir": "", "Labels": null, "OnBuild": null},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:3333333333333333333333333333333333333333333333333333333333333333"]},
            "docker_version": "20.10.7"
        }"##;
        let (c, diff_ids) = parse_image_config(json).unwrap();
        assert_eq!(c.architecture, "arm64");
        assert_eq!(c.user, None);
        assert!(c.env.is_empty());
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(c.working_dir, None);
        assert!(c.labels.is_empty());
        assert_eq!(diff_ids.len(), 1);
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(parse_image_config(b"not json").is_err());
        assert!(parse_image_config(br#"{"config":{}}"#).is_err());
        assert!(parse_image_config(br#"{"rootfs":{"type":"layers","diff_ids":["sha256:../../etc"]}}"#).is_err());
        // A config without layers is fine (an empty image).
        assert!(parse_image_config(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap().1.is_empty());
    }

    fn store(dir: &tempfile::TempDir) -> ImageStore {
        let db = Arc::new(redb::Database::create(dir.path().join("meta.redb")).unwrap());
        ImageStore::open(&dir.path().join("root"), db, ImagesConfig::default()).unwrap()
    }

    fn make_snapshot(s: &ImageStore, chain_id: &Digest) {
        let tmp = s.snapshots.begin().unwrap();
        std::fs::write(tmp.fs_path().join("file"), b"x").unwrap();
        assert!(tmp.commit(chain_id).unwrap());
    }

    fn record(s: &ImageStore, id: &str, tag: &str, chain_ids: &[&Digest], manifest: &Digest) {
        let image = Image {
            id: id.to_string(),
            repo_tags: vec![tag.to_string()],
            repo_digests: vec![],
            manifest_digest: manifest.to_string(),
            size: 1,
            chain_ids: chain_ids.iter().map(|c| c.to_string()).collect(),
            config: ImageConfig::default(),
            config_json: "{}".into(),
            pulled_at_ns: 1,
            pinned: false,
        };
        s.metadata.put_image(&image).unwrap();
    }

    #[test]
    fn gc_keeps_leased_snapshots_and_referenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let (a, b, orphan) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"orphan"));
        for c in [&a, &b, &orphan] {
            make_snapshot(&s, c);
        }
        let config = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = Digest::of(config);
        let layer_blob = b"layer bytes";
        let layer_digest = Digest::of(layer_blob);
        let manifest = format!(r#"{{"schemaVersion":2,"layers":[{{"digest":"{layer_digest}","size":11}}]}}"#);
        let manifest_digest = Digest::of(manifest.as_bytes());
        let stray = Digest::of(b"stray blob");
        s.content.write_blob(&config_digest, config).unwrap();
        s.content.write_blob(&manifest_digest, manifest.as_bytes()).unwrap();
        s.content.write_blob(&layer_digest, layer_blob).unwrap();
        s.content.write_blob(&stray, b"stray blob").unwrap();
        record(&s, config_digest.as_str(), "docker.io/library/x:1", &[&a, &b], &manifest_digest);

        // The image is removed, but a container still uses its snapshots.
        let layout = s.prepare_rootfs(config_digest.as_str(), "ctr1", &dir.path().join("ctr1")).unwrap();
        assert_eq!(layout.lower_dirs, vec![s.snapshots.path(&b), s.snapshots.path(&a)]);
        assert!(layout.upper_dir.is_dir() && layout.work_dir.is_dir());
        s.gc().unwrap();
        assert!(!s.snapshots.exists(&orphan), "an unreferenced snapshot goes");
        assert!(!s.content.contains(&stray), "an unreferenced blob goes");
        assert!(s.content.contains(&layer_digest) && s.content.contains(&manifest_digest) && s.content.contains(&config_digest));

        assert!(s.remove("x:1").unwrap());
        assert!(s.resolve("docker.io/library/x:1").unwrap().is_none());
        assert!(s.snapshots.exists(&a) && s.snapshots.exists(&b), "leased snapshots stay");
        assert!(!s.content.contains(&manifest_digest), "blobs of a removed image go");

        s.release("ctr1").unwrap();
        s.gc().unwrap();
        assert!(!s.snapshots.exists(&a) && !s.snapshots.exists(&b), "released snapshots go");
        assert!(!s.remove("x:1").unwrap());
    }

    #[test]
    fn resolve_by_id_prefix_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let id = Digest::of(b"config");
        record(&s, id.as_str(), "docker.io/library/busybox:latest", &[], &Digest::of(b"m"));
        assert_eq!(s.resolve(id.as_str()).unwrap().unwrap().id, id.as_str());
        assert_eq!(s.resolve(id.hex()).unwrap().unwrap().id, id.as_str());
        assert_eq!(s.resolve(&id.hex()[..12]).unwrap().unwrap().id, id.as_str());
        assert_eq!(s.resolve(&format!("sha256:{}", &id.hex()[..16])).unwrap().unwrap().id, id.as_str());
        assert!(s.resolve(&id.hex()[..6]).unwrap().is_none(), "short prefixes are not ids");
        assert_eq!(s.resolve("busybox").unwrap().unwrap().id, id.as_str());
        assert_eq!(s.resolve("docker.io/library/busybox:latest").unwrap().unwrap().id, id.as_str());
        assert!(s.resolve("busybox:other").unwrap().is_none());
        assert!(s.resolve("sha256:0000").unwrap().is_none());
        assert!(matches!(s.resolve("Bad Ref"), Err(Error::InvalidReference { .. })));
        let usage = s.fs_usage().unwrap();
        assert!(usage.inodes_used > 0 && usage.used_bytes > 0);
    }
}

#[cfg(test)]
mod send_check {
    /// tonic handlers need `Send` futures: keep `pull` spawnable.
    #[allow(dead_code)]
    fn pull_is_send(store: &'static super::ImageStore) {
        fn assert_send<T: Send>(_: T) {}
        assert_send(store.pull("busybox", None, None));
    }
}
