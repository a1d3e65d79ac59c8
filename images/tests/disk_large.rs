//! A 200 MiB layer streams through fetch_layer with flat memory. Own test binary, so no
//! other test's allocations count against this process's peak RSS (VmHWM).

mod disk_support;

use std::io;
use std::time::Instant;

use berth_images::content::ContentStore;
use berth_images::digest::Sha256Hasher;
use berth_images::snapshot::SnapshotStore;
use berth_images::unpack::{fetch_layer, LayerSpec};
use bytes::Bytes;
use futures::stream::{self, Stream};

const FILE_SIZE: u64 = 200 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// The layer tar, generated chunk by chunk and never held whole: a 512-byte header,
/// FILE_SIZE bytes of data (a random block with the chunk number stamped in), two
/// zero blocks.
fn chunks() -> impl Iterator<Item = Bytes> {
    let mut header = tar::Header::new_gnu();
    header.set_path("big.bin").unwrap();
    header.set_size(FILE_SIZE);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let head = Bytes::copy_from_slice(header.as_bytes());

    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let block: Vec<u8> = (0..CHUNK)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let n_chunks = FILE_SIZE as usize / CHUNK;
    let data = (0..n_chunks).map(move |i| {
        let mut b = block.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Bytes::from(b)
    });
    std::iter::once(head).chain(data).chain(std::iter::once(Bytes::from(vec![0u8; 1024])))
}

fn body() -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    stream::iter(chunks().map(Ok))
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_layer_streams_with_flat_memory() {
    let mut hasher = Sha256Hasher::new();
    for chunk in chunks() {
        hasher.update(&chunk);
    }
    let size = hasher.len();
    let digest = hasher.finish();
    let spec = LayerSpec {
        digest: digest.clone(),
        size,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        diff_id: digest.clone(),
        chain_id: digest.clone(),
    };

    let tmp = tempfile::tempdir().unwrap();
    let content = ContentStore::open(tmp.path()).unwrap();
    let snapshots = SnapshotStore::open(tmp.path()).unwrap();

    // Reset the peak RSS so only the pull counts.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = vm_hwm_kib();
    let started = Instant::now();
    fetch_layer(&content, &snapshots, &spec, body(), |_| {}).await.unwrap();
    let elapsed = started.elapsed();
    let growth_mib = (vm_hwm_kib() - before) / 1024;
    eprintln!(
        "200 MiB layer: {:.2}s ({:.0} MiB/s), peak RSS grew {growth_mib} MiB",
        elapsed.as_secs_f64(),
        200.0 / elapsed.as_secs_f64()
    );
    assert!(growth_mib < 64, "peak RSS grew {growth_mib} MiB while streaming a 200 MiB layer");
    let unpacked = std::fs::metadata(snapshots.path(&spec.chain_id).join("big.bin")).unwrap();
    assert_eq!(unpacked.len(), FILE_SIZE);
    assert_eq!(std::fs::metadata(content.blob_path(&digest)).unwrap().len(), size);
}
