//! What kubelet's image manager does after a pull: list (with filter), status, remove by
//! each reference form, image-fs stats, and that records survive a crash, and that
//! concurrent pulls of one image share the work.

use std::time::{Duration, Instant};

use berth_imagegen::LocalRegistry;
use berth_tests::cri::{image_spec, image_status, list_images, pull, remove_image};
use berth_tests::fixtures::{self, push_std, reference, verbose_info};
use berth_tests::proxy::CountingProxy;
use berth_tests::{store, Berthd, ImageClient};
use k8s_cri::v1::{FilesystemUsage, ImageFilter, ImageFsInfoRequest, ListImagesRequest};

#[tokio::test]
async fn list_images_all_and_filtered() {
    let registry = fixtures::registry();
    let busybox = push_std(&registry, "busybox");
    let zstd = push_std(&registry, "zstd");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let busybox_ref = reference(&registry, "busybox:latest");
    pull(&mut images, &busybox_ref).await.expect("pull busybox");
    pull(&mut images, &reference(&registry, "zstd:latest")).await.expect("pull zstd");

    let mut ids: Vec<String> = list_images(&mut images).await.expect("ListImages").into_iter().map(|i| i.id).collect();
    ids.sort();
    let mut expected = vec![busybox.images[0].config_digest.clone(), zstd.images[0].config_digest.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    for filter in [busybox_ref.clone(), busybox.images[0].config_digest.clone()] {
        let request = ListImagesRequest { filter: Some(ImageFilter { image: Some(image_spec(&filter)) }) };
        let listed = images.list_images(request).await.expect("ListImages with filter").into_inner().images;
        let listed: Vec<String> = listed.into_iter().map(|i| i.id).collect();
        assert_eq!(listed, vec![busybox.images[0].config_digest.clone()], "filter {filter}");
    }
    let request = ListImagesRequest { filter: Some(ImageFilter { image: Some(image_spec(&reference(&registry, "nothing:here"))) }) };
    let listed = images.list_images(request).await.expect("ListImages with a filter matching nothing").into_inner().images;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn image_status_of_unknown_image_is_ok_and_empty() {
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    for unknown in ["docker.io/library/nothing:latest", "busybox", &format!("sha256:{}", "1".repeat(64))] {
        let status = image_status(&mut images, unknown, true).await.unwrap_or_else(|e| panic!("ImageStatus {unknown}: {e:?}"));
        assert!(status.image.is_none(), "{unknown}: {status:?}");
    }
}

#[tokio::test]
async fn image_status_by_id_and_verbose_config() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "nonroot");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let id = pull(&mut images, &reference(&registry, "nonroot:latest")).await.expect("pull");
    for name in [id.clone(), id.trim_start_matches("sha256:").to_string(), id.trim_start_matches("sha256:")[..12].to_string()] {
        let status = image_status(&mut images, &name, true).await.expect("ImageStatus");
        let image = status.image.as_ref().unwrap_or_else(|| panic!("ImageStatus by {name} finds nothing"));
        assert_eq!(image.id, id);
        let info = verbose_info(&status);
        assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000", "{info}");
        assert_eq!(info["imageSpec"]["config"]["WorkingDir"], "/home/app", "{info}");
        assert_eq!(info["imageSpec"]["rootfs"]["diff_ids"], serde_json::json!(pushed.images[0].diff_ids), "{info}");
    }
    let plain = image_status(&mut images, &id, false).await.expect("ImageStatus");
    assert!(plain.info.is_empty(), "non-verbose ImageStatus carries no info: {:?}", plain.info);
}

