//! Registries and images the tests pull, and the berthd config that points at them.

use berth_imagegen::{push_image, push_standard, ImageSpec, LocalRegistry, Pushed, PushedStandard, RegistryOptions};

/// A fresh local registry (Debian's docker-registry on a free loopback port).
pub fn registry() -> LocalRegistry {
    LocalRegistry::start(RegistryOptions::default()).unwrap_or_else(|e| panic!("start local registry: {e:#}"))
}

/// A fresh local registry requiring HTTP Basic auth as `user`:`password`.
pub fn registry_with_auth(user: &str, password: &str) -> LocalRegistry {
    let options = RegistryOptions { htpasswd: Some((user.to_string(), password.to_string())) };
    LocalRegistry::start(options).unwrap_or_else(|e| panic!("start local registry with htpasswd: {e:#}"))
}

/// Pushes standard image `name` (see `berth_imagegen::standard_images`) as `name:latest`
/// and `library/name:latest`.
pub fn push_std(registry: &LocalRegistry, name: &str) -> PushedStandard {
    push_standard(&registry.addr(), name).unwrap_or_else(|e| panic!("push standard image {name}: {e:#}"))
}

/// Pushes `spec` as `repo:tag`.
pub fn push(registry: &LocalRegistry, repo: &str, tag: &str, spec: &ImageSpec) -> Pushed {
    push_image(&registry.addr(), repo, tag, spec, None).unwrap_or_else(|e| panic!("push {repo}:{tag}: {e:#}"))
}

/// `127.0.0.1:PORT/repo:tag` on `registry`.
pub fn reference(registry: &LocalRegistry, repo_and_tag: &str) -> String {
    format!("{}/{repo_and_tag}", registry.addr())
}

/// berthd config serving `registry_host` (e.g. `docker.io`) from `mirror` over plain HTTP.
pub fn mirror_config(registry_host: &str, mirror: &LocalRegistry) -> String {
    format!(
        "[images.registries.\"{registry_host}\"]\nmirrors = [{{ host = \"{}\", plain_http = true }}]\n",
        mirror.addr()
    )
}

/// The JSON under key `info` of a verbose ImageStatus answer.
pub fn verbose_info(status: &k8s_cri::v1::ImageStatusResponse) -> serde_json::Value {
    let info = status.info.get("info").unwrap_or_else(|| panic!("verbose ImageStatus has no `info` key: {:?}", status.info));
    serde_json::from_str(info).unwrap_or_else(|e| panic!("verbose ImageStatus `info` is not JSON ({e}): {info}"))
}
