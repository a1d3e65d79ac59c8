//! fetch_layer and unpack_stored_layer: success, races, and every failure leaving nothing.

mod disk_support;

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use berth_images::content::ContentStore;
use berth_images::digest::Digest;
use berth_images::snapshot::SnapshotStore;
use berth_images::unpack::{fetch_layer, unpack_stored_layer, LayerSpec};
use berth_images::Error;
use bytes::Bytes;
use disk_support::*;
use futures::stream::{self, Stream, StreamExt};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

struct Stores {
    tmp: tempfile::TempDir,
    content: ContentStore,
    snapshots: SnapshotStore,
}

impl Stores {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let content = ContentStore::open(tmp.path()).unwrap();
        let snapshots = SnapshotStore::open(tmp.path()).unwrap();
        Self {
            tmp,
            content,
            snapshots,
        }
    }

    /// Nothing but the committed blobs and snapshots: no temp files or dirs anywhere.
    fn assert_no_leftovers(&self) {
        assert!(
            names(self.content.ingest_dir()).is_empty(),
            "ingest: {:?}",
            names(self.content.ingest_dir())
        );
        let tmp: Vec<String> = names(self.snapshots.base_dir())
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(tmp.is_empty(), "temp snapshots left: {tmp:?}");
    }

    fn assert_empty(&self) {
        self.assert_no_leftovers();
        assert!(self.content.list().unwrap().is_empty());
        assert!(self.snapshots.list().unwrap().is_empty());
        let _ = self.tmp.path();
    }
}

fn sample_tar() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..50_000u32 {
        body.extend_from_slice(&i.to_le_bytes());
    }
    Layer::new()
        .dir("bin/", 0o755)
        .file("bin/data", &body, 0o755)
        .symlink("bin/sh", "data")
        .finish()
}

fn spec_for(blob: &[u8], tar: &[u8], media_type: &str) -> LayerSpec {
    let diff_id = sha(tar);
    LayerSpec {
        digest: sha(blob),
        size: blob.len() as u64,
        media_type: media_type.to_string(),
        chain_id: diff_id.clone(),
        diff_id,
    }
}

