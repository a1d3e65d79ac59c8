//! Bad input to PullImage: unknown and malformed references, a registry that is down or
//! goes away mid-pull, corrupt and truncated blobs, and hostile layers. Each gets the
//! right gRPC code with a message that names the problem, and leaves no partial image,
//! blob or snapshot behind; hostile layers never write outside their snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_imagegen::{Compression, ImageSpec, Layer};
use berth_tests::cri::{image_status, list_images, pull};
use berth_tests::fixtures::{self, push_std, reference};
use berth_tests::{store, Berthd};
use tonic::Code;

// ---------------------------------------------------------------------------------------
// References

#[tokio::test]
async fn unknown_tag_is_not_found_naming_the_reference() {
    let registry = fixtures::registry();
    push_std(&registry, "busybox");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = reference(&registry, "busybox:no-such-tag");
    let err = pull(&mut images, &image).await.expect_err("unknown tag");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("busybox:no-such-tag"), "the message names the reference: {err:?}");
    assert_nothing_recorded(&berthd).await;
}

#[tokio::test]
async fn unknown_repository_is_not_found_naming_the_reference() {
    let registry = fixtures::registry();
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = reference(&registry, "no-such-repo:latest");
    let err = pull(&mut images, &image).await.expect_err("unknown repository");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-repo"), "the message names the reference: {err:?}");
    assert_nothing_recorded(&berthd).await;
}

#[tokio::test]
async fn unknown_digest_is_not_found() {
    let registry = fixtures::registry();
    push_std(&registry, "busybox");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = reference(&registry, &format!("busybox@sha256:{}", "0".repeat(64)));
    let err = pull(&mut images, &image).await.expect_err("unknown digest");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_nothing_recorded(&berthd).await;
}

