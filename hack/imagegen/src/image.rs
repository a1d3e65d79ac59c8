//! Image descriptions (layers + config + platform) and the JSON documents made from them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::layer::Layer;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Which family of media types the manifest, config and layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `application/vnd.oci.image.*`
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2 (`application/vnd.docker.*`).
    Docker,
}

/// The runtime part of an image config (`config` in the OCI image config JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// e.g. `80/tcp`
    pub exposed_ports: Vec<String>,
    /// e.g. `/data`
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// One image: its layers in order (base first), config and platform.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<(Layer, Compression)>,
    pub config: ImageConfig,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, ...
    pub arch: String,
    pub os: String,
    /// Platform variant, e.g. `v8` for arm64 or `v7` for arm.
    pub variant: Option<String>,
    pub format: Format,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            config: ImageConfig::default(),
            arch: "amd64".to_string(),
            os: "linux".to_string(),
            variant: None,
            format: Format::Oci,
        }
    }
}

/// The `PATH` most images set.
pub const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Fixed creation time, so that config digests are reproducible.
pub const CREATED: &str = "2024-01-01T00:00:00Z";

pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

impl Format {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Format::Oci => media_types::OCI_MANIFEST,
            Format::Docker => media_types::DOCKER_MANIFEST,
        }
    }

    pub fn index_media_type(self) -> &'static str {
        match self {
            Format::Oci => media_types::OCI_INDEX,
            Format::Docker => media_types::DOCKER_MANIFEST_LIST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::Oci => media_types::OCI_CONFIG,
            Format::Docker => media_types::DOCKER_CONFIG,
        }
    }

    /// Docker schema 2 has no zstd layer type; the OCI one is used there, as
    /// `docker buildx` does when asked for zstd.
    pub fn layer_media_type(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (Format::Oci, Compression::None) => media_types::OCI_LAYER_TAR,
            (Format::Oci, Compression::Gzip) => media_types::OCI_LAYER_GZIP,
            (_, Compression::Zstd) => media_types::OCI_LAYER_ZSTD,
            (Format::Docker, Compression::None) => media_types::DOCKER_LAYER_TAR,
            (Format::Docker, Compression::Gzip) => media_types::DOCKER_LAYER_GZIP,
        }
    }
}

impl ImageConfig {
    /// The `config` object of the image config JSON (keys as Docker spells them).
    pub fn to_json(&self) -> Value {
        let mut config = serde_json::Map::new();
        if let Some(user) = &self.user {
            config.insert("User".into(), json!(user));
        }
        if !self.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, Value> = self.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
            config.insert("ExposedPorts".into(), Value::Object(ports));
        }
        if !self.env.is_empty() {
            config.insert("Env".into(), json!(self.env));
        }
        if let Some(entrypoint) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(entrypoint));
        }
        if let Some(cmd) = &self.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if !self.volumes.is_empty() {
            let volumes: serde_json::Map<String, Value> = self.volumes.iter().map(|v| (v.clone(), json!({}))).collect();
            config.insert("Volumes".into(), Value::Object(volumes));
        }
        if let Some(dir) = &self.working_dir {
            config.insert("WorkingDir".into(), json!(dir));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        if let Some(signal) = &self.stop_signal {
            config.insert("StopSignal".into(), json!(signal));
        }
        Value::Object(config)
    }
}

impl ImageSpec {
    /// The image config JSON bytes for these layer diff ids.
    pub fn config_json(&self, diff_ids: &[String]) -> Vec<u8> {
        let history: Vec<Value> = (0..diff_ids.len())
            .map(|i| json!({"created": CREATED, "created_by": format!("berth-imagegen layer {i}")}))
            .collect();
        let mut doc = json!({
            "created": CREATED,
            "architecture": self.arch,
            "os": self.os,
            "config": self.config.to_json(),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        if let Some(variant) = &self.variant {
            doc["variant"] = json!(variant);
        }
        // serde_json's map is ordered by key, so the bytes (and digest) are reproducible.
        serde_json::to_vec(&doc).expect("serialising a JSON value cannot fail")
    }

    /// The platform object used in an index entry.
    pub fn platform_json(&self) -> Value {
        let mut platform = json!({"architecture": self.arch, "os": self.os});
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

/// A content descriptor as it appears in manifests and indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// Image manifest JSON bytes.
pub fn manifest_json(format: Format, config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_media_type(),
        "config": config.to_json(),
        "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&doc).expect("serialising a JSON value cannot fail")
}

/// Index (or Docker manifest list) JSON bytes; each entry is a manifest and its platform.
pub fn index_json(format: Format, manifests: &[(Descriptor, Value)]) -> Vec<u8> {
    let entries: Vec<Value> = manifests
        .iter()
        .map(|(descriptor, platform)| {
            let mut entry = descriptor.to_json();
            entry["platform"] = platform.clone();
            entry
        })
        .collect();
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": format.index_media_type(),
        "manifests": entries,
    });
    serde_json::to_vec(&doc).expect("serialising a JSON value cannot fail")
}