/// Pulls busybox, removes it by `how(registry, id, manifest digest)`, and checks it is gone
/// from CRI and, after GC, from disk.
async fn assert_removed_by(how: impl Fn(&LocalRegistry, &str, &str) -> String) {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "busybox");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let id = pull(&mut images, &reference(&registry, "busybox:latest")).await.expect("pull");
    assert!(!store::snapshot_dirs(berthd.root()).is_empty());

    let name = how(&registry, &id, &pushed.digest);
    remove_image(&mut images, &name).await.unwrap_or_else(|e| panic!("RemoveImage {name}: {e:?}"));
    let listed = list_images(&mut images).await.expect("ListImages");
    assert!(listed.is_empty(), "after RemoveImage {name}: {listed:?}");
    let status = image_status(&mut images, &reference(&registry, "busybox:latest"), false).await.expect("ImageStatus");
    assert!(status.image.is_none(), "after RemoveImage {name}: {status:?}");

    // Garbage collection may run after the answer; give it a moment.
    let layer = pushed.images[0].layer_digests[0].clone();
    wait_until(Duration::from_secs(10), || {
        store::snapshot_dirs(berthd.root()).is_empty() && !store::has_blob(berthd.root(), &layer)
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "content of a removed image stays: snapshots {:?}, blobs {:?}",
            store::snapshot_dirs(berthd.root()),
            store::blobs(berthd.root())
        )
    });
    berthd.assert_no_temp_leftovers();

    // And it can be pulled again.
    let again = pull(&mut images, &reference(&registry, "busybox:latest")).await.expect("pull after removal");
    assert_eq!(again, id);
}

#[tokio::test]
async fn remove_image_by_id() {
    assert_removed_by(|_, id, _| id.to_string()).await;
}

#[tokio::test]
async fn remove_image_by_tag() {
    assert_removed_by(|registry, _, _| reference(registry, "busybox:latest")).await;
}

#[tokio::test]
async fn remove_image_by_digest_reference() {
    assert_removed_by(|registry, _, digest| format!("{}/busybox@{digest}", registry.addr())).await;
}

#[tokio::test]
async fn removing_by_one_tag_removes_all_tags() {
    // CRI removes the image, not the tag (critest: "removing image by one tag should
    // remove all tags"); kubelet's GC relies on it.
    let registry = fixtures::registry();
    push_std(&registry, "busybox"); // as busybox and library/busybox
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let first = reference(&registry, "busybox:latest");
    let second = reference(&registry, "library/busybox:latest");
    let id = pull(&mut images, &first).await.expect("pull first tag");
    assert_eq!(pull(&mut images, &second).await.expect("pull second tag"), id, "one image, two tags");
    let image = image_status(&mut images, &id, false).await.expect("ImageStatus").image.expect("image");
    let mut tags = image.repo_tags.clone();
    tags.sort();
    assert_eq!(tags, vec![first.clone(), second.clone()], "one image carries both tags");

    remove_image(&mut images, &first).await.expect("RemoveImage first tag");
    for name in [&first, &second, &id] {
        let status = image_status(&mut images, name, false).await.expect("ImageStatus");
        assert!(status.image.is_none(), "{name} still resolves after removing by one tag: {status:?}");
    }
    assert!(list_images(&mut images).await.expect("ListImages").is_empty());
}

#[tokio::test]
async fn remove_unknown_image_succeeds() {
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    for unknown in ["docker.io/library/nothing:latest", &format!("sha256:{}", "2".repeat(64))] {
        remove_image(&mut images, unknown).await.unwrap_or_else(|e| panic!("RemoveImage {unknown}: {e:?}"));
    }
}

#[tokio::test]
async fn image_fs_info_grows_with_a_pull() {
    let registry = fixtures::registry();
    push_std(&registry, "busybox");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;

    let before = image_fs_usage(&mut images).await;
    let mountpoint = before.fs_id.as_ref().map(|f| f.mountpoint.clone()).unwrap_or_default();
    assert!(
        berthd.root().starts_with(&mountpoint) || mountpoint.starts_with(&*berthd.root().to_string_lossy()),
        "ImageFsInfo names the image store's filesystem, got {mountpoint:?} for root {}",
        berthd.root().display()
    );
    pull(&mut images, &reference(&registry, "busybox:latest")).await.expect("pull");
    let after = image_fs_usage(&mut images).await;

    let bytes = |u: &FilesystemUsage| u.used_bytes.as_ref().map(|v| v.value).unwrap_or(0);
    let inodes = |u: &FilesystemUsage| u.inodes_used.as_ref().map(|v| v.value).unwrap_or(0);
    assert!(bytes(&after) > 0 && inodes(&after) > 0, "{after:?}");
    // busybox is ~1 MB compressed and ~2 MB unpacked, with hundreds of applet symlinks.
    assert!(bytes(&after) >= bytes(&before) + 1_000_000, "used bytes {} -> {}", bytes(&before), bytes(&after));
    assert!(inodes(&after) >= inodes(&before) + 100, "inodes {} -> {}", inodes(&before), inodes(&after));
    assert!(after.timestamp > 0 && after.timestamp >= before.timestamp);
}

