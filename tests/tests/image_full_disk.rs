//! A disk that fills up during a pull: berthd's root is a small tmpfs and the image has
//! one layer larger than the whole filesystem. PullImage must fail with a message that
//! says the disk is full, record no image, and leave no partial blob, snapshot or temp
//! file (so the space is free again); afterwards the same berthd pulls an image that fits.
//! Both places the disk can fill are covered: downloading the layer blob and unpacking it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_imagegen::{Compression, ImageSpec, Layer};
use berth_tests::cri::{image_status, list_images, pull};
use berth_tests::fixtures::{self, reference};
use berth_tests::{store, Berthd};
use nix::mount::{umount2, MntFlags, MsFlags};
use tonic::Code;

/// Size of the tmpfs mounted as berthd's root.
const ROOT_SIZE_BYTES: u64 = 24 * 1024 * 1024;
/// The one layer of the image that cannot fit: random bytes, so no compression helps.
const TOO_BIG_BYTES: u64 = 64 * 1024 * 1024;
/// A layer of zeros: gzip makes it tiny, unpacked it is larger than the whole tmpfs.
const UNPACKS_TOO_BIG_BYTES: u64 = 40 * 1024 * 1024;
/// The image that fits once the failed pull has cleaned up.
const FITS_BYTES: u64 = 2 * 1024 * 1024;
/// Generous for a debug build on a shared two-core machine.
const PULL_TIMEOUT: Duration = Duration::from_secs(180);

/// A berthd whose `--root` is a tmpfs of [`ROOT_SIZE_BYTES`].
///
/// Drop stops berthd first (it has files open on the tmpfs), then unmounts the tmpfs, and
/// only then lets [`Berthd`]'s own Drop remove the temp dir; this also runs when the test
/// panics, so a failing test leaves no mount behind.
struct BerthdOnTmpfs {
    berthd: Option<Berthd>,
    mount_point: PathBuf,
    mounted: bool,
}

impl BerthdOnTmpfs {
    /// The harness spawns berthd as soon as it has made the dirs, so the tmpfs goes over
    /// the root between two runs: start, stop, mount, start again. The second run sees an
    /// empty root, exactly as a fresh node would; what the first run created is hidden
    /// underneath and removed with the temp dir.
    async fn start() -> BerthdOnTmpfs {
        let mut berthd = Berthd::start().await;
        berthd.stop();
        let mount_point = berthd.root().to_path_buf();
        let mut guard = BerthdOnTmpfs { berthd: Some(berthd), mount_point, mounted: false };
        let options = format!("size={ROOT_SIZE_BYTES},mode=0700");
        nix::mount::mount(Some("tmpfs"), &guard.mount_point, Some("tmpfs"), MsFlags::MS_NOSUID, Some(options.as_str()))
            .unwrap_or_else(|e| panic!("mount tmpfs ({options}) at {}: {e}", guard.mount_point.display()));
        guard.mounted = true;
        guard.berthd_mut().restart().await;
        guard
    }

    fn berthd(&self) -> &Berthd {
        self.berthd.as_ref().expect("berthd is there until drop")
    }

    fn berthd_mut(&mut self) -> &mut Berthd {
        self.berthd.as_mut().expect("berthd is there until drop")
    }

    /// Stops berthd and unmounts the tmpfs, so that leak checks see the plain temp dir.
    fn stop_and_unmount(&mut self) {
        self.berthd_mut().stop();
        self.unmount();
    }

    fn unmount(&mut self) {
        if self.mounted {
            if let Err(e) = umount2(&self.mount_point, MntFlags::MNT_DETACH) {
                eprintln!("image_full_disk: could not unmount tmpfs at {}: {e}", self.mount_point.display());
            }
            self.mounted = false;
        }
    }
}

impl Drop for BerthdOnTmpfs {
    fn drop(&mut self) {
        if let Some(berthd) = self.berthd.as_mut() {
            if berthd.pid().is_some() {
                // terminate() panics if berthd outlives SIGTERM and SIGKILL; a second
                // panic while unwinding would abort before the unmount below.
                let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| berthd.terminate()));
                if let Err(e) = stopped {
                    eprintln!("image_full_disk: stopping berthd failed: {e:?}");
                }
            }
        }
        self.unmount();
        // Berthd's Drop: nothing to stop, nothing mounted, removes the temp dir.
        drop(self.berthd.take());
    }
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap_or_else(|e| panic!("statvfs {}: {e}", path.display()));
    stat.blocks_available() as u64 * stat.fragment_size() as u64
}

/// Total bytes of the filesystem holding `path`.
fn total_bytes(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap_or_else(|e| panic!("statvfs {}: {e}", path.display()));
    stat.blocks() as u64 * stat.fragment_size() as u64
}

fn one_random_layer(path: &str, size: u64, seed: u64) -> ImageSpec {
    // Uncompressed: random bytes do not shrink, and gzip would only slow the push.
    let layer = Layer::new().dir("data", 0o755).random_file(path, size, seed);
    ImageSpec { layers: vec![(layer, Compression::None)], ..Default::default() }
}

