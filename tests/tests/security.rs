//! Security contexts as seen from inside the container: user and groups (from the image's
//! /etc/passwd and /etc/group, run_as_user/group/username, supplemental groups), read-only
//! rootfs, capabilities (CapEff in /proc/1/status) for the default set, add, drop and
//! privileged, NoNewPrivs, the seccomp mode for RuntimeDefault/Unconfined/Localhost, and the
//! masked and read-only /proc paths.

use std::time::Duration;

use berth_imagegen::standard::busybox_layer;
use berth_imagegen::{Compression, ImageConfig, ImageSpec, Layer, DEFAULT_PATH_ENV};
use berth_tests::cri::image_spec;
use berth_tests::runtime::{container_security, pod_security};
use berth_tests::{cri, fixtures, Pod, RuntimeEnv};
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{Capability, ContainerConfig, ContainerState, Int64Value, SecurityProfile};

/// The capabilities containerd and CRI-O give a container by default: CHOWN, DAC_OVERRIDE,
/// FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT,
/// MKNOD, AUDIT_WRITE, SETFCAP.
const DEFAULT_CAPS: u64 = 0x0000_0000_a804_25fb;
const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// Starts `config` in `pod` (it must keep running) and waits until it runs.
async fn run(env: &mut RuntimeEnv, pod: &Pod, config: ContainerConfig) -> String {
    let id = env.run_container_with(pod, config).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    id
}

/// The value of `field` in the container init's /proc/1/status.
async fn init_status(env: &mut RuntimeEnv, id: &str, field: &str) -> String {
    let status = env.exec_ok(id, &["cat", "/proc/1/status"]).await;
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {field} in /proc/1/status: {status}"))
}

async fn cap_eff(env: &mut RuntimeEnv, id: &str) -> u64 {
    let hex = init_status(env, id, "CapEff").await;
    u64::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("CapEff {hex}: {e}"))
}

fn own_cap_bnd() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).expect("CapBnd").trim().to_string();
    u64::from_str_radix(&hex, 16).expect("CapBnd hex")
}

async fn run_privileged_pod(env: &mut RuntimeEnv, name: &str) -> Pod {
    let mut config = env.pod_config(name);
    pod_security(&mut config).privileged = true;
    env.run_pod_with(config).await.expect("RunPodSandbox privileged")
}

fn sleeper(env: &RuntimeEnv, name: &str) -> ContainerConfig {
    env.container_config(name, &["sleep", "3600"])
}

fn profile(kind: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile { profile_type: kind as i32, localhost_ref: localhost_ref.to_string() })
}

/// `groups:latest`: busybox with user `app` (1000:1000) who is also in groups `extra`
/// (4000) and `other` (5000), per /etc/group.
fn groups_image() -> ImageSpec {
    let etc = Layer::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\napp:x:1000:\nextra:x:4000:app\nother:x:5000:nobody,app\nnogroup:x:65534:\n", 0o644);
    ImageSpec {
        layers: vec![(busybox_layer(), Compression::Gzip), (etc, Compression::Gzip)],
        config: ImageConfig { cmd: Some(vec!["sh".into()]), env: vec![DEFAULT_PATH_ENV.into()], ..Default::default() },
        ..Default::default()
    }
}