/// The blob in 4 KiB chunks, as a body stream.
fn body(blob: &[u8]) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send + 'static {
    let chunks: Vec<io::Result<Bytes>> = blob
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_layer_commits_blob_and_snapshot() {
    let s = Stores::new();
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec_for(&blob, &tar, GZIP);
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), move |n| {
        seen2.store(n, Ordering::Relaxed)
    })
    .await
    .unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), blob.len() as u64);
    assert_eq!(s.content.list().unwrap(), vec![spec.digest.clone()]);
    assert_eq!(fs::read(s.content.blob_path(&spec.digest)).unwrap(), blob);
    assert!(s.snapshots.exists(&spec.chain_id));
    let fs_dir = s.snapshots.path(&spec.chain_id);
    assert_eq!(fs::read(fs_dir.join("bin/data")).unwrap().len(), 200_000);
    assert_eq!(
        fs::read_link(fs_dir.join("bin/sh")).unwrap(),
        Path::new("data")
    );
    s.assert_no_leftovers();

    // A second fetch of the same layer (the snapshot exists): succeeds, changes nothing.
    fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {})
        .await
        .unwrap();
    assert_eq!(s.snapshots.list().unwrap(), vec![spec.chain_id.clone()]);
    s.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_layer_both_succeed() {
    let s = Stores::new();
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec_for(&blob, &tar, GZIP);
    let (a, b) = tokio::join!(
        fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {}),
        fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {}),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(s.snapshots.list().unwrap(), vec![spec.chain_id.clone()]);
    assert_eq!(s.content.list().unwrap(), vec![spec.digest.clone()]);
    s.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_error_midway_leaves_nothing() {
    let s = Stores::new();
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec_for(&blob, &tar, GZIP);
    let half: Vec<io::Result<Bytes>> = blob[..blob.len() / 2]
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let broken = stream::iter(half).chain(stream::iter(vec![Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset by registry",
    ))]));
    let err = fetch_layer(&s.content, &s.snapshots, &spec, broken, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RegistryUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("connection reset"), "{err}");
    s.assert_empty();

    // A crate::Error wrapped in the io::Error comes out as itself.
    let wrapped = stream::iter(vec![Err(io::Error::other(Error::Unauthorized {
        registry: "r.example".into(),
        reason: "token expired".into(),
    }))]);
    let err = fetch_layer(&s.content, &s.snapshots, &spec, wrapped, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_or_diff_id_leaves_nothing() {
    let s = Stores::new();
    let tar = sample_tar();
    let blob = gzip(&tar);

    let mut spec = spec_for(&blob, &tar, GZIP);
    spec.digest = Digest::of(b"some other blob");
    let err = fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    s.assert_empty();

    let mut spec = spec_for(&blob, &tar, GZIP);
    spec.diff_id = Digest::of(b"some other tar");
    let err = fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    s.assert_empty();

    let mut spec = spec_for(&blob, &tar, GZIP);
    spec.size -= 10;
    let err = fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    s.assert_empty();

    let mut spec = spec_for(&blob, &tar, GZIP);
    spec.size += 10;
    let err = fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_gzip_leaves_nothing() {
    let s = Stores::new();
    let tar = sample_tar();
    let full = gzip(&tar);
    let blob = full[..full.len() * 2 / 3].to_vec();
    // The digest matches the truncated bytes: only the unpack can notice.
    let spec = spec_for(&blob, &tar, GZIP);
    let err = fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CorruptLayer { .. }), "{err}");
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layer_through_the_pipeline_leaves_nothing() {
    let s = Stores::new();
    let mut layer = Layer::new();
    layer.file("ok", &vec![1u8; 100_000], 0o644);
    for i in 0..200 {
        layer.file(&format!("filler/{i}"), &[0u8; 1000], 0o644);
    }
    let tar = layer.file("../../escape", b"pwn", 0o644).finish();
    let blob = gzip(&tar);
    let spec = spec_for(&blob, &tar, GZIP);
    let err = fetch_layer(&s.content, &s.snapshots, &spec, body(&blob), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HostileLayer { .. }), "{err}");
    s.assert_empty();
    assert!(!s.tmp.path().parent().unwrap().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_media_type_is_refused_before_anything_is_written() {
    let s = Stores::new();
    let tar = sample_tar();
    let spec = spec_for(&tar, &tar, "application/vnd.example.weird");
    let err = fetch_layer(&s.content, &s.snapshots, &spec, body(&tar), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedMediaType(_)), "{err}");
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_pull_cleans_up() {
    let s = Stores::new();
    let tar = sample_tar();
    let blob = gzip(&tar);
    let spec = spec_for(&blob, &tar, GZIP);
    // Half the body, then a stream that never ends: the pull hangs until cancelled.
    let half: Vec<io::Result<Bytes>> = blob[..blob.len() / 2]
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let hanging = stream::iter(half).chain(stream::pending());
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        fetch_layer(&s.content, &s.snapshots, &spec, hanging, |_| {}),
    )
    .await;
    assert!(r.is_err(), "timed out");
    // The worker threads notice the closed channels and remove their temp files.
    for _ in 0..100 {
        if names(s.content.ingest_dir()).is_empty()
            && !names(s.snapshots.base_dir())
                .iter()
                .any(|n| n.starts_with('.'))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpack_from_a_stored_blob() {
    let s = Stores::new();
    let tar = sample_tar();
    for (media_type, blob) in [
        ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&tar)),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            gzip(&tar),
        ),
    ] {
        let spec = spec_for(&blob, &tar, media_type);
        s.content.write_blob(&spec.digest, &blob).unwrap();
        unpack_stored_layer(&s.content, &s.snapshots, &spec)
            .await
            .unwrap();
        assert!(s.snapshots.path(&spec.chain_id).join("bin/data").is_file());
        assert!(s.snapshots.remove(&spec.chain_id).unwrap());

        let mut bad = spec.clone();
        bad.diff_id = Digest::of(b"nope");
        let err = unpack_stored_layer(&s.content, &s.snapshots, &bad)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(s.snapshots.list().unwrap().is_empty());
        s.assert_no_leftovers();
    }
}