#[tokio::test]
async fn malformed_references_are_invalid_argument() {
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    for bad in [
        "",
        "Busybox:latest",
        "busybox@sha256:abc",
        "busybox@md5:0123456789abcdef0123456789abcdef",
        "busy box",
        "busybox:",
        "busybox:tag!",
        "127.0.0.1:5000//busybox",
        "-leading-dash/busybox",
    ] {
        let started = Instant::now();
        let err = pull(&mut images, bad).await.expect_err(bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        assert!(!err.message().is_empty(), "{bad:?}: the message says what is wrong");
        assert!(started.elapsed() < Duration::from_secs(2), "{bad:?} is refused without touching the network");
    }
    assert_nothing_recorded(&berthd).await;
}

// ---------------------------------------------------------------------------------------
// Registry unreachable

#[tokio::test]
async fn registry_down_is_unavailable_within_seconds() {
    let mut registry = fixtures::registry();
    push_std(&registry, "busybox");
    registry.stop();
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = reference(&registry, "busybox:latest");

    let started = Instant::now();
    let err = pull(&mut images, &image).await.expect_err("registry is down");
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(took < Duration::from_secs(10), "Unavailable took {took:?}");
    assert!(err.message().contains(&registry.addr()), "the message names the registry: {err:?}");
    assert_nothing_recorded(&berthd).await;
}

#[tokio::test]
async fn registry_stopped_mid_pull_leaves_nothing_partial() {
    registry_goes_away_mid_pull(|registry| registry.stop()).await;
}

#[tokio::test]
async fn registry_killed_mid_pull_leaves_nothing_partial() {
    registry_goes_away_mid_pull(|registry| registry.kill()).await;
}

/// Starts a ~120 MB pull, ends the registry with `go_away` once the first layer streams
/// into the store, and checks the pull fails promptly, records nothing and leaves nothing
/// partial, and that a later pull from the restarted registry succeeds.
async fn registry_goes_away_mid_pull(go_away: impl FnOnce(&mut berth_imagegen::LocalRegistry)) {
    let mut registry = fixtures::registry();
    // ~120 MB in three uncompressed layers: large enough that the pull is still streaming
    // when the registry goes away, cheap to build without compression.
    let layers = (0..3u64)
        .map(|i| (Layer::new().dir("data", 0o755).random_file(&format!("data/blob{i}"), 40_000_000, 0x5eed + i), Compression::None))
        .collect();
    let spec = ImageSpec { layers, ..Default::default() };
    let pushed = fixtures::push(&registry, "big", "latest", &spec);
    let mut berthd = Berthd::start().await;
    let image = reference(&registry, "big:latest");

    let mut images = berthd.images().await;
    let pull_image = image.clone();
    let pulling = tokio::spawn(async move { pull(&mut images, &pull_image).await });

    // Stop the registry as soon as the first layer is streaming into the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pull_in_progress(berthd.root()) {
        assert!(Instant::now() < deadline, "the pull never started writing");
        assert!(!pulling.is_finished(), "the pull finished before any temp file was seen");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    go_away(&mut registry);

    let result = tokio::time::timeout(Duration::from_secs(30), pulling)
        .await
        .expect("the pull gives up within 30 s of the registry going away")
        .expect("pull task");
    let err = match result {
        Ok(id) => panic!("the pull of {image} succeeded ({id}) although the registry stopped mid-way"),
        Err(err) => err,
    };
    assert!(matches!(err.code(), Code::Unavailable | Code::Aborted | Code::Internal | Code::FailedPrecondition), "{err:?}");

    let mut images = berthd.images().await;
    assert!(list_images(&mut images).await.expect("ListImages").is_empty(), "no image recorded");
    // The pull answers only after every layer worker removed its temp files.
    assert_no_partial_content(&berthd, &pushed.diff_ids);

    // The interrupted pull poisons nothing: with the registry back, it completes.
    registry.restart().expect("restart registry");
    let id = pull(&mut images, &image).await.expect("pull after the registry is back");
    assert_eq!(id, pushed.config_digest);
    assert_no_partial_content(&berthd, &pushed.diff_ids);
    drop(images);
    berthd.stop();
    berthd.assert_no_leaks();
}

/// A layer is being written: a temp blob in `content/ingest` or a `.tmp-*` snapshot.
fn pull_in_progress(root: &Path) -> bool {
    !berth_tests::leaks::temp_leftovers(root).is_empty()
}

// ---------------------------------------------------------------------------------------
// Corrupt content

#[tokio::test]
async fn corrupted_layer_blob_fails_and_leaves_nothing() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "busybox");
    let layer = pushed.images[0].layer_digests[0].clone();
    let blob = registry.blob_data_path(&layer);
    let original = std::fs::read(&blob).expect("read layer blob");
    let mut corrupt = original.clone();
    // Same size, different bytes in the middle of the gzip stream.
    let middle = corrupt.len() / 2;
    for byte in &mut corrupt[middle..middle + 64] {
        *byte ^= 0xff;
    }
    std::fs::write(&blob, &corrupt).expect("corrupt layer blob");

    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let image = reference(&registry, "busybox:latest");
    let err = pull(&mut images, &image).await.expect_err("a corrupted layer must not be accepted");
    assert_ne!(err.code(), Code::NotFound, "{err:?}");
    assert_ne!(err.code(), Code::Unknown, "the code is chosen where the error is understood: {err:?}");
    assert!(err.message().contains(layer.trim_start_matches("sha256:")), "the message names the layer: {err:?}");
    assert!(!store::has_blob(berthd.root(), &layer), "the corrupt layer blob is not stored");
    assert_nothing_recorded(&berthd).await;

    // Repaired upstream, the same berthd pulls it.
    std::fs::write(&blob, &original).expect("restore layer blob");
    let id = pull(&mut images, &image).await.expect("pull after the blob is repaired");
    assert_eq!(id, pushed.images[0].config_digest);
}

#[tokio::test]
async fn truncated_layer_blob_fails_and_leaves_nothing() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "busybox");
    let layer = pushed.images[0].layer_digests[0].clone();
    let blob = registry.blob_data_path(&layer);
    let original = std::fs::read(&blob).expect("read layer blob");
    std::fs::write(&blob, &original[..original.len() / 2]).expect("truncate layer blob");

    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let err = pull(&mut images, &reference(&registry, "busybox:latest")).await.expect_err("a truncated layer must fail");
    assert_ne!(err.code(), Code::NotFound, "{err:?}");
    assert!(!store::has_blob(berthd.root(), &layer), "the truncated layer blob is not stored");
    assert_nothing_recorded(&berthd).await;
}

