//! The registry side of a pull, on `oci-client`: which endpoints serve a registry
//! (mirrors, then the registry itself), how to talk to each (plain HTTP, skip-verify,
//! timeouts), credentials, manifest resolution to the node's platform, and blobs as
//! streams.
//!
//! We never use `oci_client::Client::pull`, which keeps whole layers in memory: manifests
//! and configs are small and fetched whole, layers are handed out as byte streams for the
//! disk side to hash, decompress and unpack while they arrive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::model::{Credentials, ImagesConfig};
use crate::reference::{is_loopback_host, validate_digest, ImageRef};

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MEDIA_DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types berth unpacks (compression follows from the suffix).
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// What we accept for a manifest GET. Schema1 is deliberately absent: a registry that
/// only has schema1 still sends it, and we refuse it by its content.
const MANIFEST_ACCEPT: &[&str] = &[MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST];

/// A registry that accepted the connection but stopped sending fails a read after this.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Manifests and configs are fetched whole; anything bigger is not a manifest or config.
const MAX_SMALL_BLOB: u64 = 16 << 20;
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// One endpoint that serves a registry's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    pub plain_http: bool,
    pub skip_verify: bool,
    /// A mirror (tried before the registry; its failures fall through to the next).
    pub mirror: bool,
}

/// The endpoints for `registry`, in the order they are tried: configured mirrors, then
/// the registry itself. Loopback hosts (`localhost`, 127.0.0.0/8, ::1) speak plain HTTP
/// unless configured with `skip_verify` (which only means something with TLS), as Docker
/// treats them as insecure registries by default.
pub fn endpoints_for(config: &ImagesConfig, registry: &str) -> Vec<Endpoint> {
    let settings = config.registries.get(registry).cloned().unwrap_or_default();
    let mut out: Vec<Endpoint> = settings
        .mirrors
        .iter()
        .filter(|m| !m.host.is_empty())
        .map(|m| Endpoint {
            host: strip_scheme(&m.host).to_string(),
            plain_http: m.plain_http || m.host.starts_with("http://") || (is_loopback_host(strip_scheme(&m.host)) && !m.skip_verify),
            skip_verify: m.skip_verify,
            mirror: true,
        })
        .collect();
    out.push(Endpoint {
        host: registry.to_string(),
        plain_http: settings.plain_http || (is_loopback_host(registry) && !settings.skip_verify),
        skip_verify: settings.skip_verify,
        mirror: false,
    });
    out
}

fn strip_scheme(host: &str) -> &str {
    host.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/')
}

/// The platform this node runs, in OCI terms (Go's GOOS/GOARCH names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Go's architecture name for a Rust `target_arch`.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other, // arm, s390x, riscv64, ppc64, mips64 are spelled alike
    }
}

pub fn node_platform() -> Platform {
    let arch = go_arch(std::env::consts::ARCH).to_string();
    let variant = match arch.as_str() {
        "arm64" => Some("v8".to_string()),
        "arm" => Some("v7".to_string()),
        _ => None,
    };
    Platform { os: "linux".into(), architecture: arch, variant }
}

/// A content descriptor from a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

/// A platform image manifest, resolved and verified.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Digest of the platform manifest (what repo digests and `manifest_digest` name).
    pub digest: String,
    /// The manifest bytes as served (their sha256 is `digest`).
    pub bytes: Bytes,
    pub media_type: String,
    /// The index / manifest list the tag pointed at, if it was one.
    pub index_digest: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

enum Parsed {
    Index(Vec<IndexEntry>),
    Manifest { media_type: String, config: Descriptor, layers: Vec<Descriptor> },
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<Parsed> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::Registry { registry: what.to_string(), reason: format!("manifest is not valid JSON: {e}") })?;
    if raw.schema_version == Some(1) {
        return Err(Error::UnsupportedMediaType(raw.media_type.unwrap_or_else(|| MEDIA_DOCKER_SCHEMA1.to_string())));
    }
    let media_type = raw.media_type.clone().unwrap_or_default();
    match media_type.as_str() {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => return Ok(Parsed::Index(raw.manifests.unwrap_or_default())),
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => {}
        MEDIA_DOCKER_SCHEMA1 | MEDIA_DOCKER_SCHEMA1_SIGNED => return Err(Error::UnsupportedMediaType(media_type)),
        // OCI allows mediaType to be absent: tell index from manifest by shape.
        "" if raw.manifests.is_some() => return Ok(Parsed::Index(raw.manifests.unwrap_or_default())),
        "" if raw.config.is_some() => {}
        other => return Err(Error::UnsupportedMediaType(other.to_string())),
    }
    let config = raw.config.ok_or_else(|| Error::Registry { registry: what.to_string(), reason: "manifest has no config".into() })?;
    let layers = raw.layers.unwrap_or_default();
    let media_type = if media_type.is_empty() { MEDIA_OCI_MANIFEST.to_string() } else { media_type };
    if config.media_type != MEDIA_OCI_CONFIG && config.media_type != MEDIA_DOCKER_CONFIG {
        return Err(Error::UnsupportedMediaType(config.media_type));
    }
    check_descriptor(&config, what)?;
    for layer in &layers {
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(Error::UnsupportedMediaType(layer.media_type.clone()));
        }
        check_descriptor(layer, what)?;
    }
    Ok(Parsed::Manifest { media_type, config, layers })
}