async fn image_fs_usage(images: &mut ImageClient) -> FilesystemUsage {
    let response = images.image_fs_info(ImageFsInfoRequest {}).await.expect("ImageFsInfo").into_inner();
    assert_eq!(response.image_filesystems.len(), 1, "{response:?}");
    response.image_filesystems[0].clone()
}

#[tokio::test]
async fn images_survive_kill9_and_restart() {
    let registry = fixtures::registry();
    push_std(&registry, "multilayer");
    let mut berthd = Berthd::start().await;
    let tag = reference(&registry, "multilayer:latest");
    let mut images = berthd.images().await;
    let id = pull(&mut images, &tag).await.expect("pull");
    let before = image_status(&mut images, &tag, true).await.expect("ImageStatus");
    let snapshots_before = store::snapshot_dirs(berthd.root());
    drop(images);

    berthd.kill9();
    berthd.restart().await;

    let mut images = berthd.images().await;
    let after = image_status(&mut images, &tag, true).await.expect("ImageStatus after restart");
    let image = after.image.clone().expect("image still recorded after kill -9");
    let original = before.image.clone().expect("image");
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, original.repo_tags);
    assert_eq!(image.repo_digests, original.repo_digests);
    assert_eq!(image.size, original.size);
    assert_eq!(verbose_info(&after)["chainIDs"], verbose_info(&before)["chainIDs"]);
    assert_eq!(store::snapshot_dirs(berthd.root()), snapshots_before, "snapshots kept");
    assert_eq!(list_images(&mut images).await.expect("ListImages").len(), 1);

    // A graceful restart keeps it too, and a re-pull is the same image.
    drop(images);
    berthd.restart().await;
    let mut images = berthd.images().await;
    assert_eq!(pull(&mut images, &tag).await.expect("re-pull"), id);
    assert_eq!(list_images(&mut images).await.expect("ListImages").len(), 1);
    drop(images);
    berthd.stop();
    berthd.assert_no_leaks();
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_share_the_work() {
    const PULLS: usize = 8;
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "multilayer");
    // Pull through a proxy that counts blob downloads.
    let proxy = CountingProxy::start(&registry.addr()).await;
    let berthd = Berthd::start().await;
    let tag = format!("{}/multilayer:latest", proxy.addr());

    let mut tasks = Vec::new();
    for _ in 0..PULLS {
        let mut images = berthd.images().await;
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move { pull(&mut images, &tag).await }));
    }
    for task in tasks {
        let id = task.await.expect("pull task").expect("concurrent pull");
        assert_eq!(id, pushed.images[0].config_digest);
    }

    let mut images = berthd.images().await;
    assert_eq!(list_images(&mut images).await.expect("ListImages").len(), 1, "one image record");
    let chain = store::chain_ids(&pushed.images[0].diff_ids);
    let mut snapshots: Vec<String> = store::snapshot_dirs(berthd.root())
        .iter()
        .map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    snapshots.sort();
    let mut expected: Vec<String> = chain.iter().map(|c| c.trim_start_matches("sha256:").to_string()).collect();
    expected.sort();
    assert_eq!(snapshots, expected, "one snapshot per chain id");
    berthd.assert_no_temp_leftovers();

    // Each layer blob left the registry once: the pulls shared the downloads.
    for layer in &pushed.images[0].layer_digests {
        let fetches = proxy.gets_of(layer);
        assert_eq!(fetches, 1, "layer {layer} was downloaded {fetches} times by {PULLS} concurrent pulls: {:#?}", proxy.requests());
    }
}

#[tokio::test]
async fn pulling_again_is_idempotent() {
    let registry = fixtures::registry();
    push_std(&registry, "busybox");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let tag = reference(&registry, "busybox:latest");
    let first = pull(&mut images, &tag).await.expect("first pull");
    let snapshots = store::snapshot_dirs(berthd.root());
    let blobs = store::blobs(berthd.root());
    let second = pull(&mut images, &tag).await.expect("second pull");
    assert_eq!(first, second);
    assert_eq!(store::snapshot_dirs(berthd.root()), snapshots);
    assert_eq!(store::blobs(berthd.root()), blobs);
    assert_eq!(list_images(&mut images).await.expect("ListImages").len(), 1);
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
