//! The content-addressed blob store under `<root>/content`.
//!
//! Layout:
//! - `<root>/content/blobs/sha256/<hex>`: verified blobs (manifests, indexes, configs, layers).
//! - `<root>/content/ingest/<hex>-<unique>`: blobs being written. A blob becomes visible
//!   under `blobs/` only by a rename after its size and digest verified and its data was
//!   fsync'd, so a reader never sees a partial or unverified blob, and a crash leaves at
//!   most a file in `ingest/` that [`ContentStore::cleanup_ingest`] removes at startup.
//!
//! API:
//! - `ContentStore::open(root) -> Result<ContentStore>` (`root` is the image store root,
//!   e.g. `/var/lib/berth`; creates `content/blobs/sha256` and `content/ingest`).
//! - `blob_path(&Digest) -> PathBuf`, `contains(&Digest) -> bool`,
//!   `size(&Digest) -> Result<Option<u64>>`
//! - `read(&Digest) -> Result<Vec<u8>>`: whole blob, re-verified (for small blobs).
//! - `open_blob(&Digest) -> Result<File>`: for streaming a stored layer.
//! - `write_blob(&Digest, &[u8]) -> Result<()>`: small verified blobs (manifests, configs).
//! - `writer(&Digest, Option<u64>) -> Result<BlobWriter>`: streaming ingest; `BlobWriter`
//!   is `io::Write`, `commit()` verifies size + digest, fsyncs and renames; dropping an
//!   uncommitted writer deletes its temp file.
//! - `delete(&Digest) -> Result<bool>`, `list() -> Result<Vec<Digest>>`,
//!   `cleanup_ingest() -> Result<usize>`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{digests_in_dir, Digest, Sha256Hasher};
use crate::error::{Error, Result};

/// The blob store. Cheap to clone; all state is on disk.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) `<root>/content`.
    pub fn open(root: &Path) -> Result<Self> {
        let content = root.join("content");
        let blobs = content.join("blobs").join("sha256");
        let ingest = content.join("ingest");
        for dir in [&blobs, &ingest] {
            fs::create_dir_all(dir).map_err(|e| Error::io("creating content directory", dir, e))?;
        }
        Ok(Self { blobs, ingest })
    }

    /// Where a verified blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// The directory of temp files being ingested.
    pub fn ingest_dir(&self) -> &Path {
        &self.ingest
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a stored blob, `None` if absent.
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("inspecting blob", path, e)),
        }
    }

    /// Reads a whole blob and checks it still matches its digest (a blob damaged on disk
    /// is a `DigestMismatch`, not silently wrong data). Meant for small blobs.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let data = fs::read(&path).map_err(|e| Error::io("reading blob", &path, e))?;
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(data)
    }

    /// Opens a stored blob for streaming (not re-verified here; the reader hashes).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| Error::io("opening blob", path, e))
    }

    /// Stores a small blob whose bytes are all in memory, after checking them against
    /// `digest`. Storing a blob that is already there is a no-op.
    pub fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        let actual = Digest::of(data);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.contains(digest) {
            return Ok(());
        }
        let mut writer = self.writer(digest, Some(data.len() as u64))?;
        writer
            .write_all(data)
            .map_err(|e| Error::io("writing blob", &writer.temp_path, e))?;
        writer.commit()
    }

    /// Starts streaming a blob into `ingest/`. Write the bytes, then `commit()`.
    pub fn writer(&self, digest: &Digest, expected_size: Option<u64>) -> Result<BlobWriter> {
        let temp_path = self
            .ingest
            .join(format!("{}-{}", digest.hex(), unique_suffix()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temp_path)
            .map_err(|e| Error::io("creating temp blob", &temp_path, e))?;
        Ok(BlobWriter {
            file: Some(file),
            temp_path,
            final_path: self.blob_path(digest),
            blobs_dir: self.blobs.clone(),
            expected: digest.clone(),
            expected_size,
            hasher: Sha256Hasher::new(),
        })
    }

    /// Deletes a blob. `Ok(false)` if it was not there.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("deleting blob", path, e)),
        }
    }

    /// Digests of all stored blobs (files whose names are not digests are ignored).
    pub fn list(&self) -> Result<Vec<Digest>> {
        digests_in_dir(&self.blobs, "listing blobs")
    }

    /// Removes every temp file in `ingest/`. Call at startup, before any pull runs: the
    /// files are leftovers of pulls interrupted by a crash. Returns how many went.
    pub fn cleanup_ingest(&self) -> Result<usize> {
        let entries =
            fs::read_dir(&self.ingest).map_err(|e| Error::io("listing ingest", &self.ingest, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing ingest", &self.ingest, e))?;
            let path = entry.path();
            let result = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing leftover temp blob", path, e)),
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %self.ingest.display(), "removed leftover temp blobs of interrupted pulls");
        }
        Ok(removed)
    }
}

