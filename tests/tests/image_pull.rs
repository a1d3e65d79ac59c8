//! Every pull variant through CRI PullImage against a real local registry: tag, digest,
//! multi-arch index, Docker schema 2, OCI gzip / zstd / uncompressed layers, whiteouts,
//! short names through a docker.io mirror, and what ImageStatus reports afterwards.

use std::path::PathBuf;

use berth_tests::cri::{image_status, list_images, pull};
use berth_tests::fixtures::{self, mirror_config, push_std, reference, verbose_info};
use berth_tests::store::{self, chain_ids, layer_dir, OverlayMount};
use berth_tests::Berthd;

/// Pulls standard image `name` by tag and checks what every pull must give: the image id
/// is the config digest, the tag and digest references are recorded, and every layer was
/// unpacked into the snapshot of its chain id. Returns the chain ids (bottom first).
async fn pull_standard_and_check(berthd: &Berthd, registry: &berth_imagegen::LocalRegistry, name: &str) -> Vec<String> {
    let pushed = push_std(registry, name);
    let platform_image = &pushed.images[0];
    let tag_ref = reference(registry, &format!("{name}:latest"));
    let mut images = berthd.images().await;

    let image_ref = pull(&mut images, &tag_ref).await.unwrap_or_else(|e| panic!("pull {tag_ref}: {e:?}"));
    assert_eq!(image_ref, platform_image.config_digest, "PullImage returns the image id (config digest)");

    let status = image_status(&mut images, &tag_ref, true).await.expect("ImageStatus");
    let image = status.image.clone().unwrap_or_else(|| panic!("ImageStatus of {tag_ref} finds no image"));
    assert_eq!(image.id, platform_image.config_digest);
    assert!(image.repo_tags.contains(&tag_ref), "repo_tags {:?} lacks {tag_ref}", image.repo_tags);
    let digest_ref = format!("{}/{name}@{}", registry.addr(), pushed.digest);
    assert!(image.repo_digests.contains(&digest_ref), "repo_digests {:?} lacks {digest_ref}", image.repo_digests);
    assert!(image.size > 0, "size is reported");

    let expected_chain = chain_ids(&platform_image.diff_ids);
    let info = verbose_info(&status);
    let reported_chain: Vec<String> = serde_json::from_value(info["chainIDs"].clone())
        .unwrap_or_else(|e| panic!("verbose info chainIDs ({e}): {info}"));
    assert_eq!(reported_chain, expected_chain, "chain ids as the OCI image spec defines them");
    for chain_id in &expected_chain {
        layer_dir(berthd.root(), chain_id); // panics when missing
    }
    berthd.assert_no_temp_leftovers();
    expected_chain
}

#[tokio::test]
async fn pull_by_tag() {
    let registry = fixtures::registry();
    let mut berthd = Berthd::start().await;
    let chain = pull_standard_and_check(&berthd, &registry, "busybox").await;
    let busybox = layer_dir(berthd.root(), &chain[0]).join("bin/busybox");
    let host_busybox = std::fs::metadata(berth_imagegen::BUSYBOX_PATH).expect("host busybox");
    let unpacked = std::fs::metadata(&busybox).unwrap_or_else(|e| panic!("{}: {e}", busybox.display()));
    assert_eq!(unpacked.len(), host_busybox.len(), "busybox unpacked whole");
    let sh = std::fs::read_link(layer_dir(berthd.root(), &chain[0]).join("bin/sh")).expect("bin/sh is a symlink");
    assert_eq!(sh, PathBuf::from("busybox"));
    berthd.stop();
    berthd.assert_no_leaks();
}

#[tokio::test]
async fn pull_by_digest_reference() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "busybox");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    let digest_ref = format!("{}/busybox@{}", registry.addr(), pushed.digest);

    let image_ref = pull(&mut images, &digest_ref).await.unwrap_or_else(|e| panic!("pull {digest_ref}: {e:?}"));
    assert_eq!(image_ref, pushed.images[0].config_digest);
    let image = image_status(&mut images, &digest_ref, false).await.expect("ImageStatus").image.expect("image found by digest");
    assert!(image.repo_digests.contains(&digest_ref), "{:?}", image.repo_digests);
    assert!(
        !image.repo_tags.iter().any(|t| t.ends_with(":latest")),
        "a digest pull adds no tag: {:?}",
        image.repo_tags
    );
}

#[tokio::test]
async fn multiarch_index_resolves_to_amd64() {
    let registry = fixtures::registry();
    let berthd = Berthd::start().await;
    let chain = pull_standard_and_check(&berthd, &registry, "multiarch").await;
    let arch_file = layer_dir(berthd.root(), chain.last().expect("layers")).join("etc/arch");
    assert_eq!(std::fs::read_to_string(&arch_file).expect("etc/arch"), "amd64\n", "the amd64 variant was unpacked");

    let mut images = berthd.images().await;
    let status = image_status(&mut images, &reference(&registry, "multiarch:latest"), true).await.expect("ImageStatus");
    let info = verbose_info(&status);
    assert_eq!(info["imageSpec"]["architecture"], "amd64", "{info}");
    assert_eq!(info["imageSpec"]["os"], "linux", "{info}");
}

