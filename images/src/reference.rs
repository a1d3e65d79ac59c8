//! Image references, parsed and normalised the way Docker and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`, `127.0.0.1:5000/x/y:tag` keeps its
//! registry, `repo@sha256:<hex>` pins a manifest.
//!
//! The grammar itself comes from `oci_client::Reference` (the distribution reference
//! regexp); on top of it we refuse what containerd refuses (whitespace, bare 64-hex ids,
//! non-sha256 or non-lowercase digests) so that every accepted reference has exactly one
//! normalised spelling, which is what the metadata name index is keyed by.

use std::fmt;

use crate::error::{Error, Result};

/// The registry Docker Hub references resolve to.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if the reference names one. A reference with neither tag nor digest gets
    /// `latest`.
    pub tag: Option<String>,
    /// Manifest digest `sha256:<hex>`, if the reference pins one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `reference`.
    pub fn parse(reference: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference { reference: reference.to_string(), reason: reason.to_string() };
        if reference.is_empty() {
            return Err(invalid("the reference is empty"));
        }
        if reference.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the reference contains whitespace"));
        }
        // A bare 64-hex string is an image id, never a repository name (Docker refuses it
        // too, so that `docker pull <id>` cannot pull a repository that shadows an id).
        if reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("a 64-character hex string is an image id, not a repository name"));
        }
        let parsed: oci_client::Reference = reference.parse().map_err(|e: oci_client::ParseError| invalid(&e.to_string()))?;
        let digest = match parsed.digest() {
            Some(d) => Some(validate_digest(d).map_err(|reason| invalid(&reason))?),
            None => None,
        };
        let mut registry = parsed.registry().to_string();
        if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            registry = DOCKER_HUB.to_string();
        }
        let mut repository = parsed.repository().to_string();
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if repository.is_empty() {
            return Err(invalid("the repository name is empty"));
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        Ok(ImageRef { registry, repository, tag: parsed.tag().map(str::to_string), digest })
    }

    /// `registry/repository`, the name both tag and digest references start with.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference has a tag.
    pub fn tag_ref(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@<manifest_digest>`: the digest reference recorded for a pull.
    pub fn digest_ref(&self, manifest_digest: &str) -> String {
        format!("{}@{manifest_digest}", self.name())
    }

    /// The key an image record is found by: the digest reference when the reference pins
    /// a digest (containerd drops the tag of `repo:tag@digest`), else the tag reference.
    pub fn lookup_key(&self) -> String {
        match (&self.digest, self.tag_ref()) {
            (Some(d), _) => self.digest_ref(d),
            (None, Some(t)) => t,
            (None, None) => format!("{}:latest", self.name()),
        }
    }

    /// The same reference as an `oci_client::Reference`, for talking to the registry.
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(self.registry.clone(), self.repository.clone(), d.clone()),
            (Some(t), None) => oci_client::Reference::with_tag(self.registry.clone(), self.repository.clone(), t.clone()),
            (None, None) => oci_client::Reference::with_tag(self.registry.clone(), self.repository.clone(), "latest".into()),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits, the only form
/// berth stores (ids and content addresses are compared as strings).
pub fn validate_digest(digest: &str) -> std::result::Result<String, String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!("digest {digest:?} is not a sha256 digest"));
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("digest {digest:?} must be sha256: and 64 lowercase hex digits"));
    }
    Ok(digest.to_string())
}

/// Whether `host` (with optional port) is a loopback registry, which Docker and
/// containerd talk to over plain HTTP without being told.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = strip_port(host);
    if bare == "localhost" {
        return true;
    }
    match bare.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:5000
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // One colon: host:port. More colons: a bare IPv6 address.
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_short_names_normalise() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.tag_ref().unwrap(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("nginx:1.27").unwrap();
        assert_eq!(r.tag_ref().unwrap(), "docker.io/library/nginx:1.27");
        let r = ImageRef::parse("someone/app").unwrap();
        assert_eq!(r.to_string(), "docker.io/someone/app:latest");
        let r = ImageRef::parse("docker.io/busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("index.docker.io/library/busybox:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
    }

    #[test]
    fn registries_with_ports_and_paths() {
        let r = ImageRef::parse("127.0.0.1:5000/x/y:tag").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.tag.as_deref(), Some("tag"));
        let r = ImageRef::parse("localhost:5000/busybox").unwrap();
        assert_eq!(r.to_string(), "localhost:5000/busybox:latest");
        let r = ImageRef::parse("registry.k8s.io/pause:3.10").unwrap();
        assert_eq!(r.name(), "registry.k8s.io/pause");
    }

    #[test]
    fn digest_references() {
        let r = ImageRef::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.lookup_key(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.to_oci().digest(), Some(D));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/a/b:v1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.lookup_key(), format!("127.0.0.1:5000/a/b@{D}"));
        assert_eq!(r.digest_ref("sha256:ff"), "127.0.0.1:5000/a/b@sha256:ff");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a/b:v1@{D}"));
    }

    #[test]
    fn malformed_references_are_invalid_argument() {
        for bad in [
            "",
            " ",
            "busy box",
            "busybox ",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox@sha256:1234",
            "busybox@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "busybox:",
            "busybox:tag:tag",
            ":tag",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a//b",
            "/abs",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidReference { .. }), "{bad:?}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:41234", "127.1.2.3:80", "[::1]:5000", "::1"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "localhost.example.com", "[fe80::1]:5000"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
