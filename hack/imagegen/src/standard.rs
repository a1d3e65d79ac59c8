//! The standard test images, built from busybox-static.

use anyhow::{bail, Result};

use crate::image::{Compression, Format, ImageConfig, ImageSpec, DEFAULT_PATH_ENV};
use crate::layer::Layer;
use crate::push::{Client, Pushed, PushedIndex};

/// How a standard image is made.
#[derive(Clone, Copy, Debug)]
pub enum Build {
    Image(fn() -> ImageSpec),
    /// A multi-platform index of these images.
    Index(fn() -> Vec<ImageSpec>),
}

/// One standard image, pushed as `repo:tag` (and `library/repo:tag`, see [`push_standard`]).
#[derive(Clone, Copy, Debug)]
pub struct NamedImage {
    pub repo: &'static str,
    pub tag: &'static str,
    pub build: Build,
    /// Only pushed when asked for by name (e.g. the 212 MB benchmark image).
    pub on_request_only: bool,
    pub description: &'static str,
}

impl NamedImage {
    /// `repo:tag`
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repo, self.tag)
    }
}

/// What [`push_standard`] stored.
#[derive(Clone, Debug)]
pub struct PushedStandard {
    /// Repositories it was pushed to, e.g. `["busybox", "library/busybox"]`.
    pub repos: Vec<String>,
    pub tag: String,
    /// Digest of the tagged manifest, or of the index for a multi-arch image.
    pub digest: String,
    pub media_type: String,
    /// Every image manifest pushed (one, or one per platform).
    pub images: Vec<Pushed>,
    pub total_size: u64,
}

/// The sizes of the five layers of `large:latest` (212 MB together).
pub const LARGE_LAYER_SIZES: [u64; 5] = [30_000_000, 36_000_000, 42_000_000, 50_000_000, 54_000_000];

/// Every standard image.
pub fn standard_images() -> Vec<NamedImage> {
    let image = |repo, build: fn() -> ImageSpec, description| NamedImage {
        repo,
        tag: "latest",
        build: Build::Image(build),
        on_request_only: false,
        description,
    };
    vec![
        image("busybox", busybox, "one gzip layer: busybox-static, CMD [\"sh\"]"),
        image("httpd", httpd, "busybox httpd serving /www/index.html on port 80"),
        image("multilayer", multilayer, "4 layers: busybox, additions, whiteout + opaque dir, hardlink + symlink"),
        image("zstd", zstd, "busybox with zstd-compressed layers"),
        NamedImage {
            repo: "multiarch",
            tag: "latest",
            build: Build::Index(multiarch),
            on_request_only: false,
            description: "OCI index: linux/amd64 and linux/arm64/v8, /etc/arch differs",
        },
        image("nonroot", nonroot, "USER 1000:1000 named app in /etc/passwd"),
        image("docker-schema2", docker_schema2, "busybox with Docker schema 2 media types"),
        image("uncompressed", uncompressed, "busybox as a plain tar layer"),
        NamedImage {
            repo: "pause",
            tag: "3.9",
            build: Build::Image(crate::pause::pause),
            on_request_only: false,
            description: "static pause binary (gcc -static; busybox sh fallback): containerd's sandbox_image",
        },
        NamedImage {
            repo: "large",
            tag: "latest",
            build: Build::Image(large),
            on_request_only: true,
            description: "5 gzip layers, 212 MB of incompressible data (benchmarks)",
        },
    ]
}

/// Looks a standard image up by `repo` or `repo:tag`.
pub fn standard_image(name: &str) -> Option<NamedImage> {
    standard_images().into_iter().find(|image| image.repo == name || image.reference() == name)
}

/// Pushes standard image `name` (`repo` or `repo:tag`) as both `<repo>:<tag>` and
/// `library/<repo>:<tag>`, the latter so that a mirror for docker.io serves it as
/// `docker.io/library/<repo>`.
pub fn push_standard(registry: &str, name: &str) -> Result<PushedStandard> {
    let Some(image) = standard_image(name) else {
        bail!("no standard image named {name:?}");
    };
    let library = format!("library/{}", image.repo);
    push_standard_with(registry, name, &[image.repo, &library], None)
}