fn check_descriptor(d: &Descriptor, what: &str) -> Result<()> {
    validate_digest(&d.digest).map(|_| ()).map_err(|reason| Error::Registry { registry: what.to_string(), reason })
}

/// Picks the manifest for `want` from an index: same os and architecture, the exact
/// variant first, then an entry without variant, then (arm) an older variant.
fn select_platform<'a>(entries: &'a [IndexEntry], want: &Platform) -> Option<&'a IndexEntry> {
    let candidates: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| e.platform.as_ref().is_some_and(|p| p.os == want.os && p.architecture == want.architecture))
        .collect();
    let variant_of = |e: &IndexEntry| e.platform.as_ref().and_then(|p| p.variant.clone()).filter(|v| !v.is_empty());
    if let Some(v) = &want.variant {
        if let Some(e) = candidates.iter().find(|e| variant_of(e).as_deref() == Some(v.as_str())) {
            return Some(e);
        }
    }
    if let Some(e) = candidates.iter().find(|e| variant_of(e).is_none()) {
        return Some(e);
    }
    if let Some(v) = want.variant.as_deref().and_then(|v| v.strip_prefix('v')).and_then(|n| n.parse::<u32>().ok()) {
        // armv7 runs v6 and v5 binaries: take the newest variant not newer than ours.
        return candidates
            .iter()
            .filter_map(|e| {
                let n = variant_of(e)?.strip_prefix('v')?.parse::<u32>().ok()?;
                (n <= v).then_some((n, *e))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, e)| e);
    }
    None
}

/// Maps an oci-client error to ours. `what` names the reference or blob, `registry` the
/// endpoint that answered.
fn map_oci_error(e: OciDistributionError, what: &str, registry: &str) -> Error {
    let not_found = || Error::NotInRegistry { reference: what.to_string(), registry: registry.to_string() };
    let unauthorized = |reason: String| Error::Unauthorized { registry: registry.to_string(), reason };
    let unavailable = |reason: String| Error::RegistryUnavailable { registry: registry.to_string(), reason };
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let reason = format!("{envelope} ({url})");
            if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                unauthorized(reason)
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown | OciErrorCode::NotFound
                )
            }) {
                not_found()
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Toomanyrequests)) {
                unavailable(reason)
            } else {
                Error::Registry { registry: registry.to_string(), reason }
            }
        }
        OciDistributionError::ServerError { code, url, message } => match code {
            404 => not_found(),
            401 | 403 => unauthorized(format!("HTTP {code} from {url}")),
            429 | 500..=599 => unavailable(format!("HTTP {code} from {url}: {}", message.trim())),
            _ => Error::Registry { registry: registry.to_string(), reason: format!("HTTP {code} from {url}: {}", message.trim()) },
        },
        OciDistributionError::UnauthorizedError { url } => unauthorized(format!("HTTP 401 from {url}")),
        OciDistributionError::AuthenticationFailure(reason) => unauthorized(reason),
        OciDistributionError::RequestError(e) => unavailable(error_chain(&e)),
        OciDistributionError::IoError(e) => unavailable(e.to_string()),
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
            Error::DigestMismatch { expected, actual }
        }
        OciDistributionError::UnsupportedMediaTypeError(m) => Error::UnsupportedMediaType(m),
        OciDistributionError::UnsupportedSchemaVersionError(v) => Error::UnsupportedMediaType(format!("manifest schema version {v}")),
        other => Error::Registry { registry: registry.to_string(), reason: other.to_string() },
    }
}

/// `reqwest` errors say "error sending request" at the top; the cause (connection
/// refused, timed out, certificate) is further down the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The registry client: endpoint selection and sessions. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    config: Arc<ImagesConfig>,
    platform: Platform,
}

