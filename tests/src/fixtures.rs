//! Registries and images the tests pull, and the berthd config that points at them.

use berth_imagegen::{push_image, push_standard, ImageSpec, LocalRegistry, Pushed, PushedStandard, RegistryOptions};

/// A fresh local registry (Debian's docker-registry on a free loopback port).
pub fn registry() -> LocalRegistry {
    LocalRegistry::start(RegistryOptions::default()).unwrap_or_else(|e| panic!("start local registry: {e:#}"))
}

/// One registry for every test of this test binary that only reads from it, holding the
/// standard busybox image; started by the first caller. Starting a registry and pushing
/// busybox costs a pod test more than the pod itself (10x so in the emulated guest of
/// `hack/vm-test`). It is stopped and its storage removed when the test binary exits
/// (atexit; if the binary is killed, the registry dies with it through PDEATHSIG).
pub fn shared_registry() -> &'static LocalRegistry {
    static SHARED: std::sync::OnceLock<LocalRegistry> = std::sync::OnceLock::new();
    extern "C" fn stop_shared_registry() {
        if let Some(registry) = SHARED.get() {
            if let Some(pid) = registry.pid() {
                // SAFETY: kill/waitpid on our own unreaped child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
            }
            if let Some(base) = registry.storage_dir().parent() {
                let _ = std::fs::remove_dir_all(base);
            }
        }
    }
    SHARED.get_or_init(|| {
        let registry = registry();
        push_std(&registry, "busybox");
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(stop_shared_registry) };
        registry
    })
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