/// Pushes standard image `name` under exactly `repos`, with optional Basic credentials.
pub fn push_standard_with(registry: &str, name: &str, repos: &[&str], auth: Option<(&str, &str)>) -> Result<PushedStandard> {
    let Some(image) = standard_image(name) else {
        bail!("no standard image named {name:?}");
    };
    let client = Client::connect(registry, auth)?;
    let repos_owned: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    match image.build {
        Build::Image(build) => {
            let pushed = client.push_image(repos, Some(image.tag), &build())?;
            Ok(PushedStandard {
                repos: repos_owned,
                tag: image.tag.to_string(),
                digest: pushed.manifest_digest.clone(),
                media_type: pushed.manifest_media_type.clone(),
                total_size: pushed.total_size,
                images: vec![pushed],
            })
        }
        Build::Index(build) => {
            let PushedIndex { index_digest, index_media_type, manifests, total_size } =
                client.push_index(repos, image.tag, &build())?;
            Ok(PushedStandard {
                repos: repos_owned,
                tag: image.tag.to_string(),
                digest: index_digest,
                media_type: index_media_type,
                images: manifests,
                total_size,
            })
        }
    }
}

/// The base layer of most standard images: root filesystem skeleton + busybox.
pub fn busybox_layer() -> Layer {
    Layer::new().rootfs_skeleton().busybox()
}