#[tokio::test]
async fn multiarch_only_fetches_the_nodes_platform() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "multiarch");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    pull(&mut images, &reference(&registry, "multiarch:latest")).await.expect("pull multiarch");
    let arm64 = pushed.images.iter().find(|i| i.config_digest != pushed.images[0].config_digest).expect("arm64 image");
    for digest in arm64.layer_digests.iter().chain([&arm64.config_digest]) {
        assert!(!store::has_blob(berthd.root(), digest), "arm64 blob {digest} was fetched");
    }
}

#[tokio::test]
async fn multiarch_image_is_found_by_its_index_digest() {
    // kubelet and users pin images by the digest the tag resolved to, which for a
    // multi-arch image is the index digest (as containerd and Docker record it).
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "multiarch");
    let berthd = Berthd::start().await;
    let mut images = berthd.images().await;
    pull(&mut images, &reference(&registry, "multiarch:latest")).await.expect("pull multiarch");
    let index_ref = format!("{}/multiarch@{}", registry.addr(), pushed.digest);
    let image = image_status(&mut images, &index_ref, false).await.expect("ImageStatus").image;
    let image = image.unwrap_or_else(|| panic!("ImageStatus by index digest {index_ref} finds nothing"));
    assert_eq!(image.id, pushed.images[0].config_digest);

    // Pulling by the index digest gives the same image.
    let berthd2 = Berthd::start().await;
    let mut images2 = berthd2.images().await;
    let id = pull(&mut images2, &index_ref).await.expect("pull by index digest");
    assert_eq!(id, pushed.images[0].config_digest);
}

#[tokio::test]
async fn docker_schema2_manifest() {
    let registry = fixtures::registry();
    let berthd = Berthd::start().await;
    pull_standard_and_check(&berthd, &registry, "docker-schema2").await;
    let mut images = berthd.images().await;
    let status = image_status(&mut images, &reference(&registry, "docker-schema2:latest"), true).await.expect("ImageStatus");
    let info = verbose_info(&status);
    assert_eq!(info["imageSpec"]["config"]["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]), "{info}");
    assert_eq!(info["imageSpec"]["config"]["Volumes"], serde_json::json!({"/data": {}}), "{info}");
}

#[tokio::test]
async fn oci_gzip_layers_with_image_config() {
    let registry = fixtures::registry();
    let berthd = Berthd::start().await;
    let chain = pull_standard_and_check(&berthd, &registry, "httpd").await;
    let index_html = layer_dir(berthd.root(), &chain[1]).join("www/index.html");
    assert_eq!(std::fs::read_to_string(index_html).expect("www/index.html"), berth_imagegen::standard::HTTPD_INDEX_HTML);

    let mut images = berthd.images().await;
    let status = image_status(&mut images, &reference(&registry, "httpd:latest"), true).await.expect("ImageStatus");
    let info = verbose_info(&status);
    let config = &info["imageSpec"]["config"];
    assert_eq!(config["Cmd"], serde_json::json!(["httpd", "-f", "-p", "80", "-h", "/www"]), "{info}");
    assert_eq!(config["ExposedPorts"], serde_json::json!({"80/tcp": {}}), "{info}");
    assert_eq!(config["StopSignal"], "SIGTERM", "{info}");
    assert_eq!(config["Labels"]["org.opencontainers.image.title"], "berth-httpd", "{info}");
}

#[tokio::test]
async fn zstd_layers() {
    let registry = fixtures::registry();
    let berthd = Berthd::start().await;
    let chain = pull_standard_and_check(&berthd, &registry, "zstd").await;
    let marker = layer_dir(berthd.root(), &chain[1]).join("etc/compression");
    assert_eq!(std::fs::read_to_string(marker).expect("etc/compression"), "zstd\n");
    assert!(layer_dir(berthd.root(), &chain[0]).join("bin/busybox").is_file());
}

#[tokio::test]
async fn uncompressed_layer() {
    let registry = fixtures::registry();
    let berthd = Berthd::start().await;
    let chain = pull_standard_and_check(&berthd, &registry, "uncompressed").await;
    assert!(layer_dir(berthd.root(), &chain[0]).join("bin/busybox").is_file());
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_become_overlay_whiteouts() {
    let registry = fixtures::registry();
    let mut berthd = Berthd::start().await;
    let chain = pull_standard_and_check(&berthd, &registry, "multilayer").await;
    assert_eq!(chain.len(), 4);

    // Layer 3 (index 2) deletes data/remove-me.txt and makes opaque/ opaque.
    let deletions = layer_dir(berthd.root(), &chain[2]);
    let whiteouts = store::whiteouts_under(&deletions);
    assert!(whiteouts.contains(&PathBuf::from("data/remove-me.txt")), "no 0:0 char device whiteout: {whiteouts:?}");
    let opaque = store::opaque_dirs_under(&deletions);
    assert!(opaque.contains(&PathBuf::from("opaque")), "opaque/ lacks trusted.overlay.opaque=y: {opaque:?}");
    let mut leaked_markers = Vec::new();
    store::walk(&deletions, &mut |path, _| {
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".wh.")) {
            leaked_markers.push(path.to_path_buf());
        }
    });
    assert!(leaked_markers.is_empty(), "OCI .wh. markers must not be unpacked as files: {leaked_markers:?}");

    // The four layers stacked by overlayfs give the image's filesystem.
    let lowers: Vec<PathBuf> = chain.iter().map(|c| layer_dir(berthd.root(), c)).collect();
    let rootfs = OverlayMount::mount(&lowers, &berthd.base_dir().join("rootfs"));
    let root = rootfs.path();
    assert_eq!(std::fs::read_to_string(root.join("data/keep.txt")).expect("keep.txt"), "keep\n");
    assert_eq!(std::fs::read_to_string(root.join("data/nested/deep.txt")).expect("deep.txt"), "deep\n");
    assert!(!root.join("data/remove-me.txt").exists(), "whited-out file visible");
    let mut opaque_entries: Vec<String> = std::fs::read_dir(root.join("opaque"))
        .expect("opaque/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    opaque_entries.sort();
    assert_eq!(opaque_entries, vec!["new.txt".to_string()], "opaque dir hides the lower entries");

    // Hardlinks within the layer are links, symlinks keep their targets verbatim.
    use std::os::unix::fs::MetadataExt;
    let links = layer_dir(berthd.root(), &chain[3]);
    let target = std::fs::metadata(links.join("links/target.txt")).expect("target.txt");
    let hard = std::fs::metadata(links.join("links/hard.txt")).expect("hard.txt");
    assert_eq!(target.ino(), hard.ino(), "hard.txt is a hardlink of target.txt");
    assert_eq!(std::fs::read_link(links.join("links/abs")).expect("links/abs"), PathBuf::from("/data/keep.txt"));
    assert_eq!(std::fs::read_to_string(root.join("links/soft.txt")).expect("soft.txt"), "target\n");
    assert!(root.join("bin/busybox").is_file());
    drop(rootfs);
    berthd.stop();
    berthd.assert_no_leaks();
}

#[tokio::test]
async fn short_name_resolves_through_docker_io_mirror() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "busybox"); // also as library/busybox
    let berthd = Berthd::start_with(&mirror_config("docker.io", &registry)).await;
    let mut images = berthd.images().await;

    let id = pull(&mut images, "busybox").await.expect("pull busybox through the docker.io mirror");
    assert_eq!(id, pushed.images[0].config_digest);
    let image = image_status(&mut images, "busybox", false).await.expect("ImageStatus").image.expect("found by short name");
    assert!(
        image.repo_tags.contains(&"docker.io/library/busybox:latest".to_string()),
        "short name normalised: {:?}",
        image.repo_tags
    );
    for name in ["docker.io/library/busybox:latest", "library/busybox", "docker.io/busybox"] {
        let found = image_status(&mut images, name, false).await.expect("ImageStatus").image;
        assert!(found.is_some_and(|i| i.id == id), "{name} names the same image");
    }
}

