//! Bad requests get the right gRPC code and leave nothing behind: unknown ids, a missing
//! image, a mount source that does not exist, an unknown seccomp profile or user, missing
//! configs, an unknown runtime handler.

use std::path::Path;

use berth_tests::cri::image_spec;
use berth_tests::runtime::{assert_code, container_security, error_code};
use berth_tests::{Pod, RuntimeEnv};
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    ContainerStatusRequest, CreateContainerRequest, Mount, RunPodSandboxRequest, SecurityProfile, StartContainerRequest,
};
use tonic::Code;

/// Nothing of a refused container is left: no record, no bundle, no shim state, no mount.
fn assert_no_container_leftovers(env: &RuntimeEnv) {
    let bundles: Vec<_> = berth_tests::leaks::children(&env.berthd.root().join("containers"));
    assert!(bundles.is_empty(), "bundles left: {bundles:?}");
    let shims: Vec<_> = berth_tests::leaks::children(&env.berthd.state().join("shims"))
        .into_iter()
        .filter(|p| !is_pod_holder(p))
        .collect();
    assert!(shims.is_empty(), "shim state left: {shims:?}");
    let mounts = berth_tests::leaks::mounts_under(&env.berthd.root().join("containers"));
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

/// A pod's shared-PID init has shim state too; none of the pods here share PIDs, so any
/// entry counts. (Kept as a function so that the rule is written down once.)
fn is_pod_holder(_: &Path) -> bool {
    false
}

async fn refused(env: &mut RuntimeEnv, pod: &Pod, config: k8s_cri::v1::ContainerConfig) -> tonic::Status {
    let result = env.create_container_with(pod, config).await;
    let status = match result {
        Ok(id) => panic!("CreateContainer succeeded ({id}) where it must fail"),
        Err(status) => status,
    };
    assert!(!status.message().is_empty(), "the error says what is wrong: {status:?}");
    assert!(env.list_container_ids(None).await.is_empty(), "a refused container is not listed");
    assert_no_container_leftovers(env);
    status
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let mut env = RuntimeEnv::start().await;
    let unknown = "0123456789abcdef".repeat(4);
    assert_code(env.container_status(&unknown).await, Code::NotFound);
    let verbose = env.rt.container_status(ContainerStatusRequest { container_id: unknown.clone(), verbose: true }).await;
    assert_code(verbose, Code::NotFound);
    assert_code(env.rt.start_container(StartContainerRequest { container_id: unknown.clone() }).await, Code::NotFound);
    assert_code(env.try_exec(&unknown, &["true"], 0).await, Code::NotFound);
    assert_code(env.pod_status(&unknown).await, Code::NotFound);
    // containerd answers NotFound here, CRI-O Ok; kubelet takes both.
    let stopped = env.stop_container(&unknown, 0).await;
    assert!(stopped.is_ok() || stopped.as_ref().err().map(|e| e.code()) == Some(Code::NotFound), "{stopped:?}");
    env.remove_container(&unknown).await.expect("RemoveContainer of an unknown id is a no-op");

    // A container in a pod that does not exist.
    let config = env.container_config("orphan", &["true"]);
    let pod_config = env.pod_config("ghost");
    let request = CreateContainerRequest { pod_sandbox_id: unknown.clone(), config: Some(config), sandbox_config: Some(pod_config) };
    assert_code(env.rt.create_container(request).await, Code::NotFound);
    assert_no_container_leftovers(&env);
    env.finish().await;
}

#[tokio::test]
async fn missing_configs_are_invalid_argument() {
    let mut env = RuntimeEnv::start().await;
    let request = RunPodSandboxRequest { config: None, runtime_handler: String::new() };
    assert_code(env.rt.run_pod_sandbox(request).await, Code::InvalidArgument);
    let mut no_metadata = env.pod_config("nometa");
    no_metadata.metadata = None;
    assert_code(env.run_pod_with(no_metadata).await, Code::InvalidArgument);

    let pod = env.run_pod("configs").await;
    let request = CreateContainerRequest { pod_sandbox_id: pod.id.clone(), config: None, sandbox_config: Some(pod.config.clone()) };
    assert_code(env.rt.create_container(request).await, Code::InvalidArgument);
    let mut no_image = env.container_config("noimage", &["true"]);
    no_image.image = None;
    let status = refused(&mut env, &pod, no_image).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut no_metadata = env.container_config("nometa", &["true"]);
    no_metadata.metadata = None;
    let status = refused(&mut env, &pod, no_metadata).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    env.finish().await;
}

#[tokio::test]
async fn unknown_runtime_handler() {
    let mut env = RuntimeEnv::start().await;
    let config = env.pod_config("handler");
    let request = RunPodSandboxRequest { config: Some(config), runtime_handler: "no-such-handler".to_string() };
    let code = error_code(env.rt.run_pod_sandbox(request).await);
    assert!(matches!(code, Code::NotFound | Code::InvalidArgument), "{code:?}");
    env.finish().await;
}

#[tokio::test]
async fn missing_image_is_not_found() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("noimage").await;
    let mut config = env.container_config("missing", &["true"]);
    config.image = Some(image_spec(&env.image("not-pulled:latest")));
    let status = refused(&mut env, &pod, config).await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    env.finish().await;
}

