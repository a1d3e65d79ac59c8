//! A small plain-HTTP client for the OCI distribution API, just enough to push images:
//! monolithic blob uploads (POST then PUT `?digest=`), cross-repository mounts, manifest
//! and index PUTs, and Basic authentication answering the registry's 401 challenge.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use ureq::http::Response;
use ureq::Body;

use crate::image::{index_json, manifest_json, Descriptor, Format, ImageSpec};
use crate::layer::sha256_digest;

/// What [`push_image`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:<hex>` of the manifest bytes (what `repo@digest` resolves to).
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    pub config_digest: String,
    /// Compressed layer digests, base layer first (as in the manifest).
    pub layer_digests: Vec<String>,
    /// Uncompressed layer digests, base layer first (as in the config's `rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
    /// Bytes stored in the registry for this image: compressed layers + config + manifest.
    pub total_size: u64,
}

/// What [`push_index`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedIndex {
    /// `sha256:<hex>` of the index (manifest list) bytes.
    pub index_digest: String,
    pub index_media_type: String,
    /// One entry per platform, in the order given.
    pub manifests: Vec<Pushed>,
    /// Bytes of all platform images plus the index itself.
    pub total_size: u64,
}

/// Pushes one image to `registry` (`host:port`, plain HTTP) as `repo:tag`.
///
/// Layers are rendered and compressed one at a time into a temp file, so memory use does
/// not grow with layer size.
pub fn push_image(registry: &str, repo: &str, tag: &str, spec: &ImageSpec, auth: Option<(&str, &str)>) -> Result<Pushed> {
    push_image_to(registry, &[repo], tag, spec, auth)
}

/// Pushes one image under several repositories with the same tag. Each layer is built and
/// uploaded once; the other repositories get it by cross-repository mount.
pub fn push_image_to(registry: &str, repos: &[&str], tag: &str, spec: &ImageSpec, auth: Option<(&str, &str)>) -> Result<Pushed> {
    let client = Client::connect(registry, auth)?;
    client.push_image(repos, Some(tag), spec)
}

/// Pushes every spec as a platform manifest (by digest), then an index tagged `tag` listing
/// them with their platforms. The index is a Docker manifest list when every spec uses
/// [`Format::Docker`], an OCI image index otherwise.
pub fn push_index(registry: &str, repo: &str, tag: &str, specs: &[ImageSpec]) -> Result<PushedIndex> {
    push_index_to(registry, &[repo], tag, specs, None)
}

/// [`push_index`] under several repositories, with optional Basic credentials.
pub fn push_index_to(registry: &str, repos: &[&str], tag: &str, specs: &[ImageSpec], auth: Option<(&str, &str)>) -> Result<PushedIndex> {
    let client = Client::connect(registry, auth)?;
    client.push_index(repos, tag, specs)
}

/// A connection to one registry, authenticated if it asked for it.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
}