#[tokio::test]
async fn corrupted_config_blob_fails_and_records_nothing() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "busybox");
    let config = pushed.images[0].config_digest.clone();
    let blob = registry.blob_data_path(&config);
    let mut bytes = std::fs::read(&blob).expect("read config blob");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&blob, &bytes).expect("corrupt config blob");

    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let err = pull(&mut images, &reference(&registry, "busybox:latest")).await.expect_err("a corrupted config must fail");
    assert_ne!(err.code(), Code::NotFound, "{err:?}");
    assert!(!store::has_blob(berthd.root(), &config), "the corrupt config is not stored");
    assert!(list_images(&mut images).await.expect("ListImages").is_empty());
    berthd.assert_no_temp_leftovers();
}

// ---------------------------------------------------------------------------------------
// Hostile layers

/// Marks every file a hostile layer tries to place; it may only ever appear inside a
/// snapshot's own `fs/` directory.
const MARKER: &str = "berth-escape-marker";

/// A directory outside berthd's root with one file, `victim`, that hostile layers aim at.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new().prefix("berth-canary-").tempdir().expect("canary dir");
        std::fs::write(dir.path().join("victim"), "untouched\n").expect("write canary victim");
        Canary { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The canary dir as a path relative to `/`, for layers that climb up with `..`.
    fn relative_to_root(&self) -> String {
        self.path().to_string_lossy().trim_start_matches('/').to_string()
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        store::walk(self.path(), &mut |path, meta| {
            let content = if meta.is_file() { std::fs::read(path).unwrap_or_default() } else { Vec::new() };
            files.insert(path.to_path_buf(), content);
        });
        files
    }

    fn assert_untouched(&self, case: &str) {
        let mut expected = BTreeMap::new();
        expected.insert(self.path().join("victim"), b"untouched\n".to_vec());
        assert_eq!(self.snapshot(), expected, "{case}: the canary dir outside the snapshot changed");
        use std::os::unix::fs::MetadataExt;
        let victim = std::fs::metadata(self.path().join("victim")).expect("victim");
        assert_eq!(victim.nlink(), 1, "{case}: something hardlinked the canary file");
    }
}

/// Deep enough to climb from any snapshot dir to `/`.
fn climb() -> String {
    "../".repeat(32)
}

/// One registry, one berthd and one canary for a family of hostile layers. Each case is
/// its own image with the hostile entry first, so every vector is exercised on its own
/// (extraction stops at the first refused entry).
struct HostileSuite {
    registry: berth_imagegen::LocalRegistry,
    berthd: Berthd,
    canary: Canary,
    cases: usize,
}

impl HostileSuite {
    async fn new() -> HostileSuite {
        HostileSuite { registry: fixtures::registry(), berthd: Berthd::start().await, canary: Canary::new(), cases: 0 }
    }

    /// Pushes `layers` as one image, pulls it, and checks containment: the canary is
    /// untouched, no marker file exists outside a snapshot's `fs/`, and either the pull
    /// failed with a message naming the layer and left nothing, or it succeeded with
    /// everything inside the snapshots. Returns the pull's outcome.
    async fn check(&mut self, case: &str, layers: Vec<Layer>) -> Result<String, tonic::Status> {
        self.cases += 1;
        let repo = format!("hostile/case{}", self.cases);
        let layers = layers.into_iter().map(|l| (l, Compression::Gzip)).collect();
        let spec = ImageSpec { layers, ..Default::default() };
        let pushed = fixtures::push(&self.registry, &repo, "latest", &spec);
        let mut images = self.berthd.images().await;
        let image = reference(&self.registry, &format!("{repo}:latest"));

        let result = pull(&mut images, &image).await;
        eprintln!("{case}: {:?}", result.as_ref().map_err(|e| (e.code(), e.message().to_string())));
        self.canary.assert_untouched(case);
        assert_markers_only_in_snapshots(case, self.berthd.base_dir());
        match &result {
            Err(err) => {
                assert!(
                    matches!(err.code(), Code::FailedPrecondition | Code::InvalidArgument | Code::PermissionDenied),
                    "{case}: a hostile layer is bad content, not {:?}: {err:?}",
                    err.code()
                );
                let layer = pushed.layer_digests.last().expect("a layer").trim_start_matches("sha256:");
                assert!(err.message().contains(layer), "{case}: the message names the layer: {err:?}");
                let status = image_status(&mut images, &image, false).await.expect("ImageStatus");
                assert!(status.image.is_none(), "{case}: no image recorded, ImageStatus finds {status:?}");
                let listed = list_images(&mut images).await.expect("ListImages");
                assert!(!listed.iter().any(|i| i.id == pushed.config_digest), "{case}: ListImages shows the image");
                let last_chain = store::chain_ids(&pushed.diff_ids).pop().expect("a layer");
                assert!(
                    store::snapshot_dir(self.berthd.root(), &last_chain).is_none(),
                    "{case}: no snapshot of the refused layer"
                );
                self.berthd.assert_no_temp_leftovers();
            }
            Ok(id) => {
                assert_eq!(id, &pushed.config_digest, "{case}");
                // Accepted means contained: no device nodes other than whiteouts either.
                for dir in store::snapshot_dirs(self.berthd.root()) {
                    store::walk(&dir, &mut |path, meta| {
                        use std::os::unix::fs::{FileTypeExt, MetadataExt};
                        let device = meta.file_type().is_block_device() || meta.file_type().is_char_device();
                        assert!(!device || meta.rdev() == 0, "{case}: device node {} was created", path.display());
                    });
                }
            }
        }
        result
    }