impl RegistryClient {
    pub fn new(config: ImagesConfig) -> Self {
        RegistryClient { config: Arc::new(config), platform: node_platform() }
    }

    /// For tests and cross-platform pulls.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Resolves `image` to its platform manifest, trying the endpoints in order. Returns
    /// the manifest and a session bound to the endpoint that served it, from which the
    /// config and layers are then fetched.
    pub async fn resolve(&self, image: &ImageRef, credentials: Option<&Credentials>) -> Result<(ResolvedManifest, Session)> {
        let endpoints = endpoints_for(&self.config, &image.registry);
        let mut last_err = None;
        for endpoint in endpoints {
            let attempt = async {
                let session = Session::new(&self.config, endpoint.clone(), image, credentials).await?;
                let manifest = session.resolve_manifest(&self.platform).await?;
                Ok::<_, Error>((manifest, session))
            };
            match attempt.await {
                Ok(found) => {
                    tracing::debug!(image = %image, endpoint = %endpoint.host, digest = %found.0.digest, "resolved manifest");
                    return Ok(found);
                }
                Err(e) if endpoint.mirror => {
                    tracing::warn!(image = %image, mirror = %endpoint.host, error = %e, "mirror failed, trying the next endpoint");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::RegistryUnavailable { registry: image.registry.clone(), reason: "no endpoint".into() }))
    }
}

/// A connection to one endpoint for one image, with its credentials. Cheap to clone
/// (shares the HTTP connection pool and token cache).
#[derive(Clone)]
pub struct Session {
    client: oci_client::Client,
    reference: oci_client::Reference,
    auth: RegistryAuth,
    endpoint: Endpoint,
    image: ImageRef,
}

impl Session {
    async fn new(config: &ImagesConfig, endpoint: Endpoint, image: &ImageRef, credentials: Option<&Credentials>) -> Result<Self> {
        let connect_timeout = Duration::from_secs(config.connect_timeout_secs.max(1));
        let client_config = ClientConfig {
            protocol: if endpoint.plain_http { ClientProtocol::Http } else { ClientProtocol::Https },
            accept_invalid_certificates: endpoint.skip_verify,
            platform_resolver: None,
            connect_timeout: Some(connect_timeout),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..Default::default()
        };
        let client = oci_client::Client::try_from(client_config)
            .map_err(|e| Error::Registry { registry: endpoint.host.clone(), reason: format!("cannot build HTTP client: {e}") })?;
        let mut reference = image.to_oci();
        if endpoint.mirror {
            // Sends `?ns=<registry>` as containerd does, so a mirror serving several
            // registries knows which one is meant.
            reference.set_mirror_registry(endpoint.host.clone());
        }
        // Credentials belong to the registry they were issued for; mirrors are asked
        // anonymously so that a mirror never sees them.
        let auth = match credentials {
            Some(c) if !endpoint.mirror => auth_from_credentials(c, &endpoint, image, connect_timeout).await?,
            _ => RegistryAuth::Anonymous,
        };
        Ok(Session { client, reference, auth, endpoint, image: image.clone() })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn map(&self, e: OciDistributionError, what: &str) -> Error {
        map_oci_error(e, what, &self.endpoint.host)
    }

    async fn fetch_manifest_raw(&self, reference: &oci_client::Reference) -> Result<(Bytes, String)> {
        let what = self.image.to_string();
        self.client.pull_manifest_raw(reference, &self.auth, MANIFEST_ACCEPT).await.map_err(|e| self.map(e, &what))
    }

    async fn resolve_manifest(&self, platform: &Platform) -> Result<ResolvedManifest> {
        let what = self.image.to_string();
        let (bytes, digest) = self.fetch_manifest_raw(&self.reference).await?;
        verify_sha256(&bytes, &digest)?;
        match parse_manifest(&bytes, &self.endpoint.host)? {
            Parsed::Manifest { media_type, config, layers } => {
                Ok(ResolvedManifest { digest, bytes, media_type, index_digest: None, config, layers })
            }
            Parsed::Index(entries) => {
                let entry = select_platform(&entries, platform)
                    .ok_or_else(|| Error::NoMatchingPlatform { reference: what.clone(), platform: platform.to_string() })?;
                let chosen = validate_digest(&entry.digest).map_err(|reason| Error::Registry { registry: self.endpoint.host.clone(), reason })?;
                tracing::debug!(image = %what, index = %digest, manifest = %chosen, media_type = ?entry.media_type, "index resolved to platform manifest");
                let platform_ref = self.reference.clone_with_digest(chosen.clone());
                let (mbytes, mdigest) = self.fetch_manifest_raw(&platform_ref).await?;
                verify_sha256(&mbytes, &chosen)?;
                match parse_manifest(&mbytes, &self.endpoint.host)? {
                    Parsed::Manifest { media_type, config, layers } => Ok(ResolvedManifest {
                        digest: mdigest,
                        bytes: mbytes,
                        media_type,
                        index_digest: Some(digest),
                        config,
                        layers,
                    }),
                    Parsed::Index(_) => Err(Error::UnsupportedMediaType("an index nested in an index".into())),
                }
            }
        }
    }

    /// Fetches a small blob (config) whole, verifying size and digest.
    pub async fn fetch_small_blob(&self, desc: &Descriptor) -> Result<Bytes> {
        if desc.size > MAX_SMALL_BLOB {
            return Err(Error::Registry {
                registry: self.endpoint.host.clone(),
                reason: format!("blob {} claims {} bytes, more than a config may have", desc.digest, desc.size),
            });
        }
        let mut stream = self.blob_stream(desc).await?;
        let mut buf = Vec::with_capacity(desc.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.stream_error(e))?;
            if (buf.len() + chunk.len()) as u64 > desc.size {
                return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: (buf.len() + chunk.len()) as u64 });
            }
            buf.extend_from_slice(&chunk);
        }
        if buf.len() as u64 != desc.size {
            return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: buf.len() as u64 });
        }
        verify_sha256(&buf, &desc.digest)?;
        Ok(Bytes::from(buf))
    }

    /// Opens a blob as a byte stream. The stream is NOT verified here: the consumer
    /// hashes what it writes (the disk side does, for blob and diff id), which spares
    /// a second sha256 pass over every layer.
    pub async fn blob_stream(&self, desc: &Descriptor) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let layer = oci_client::manifest::OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size as i64,
            urls: desc.urls.clone(),
            ..Default::default()
        };
        // A `Range: bytes=0-` request makes oci-client hand back the raw body (it only
        // verifies full 200 answers); a registry that ignores ranges answers 200 and
        // oci-client verifies, which is merely redundant.
        let response = self
            .client
            .pull_blob_stream_partial(&self.reference, &layer, 0, None)
            .await
            .map_err(|e| self.map(e, &format!("{}@{}", self.image.name(), desc.digest)))?;
        let sized = match response {
            oci_client::client::BlobResponse::Full(s) | oci_client::client::BlobResponse::Partial(s) => s,
        };
        if let Some(len) = sized.content_length {
            if len != desc.size {
                return Err(Error::SizeMismatch { digest: desc.digest.clone(), expected: desc.size, actual: len });
            }
        }
        Ok(sized.stream)
    }

    /// Maps an error from a blob stream (transport failure mid-body) to ours.
    pub fn stream_error(&self, e: std::io::Error) -> Error {
        Error::RegistryUnavailable { registry: self.endpoint.host.clone(), reason: format!("download interrupted: {}", error_chain(&e)) }
    }
}

