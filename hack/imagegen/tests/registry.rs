//! Pushes every standard image to a real docker-registry and checks the result with skopeo,
//! which validates manifests, configs and blob digests independently of our code.

use std::path::Path;
use std::process::Command;

use berth_imagegen::{push_image, push_standard, standard_images, Compression, ImageSpec, Layer, LocalRegistry, RegistryOptions};

fn skopeo(args: &[&str]) -> String {
    let output = Command::new("skopeo").args(args).output().expect("skopeo is installed (hack/install-deps)");
    assert!(
        output.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn standard_images_push_and_validate_with_skopeo() {
    let registry = LocalRegistry::start(RegistryOptions::default()).expect("registry starts");
    let addr = registry.addr();
    let copy_dir = tempfile::tempdir().unwrap();
    for image in standard_images().into_iter().filter(|i| !i.on_request_only) {
        let pushed = push_standard(&addr, &image.reference()).unwrap_or_else(|e| panic!("push {}: {e:#}", image.reference()));
        for repo in [image.repo.to_string(), format!("library/{}", image.repo)] {
            let reference = format!("docker://{addr}/{repo}:{}", image.tag);
            let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &reference]);
            let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(manifest["mediaType"], pushed.media_type.as_str(), "{reference}");
            assert_eq!(berth_imagegen::sha256_digest(raw.as_bytes()), pushed.digest, "{reference}");

            let inspect: serde_json::Value =
                serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &reference])).unwrap();
            assert_eq!(inspect["Architecture"], "amd64", "{reference}");
            let layers = inspect["Layers"].as_array().unwrap().len();
            assert_eq!(layers, pushed.images[0].layer_digests.len(), "{reference}");
        }
        // A full copy checks every blob against its digest (and every platform for an index).
        let dest = format!("oci:{}:{}", copy_dir.path().join(image.repo).display(), image.tag);
        skopeo(&["copy", "--all", "--src-tls-verify=false", &format!("docker://{addr}/{}:{}", image.repo, image.tag), &dest]);
        for pushed_image in &pushed.images {
            for layer in &pushed_image.layer_digests {
                assert!(registry.blob_data_path(layer).is_file(), "{} layer {layer}", image.repo);
            }
        }
    }

    let nonroot: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect", "--tls-verify=false", "--config", &format!("docker://{addr}/nonroot:latest"),
    ]))
    .unwrap();
    assert_eq!(nonroot["config"]["User"], "1000:1000");
    let httpd: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", "--config", &format!("docker://{addr}/httpd:latest")]))
            .unwrap();
    assert_eq!(httpd["config"]["Cmd"][0], "httpd");
    assert!(httpd["config"]["ExposedPorts"]["80/tcp"].is_object());
    let arm: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect", "--tls-verify=false", "--override-arch", "arm64", "--override-variant", "v8",
        &format!("docker://{addr}/multiarch:latest"),
    ]))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");

    let pid = registry.pid().unwrap();
    drop(registry);
    assert!(!process_exists(pid), "registry {pid} still running after drop");
}

#[test]
fn authenticated_registry_requires_the_right_credentials() {
    let options = RegistryOptions { htpasswd: Some(("berth".into(), "s3cret".into())) };
    let registry = LocalRegistry::start(options).expect("registry starts");
    let addr = registry.addr();
    let spec = ImageSpec { layers: vec![(Layer::new().file("hello", "hi\n", 0o644), Compression::Gzip)], ..Default::default() };

    let anonymous = push_image(&addr, "private/hello", "v1", &spec, None).unwrap_err();
    assert!(format!("{anonymous:#}").contains("requires authentication"), "{anonymous:#}");
    let wrong = push_image(&addr, "private/hello", "v1", &spec, Some(("berth", "nope"))).unwrap_err();
    assert!(format!("{wrong:#}").contains("rejected the credentials"), "{wrong:#}");
    let pushed = push_image(&addr, "private/hello", "v1", &spec, Some(("berth", "s3cret"))).expect("push with credentials");

    let reference = format!("docker://{addr}/private/hello:v1");
    let raw = skopeo(&["inspect", "--tls-verify=false", "--creds", "berth:s3cret", "--raw", &reference]);
    assert_eq!(berth_imagegen::sha256_digest(raw.as_bytes()), pushed.manifest_digest);
    let denied = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &reference]).output().unwrap();
    assert!(!denied.status.success(), "anonymous read must fail");
}

#[test]
fn restart_keeps_content_and_port_and_stop_kills_the_process() {
    let mut registry = LocalRegistry::start(RegistryOptions::default()).expect("registry starts");
    let addr = registry.addr();
    let hostile = Layer::new().raw_path("../../etc/evil", b"owned\n", 0o644).raw_path("/abs/evil", b"x", 0o644);
    let spec = ImageSpec { layers: vec![(hostile, Compression::Gzip)], ..Default::default() };
    let pushed = push_image(&addr, "hostile/traversal", "latest", &spec, None).expect("push");

    let first_pid = registry.pid().unwrap();
    registry.stop();
    assert!(!registry.is_running());
    assert!(!process_exists(first_pid));
    let down = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw", &format!("docker://{addr}/hostile/traversal:latest")])
        .output()
        .unwrap();
    assert!(!down.status.success(), "registry must be down");

    registry.restart().expect("restart");
    assert_eq!(registry.addr(), addr);
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{addr}/hostile/traversal:latest")]);
    assert_eq!(berth_imagegen::sha256_digest(raw.as_bytes()), pushed.manifest_digest);

    // Corrupting the stored blob is visible to a verifying client.
    let blob = registry.blob_data_path(&pushed.layer_digests[0]);
    std::fs::write(&blob, b"corrupt").unwrap();
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{addr}/hostile/traversal:latest"),
            &format!("oci:{}:x", copy_dir.path().display()),
        ])
        .output()
        .unwrap();
    assert!(!copy.status.success(), "copy of a corrupted blob must fail");

    let second_pid = registry.pid().unwrap();
    registry.kill();
    assert!(!process_exists(second_pid));
    registry.restart().expect("restart after kill");
    assert_eq!(registry.addr(), addr);
    let third_pid = registry.pid().unwrap();
    let storage = registry.storage_dir();
    drop(registry);
    assert!(!process_exists(third_pid));
    assert!(!storage.exists(), "temp dir removed on drop");
}