    /// The files dir of the top layer of the image pulled in the last `check`.
    fn top_layer_dir(&self, layers: &[Layer]) -> PathBuf {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| berth_imagegen::sha256_digest(&l.to_tar().expect("render layer")))
            .collect();
        store::layer_dir(self.berthd.root(), store::chain_ids(&diff_ids).last().expect("a layer"))
    }
}

impl Drop for HostileSuite {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.canary.assert_untouched("after all cases");
        }
    }
}

/// Fails when a file named with [`MARKER`] exists under `base` outside `snapshots/*/fs/`.
fn assert_markers_only_in_snapshots(case: &str, base: &Path) {
    let snapshots = base.join("root").join("snapshots");
    store::walk(base, &mut |path, _| {
        if !path.to_string_lossy().contains(MARKER) {
            return;
        }
        let inside = path
            .strip_prefix(&snapshots)
            .ok()
            .and_then(|rel| rel.components().nth(1))
            .is_some_and(|second| second.as_os_str() == "fs");
        assert!(inside, "{case}: {} was written outside a snapshot", path.display());
    });
}

#[tokio::test]
async fn hostile_layer_path_traversal() {
    let mut suite = HostileSuite::new().await;
    let canary = suite.canary.relative_to_root();
    for (case, name) in [
        ("parent of the layer", format!("../{MARKER}")),
        ("grandparent of the layer", format!("../../{MARKER}")),
        ("climb to the canary", format!("{}{canary}/{MARKER}", climb())),
        ("overwrite the canary file", format!("{}{canary}/victim", climb())),
        ("climb from a subdir", format!("ok/../../{MARKER}")),
        ("dot-dot in the middle", format!("a/b/../../../{MARKER}")),
    ] {
        suite.check(&format!("path traversal: {case}"), vec![Layer::new().raw_path(name, "owned", 0o644)]).await.ok();
    }
}

#[tokio::test]
async fn hostile_layer_absolute_paths() {
    let mut suite = HostileSuite::new().await;
    let canary = suite.canary.path().to_path_buf();
    for (case, name) in [
        ("new file", format!("{}/{MARKER}", canary.display())),
        ("overwrite the canary file", format!("{}/victim", canary.display())),
    ] {
        suite.check(&format!("absolute path: {case}"), vec![Layer::new().raw_path(name, "owned", 0o644)]).await.ok();
    }
}

#[tokio::test]
async fn hostile_layer_symlink_escape() {
    let mut suite = HostileSuite::new().await;
    let canary_abs = suite.canary.path().to_string_lossy().into_owned();
    let canary_rel = format!("{}{}", climb(), suite.canary.relative_to_root());
    for (case, target) in [("absolute", canary_abs.clone()), ("relative", canary_rel.clone()), ("to the parent", "../..".to_string())] {
        for child in [MARKER, "victim"] {
            let layer = Layer::new().symlink("escape", &target).file(&format!("escape/{child}"), "owned", 0o644);
            suite.check(&format!("{case} symlink escape, write {child}"), vec![layer]).await.ok();
        }
        // A directory entry through the link, then a file inside it.
        let layer = Layer::new().symlink("escape", &target).dir(&format!("escape/{MARKER}-dir"), 0o755);
        suite.check(&format!("{case} symlink escape, mkdir"), vec![layer]).await.ok();
    }
    // The link in one layer, the write through it in the next: each layer unpacks into
    // its own snapshot, so the second one must not see the first one's link at all.
    let link = Layer::new().symlink("escape", &canary_abs);
    let through = Layer::new().dir("escape", 0o755).file(&format!("escape/{MARKER}"), "owned", 0o644);
    suite.check("symlink in a lower layer, write in the next", vec![link, through]).await.ok();
}