/// Watches a blob stream for transport errors, so that the caller can report "registry
/// unavailable" even when the consumer turned the failed read into its own error.
#[derive(Clone, Default)]
pub struct StreamFailure(Arc<Mutex<Option<String>>>);

impl StreamFailure {
    pub fn wrap(&self, stream: BoxStream<'static, std::io::Result<Bytes>>) -> BoxStream<'static, std::io::Result<Bytes>> {
        let slot = self.0.clone();
        stream
            .inspect(move |item| {
                if let Err(e) = item {
                    if let Ok(mut s) = slot.lock() {
                        s.get_or_insert_with(|| error_chain(e));
                    }
                }
            })
            .boxed()
    }

    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

fn verify_sha256(bytes: &[u8], expected: &str) -> Result<()> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if actual != expected {
        return Err(Error::DigestMismatch { expected: expected.to_string(), actual });
    }
    Ok(())
}

async fn auth_from_credentials(c: &Credentials, endpoint: &Endpoint, image: &ImageRef, timeout: Duration) -> Result<RegistryAuth> {
    if !c.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(c.registry_token.clone()));
    }
    if !c.identity_token.is_empty() {
        let token = exchange_identity_token(&c.identity_token, endpoint, image, timeout).await?;
        return Ok(RegistryAuth::Bearer(token));
    }
    if !c.username.is_empty() {
        return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
    }
    if !c.auth.is_empty() {
        let (user, pass) = decode_auth(&c.auth).map_err(|reason| Error::Unauthorized { registry: endpoint.host.clone(), reason })?;
        return Ok(RegistryAuth::Basic(user, pass));
    }
    Ok(RegistryAuth::Anonymous)
}

