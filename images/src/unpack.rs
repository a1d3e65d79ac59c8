//! The layer pipeline: download, verify, decompress and unpack, all while streaming.
//!
//! API:
//! - [`Compression`]`::{None, Gzip, Zstd}`, `Compression::from_media_type(&str)`.
//! - [`LayerSpec`]` { digest, size, media_type, diff_id, chain_id }`: one layer as the
//!   manifest (digest, size, media type) and the image config (diff id) describe it, plus
//!   its chain id ([`crate::snapshot::chain_id`]).
//! - [`apply_layer`]`(dir, reader, compression, &layer_digest) -> Result<Digest>`:
//!   blocking; decompresses and safely extracts one layer into `dir` (see
//!   [`crate::safe_tar`]) and returns its diff id (sha256 of the uncompressed tar).
//! - [`fetch_layer`]`(&content, &snapshots, &layer, body, progress).await`: the streaming
//!   pipeline. `body` goes to a temp blob (hashed) and, at the same time, through the
//!   decompressor into a temp snapshot (hashing the tar). Size, digest and diff id are
//!   verified, then blob and snapshot are renamed into place. If the snapshot already
//!   exists when we are done (a concurrent pull won), ours is dropped and this succeeds.
//!   On any error, nothing of this call remains on disk. `progress` gets the cumulative
//!   number of body bytes received.
//! - [`unpack_stored_layer`]`(&content, &snapshots, &layer).await`: the same from a blob
//!   already in the content store (blob present, snapshot missing).
//!
//! Memory stays flat whatever the layer size: the body passes through two bounded
//! channels of [`CHANNEL_DEPTH`] chunks (one to the blob writer thread, one to the unpack
//! thread) and a fixed copy buffer.
//!
//! Errors: a body error becomes the error of the pull. If the body's `io::Error` wraps a
//! [`crate::Error`] (`io::Error::other(err)`), that error is returned as is (registry code
//! can name the registry); any other is `RegistryUnavailable`.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::content::{BlobWriter, ContentStore};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::safe_tar::Extractor;
use crate::snapshot::{SnapshotStore, TempSnapshot};

/// Chunks in flight per channel. With the 8-64 KiB chunks HTTP bodies come in, this
/// keeps at most a few MB buffered while giving the threads room to run ahead.
pub const CHANNEL_DEPTH: usize = 32;

const READ_BUFFER: usize = 256 * 1024;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI or Docker layer media type. Anything that is not a tar layer
    /// (or an unknown compression) is `UnsupportedMediaType`.
    pub fn from_media_type(media_type: &str) -> Result<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
            other => Err(Error::UnsupportedMediaType(other.to_string())),
        }
    }

    /// Wraps `reader` in the matching decompressor.
    fn decoder<'a, R: Read + Send + 'a>(
        self,
        reader: R,
        layer: &str,
    ) -> Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            // Multi-member: some tools write a layer as several concatenated gzip members.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(reader).map_err(|e| {
                    Error::CorruptLayer {
                        digest: layer.to_string(),
                        reason: format!("starting zstd decompression: {e}"),
                    }
                })?)
            }
        })
    }
}

/// One layer to fetch or unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// Digest of the (compressed) blob, from the manifest.
    pub digest: Digest,
    /// Size of the blob in bytes, from the manifest.
    pub size: u64,
    pub media_type: String,
    /// sha256 of the uncompressed tar, from the image config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// Where the snapshot goes: [`crate::snapshot::chain_id`] of this layer.
    pub chain_id: Digest,
}

/// Decompresses `reader` and extracts the tar into `dir` (which must exist and be private
/// to the caller), refusing hostile entries. Returns the diff id. Blocking.
///
/// On error `dir` holds whatever was extracted so far: callers extract into a temp
/// directory and remove it (as [`fetch_layer`] does).
pub fn apply_layer(
    dir: &Path,
    reader: impl Read + Send,
    compression: Compression,
    layer_digest: &Digest,
) -> Result<Digest> {
    let layer = layer_digest.as_str();
    let corrupt = |reason: String| Error::CorruptLayer {
        digest: layer.to_string(),
        reason,
    };
    let decoder = compression.decoder(BufReader::with_capacity(READ_BUFFER, reader), layer)?;
    let tar_stream = HashingReader::new(decoder);
    let mut archive = tar::Archive::new(tar_stream);
    let mut extractor = Extractor::new(dir).map_err(|e| e.into_error(layer))?;
    extractor
        .extract_all(&mut archive)
        .map_err(|e| e.into_error(layer))?;
    // The diff id covers the whole uncompressed stream, end-of-archive blocks and padding
    // included; reading to the end also makes the decompressor check its trailer (gzip
    // CRC and length), which catches a cut stream.
    let mut tar_stream = archive.into_inner();
    io::copy(&mut tar_stream, &mut io::sink())
        .map_err(|e| corrupt(format!("reading past the end of the tar: {e}")))?;
    let (diff_id, _) = tar_stream.finish();
    tracing::debug!(layer, %diff_id, entries = extractor.entries, "layer extracted");
    Ok(diff_id)
}