#[tokio::test]
async fn hostile_layer_symlink_replaced_by_a_file() {
    // A symlink named like a file that a later entry writes: extraction must replace the
    // link, never write through it.
    let mut suite = HostileSuite::new().await;
    let victim = suite.canary.path().join("victim").to_string_lossy().into_owned();
    let layers = vec![Layer::new().symlink("passwd", &victim).file("passwd", "owned", 0o644)];
    if suite.check("symlink then file of the same name", layers.clone()).await.is_ok() {
        let passwd = suite.top_layer_dir(&layers).join("passwd");
        let meta = std::fs::symlink_metadata(&passwd).expect("passwd");
        assert!(meta.is_file(), "the later file entry replaced the link");
        assert_eq!(std::fs::read_to_string(&passwd).expect("read passwd"), "owned");
    }
}

#[tokio::test]
async fn hostile_layer_hardlink_escape() {
    let mut suite = HostileSuite::new().await;
    let victim_abs = suite.canary.path().join("victim").to_string_lossy().into_owned();
    let victim_rel = format!("{}{}/victim", climb(), suite.canary.relative_to_root());
    for (case, target) in [("absolute", victim_abs.clone()), ("relative", victim_rel), ("host file", "/etc/hostname".to_string())] {
        let layer = Layer::new().hardlink("link", &target).file("link", "owned", 0o644);
        suite.check(&format!("{case} hardlink escape"), vec![layer]).await.ok();
    }
    let layer = Layer::new().symlink("outside", &suite.canary.path().to_string_lossy()).hardlink("link", "outside/victim");
    suite.check("hardlink through a symlink", vec![layer]).await.ok();
    let layer = Layer::new()
        .symlink("outside", &suite.canary.path().to_string_lossy())
        .file("target", "inside", 0o644)
        .hardlink("outside/victim", "target");
    suite.check("hardlink created through a symlink", vec![layer]).await.ok();
}

#[tokio::test]
async fn hostile_layer_device_nodes() {
    let mut suite = HostileSuite::new().await;
    for (case, layer) in [
        ("/dev/mem", Layer::new().dir("dev", 0o755).char_device("dev/mem", 1, 1)),
        ("block device", Layer::new().dir("dev", 0o755).block_device("dev/vda", 253, 0)),
        ("/dev/kmsg", Layer::new().char_device(&format!("{MARKER}-kmsg"), 1, 11)),
    ] {
        suite.check(&format!("device node {case}"), vec![layer]).await.ok();
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// No image listed, nothing unpacked, no temp files.
async fn assert_nothing_recorded(berthd: &Berthd) {
    let mut images = berthd.images().await;
    let listed = list_images(&mut images).await.expect("ListImages");
    assert!(listed.is_empty(), "no image recorded: {listed:?}");
    let snapshots = store::snapshot_dirs(berthd.root());
    assert!(snapshots.is_empty(), "nothing unpacked: {snapshots:?}");
    berthd.assert_no_temp_leftovers();
}

/// After a failed pull: no temp files, every stored blob verifies, and every snapshot
/// present is a complete layer of the image (kept as cache, as containerd does).
fn assert_no_partial_content(berthd: &Berthd, diff_ids: &[String]) {
    berthd.assert_no_temp_leftovers();
    let unverified = store::unverified_blobs(berthd.root());
    assert!(unverified.is_empty(), "blobs that do not match their digest: {unverified:?}");
    let chain = store::chain_ids(diff_ids);
    for dir in store::snapshot_dirs(berthd.root()) {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        assert!(chain.iter().any(|c| c.ends_with(&name)), "snapshot {name} is no layer of the image");
    }
}