#[tokio::test]
async fn users_and_groups() {
    let mut env = RuntimeEnv::start_with(&["nonroot"], "").await;
    fixtures::push(env.registry, "groups", "latest", &groups_image());
    let groups_ref = env.image("groups:latest");
    cri::pull(&mut env.images, &groups_ref).await.expect("pull groups image");
    let pod = env.run_pod("users").await;

    // The image's USER 1000:1000, named app in its /etc/passwd, and its WORKDIR.
    let mut config = sleeper(&env, "image-user");
    config.image = Some(image_spec(&env.image("nonroot:latest")));
    let id = run(&mut env, &pod, config).await;
    assert_eq!(env.exec_ok(&id, &["id"]).await, "uid=1000(app) gid=1000(app) groups=1000(app)");
    assert_eq!(env.exec_ok(&id, &["pwd"]).await, "/home/app");
    assert_eq!(cap_eff(&mut env, &id).await, 0, "a non-root user has no effective capabilities");
    let status = env.container_status(&id).await.expect("status");
    if let Some(user) = status.user.and_then(|u| u.linux) {
        assert_eq!((user.uid, user.gid), (1000, 1000), "ContainerStatus.user");
    }

    // run_as_user overrides the image; the group is that user's primary group from passwd.
    let mut config = sleeper(&env, "run-as-nobody");
    container_security(&mut config).run_as_user = Some(Int64Value { value: 65534 });
    let id = run(&mut env, &pod, config).await;
    assert_eq!(env.exec_ok(&id, &["id", "-u"]).await, "65534");
    assert_eq!(env.exec_ok(&id, &["id", "-g"]).await, "65534");

    // A uid the image does not know: gid 0.
    let mut config = sleeper(&env, "unknown-uid");
    container_security(&mut config).run_as_user = Some(Int64Value { value: 4242 });
    let id = run(&mut env, &pod, config).await;
    assert_eq!(env.exec_ok(&id, &["id", "-u"]).await, "4242");
    assert_eq!(env.exec_ok(&id, &["id", "-g"]).await, "0");

    // run_as_username resolved in the image; /etc/group memberships plus the pod's
    // supplemental groups and an explicit run_as_group.
    let mut config = sleeper(&env, "groups");
    config.image = Some(image_spec(&groups_ref));
    let security = container_security(&mut config);
    security.run_as_username = "app".to_string();
    security.run_as_group = Some(Int64Value { value: 1000 });
    security.supplemental_groups = vec![2000, 3000];
    let id = run(&mut env, &pod, config).await;
    assert_eq!(env.exec_ok(&id, &["id", "-u"]).await, "1000");
    assert_eq!(env.exec_ok(&id, &["id", "-g"]).await, "1000");
    let mut groups: Vec<u32> =
        env.exec_ok(&id, &["id", "-G"]).await.split_whitespace().map(|g| g.parse().expect("gid")).collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups, vec![1000, 2000, 3000, 4000, 5000], "primary, supplemental and /etc/group groups");

    // run_as_group alone changes the gid, not the uid.
    let mut config = sleeper(&env, "run-as-group");
    let security = container_security(&mut config);
    security.run_as_user = Some(Int64Value { value: 1000 });
    security.run_as_group = Some(Int64Value { value: 3333 });
    let id = run(&mut env, &pod, config).await;
    assert_eq!(env.exec_ok(&id, &["id", "-u"]).await, "1000");
    assert_eq!(env.exec_ok(&id, &["id", "-g"]).await, "3333");
    env.finish().await;
}

#[tokio::test]
async fn read_only_rootfs() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("rofs").await;
    let mut config = sleeper(&env, "readonly");
    container_security(&mut config).readonly_rootfs = true;
    let ro = run(&mut env, &pod, config).await;
    let config = sleeper(&env, "writable");
    let rw = run(&mut env, &pod, config).await;

    let write = ["sh", "-c", "echo x > /newfile"];
    let out = env.exec(&ro, &write, 0).await;
    assert_ne!(out.exit_code, 0, "writing to a read-only rootfs must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"), "{out:?}");
    assert_eq!(env.exec(&rw, &write, 0).await.exit_code, 0, "the default rootfs is writable");
    // /dev/shm and the pod's /etc files are mounts of their own; /dev/shm stays writable.
    assert_eq!(env.exec(&ro, &["sh", "-c", "echo x > /dev/shm/f"], 0).await.exit_code, 0);
    env.finish().await;
}

#[tokio::test]
async fn capabilities_default_add_drop_privileged() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("caps").await;

    let config = sleeper(&env, "default");
    let default = run(&mut env, &pod, config).await;
    assert_eq!(cap_eff(&mut env, &default).await, DEFAULT_CAPS, "CapEff {:x}", cap_eff(&mut env, &default).await);
    let bnd = u64::from_str_radix(&init_status(&mut env, &default, "CapBnd").await, 16).expect("hex");
    assert_eq!(bnd, DEFAULT_CAPS, "the bounding set is the default set too");

    let mut config = sleeper(&env, "add");
    container_security(&mut config).capabilities =
        Some(Capability { add_capabilities: vec!["NET_ADMIN".into()], ..Default::default() });
    let add = run(&mut env, &pod, config).await;
    assert_eq!(cap_eff(&mut env, &add).await, DEFAULT_CAPS | CAP_NET_ADMIN);

    let mut config = sleeper(&env, "drop");
    container_security(&mut config).capabilities =
        Some(Capability { drop_capabilities: vec!["CHOWN".into(), "CAP_NET_RAW".into()], ..Default::default() });
    let drop = run(&mut env, &pod, config).await;
    assert_eq!(cap_eff(&mut env, &drop).await, DEFAULT_CAPS & !CAP_CHOWN & !(1 << 13));
    assert_ne!(env.exec(&drop, &["chown", "1:1", "/tmp"], 0).await.exit_code, 0, "chown without CAP_CHOWN fails");

    let mut config = sleeper(&env, "only");
    container_security(&mut config).capabilities = Some(Capability {
        drop_capabilities: vec!["ALL".into()],
        add_capabilities: vec!["NET_BIND_SERVICE".into()],
        ..Default::default()
    });
    let only = run(&mut env, &pod, config).await;
    assert_eq!(cap_eff(&mut env, &only).await, CAP_NET_BIND_SERVICE);

    // A privileged container needs a privileged pod (kubelet makes the pod so).
    let privileged_pod = run_privileged_pod(&mut env, "caps-privileged").await;
    let mut config = sleeper(&env, "privileged");
    container_security(&mut config).privileged = true;
    let privileged = run(&mut env, &privileged_pod, config).await;
    let caps = cap_eff(&mut env, &privileged).await;
    assert_eq!(caps, own_cap_bnd(), "a privileged container has every capability the host allows: {caps:x}");
    assert_ne!(caps & CAP_SYS_ADMIN, 0);
    env.finish().await;
}