/// Decodes a Docker `auth` field: base64 of `username:password`.
pub fn decode_auth(auth: &str) -> std::result::Result<(String, String), String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("the auth field is not base64: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| "the auth field is not UTF-8".to_string())?;
    let (user, pass) = text.split_once(':').ok_or_else(|| "the auth field is not username:password".to_string())?;
    Ok((user.to_string(), pass.to_string()))
}

/// The parameters of a `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
}

pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut challenge = BearerChallenge::default();
    let mut s = params.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (value, remainder) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            value.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => value.push(ch),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => challenge.realm = value,
            "service" => challenge.service = Some(value),
            _ => {}
        }
        s = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    (!challenge.realm.is_empty()).then_some(challenge)
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// Exchanges an OAuth2 refresh token (CRI's identity token) for an access token at the
/// registry's token service, as `docker login` credential helpers expect:
/// POST realm with grant_type=refresh_token.
async fn exchange_identity_token(refresh_token: &str, endpoint: &Endpoint, image: &ImageRef, timeout: Duration) -> Result<String> {
    let registry = endpoint.host.clone();
    let unavailable = |e: reqwest::Error| Error::RegistryUnavailable { registry: registry.clone(), reason: error_chain(&e) };
    let http = reqwest::Client::builder()
        .connect_timeout(timeout)
        .read_timeout(READ_TIMEOUT)
        .danger_accept_invalid_certs(endpoint.skip_verify)
        .user_agent(USER_AGENT)
        .build()
        .map_err(unavailable)?;
    let scheme = if endpoint.plain_http { "http" } else { "https" };
    let host = if endpoint.host == crate::reference::DOCKER_HUB { "registry-1.docker.io" } else { endpoint.host.as_str() };
    let probe = http.get(format!("{scheme}://{host}/v2/")).send().await.map_err(unavailable)?;
    let challenge = probe
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer_challenge)
        .ok_or_else(|| Error::Unauthorized {
            registry: registry.clone(),
            reason: "an identity token was given, but the registry offers no bearer token service".into(),
        })?;
    let scope = format!("repository:{}:pull", image.repository);
    let mut pairs = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", "berth"), ("scope", scope.as_str())];
    if let Some(service) = &challenge.service {
        pairs.push(("service", service.as_str()));
    }
    let response = http
        .post(&challenge.realm)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_encode(&pairs))
        .send()
        .await
        .map_err(unavailable)?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let reason = format!("token service {} refused the identity token: HTTP {status} {}", challenge.realm, body.trim());
        return Err(if status.is_server_error() {
            Error::RegistryUnavailable { registry, reason }
        } else {
            Error::Unauthorized { registry, reason }
        });
    }
    #[derive(Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        access_token: String,
        #[serde(default)]
        token: String,
    }
    let parsed: TokenResponse = response.json().await.map_err(|e| Error::Unauthorized {
        registry: registry.clone(),
        reason: format!("token service answered something that is not a token: {e}"),
    })?;
    let token = if parsed.access_token.is_empty() { parsed.token } else { parsed.access_token };
    if token.is_empty() {
        return Err(Error::Unauthorized { registry, reason: "token service returned no access token".into() });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RegistryConfig, RegistryHost};

    #[test]
    fn endpoints_mirrors_first_loopback_plain() {
        let mut config = ImagesConfig::default();
        config.registries.insert(
            "docker.io".into(),
            RegistryConfig {
                mirrors: vec![
                    RegistryHost { host: "127.0.0.1:4000".into(), ..Default::default() },
                    RegistryHost { host: "https://mirror.example.com/".into(), skip_verify: true, ..Default::default() },
                ],
                ..Default::default()
            },
        );
        let eps = endpoints_for(&config, "docker.io");
        assert_eq!(eps.len(), 3);
        assert_eq!((eps[0].host.as_str(), eps[0].plain_http, eps[0].mirror), ("127.0.0.1:4000", true, true));
        assert_eq!((eps[1].host.as_str(), eps[1].plain_http, eps[1].skip_verify), ("mirror.example.com", false, true));
        assert_eq!((eps[2].host.as_str(), eps[2].plain_http, eps[2].mirror), ("docker.io", false, false));
        let eps = endpoints_for(&config, "localhost:5001");
        assert_eq!(eps, vec![Endpoint { host: "localhost:5001".into(), plain_http: true, skip_verify: false, mirror: false }]);
    }

    fn entry(digest: &str, arch: &str, variant: Option<&str>) -> IndexEntry {
        IndexEntry {
            digest: digest.into(),
            media_type: None,
            platform: Some(RawPlatform { os: "linux".into(), architecture: arch.into(), variant: variant.map(Into::into) }),
        }
    }

    #[test]
    fn platform_selection() {
        let entries = vec![
            entry("a", "amd64", None),
            entry("b", "arm", Some("v6")),
            entry("c", "arm", Some("v7")),
            entry("d", "arm64", Some("v8")),
            IndexEntry { digest: "att".into(), media_type: None, platform: Some(RawPlatform { os: "unknown".into(), architecture: "unknown".into(), variant: None }) },
        ];
        let p = |a: &str, v: Option<&str>| Platform { os: "linux".into(), architecture: a.into(), variant: v.map(Into::into) };
        assert_eq!(select_platform(&entries, &p("amd64", None)).unwrap().digest, "a");
        assert_eq!(select_platform(&entries, &p("arm", Some("v7"))).unwrap().digest, "c");
        assert_eq!(select_platform(&entries, &p("arm64", Some("v8"))).unwrap().digest, "d");
        assert_eq!(select_platform(&entries[..2], &p("arm", Some("v7"))).unwrap().digest, "b");
        assert!(select_platform(&entries, &p("s390x", None)).is_none());
        let arm64_plain = vec![entry("e", "arm64", None)];
        assert_eq!(select_platform(&arm64_plain, &p("arm64", Some("v8"))).unwrap().digest, "e");
        assert_eq!(node_platform().os, "linux");
    }

    #[test]
    fn manifest_kinds() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_DOCKER_MANIFEST}","config":{{"mediaType":"{MEDIA_DOCKER_CONFIG}","digest":"{d}","size":10}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{d}","size":5}}]}}"#
        );
        assert!(matches!(parse_manifest(m.as_bytes(), "r").unwrap(), Parsed::Manifest { layers, .. } if layers.len() == 1));
        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#);
        assert!(matches!(parse_manifest(idx.as_bytes(), "r").unwrap(), Parsed::Index(e) if e.len() == 1));
        let v1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(parse_manifest(v1.as_bytes(), "r"), Err(Error::UnsupportedMediaType(_))));
        let helm = format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{d}","size":1}},"layers":[]}}"#);
        assert!(matches!(parse_manifest(helm.as_bytes(), "r"), Err(Error::UnsupportedMediaType(_))));
        let bad_digest = format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_OCI_CONFIG}","digest":"sha256:../../x","size":1}},"layers":[]}}"#);
        assert!(parse_manifest(bad_digest.as_bytes(), "r").is_err());
    }

    #[test]
    fn challenges_and_auth() {
        let c = parse_bearer_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull""#).unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="Registry Realm""#), None);
        assert_eq!(parse_bearer_challenge("Bearer realm=http://x/t").unwrap().realm, "http://x/t");
        assert_eq!(decode_auth("dXNlcjpwYTpzcw==").unwrap(), ("user".to_string(), "pa:ss".to_string()));
        assert!(decode_auth("!!!").is_err());
        assert_eq!(form_encode(&[("a", "b c"), ("s", "repo:x/y:pull")]), "a=b+c&s=repo%3Ax%2Fy%3Apull");
    }

    #[test]
    fn error_mapping() {
        let e = map_oci_error(OciDistributionError::ServerError { code: 503, url: "u".into(), message: "m".into() }, "ref", "reg");
        assert!(matches!(e, Error::RegistryUnavailable { .. }));
        let e = map_oci_error(OciDistributionError::ServerError { code: 404, url: "u".into(), message: "".into() }, "ref", "reg");
        assert!(matches!(e, Error::NotInRegistry { ref reference, ref registry } if reference == "ref" && registry == "reg"));
        let e = map_oci_error(OciDistributionError::UnauthorizedError { url: "u".into() }, "ref", "reg");
        assert!(matches!(e, Error::Unauthorized { .. }));
        let env: oci_client::errors::OciEnvelope = serde_json::from_str(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#).unwrap();
        let e = map_oci_error(OciDistributionError::RegistryError { envelope: env, url: "u".into() }, "ref", "reg");
        assert!(matches!(e, Error::NotInRegistry { .. }));
    }
}