fn shell_config() -> ImageConfig {
    ImageConfig { cmd: Some(vec!["sh".into()]), env: vec![DEFAULT_PATH_ENV.into()], ..Default::default() }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `busybox:latest`
pub fn busybox() -> ImageSpec {
    ImageSpec { layers: vec![(busybox_layer(), Compression::Gzip)], config: shell_config(), ..Default::default() }
}

/// The page `httpd:latest` serves.
pub const HTTPD_INDEX_HTML: &str = "<html><body><h1>berth httpd test image</h1></body></html>\n";

/// `httpd:latest`
pub fn httpd() -> ImageSpec {
    let content = Layer::new().dir("www", 0o755).file("www/index.html", HTTPD_INDEX_HTML, 0o644);
    let mut config = shell_config();
    config.cmd = Some(strings(&["httpd", "-f", "-p", "80", "-h", "/www"]));
    config.exposed_ports = vec!["80/tcp".into()];
    config.stop_signal = Some("SIGTERM".into());
    config.labels.insert("org.opencontainers.image.title".into(), "berth-httpd".into());
    ImageSpec {
        layers: vec![(busybox_layer(), Compression::Gzip), (content, Compression::Gzip)],
        config,
        ..Default::default()
    }
}

/// `multilayer:latest`. After unpacking all four layers the root filesystem has:
/// - `/data/keep.txt` ("keep\n"), `/data/nested/deep.txt` ("deep\n");
/// - no `/data/remove-me.txt` (whiteout in layer 2);
/// - `/opaque/` holding only `new.txt` ("new\n") (its old `old1.txt`, `old2.txt` hidden
///   by an opaque marker in layer 2);
/// - `/links/target.txt` ("target\n"), `/links/hard.txt` hardlinked to it, and
///   `/links/soft.txt -> target.txt`, `/links/abs -> /data/keep.txt`.
pub fn multilayer() -> ImageSpec {
    let additions = Layer::new()
        .dir("data", 0o755)
        .file("data/keep.txt", "keep\n", 0o644)
        .file("data/remove-me.txt", "remove me\n", 0o644)
        .dir("data/nested", 0o755)
        .file("data/nested/deep.txt", "deep\n", 0o644)
        .dir("opaque", 0o755)
        .file("opaque/old1.txt", "old1\n", 0o644)
        .file("opaque/old2.txt", "old2\n", 0o644);
    let deletions = Layer::new()
        .dir("data", 0o755)
        .whiteout("data/remove-me.txt")
        .dir("opaque", 0o755)
        .opaque("opaque")
        .file("opaque/new.txt", "new\n", 0o644);
    let links = Layer::new()
        .dir("links", 0o755)
        .file("links/target.txt", "target\n", 0o644)
        .hardlink("links/hard.txt", "links/target.txt")
        .symlink("links/soft.txt", "target.txt")
        .symlink("links/abs", "/data/keep.txt");
    ImageSpec {
        layers: vec![
            (busybox_layer(), Compression::Gzip),
            (additions, Compression::Gzip),
            (deletions, Compression::Gzip),
            (links, Compression::Gzip),
        ],
        config: shell_config(),
        ..Default::default()
    }
}

/// `zstd:latest`: busybox plus a small second layer, both zstd-compressed.
pub fn zstd() -> ImageSpec {
    let extra = Layer::new().dir("etc", 0o755).file("etc/compression", "zstd\n", 0o644);
    ImageSpec {
        layers: vec![(busybox_layer(), Compression::Zstd), (extra, Compression::Zstd)],
        config: shell_config(),
        ..Default::default()
    }
}

/// `multiarch:latest`: linux/amd64 (busybox, `/etc/arch` = "amd64\n") and linux/arm64/v8
/// (no busybox, it would not run; `/etc/arch` = "arm64\n").
pub fn multiarch() -> Vec<ImageSpec> {
    let amd64 = ImageSpec {
        layers: vec![
            (busybox_layer(), Compression::Gzip),
            (Layer::new().dir("etc", 0o755).file("etc/arch", "amd64\n", 0o644), Compression::Gzip),
        ],
        config: shell_config(),
        ..Default::default()
    };
    let arm64 = ImageSpec {
        layers: vec![(
            Layer::new().rootfs_skeleton().file("etc/arch", "arm64\n", 0o644),
            Compression::Gzip,
        )],
        config: shell_config(),
        arch: "arm64".into(),
        variant: Some("v8".into()),
        ..Default::default()
    };
    vec![amd64, arm64]
}

/// `nonroot:latest`: USER 1000:1000, named `app` in /etc/passwd and /etc/group, home
/// /home/app owned by it, WORKDIR /home/app.
pub fn nonroot() -> ImageSpec {
    let user_layer = Layer::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n", 0o644)
        .dir("home", 0o755)
        .entry(crate::layer::Entry {
            name: b"home/app/".to_vec(),
            kind: crate::layer::EntryKind::Dir,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
        })
        .file_owned("home/app/hello.txt", "hello from app\n", 0o644, 1000, 1000);
    let mut config = shell_config();
    config.user = Some("1000:1000".into());
    config.working_dir = Some("/home/app".into());
    ImageSpec {
        layers: vec![(busybox_layer(), Compression::Gzip), (user_layer, Compression::Gzip)],
        config,
        ..Default::default()
    }
}

/// `docker-schema2:latest`: busybox with Docker media types and a volume and entrypoint.
pub fn docker_schema2() -> ImageSpec {
    let mut config = shell_config();
    config.entrypoint = Some(strings(&["/bin/sh", "-c"]));
    config.cmd = Some(strings(&["echo hello from docker-schema2"]));
    config.volumes = vec!["/data".into()];
    ImageSpec {
        layers: vec![(busybox_layer(), Compression::Gzip)],
        config,
        format: Format::Docker,
        ..Default::default()
    }
}

/// `uncompressed:latest`: busybox as a plain tar layer.
pub fn uncompressed() -> ImageSpec {
    ImageSpec { layers: vec![(busybox_layer(), Compression::None)], config: shell_config(), ..Default::default() }
}

/// `large:latest`: busybox in the first layer, then [`LARGE_LAYER_SIZES`] of random data
/// (one file per layer, `/data/blob<N>`), gzip.
pub fn large() -> ImageSpec {
    let layers = LARGE_LAYER_SIZES
        .iter()
        .enumerate()
        .map(|(index, size)| {
            let base = if index == 0 { busybox_layer() } else { Layer::new() };
            let layer = base.dir("data", 0o755).random_file(&format!("data/blob{index}"), *size, 0xbe47_0000 + index as u64);
            (layer, Compression::Gzip)
        })
        .collect();
    ImageSpec { layers, config: shell_config(), ..Default::default() }
}
