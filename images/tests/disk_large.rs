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
    std::iter::once(head)
        .chain(data)
        .chain(std::iter::once(Bytes::from(vec![0u8; 1024])))
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
    fetch_layer(&content, &snapshots, &spec, body(), |_| {})
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let growth_mib = (vm_hwm_kib() - before) / 1024;
    eprintln!(
        "200 MiB layer: {:.2}s ({:.0} MiB/s), peak RSS grew {growth_mib} MiB",
        elapsed.as_secs_f64(),
        200.0 / elapsed.as_secs_f64()
    );
    assert!(
        growth_mib < 64,
        "peak RSS grew {growth_mib} MiB while streaming a 200 MiB layer"
    );
    let unpacked = std::fs::metadata(snapshots.path(&spec.chain_id).join("big.bin")).unwrap();
    assert_eq!(unpacked.len(), FILE_SIZE);
    assert_eq!(
        std::fs::metadata(content.blob_path(&digest)).unwrap().len(),
        size
    );
}

/// Throughput of the gzip path (the common layer type). A benchmark, not a check:
/// `cargo test --release -p berth-images --test disk_large -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn gzip_layer_throughput() {
    use std::io::Write;
    // Text-like data compresses about as well as binaries do in real layers.
    let compress = || {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        for chunk in chunks() {
            if chunk.len() != CHUNK {
                enc.write_all(&chunk).unwrap(); // tar header and end blocks as they are
                continue;
            }
            let text: Vec<u8> = chunk
                .iter()
                .map(|b| b"abcdefghij klmnop\n"[(*b % 18) as usize])
                .collect();
            enc.write_all(&text).unwrap();
        }
        enc.finish().unwrap()
    };
    let blob = compress();
    let mut tar_hasher = Sha256Hasher::new();
    let mut dec = flate2::read::GzDecoder::new(&blob[..]);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut dec, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        tar_hasher.update(&buf[..n]);
    }
    let diff_id = tar_hasher.finish();
    let digest = berth_images::digest::Digest::of(&blob);
    let spec = LayerSpec {
        digest,
        size: blob.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        chain_id: diff_id.clone(),
        diff_id,
    };
    let tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("BERTH_BENCH_PHASES").is_some() {
        let t = Instant::now();
        let mut dec = flate2::read::GzDecoder::new(&blob[..]);
        std::io::copy(&mut dec, &mut std::io::sink()).unwrap();
        eprintln!("gunzip only: {:.2}s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut dec = flate2::read::GzDecoder::new(&blob[..]);
        let mut h = Sha256Hasher::new();
        let mut b = vec![0u8; 256 * 1024];
        loop {
            let n = std::io::Read::read(&mut dec, &mut b).unwrap();
            if n == 0 {
                break;
            }
            h.update(&b[..n]);
        }
        eprintln!("gunzip+sha256: {:.2}s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let dir = tmp.path().join("apply");
        std::fs::create_dir(&dir).unwrap();
        berth_images::unpack::apply_layer(
            &dir,
            &blob[..],
            berth_images::unpack::Compression::Gzip,
            &spec.digest,
        )
        .unwrap();
        eprintln!("apply_layer from memory: {:.2}s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::fs::write(tmp.path().join("blobcopy"), &blob).unwrap();
        std::fs::File::open(tmp.path().join("blobcopy"))
            .unwrap()
            .sync_data()
            .unwrap();
        eprintln!("write+fsync blob: {:.2}s", t.elapsed().as_secs_f64());
    }
    let content = ContentStore::open(tmp.path()).unwrap();
    let snapshots = SnapshotStore::open(tmp.path()).unwrap();
    let pieces: Vec<io::Result<Bytes>> = blob
        .chunks(CHUNK)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let started = Instant::now();
    fetch_layer(&content, &snapshots, &spec, stream::iter(pieces), |_| {})
        .await
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "gzip layer: {} MiB compressed, 200 MiB unpacked in {:.2}s ({:.0} MiB/s of tar)",
        blob.len() >> 20,
        elapsed.as_secs_f64(),
        200.0 / elapsed.as_secs_f64()
    );
}