/// Pulls `image` into `node`'s full tmpfs and checks it fails saying the disk is full,
/// records nothing and gives the space back; returns the error.
async fn assert_full_disk_pull_fails_cleanly(node: &BerthdOnTmpfs, image: &str, diff_ids: &[String]) -> tonic::Status {
    let root = node.berthd().root().to_path_buf();
    assert_eq!(total_bytes(&root), ROOT_SIZE_BYTES, "berthd's root is the small tmpfs");
    let free_before = free_bytes(&root);
    eprintln!("tmpfs root {}: {free_before} bytes free before the pull", root.display());

    let mut images = node.berthd().images().await;
    let result = tokio::time::timeout(PULL_TIMEOUT, pull(&mut images, image))
        .await
        .unwrap_or_else(|_| panic!("PullImage of {image} did not answer within {PULL_TIMEOUT:?} on a full disk"));
    let err = match result {
        Ok(id) => panic!("pulling {image} into a {ROOT_SIZE_BYTES}-byte root succeeded: {id}"),
        Err(err) => err,
    };
    eprintln!("full disk: PullImage answered {:?}: {}", err.code(), err.message());
    assert_ne!(err.code(), Code::Ok, "{err:?}");
    assert_eq!(err.code(), Code::ResourceExhausted, "a full image filesystem is ResourceExhausted: {err:?}");
    assert!(
        err.message().to_lowercase().contains("no space"),
        "the message says the disk is full (No space left on device): {err:?}"
    );

    // Nothing recorded, nothing partial.
    let status = image_status(&mut images, image, false).await.expect("ImageStatus after the failed pull");
    assert!(status.image.is_none(), "no image recorded, ImageStatus finds {status:?}");
    let listed = list_images(&mut images).await.expect("ListImages after the failed pull");
    assert!(listed.is_empty(), "no image recorded, ListImages shows {listed:?}");
    node.berthd().assert_no_temp_leftovers();
    let unverified = store::unverified_blobs(&root);
    assert!(unverified.is_empty(), "blobs that do not match their digest: {unverified:?}");
    let chain = store::chain_ids(diff_ids);
    let last = chain.last().expect("a layer");
    assert!(store::snapshot_dir(&root, last).is_none(), "no snapshot of the layer that did not fit");
    let snapshots = store::snapshot_dirs(&root);
    assert!(snapshots.is_empty(), "nothing unpacked: {snapshots:?}");
    // Whatever berthd wrote and did not name as a temp file, the space must be back:
    // allow a little for the manifest, config, complete small blobs and the metadata db.
    let free_after = free_bytes(&root);
    eprintln!("{free_after} bytes free after the failed pull");
    assert!(
        free_after + 2 * 1024 * 1024 >= free_before,
        "the failed pull keeps {} bytes on the disk ({free_before} free before, {free_after} after)",
        free_before.saturating_sub(free_after)
    );
    err
}

/// With space available again, the same berthd pulls `image` (pushed as `pushed`).
async fn assert_pull_that_fits_succeeds(node: &BerthdOnTmpfs, image: &str, pushed: &berth_imagegen::Pushed) {
    let root = node.berthd().root().to_path_buf();
    let mut images = node.berthd().images().await;
    let id = tokio::time::timeout(PULL_TIMEOUT, pull(&mut images, image))
        .await
        .unwrap_or_else(|_| panic!("PullImage of {image} did not answer within {PULL_TIMEOUT:?}"))
        .expect("pull an image that fits after the failed pull");
    assert_eq!(id, pushed.config_digest);
    let status = image_status(&mut images, image, false).await.expect("ImageStatus of the image that fits");
    assert!(status.image.is_some(), "the image that fits is recorded");
    let listed = list_images(&mut images).await.expect("ListImages");
    assert_eq!(listed.len(), 1, "only the image that fits is listed: {listed:?}");
    let chain = store::chain_ids(&pushed.diff_ids);
    assert!(store::snapshot_dir(&root, chain.last().expect("a layer")).is_some(), "the layer that fits is unpacked");
    node.berthd().assert_no_temp_leftovers();
}

/// The layer blob itself does not fit: the disk fills while it downloads.
#[tokio::test]
async fn disk_full_while_downloading_fails_cleanly_and_berthd_recovers() {
    let registry = fixtures::registry();
    let too_big = fixtures::push(&registry, "too-big", "latest", &one_random_layer("data/blob", TOO_BIG_BYTES, 0xf111));
    let fits = fixtures::push(&registry, "fits", "latest", &one_random_layer("data/small", FITS_BYTES, 0x5a11));
    let mut node = BerthdOnTmpfs::start().await;

    let too_big_image = reference(&registry, "too-big:latest");
    assert_full_disk_pull_fails_cleanly(&node, &too_big_image, &too_big.diff_ids).await;
    let layer = too_big.layer_digests.first().expect("one layer");
    assert!(!store::has_blob(node.berthd().root(), layer), "the layer that did not fit is not in the content store");

    assert_pull_that_fits_succeeds(&node, &reference(&registry, "fits:latest"), &fits).await;
    node.stop_and_unmount();
    node.berthd().assert_no_leaks();
}

/// The compressed blob fits easily but its contents do not: the disk fills while the
/// layer unpacks into its snapshot.
#[tokio::test]
async fn disk_full_while_unpacking_fails_cleanly_and_berthd_recovers() {
    let registry = fixtures::registry();
    let zeros = Layer::new().dir("data", 0o755).file("data/zeros", vec![0u8; UNPACKS_TOO_BIG_BYTES as usize], 0o644);
    let spec = ImageSpec { layers: vec![(zeros, Compression::Gzip)], ..Default::default() };
    let too_big = fixtures::push(&registry, "unpacks-too-big", "latest", &spec);
    let fits = fixtures::push(&registry, "fits", "latest", &one_random_layer("data/small", FITS_BYTES, 0x5a12));
    let mut node = BerthdOnTmpfs::start().await;

    let too_big_image = reference(&registry, "unpacks-too-big:latest");
    assert_full_disk_pull_fails_cleanly(&node, &too_big_image, &too_big.diff_ids).await;

    assert_pull_that_fits_succeeds(&node, &reference(&registry, "fits:latest"), &fits).await;
    node.stop_and_unmount();
    node.berthd().assert_no_leaks();
}