/// A blob being written to `ingest/`. Hashes as it writes. `commit()` makes it visible;
/// dropping it without commit removes the temp file.
pub struct BlobWriter {
    file: Option<File>,
    temp_path: PathBuf,
    final_path: PathBuf,
    blobs_dir: PathBuf,
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Sha256Hasher,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Checks size and digest of what was written. Does not commit.
    pub fn verify(&self) -> Result<()> {
        if let Some(expected) = self.expected_size {
            if expected != self.hasher.len() {
                return Err(Error::SizeMismatch {
                    digest: self.expected.to_string(),
                    expected,
                    actual: self.hasher.len(),
                });
            }
        }
        let actual = self.hasher.clone().finish();
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// fsyncs the data and flushes it to disk (without verifying or committing): the slow
    /// part of a commit, for callers that want it off the async runtime.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(file) = &self.file {
            file.sync_data()
                .map_err(|e| Error::io("syncing temp blob", &self.temp_path, e))?;
        }
        Ok(())
    }

    /// Verifies size and digest, fsyncs, and renames the blob into place. If the blob is
    /// already there (a concurrent pull committed it), the result is the same.
    pub fn commit(mut self) -> Result<()> {
        self.verify()?;
        self.sync()?;
        self.file = None;
        fs::rename(&self.temp_path, &self.final_path)
            .map_err(|e| Error::io("committing blob", &self.final_path, e))?;
        // Rename done: nothing for Drop to clean up.
        self.temp_path = PathBuf::new();
        // Make the rename itself durable; a failure here loses nothing that a re-pull
        // would not restore, so it is logged, not returned.
        if let Err(e) = File::open(&self.blobs_dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.blobs_dir.display(), error = %e, "could not fsync the blob directory");
        }
        tracing::debug!(digest = %self.expected, bytes = self.hasher.len(), "blob committed");
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.file = None;
        if !self.temp_path.as_os_str().is_empty() {
            if let Err(e) = fs::remove_file(&self.temp_path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.temp_path.display(), error = %e, "could not remove temp blob");
                }
            }
        }
    }
}

/// A name suffix unique within this host: pid, time and a process-wide counter.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{:x}-{}", std::process::id(), nanos, n)
}

/// Reads `reader` to its end, hashing, and returns the digest and byte count.
pub fn digest_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    let len = hasher.len();
    Ok((hasher.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let data = b"{\"schemaVersion\":2}";
        let digest = Digest::of(data);
        assert!(!store.contains(&digest));
        store.write_blob(&digest, data).unwrap();
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).unwrap(), data);
        assert_eq!(store.size(&digest).unwrap(), Some(data.len() as u64));
        assert_eq!(store.list().unwrap(), vec![digest.clone()]);
        // again: no-op
        store.write_blob(&digest, data).unwrap();
        assert!(store.delete(&digest).unwrap());
        assert!(!store.delete(&digest).unwrap());
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn wrong_digest_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let digest = Digest::of(b"right");
        let err = store.write_blob(&digest, b"wrong").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&digest));

        let mut w = store.writer(&digest, Some(5)).unwrap();
        w.write_all(b"wrong").unwrap();
        let temp = w.temp_path().to_path_buf();
        assert!(temp.exists());
        assert!(matches!(
            w.commit().unwrap_err(),
            Error::DigestMismatch { .. }
        ));
        assert!(!temp.exists());
        assert!(!store.contains(&digest));

        let mut w = store.writer(&digest, Some(99)).unwrap();
        w.write_all(b"right").unwrap();
        assert!(matches!(
            w.commit().unwrap_err(),
            Error::SizeMismatch { .. }
        ));
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn dropped_writer_and_cleanup() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let digest = Digest::of(b"x");
        {
            let mut w = store.writer(&digest, None).unwrap();
            w.write_all(b"x").unwrap();
        }
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
        fs::write(store.ingest_dir().join("leftover"), b"junk").unwrap();
        assert_eq!(store.cleanup_ingest().unwrap(), 1);
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn damaged_blob_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let digest = Digest::of(b"good");
        store.write_blob(&digest, b"good").unwrap();
        fs::write(store.blob_path(&digest), b"evil").unwrap();
        assert!(matches!(
            store.read(&digest).unwrap_err(),
            Error::DigestMismatch { .. }
        ));
    }
}