#[tokio::test]
async fn registry_k8s_io_served_from_a_mirror() {
    let registry = fixtures::registry();
    let spec = berth_imagegen::standard::busybox();
    let pushed = fixtures::push(&registry, "pause", "3.10", &spec);
    let berthd = Berthd::start_with(&mirror_config("registry.k8s.io", &registry)).await;
    let mut images = berthd.images().await;
    let id = pull(&mut images, "registry.k8s.io/pause:3.10").await.expect("pull through the registry.k8s.io mirror");
    assert_eq!(id, pushed.config_digest);
}

#[tokio::test]
async fn mirrors_are_tried_in_order_past_a_dead_one() {
    let registry = fixtures::registry();
    let pushed = push_std(&registry, "busybox");
    let dead = dead_loopback_address();
    let config = format!(
        "[images.registries.\"docker.io\"]\nmirrors = [{{ host = \"{dead}\", plain_http = true }}, {{ host = \"{}\", plain_http = true }}]\n",
        registry.addr()
    );
    let berthd = Berthd::start_with(&config).await;
    let mut images = berthd.images().await;
    let id = pull(&mut images, "busybox").await.expect("the second mirror serves when the first is down");
    assert_eq!(id, pushed.images[0].config_digest);
}

#[tokio::test]
async fn non_root_user_is_reported_as_uid() {
    let registry = fixtures::registry();
    let berthd = Berthd::start().await;
    pull_standard_and_check(&berthd, &registry, "nonroot").await;
    let mut images = berthd.images().await;
    let image = image_status(&mut images, &reference(&registry, "nonroot:latest"), false)
        .await
        .expect("ImageStatus")
        .image
        .expect("image");
    assert_eq!(image.uid.map(|u| u.value), Some(1000), "USER 1000:1000 is uid 1000: {image:?}");
    assert_eq!(image.username, "", "a numeric user has no username: {image:?}");

    let listed = list_images(&mut images).await.expect("ListImages");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uid.as_ref().map(|u| u.value), Some(1000));
}

/// A loopback address with nothing listening (a port that was free a moment ago).
fn dead_loopback_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}
