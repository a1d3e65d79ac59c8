//! Plain data the image store hands out and takes in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A pulled image, as recorded in the metadata store. Keyed by `id`, the digest of its
/// config blob (what `crictl images` shows as IMAGE ID and kubelet calls the image ref).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>` of the image config blob.
    pub id: String,
    /// Normalised tag references pointing at this image (`docker.io/library/busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Digest references (`docker.io/library/busybox@sha256:<manifest digest>`).
    pub repo_digests: Vec<String>,
    /// Digest of the (platform) manifest the image was pulled from.
    pub manifest_digest: String,
    /// Sum of the compressed layer sizes plus the config, as registries and crictl count.
    pub size: u64,
    /// Chain ids of the layers, bottom first: the snapshot directories that make the rootfs.
    pub chain_ids: Vec<String>,
    /// The parsed OCI image config (Entrypoint, Cmd, Env, User, WorkingDir, ExposedPorts,
    /// Volumes, Labels, StopSignal): what container creation needs.
    pub config: ImageConfig,
    /// The raw config JSON, served verbatim in verbose ImageStatus.
    pub config_json: String,
    /// Unix nanoseconds of the last pull.
    pub pulled_at_ns: i64,
    /// Pinned images are never garbage collected by the kubelet.
    #[serde(default)]
    pub pinned: bool,
}

/// The parts of the OCI image config (`config` object) berth uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// Credentials from a CRI `AuthConfig`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, used when username is empty.
    pub auth: String,
    /// An OAuth2 refresh token, exchanged at the registry's token service.
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Bytes and inodes the image store's filesystem uses (for CRI `ImageFsInfo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub used_bytes: u64,
    pub inodes_used: u64,
    pub timestamp_ns: i64,
}

/// Progress of one pull, reported per layer while it streams (for berthctl's progress bar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub digest: String,
    pub downloaded: u64,
    pub total: u64,
    pub done: bool,
}

/// How the image store behaves; a section of berthd's config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// How many layers of one pull download at the same time.
    pub max_concurrent_downloads: usize,
    /// Seconds to wait for a registry to accept a connection before it counts as down.
    pub connect_timeout_secs: u64,
    /// Per-registry settings, keyed by registry host (`docker.io`, `127.0.0.1:5000`).
    pub registries: BTreeMap<String, RegistryConfig>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self { max_concurrent_downloads: 3, connect_timeout_secs: 5, registries: BTreeMap::new() }
    }
}

/// Settings for one registry host: mirrors tried in order, then the registry itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Mirror endpoints tried in order before the registry itself.
    pub mirrors: Vec<RegistryHost>,
    /// Talk plain HTTP to the registry itself.
    pub plain_http: bool,
    /// Accept any TLS certificate from the registry itself.
    pub skip_verify: bool,
}

/// One endpoint that serves a registry's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryHost {
    /// `host[:port]`, without scheme.
    pub host: String,
    pub plain_http: bool,
    pub skip_verify: bool,
}

/// Where an overlay rootfs for a container lives, from [`crate::ImageStore::prepare_rootfs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsLayout {
    /// Read-only layer directories, TOP first (overlayfs `lowerdir` order).
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
}