/// How a blob body is supplied to [`Client::upload_blob`].
pub enum BlobBody<'a> {
    File(&'a File),
    Bytes(&'a [u8]),
}

impl Client {
    /// Probes `GET /v2/`; when the registry answers 401 with a Basic challenge, retries with
    /// `auth` and fails clearly if that is missing or wrong.
    pub fn connect(registry: &str, auth: Option<(&str, &str)>) -> Result<Self> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .max_redirects(0)
            .build()
            .into();
        let mut client = Self { agent, base: format!("http://{registry}"), authorization: None };
        let url = format!("{}/v2/", client.base);
        let response = client.agent.get(&url).call().with_context(|| format!("registry {registry} unreachable"))?;
        match response.status().as_u16() {
            200 => return Ok(client),
            401 => {}
            status => bail!("GET {url}: unexpected status {status}"),
        }
        let challenge = header(&response, "www-authenticate").unwrap_or_default();
        if !challenge.to_ascii_lowercase().starts_with("basic") {
            bail!("registry {registry} asks for `{challenge}`; imagegen supports only Basic authentication");
        }
        let Some((user, password)) = auth else {
            bail!("registry {registry} requires authentication (Basic) and no credentials were given");
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        client.authorization = Some(format!("Basic {token}"));
        let response = client.request("GET", &url).call()?;
        match response.status().as_u16() {
            200 => Ok(client),
            401 => bail!("registry {registry} rejected the credentials of user {user:?}"),
            status => bail!("GET {url} with credentials: unexpected status {status}"),
        }
    }

    /// `http://host:port`
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let builder = match method {
            "GET" => self.agent.get(url),
            "HEAD" => self.agent.head(url),
            "DELETE" => self.agent.delete(url),
            other => unreachable!("no body-less {other} requests are made"),
        };
        match &self.authorization {
            Some(value) => builder.header("Authorization", value),
            None => builder,
        }
    }

    fn request_with_body(&self, method: &str, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let builder = match method {
            "POST" => self.agent.post(url),
            "PUT" => self.agent.put(url),
            "PATCH" => self.agent.patch(url),
            other => unreachable!("no {other} requests with a body are made"),
        };
        match &self.authorization {
            Some(value) => builder.header("Authorization", value),
            None => builder,
        }
    }

    /// Whether `repo` already links blob `digest`.
    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let response = self.request("HEAD", &url).call().with_context(|| format!("HEAD {url}"))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => bail!("HEAD {url}: unexpected status {status}"),
        }
    }

    /// Links blob `digest` from repository `from` into `repo` without uploading it.
    /// Returns false when the registry would not mount it (the caller must upload).
    pub fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}", self.base);
        let mut response = self.request_with_body("POST", &url).send_empty().with_context(|| format!("POST {url}"))?;
        match response.status().as_u16() {
            201 => Ok(true),
            202 => {
                // The registry opened an ordinary upload instead; cancel it.
                if let Some(location) = header(&response, "location") {
                    let upload_url = self.absolute(&location);
                    let _ = self.request("DELETE", &upload_url).call();
                }
                Ok(false)
            }
            status => bail!("POST {url}: unexpected status {status}: {}", body_text(&mut response)),
        }
    }

    /// Monolithic upload: `POST /v2/<repo>/blobs/uploads/`, then `PUT <location>?digest=`
    /// with the whole body. The registry verifies `digest` against what it received.
    pub fn upload_blob(&self, repo: &str, digest: &str, body: BlobBody<'_>) -> Result<()> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let mut response = self.request_with_body("POST", &url).send_empty().with_context(|| format!("POST {url}"))?;
        if response.status().as_u16() != 202 {
            bail!("POST {url}: unexpected status {}: {}", response.status(), body_text(&mut response));
        }
        let location = header(&response, "location").with_context(|| format!("POST {url}: no Location header"))?;
        let mut put_url = self.absolute(&location);
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str("digest=");
        put_url.push_str(digest);
        let request = self.request_with_body("PUT", &put_url).header("Content-Type", "application/octet-stream");
        let mut response = match body {
            BlobBody::File(mut file) => {
                file.seek(SeekFrom::Start(0))?;
                request.send(file)
            }
            BlobBody::Bytes(bytes) => request.send(bytes),
        }
        .with_context(|| format!("PUT blob {digest} to {repo}"))?;
        if response.status().as_u16() != 201 {
            bail!("PUT blob {digest} to {repo}: unexpected status {}: {}", response.status(), body_text(&mut response));
        }
        Ok(())
    }

    /// Uploads `bytes` unless `repo` already has them; returns their digest.
    pub fn push_blob_bytes(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        if !self.blob_exists(repo, &digest)? {
            self.upload_blob(repo, &digest, BlobBody::Bytes(bytes))?;
        }
        Ok(digest)
    }

    /// `PUT /v2/<repo>/manifests/<reference>` (a tag or a digest); returns the digest of
    /// `bytes`.
    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let mut response = self
            .request_with_body("PUT", &url)
            .header("Content-Type", media_type)
            .send(bytes)
            .with_context(|| format!("PUT {url}"))?;
        if response.status().as_u16() != 201 {
            bail!("PUT {url}: unexpected status {}: {}", response.status(), body_text(&mut response));
        }
        if let Some(stored) = header(&response, "docker-content-digest") {
            if stored != digest {
                bail!("PUT {url}: registry stored digest {stored}, expected {digest}");
            }
        }
        Ok(digest)
    }

    /// Pushes `spec` into every repo of `repos`, tagged `tag` or (None) by digest only.
    pub fn push_image(&self, repos: &[&str], tag: Option<&str>, spec: &ImageSpec) -> Result<Pushed> {
        let Some((first_repo, other_repos)) = repos.split_first() else {
            bail!("no repository to push to");
        };
        let mut layers = Vec::with_capacity(spec.layers.len());
        let mut diff_ids = Vec::with_capacity(spec.layers.len());
        for (index, (layer, compression)) in spec.layers.iter().enumerate() {
            let built = layer.build(*compression).with_context(|| format!("building layer {index}"))?;
            if !self.blob_exists(first_repo, &built.digest)? {
                self.upload_blob(first_repo, &built.digest, BlobBody::File(&built.file))
                    .with_context(|| format!("uploading layer {index}"))?;
            }
            for repo in other_repos {
                if !self.blob_exists(repo, &built.digest)? && !self.mount_blob(repo, &built.digest, first_repo)? {
                    self.upload_blob(repo, &built.digest, BlobBody::File(&built.file))?;
                }
            }
            layers.push(Descriptor {
                media_type: spec.format.layer_media_type(*compression).to_string(),
                digest: built.digest.clone(),
                size: built.size,
            });
            diff_ids.push(built.diff_id.clone());
            // `built` (and its temp file) is dropped here: one layer on disk at a time.
        }
        let config_bytes = spec.config_json(&diff_ids);
        let config = Descriptor {
            media_type: spec.format.config_media_type().to_string(),
            digest: sha256_digest(&config_bytes),
            size: config_bytes.len() as u64,
        };
        let manifest_bytes = manifest_json(spec.format, &config, &layers);
        let manifest_digest = sha256_digest(&manifest_bytes);
        let reference = tag.unwrap_or(&manifest_digest);
        for repo in repos {
            self.push_blob_bytes(repo, &config_bytes)?;
            self.push_manifest(repo, reference, spec.format.manifest_media_type(), &manifest_bytes)?;
        }
        let layer_bytes: u64 = layers.iter().map(|l| l.size).sum();
        Ok(Pushed {
            manifest_digest,
            manifest_media_type: spec.format.manifest_media_type().to_string(),
            manifest_size: manifest_bytes.len() as u64,
            config_digest: config.digest,
            layer_digests: layers.into_iter().map(|l| l.digest).collect(),
            diff_ids,
            total_size: layer_bytes + config.size + manifest_bytes.len() as u64,
        })
    }

    /// Pushes each spec by digest, then an index tagged `tag` (see [`push_index`]).
    pub fn push_index(&self, repos: &[&str], tag: &str, specs: &[ImageSpec]) -> Result<PushedIndex> {
        if specs.is_empty() {
            bail!("an index needs at least one image");
        }
        let format = if specs.iter().all(|s| s.format == Format::Docker) { Format::Docker } else { Format::Oci };
        let mut manifests = Vec::with_capacity(specs.len());
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let pushed = self
                .push_image(repos, None, spec)
                .with_context(|| format!("pushing the {}/{} image", spec.os, spec.arch))?;
            let descriptor = Descriptor {
                media_type: pushed.manifest_media_type.clone(),
                digest: pushed.manifest_digest.clone(),
                size: pushed.manifest_size,
            };
            entries.push((descriptor, spec.platform_json()));
            manifests.push(pushed);
        }
        let index_bytes = index_json(format, &entries);
        let mut index_digest = String::new();
        for repo in repos {
            index_digest = self.push_manifest(repo, tag, format.index_media_type(), &index_bytes)?;
        }
        let total_size = manifests.iter().map(|m| m.total_size).sum::<u64>() + index_bytes.len() as u64;
        Ok(PushedIndex { index_digest, index_media_type: format.index_media_type().to_string(), manifests, total_size })
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }
}

fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn body_text(response: &mut Response<Body>) -> String {
    let mut text = response.body_mut().read_to_string().unwrap_or_default();
    text.truncate(500);
    text
}