#[tokio::test]
async fn bad_mount_source_is_invalid_argument() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("badmount").await;
    let mut config = env.container_config("badmount", &["true"]);
    let missing = env.berthd.base_dir().join("no-such-dir");
    config.mounts = vec![Mount {
        container_path: "/data".to_string(),
        host_path: missing.to_string_lossy().into_owned(),
        ..Default::default()
    }];
    let status = refused(&mut env, &pod, config).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let mut relative = env.container_config("relative", &["true"]);
    relative.mounts = vec![Mount { container_path: "data".to_string(), host_path: "/tmp".to_string(), ..Default::default() }];
    let status = refused(&mut env, &pod, relative).await;
    assert_eq!(status.code(), Code::InvalidArgument, "a relative container path: {status:?}");

    // A good mount works, read-only when asked.
    let source = env.berthd.base_dir().join("data");
    std::fs::create_dir_all(&source).expect("mkdir");
    std::fs::write(source.join("file"), "from the host\n").expect("write");
    let mut good = env.container_config("good", &["sleep", "3600"]);
    good.mounts = vec![Mount {
        container_path: "/data".to_string(),
        host_path: source.to_string_lossy().into_owned(),
        readonly: true,
        ..Default::default()
    }];
    let id = env.run_container_with(&pod, good).await;
    env.wait_container_state(&id, k8s_cri::v1::ContainerState::ContainerRunning, std::time::Duration::from_secs(10)).await;
    assert_eq!(env.exec_ok(&id, &["cat", "/data/file"]).await, "from the host");
    assert_ne!(env.exec(&id, &["touch", "/data/new"], 0).await.exit_code, 0, "a readonly mount");
    env.finish().await;
}

#[tokio::test]
async fn unknown_seccomp_profile_and_user() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("badsec").await;
    let mut config = env.container_config("seccomp", &["true"]);
    let missing = env.berthd.base_dir().join("no-such-profile.json");
    container_security(&mut config).seccomp =
        Some(SecurityProfile { profile_type: ProfileType::Localhost as i32, localhost_ref: missing.to_string_lossy().into_owned() });
    let status = refused(&mut env, &pod, config).await;
    assert!(matches!(status.code(), Code::NotFound | Code::InvalidArgument), "{status:?}");

    let mut config = env.container_config("garbage-profile", &["true"]);
    let garbage = env.berthd.base_dir().join("garbage.json");
    std::fs::write(&garbage, "{ not json").expect("write");
    container_security(&mut config).seccomp =
        Some(SecurityProfile { profile_type: ProfileType::Localhost as i32, localhost_ref: garbage.to_string_lossy().into_owned() });
    let status = refused(&mut env, &pod, config).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let mut config = env.container_config("user", &["true"]);
    container_security(&mut config).run_as_username = "nosuchuser".to_string();
    let status = refused(&mut env, &pod, config).await;
    assert!(matches!(status.code(), Code::NotFound | Code::InvalidArgument), "{status:?}");
    env.finish().await;
}