/// What the worker threads get through their channels.
enum Msg {
    Data(Bytes),
    /// The body ended normally. A channel that closes without it means the pull was
    /// abandoned (error or cancellation).
    End,
}

/// How a worker thread ended when it did not succeed.
enum WorkerError {
    /// Its input was cut off because something else failed: not the cause.
    Aborted,
    Failed(Error),
}

/// Streams a layer `body` into the content store and a snapshot at once. See the module
/// documentation for the contract.
pub async fn fetch_layer<S, P>(
    content: &ContentStore,
    snapshots: &SnapshotStore,
    layer: &LayerSpec,
    mut body: S,
    progress: P,
) -> Result<()>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    P: Fn(u64) + Send,
{
    let compression = Compression::from_media_type(&layer.media_type)?;
    let blob = content.writer(&layer.digest, Some(layer.size))?;
    let temp_snapshot = snapshots.begin()?;

    let (blob_tx, blob_rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
    let (unpack_tx, unpack_rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
    // The threads own the temp blob and temp snapshot: if they fail, or this future is
    // dropped mid-pull, they remove them themselves once they stopped writing.
    let blob_task = tokio::task::spawn_blocking(move || blob_worker(blob, blob_rx));
    let layer_digest = layer.digest.clone();
    let unpack_task = tokio::task::spawn_blocking(move || {
        unpack_worker(temp_snapshot, unpack_rx, compression, &layer_digest)
    });

    let mut received: u64 = 0;
    let feed: Result<()> = async {
        while let Some(item) = body.next().await {
            let chunk = item.map_err(|e| body_error(e, layer, received))?;
            received += chunk.len() as u64;
            if received > layer.size {
                // Stop a body that is longer than announced instead of filling the disk.
                return Err(Error::SizeMismatch {
                    digest: layer.digest.to_string(),
                    expected: layer.size,
                    actual: received,
                });
            }
            // A closed channel means that worker failed; its error is collected below.
            if blob_tx.send(Msg::Data(chunk.clone())).await.is_err()
                || unpack_tx.send(Msg::Data(chunk)).await.is_err()
            {
                return Ok(());
            }
            progress(received);
        }
        let _ = blob_tx.send(Msg::End).await;
        let _ = unpack_tx.send(Msg::End).await;
        Ok(())
    }
    .await;
    drop(blob_tx);
    drop(unpack_tx);

    let blob_result = join_worker(blob_task).await;
    let unpack_result = join_worker(unpack_task).await;

    // The first real cause wins: the body, then the blob (digest/size/disk), then the
    // unpack (hostile/corrupt). A worker that was merely cut off is never the cause.
    feed?;
    let blob = match blob_result {
        Ok(blob) => Some(blob),
        Err(WorkerError::Failed(e)) => return Err(e),
        Err(WorkerError::Aborted) => None,
    };
    let (temp_snapshot, diff_id) = match unpack_result {
        Ok(done) => done,
        Err(WorkerError::Failed(e)) => return Err(e),
        Err(WorkerError::Aborted) => {
            return Err(Error::CorruptLayer {
                digest: layer.digest.to_string(),
                reason: "unpack was cut off".into(),
            })
        }
    };
    let Some(blob) = blob else {
        return Err(Error::CorruptLayer {
            digest: layer.digest.to_string(),
            reason: "blob write was cut off".into(),
        });
    };
    if diff_id != layer.diff_id {
        discard(temp_snapshot).await;
        return Err(Error::DigestMismatch {
            expected: layer.diff_id.to_string(),
            actual: diff_id.to_string(),
        });
    }
    let chain_id = layer.chain_id.clone();
    let digest = layer.digest.clone();
    run_blocking(move || {
        blob.commit()?;
        let installed = temp_snapshot.commit(&chain_id)?;
        tracing::info!(layer = %digest, chain_id = %chain_id, installed, "layer fetched and unpacked");
        Ok(())
    })
    .await
}

/// Unpacks a layer whose blob is already in the content store into its snapshot
/// (verifying blob digest and diff id on the way). Nothing partial remains on error; an
/// existing snapshot (concurrent unpack) counts as success.
pub async fn unpack_stored_layer(
    content: &ContentStore,
    snapshots: &SnapshotStore,
    layer: &LayerSpec,
) -> Result<()> {
    let content = content.clone();
    let snapshots = snapshots.clone();
    let layer = layer.clone();
    run_blocking(move || unpack_stored_layer_blocking(&content, &snapshots, &layer)).await
}

/// Blocking body of [`unpack_stored_layer`].
pub fn unpack_stored_layer_blocking(
    content: &ContentStore,
    snapshots: &SnapshotStore,
    layer: &LayerSpec,
) -> Result<()> {
    let compression = Compression::from_media_type(&layer.media_type)?;
    let file = content.open_blob(&layer.digest)?;
    let temp_snapshot = snapshots.begin()?;
    let mut blob_hash = HashingReader::new(file);
    let diff_id = apply_layer(
        &temp_snapshot.fs_path(),
        &mut blob_hash,
        compression,
        &layer.digest,
    )?;
    // apply_layer read the blob to its end; hash whatever trailing bytes it did not need.
    io::copy(&mut blob_hash, &mut io::sink())
        .map_err(|e| Error::io("reading blob", content.blob_path(&layer.digest), e))?;
    let (actual, _) = blob_hash.finish();
    if actual != layer.digest {
        return Err(Error::DigestMismatch {
            expected: layer.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    if diff_id != layer.diff_id {
        return Err(Error::DigestMismatch {
            expected: layer.diff_id.to_string(),
            actual: diff_id.to_string(),
        });
    }
    let installed = temp_snapshot.commit(&layer.chain_id)?;
    tracing::info!(layer = %layer.digest, chain_id = %layer.chain_id, installed, "stored layer unpacked");
    Ok(())
}

fn blob_worker(
    mut blob: BlobWriter,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<BlobWriter, WorkerError> {
    use std::io::Write;
    loop {
        match rx.blocking_recv() {
            Some(Msg::Data(chunk)) => {
                let path = blob.temp_path().to_path_buf();
                blob.write_all(&chunk)
                    .map_err(|e| WorkerError::Failed(Error::io("writing blob", path, e)))?;
            }
            Some(Msg::End) => break,
            None => return Err(WorkerError::Aborted), // drop removes the temp blob
        }
    }
    blob.verify().map_err(WorkerError::Failed)?;
    // fsync here, on the blocking thread, while the unpack may still be running.
    blob.sync().map_err(WorkerError::Failed)?;
    Ok(blob)
}

fn unpack_worker(
    temp_snapshot: TempSnapshot,
    rx: mpsc::Receiver<Msg>,
    compression: Compression,
    layer_digest: &Digest,
) -> Result<(TempSnapshot, Digest), WorkerError> {
    let aborted = Arc::new(AtomicBool::new(false));
    let reader = ChannelReader {
        rx,
        current: Bytes::new(),
        done: false,
        aborted: aborted.clone(),
    };
    let result = apply_layer(&temp_snapshot.fs_path(), reader, compression, layer_digest);
    match result {
        Ok(diff_id) => Ok((temp_snapshot, diff_id)),
        // temp_snapshot drops here, on this thread, after extraction stopped writing.
        Err(_) if aborted.load(Ordering::Relaxed) => Err(WorkerError::Aborted),
        Err(e) => Err(WorkerError::Failed(e)),
    }
}

/// A blocking `Read` over the chunks the async side sends.
struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    current: Bytes,
    done: bool,
    aborted: Arc<AtomicBool>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(chunk)) => self.current = chunk,
                Some(Msg::End) => self.done = true,
                None => {
                    self.aborted.store(true, Ordering::Relaxed);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "layer download was abandoned",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

fn body_error(e: io::Error, layer: &LayerSpec, received: u64) -> Error {
    let text = e.to_string();
    if let Some(inner) = e.into_inner() {
        if let Ok(err) = inner.downcast::<Error>() {
            return *err;
        }
    }
    Error::RegistryUnavailable {
        registry: "serving the layer".to_string(),
        reason: format!(
            "download of layer {} broke off after {received} of {} bytes: {text}",
            layer.digest, layer.size
        ),
    }
}

async fn join_worker<T>(
    task: tokio::task::JoinHandle<Result<T, WorkerError>>,
) -> Result<T, WorkerError> {
    match task.await {
        Ok(result) => result,
        Err(e) => Err(WorkerError::Failed(Error::io(
            "layer worker thread",
            "",
            io::Error::other(e.to_string()),
        ))),
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::io(
            "layer worker thread",
            "",
            io::Error::other(e.to_string()),
        ))
    })
}

async fn discard(temp_snapshot: TempSnapshot) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = temp_snapshot.discard() {
            tracing::warn!(error = %e, "could not remove temp snapshot");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar").unwrap(),
            Compression::None
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
                .unwrap(),
            Compression::Gzip
        );
        let err =
            Compression::from_media_type("application/vnd.oci.image.config.v1+json").unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType(_)));
        assert_eq!(err.kind(), crate::ErrorKind::BadContent);
    }
}