#[tokio::test]
async fn no_new_privs_and_seccomp_modes() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("seccomp").await;

    let mut config = sleeper(&env, "nnp");
    container_security(&mut config).no_new_privs = true;
    let nnp = run(&mut env, &pod, config).await;
    assert_eq!(init_status(&mut env, &nnp, "NoNewPrivs").await, "1");
    let mut config = sleeper(&env, "nnp-off");
    container_security(&mut config).seccomp = profile(ProfileType::Unconfined, "");
    let plain = run(&mut env, &pod, config).await;
    assert_eq!(init_status(&mut env, &plain, "NoNewPrivs").await, "0");
    assert_eq!(init_status(&mut env, &plain, "Seccomp").await, "0", "Unconfined: no filter");

    let mut config = sleeper(&env, "runtime-default");
    container_security(&mut config).seccomp = profile(ProfileType::RuntimeDefault, "");
    let filtered = run(&mut env, &pod, config).await;
    assert_eq!(init_status(&mut env, &filtered, "Seccomp").await, "2", "RuntimeDefault: filter mode");
    // The default profile refuses what a container has no business doing, but not normal work.
    assert_eq!(env.exec_ok(&filtered, &["sh", "-c", "echo ok"]).await, "ok");

    // A localhost profile that refuses mkdir(at) with EPERM and allows the rest.
    let profile_path = env.berthd.base_dir().join("no-mkdir.json");
    let profile_json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#;
    std::fs::write(&profile_path, profile_json).expect("write seccomp profile");
    let mut config = sleeper(&env, "localhost");
    container_security(&mut config).seccomp = profile(ProfileType::Localhost, &profile_path.to_string_lossy());
    let local = run(&mut env, &pod, config).await;
    assert_eq!(init_status(&mut env, &local, "Seccomp").await, "2");
    let out = env.exec(&local, &["mkdir", "/tmp/nope"], 0).await;
    assert_ne!(out.exit_code, 0, "the localhost profile refuses mkdir: {out:?}");
    assert_eq!(env.exec_ok(&local, &["sh", "-c", "echo still works"]).await, "still works");
    env.finish().await;
}

#[tokio::test]
async fn masked_and_read_only_proc_paths() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("masked").await;
    let config = sleeper(&env, "normal");
    let normal = run(&mut env, &pod, config).await;

    // /proc/kcore is not in every kernel (this host has none); /proc/timer_list is.
    assert_eq!(
        env.exec_ok(&normal, &["stat", "-c", "%F", "/proc/timer_list"]).await,
        "character special file",
        "/proc/timer_list is masked with /dev/null"
    );
    assert_eq!(env.exec_ok(&normal, &["sh", "-c", "cat /proc/timer_list | wc -c"]).await, "0");
    assert_eq!(env.exec_ok(&normal, &["sh", "-c", "ls -A /sys/firmware | wc -l"]).await, "0", "/sys/firmware is empty");
    let out = env.exec(&normal, &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], 0).await;
    assert_ne!(out.exit_code, 0, "/proc/sys is read-only: {out:?}");
    let out = env.exec(&normal, &["sh", "-c", "echo h > /proc/sysrq-trigger"], 0).await;
    assert_ne!(out.exit_code, 0, "/proc/sysrq-trigger is read-only: {out:?}");

    // Paths kubelet asks for explicitly replace the defaults.
    let mut config = sleeper(&env, "custom");
    let security = container_security(&mut config);
    security.masked_paths = vec!["/etc/hostname".into()];
    security.readonly_paths = vec!["/proc/sys".into()];
    let custom = run(&mut env, &pod, config).await;
    assert_eq!(env.exec_ok(&custom, &["sh", "-c", "cat /etc/hostname | wc -c"]).await, "0");

    let privileged_pod = run_privileged_pod(&mut env, "masked-privileged").await;
    let mut config = sleeper(&env, "privileged");
    container_security(&mut config).privileged = true;
    let privileged = run(&mut env, &privileged_pod, config).await;
    // /proc files are "regular empty file" to stat; masked ones are /dev/null.
    let kind = env.exec_ok(&privileged, &["stat", "-c", "%F", "/proc/timer_list"]).await;
    assert!(kind.starts_with("regular"), "a privileged container sees /proc unmasked: {kind}");
    env.finish().await;
}
