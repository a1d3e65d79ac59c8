//! Pulls from a real registry (Debian's docker-registry on a free loopback port, started
//! and stopped by `berth_imagegen::LocalRegistry`), into an ImageStore in a temp dir.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_images::model::{RegistryConfig, RegistryHost};
use berth_images::{Credentials, Error, ErrorKind, ImageStore, ImagesConfig, PullProgress};
use berth_imagegen::{push_standard, push_standard_with, LocalRegistry, RegistryOptions};

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
}

fn fixture(config: ImagesConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(redb::Database::create(dir.path().join("meta.redb")).expect("db"));
    let store = ImageStore::open(&dir.path().join("root"), db, config).expect("open store");
    Fixture { dir, store }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime")
}

fn registry(options: RegistryOptions) -> LocalRegistry {
    LocalRegistry::start(options).expect("start docker-registry (install it with hack/install-deps)")
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn snapshot_file(root: &Path, chain_id: &str, path: &str) -> std::path::PathBuf {
    root.join("root/snapshots").join(chain_id.trim_start_matches("sha256:")).join("fs").join(path)
}

fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn pulls_gzip_image_and_serves_it_by_every_name() {
    let reg = registry(RegistryOptions::default());
    let pushed = push_standard(&reg.addr(), "busybox").expect("push busybox");
    let f = fixture(ImagesConfig::default());
    let rt = runtime();
    let reference = format!("{}/busybox:latest", reg.addr());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PullProgress>();
    let image = rt.block_on(f.store.pull(&reference, None, Some(tx))).expect("pull");
    let manifest = &pushed.images[0];
    assert_eq!(image.id, manifest.config_digest);
    assert_eq!(image.manifest_digest, manifest.manifest_digest);
    assert_eq!(image.repo_tags, vec![reference.clone()]);
    assert_eq!(image.repo_digests, vec![format!("{}/busybox@{}", reg.addr(), manifest.manifest_digest)]);
    assert_eq!(image.chain_ids.len(), 1);
    assert_eq!(image.chain_ids[0], manifest.diff_ids[0], "the bottom chain id is the diff id");
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert!(image.size > 0);
    assert!(snapshot_file(f.dir.path(), &image.chain_ids[0], "bin/busybox").exists());
    let mut events = Vec::new();
    while let Ok(p) = rx.try_recv() {
        events.push(p);
    }
    assert!(events.iter().any(|p| p.done && p.digest == manifest.layer_digests[0]), "{events:?}");

    // Every name resolves; the record survives a reopen of the store.
    for name in [reference.clone(), image.repo_digests[0].clone(), image.id.clone(), image.id[7..19].to_string()] {
        assert_eq!(f.store.resolve(&name).unwrap().map(|i| i.id), Some(image.id.clone()), "{name}");
    }
    assert_eq!(f.store.list().unwrap().len(), 1);
    let usage = f.store.fs_usage().unwrap();
    assert!(usage.used_bytes > 1_000_000, "busybox is on disk: {usage:?}");

    // Pulling again is cheap and changes nothing.
    let again = rt.block_on(f.store.pull(&reference, None, None)).expect("pull again");
    assert_eq!(again.id, image.id);

    // Removing by digest reference removes the whole image and its content.
    assert!(f.store.remove(&image.repo_digests[0]).unwrap());
    assert!(f.store.resolve(&reference).unwrap().is_none());
    assert!(f.store.list().unwrap().is_empty());
    assert!(!snapshot_file(f.dir.path(), &image.chain_ids[0], "").exists());
    assert!(f.store.fs_usage().unwrap().used_bytes < usage.used_bytes / 10);
}

#[test]
fn pulls_zstd_uncompressed_docker_schema2_and_index() {
    let reg = registry(RegistryOptions::default());
    let f = fixture(ImagesConfig::default());
    let rt = runtime();
    for name in ["zstd", "uncompressed", "docker-schema2", "multilayer"] {
        push_standard(&reg.addr(), name).expect("push");
        let image = rt.block_on(f.store.pull(&format!("{}/{name}", reg.addr()), None, None)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!image.chain_ids.is_empty(), "{name}");
        for c in &image.chain_ids {
            assert!(snapshot_file(f.dir.path(), c, "").is_dir(), "{name}: snapshot {c}");
        }
        if name == "docker-schema2" {
            assert_eq!(image.config.volumes, vec!["/data"]);
            assert_eq!(image.config.entrypoint, vec!["/bin/sh", "-c"]);
        }
    }

    let index = push_standard(&reg.addr(), "multiarch").expect("push multiarch");
    let image = rt.block_on(f.store.pull(&format!("{}/multiarch:latest", reg.addr()), None, None)).expect("pull index");
    let ours = index.images.iter().find(|m| m.manifest_digest == image.manifest_digest).expect("a platform manifest was chosen");
    assert_eq!(image.id, ours.config_digest);
    assert_eq!(image.config.architecture, node_arch());
    assert_eq!(image.repo_digests, vec![format!("{}/multiarch@{}", reg.addr(), index.digest)], "repo digest names the index");
    let top = image.chain_ids.last().unwrap();
    assert_eq!(std::fs::read_to_string(snapshot_file(f.dir.path(), top, "etc/arch")).unwrap(), format!("{}\n", node_arch()));
    // The index digest and the platform manifest digest both find it.
    assert!(f.store.resolve(&format!("{}/multiarch@{}", reg.addr(), index.digest)).unwrap().is_some());

    // By digest: recorded under the digest reference only.
    let by_digest = format!("{}/zstd@{}", reg.addr(), f.store.resolve(&format!("{}/zstd", reg.addr())).unwrap().unwrap().manifest_digest);
    let image = rt.block_on(f.store.pull(&by_digest, None, None)).expect("pull by digest");
    assert!(image.repo_digests.contains(&by_digest));
}

#[test]
fn missing_images_are_not_found_naming_the_reference() {
    let reg = registry(RegistryOptions::default());
    push_standard(&reg.addr(), "busybox").expect("push");
    let f = fixture(ImagesConfig::default());
    let rt = runtime();
    for reference in [format!("{}/busybox:nope", reg.addr()), format!("{}/nothing/here:latest", reg.addr())] {
        let err = rt.block_on(f.store.pull(&reference, None, None)).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(&reference), "{err}");
    }
    let err = rt.block_on(f.store.pull("Not A Reference", None, None)).expect_err("must fail");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(f.store.list().unwrap().is_empty());
}

#[test]
fn a_registry_that_is_down_is_unavailable_within_seconds() {
    let f = fixture(ImagesConfig { connect_timeout_secs: 2, ..Default::default() });
    let rt = runtime();
    let started = Instant::now();
    let err = rt.block_on(f.store.pull(&format!("127.0.0.1:{}/busybox", dead_port()), None, None)).expect_err("must fail");
    assert!(matches!(err, Error::RegistryUnavailable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A registry stopped between push and pull.
    let mut reg = registry(RegistryOptions::default());
    push_standard(&reg.addr(), "busybox").expect("push");
    reg.stop();
    let started = Instant::now();
    let err = rt.block_on(f.store.pull(&format!("{}/busybox", reg.addr()), None, None)).expect_err("must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn authenticated_registry() {
    let (user, password) = ("berth", "s3cret");
    let reg = registry(RegistryOptions { htpasswd: Some((user.into(), password.into())) });
    push_standard_with(&reg.addr(), "busybox", &["busybox"], Some((user, password))).expect("push with auth");
    let f = fixture(ImagesConfig::default());
    let rt = runtime();
    let reference = format!("{}/busybox:latest", reg.addr());

    let err = rt.block_on(f.store.pull(&reference, None, None)).expect_err("anonymous must fail");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let wrong = Credentials { username: user.into(), password: "wrong".into(), ..Default::default() };
    let err = rt.block_on(f.store.pull(&reference, Some(wrong), None)).expect_err("wrong password must fail");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");

    let right = Credentials { username: user.into(), password: password.into(), ..Default::default() };
    rt.block_on(f.store.pull(&reference, Some(right), None)).expect("pull with username/password");
    assert!(f.store.remove(&reference).unwrap());

    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let encoded = Credentials { auth, ..Default::default() };
    rt.block_on(f.store.pull(&reference, Some(encoded), None)).expect("pull with auth field");
}

#[test]
fn mirrors_are_tried_in_order() {
    let reg = registry(RegistryOptions::default());
    push_standard(&reg.addr(), "busybox").expect("push");
    // The "registry" itself is down; a dead mirror comes first, the live one second.
    let upstream = format!("127.0.0.1:{}", dead_port());
    let mut registries = BTreeMap::new();
    registries.insert(
        upstream.clone(),
        RegistryConfig {
            mirrors: vec![
                RegistryHost { host: format!("127.0.0.1:{}", dead_port()), ..Default::default() },
                RegistryHost { host: reg.addr(), ..Default::default() },
            ],
            ..Default::default()
        },
    );
    let f = fixture(ImagesConfig { registries, connect_timeout_secs: 2, ..Default::default() });
    let rt = runtime();
    let image = rt.block_on(f.store.pull(&format!("{upstream}/busybox"), None, None)).expect("pull through mirror");
    assert_eq!(image.repo_tags, vec![format!("{upstream}/busybox:latest")]);
}

#[test]
fn concurrent_pulls_share_the_work() {
    let reg = registry(RegistryOptions::default());
    push_standard(&reg.addr(), "busybox").expect("push busybox");
    push_standard(&reg.addr(), "httpd").expect("push httpd");
    let f = fixture(ImagesConfig::default());
    let rt = runtime();
    let store = &f.store;
    let busybox = format!("{}/busybox", reg.addr());
    let httpd = format!("{}/httpd", reg.addr());
    let pull = |reference: String| async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PullProgress>();
        let image = store.pull(&reference, None, Some(tx)).await;
        let mut streamed = HashSet::new();
        while let Ok(p) = rx.try_recv() {
            if !p.done {
                streamed.insert(p.digest);
            }
        }
        (image, streamed)
    };
    let results = rt.block_on(async {
        let (a, b, c, d) = tokio::join!(pull(busybox.clone()), pull(busybox.clone()), pull(httpd.clone()), pull(httpd.clone()));
        vec![a, b, c, d]
    });
    let mut downloads: HashMap<String, usize> = HashMap::new();
    for (image, streamed) in &results {
        image.as_ref().expect("every concurrent pull succeeds");
        for d in streamed {
            *downloads.entry(d.clone()).or_default() += 1;
        }
    }
    assert!(!downloads.is_empty(), "some pull streamed the layers");
    for (digest, n) in &downloads {
        assert_eq!(*n, 1, "layer {digest} was downloaded by {n} pulls");
    }
    let ids: HashSet<String> = results.iter().map(|(i, _)| i.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(store.list().unwrap().len(), 2);
}
